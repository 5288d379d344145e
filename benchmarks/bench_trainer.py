"""``llmos_lab.Trainer`` side by side with ``transformers.Trainer``, one JSON line per benchmark.

Same model (MiniLM with a new 3-class head), data (2,000 training tweets; accuracy on 1,000 test
tweets, both seeded samples), max_length 64, batch 16, one epoch, AdamW lr 5e-5 with 10% linear
warm-up and weight decay 0.01, gradient clipping at 1.0, threads, precision. transformers runs
with its defaults otherwise (fused AdamW, dynamic padding by ``DataCollatorWithPadding``).

    python -m benchmarks.bench_trainer              # full sizes (about 8 minutes on 2 cores)
    python -m benchmarks.bench_trainer --quick      # tiny sizes, used by the tests
    llmos-lab bench trainer --only speed

- ``speed``: samples/s of ours vs transformers.Trainer with its default (random) sampler and with
  ``train_sampling_strategy="group_by_length"`` (target: ours >= 1.1x the better; accuracy within
  1 point); model FLOP/s of each as a fraction of this machine's fp32 matmul rate measured now;
- ``bf16``: the same with bf16 autocast (ours ``precision="bf16"``, theirs ``bf16=True``),
  against the bf16 matmul rate;
- ``lora_vs_full``: trainable parameters, samples/s, peak RSS (each run in a fresh process) and
  accuracy of a full fine-tune and a LoRA (r=8, lr 1e-3) one.

Training time is the optimizer-step loop only: model loading and tokenization are outside it for
transformers and inside it for ours (Python's imports of transformers' modules are done before
either side is timed). Accuracy is measured for both through the same inference
path. Model FLOPs per example: ``6 N T + 12 n_layers d T^2`` (N: parameters outside the
embeddings, T: the example's tokens without padding), the usual count for MFU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

import llmos_lab as lab
from benchmarks.bench_kernel import (
    _config,
    _lengths,
    _r,
    _tweets,
    matmul_rate,
    model_flops,
    run_suite,
    suite_parser,
)
from llmos_lab import assets, inference


@dataclass(frozen=True)
class Sizes:
    model: str = "minilm"
    train_rows: int = 2000
    test_rows: int = 1000
    max_length: int = 64
    batch_size: int = 16
    epochs: float = 1.0
    matmul_n: int = 2048
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(model="tiny-bert", train_rows=48, test_rows=32, matmul_n=256, quick=True)
LR, WARMUP, DECAY, CLIP, SEED = 5e-5, 0.1, 0.01, 1.0, 0
LORA_LR = 1e-3  # adapters start at zero and need a larger step than full fine-tuning


def _data(sizes: Sizes):
    df = _tweets()  # read and de-duplicated once per process, as in bench_kernel
    train = df[df["split"] == "train"].sample(sizes.train_rows, random_state=SEED)
    test = df[df["split"] == "test"].sample(sizes.test_rows, random_state=SEED)
    return train.reset_index(drop=True), test.reset_index(drop=True), df.attrs["labels"]


class _PeakRss:
    """The largest growth of this process's RSS over the block, sampled every 5 ms (the
    process-wide peak would also count whatever came before, such as reading the data)."""

    def __enter__(self) -> _PeakRss:
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.increase = self.peak - self.start


def _accuracy(model, tokenizer, test, labels, max_length: int) -> float:
    probs = inference.class_probabilities(model, tokenizer, list(test["text"]),
                                          max_length=max_length,
                                          batch_size=64, device=torch.device("cpu"))
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    return float(np.mean([p == y for p, y in zip(predicted, test["label"], strict=True)]))


def ours(sizes: Sizes, precision: str = "fp32", method: str = "full") -> dict[str, Any]:
    train, test, _ = _data(sizes)
    lr = LORA_LR if method == "lora" else LR
    cfg = lab.TrainConfig(model=sizes.model, method=method, epochs=sizes.epochs, lr=lr,
                          warmup=WARMUP, weight_decay=DECAY, max_grad_norm=CLIP,
                          batch_size=sizes.batch_size, max_length=sizes.max_length,
                          precision=precision, seed=SEED, device="cpu")
    trainer = lab.Trainer(cfg)
    steps = trainer.steps(train)
    with _PeakRss() as rss:
        t0 = time.perf_counter()
        for _ in steps:
            pass
        seconds = time.perf_counter() - t0
    model = trainer.model_
    lengths = _lengths(trainer.tokenizer_, train["text"], sizes.max_length)
    return {"samples_per_s": len(train) * sizes.epochs / seconds, "seconds": seconds,
            "accuracy": _accuracy(model, trainer.tokenizer_, test, trainer.labels_,
                                  sizes.max_length),
            "flops": model_flops(model, lengths) * sizes.epochs,
            "trainable": trainer.trainable_parameters_[0], "rss_increase": rss.increase,
            "parameters": trainer.trainable_parameters_[1]}


def theirs(sizes: Sizes, precision: str = "fp32", strategy: str = "random") -> dict[str, Any]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    train, test, labels = _data(sizes)
    path = assets.model_path(sizes.model)
    index = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)
    enc = tokenizer(list(train["text"]), truncation=True, max_length=sizes.max_length)
    rows = [{"input_ids": ids, "attention_mask": mask, "labels": index[y]}
            for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], train["label"],
                                    strict=True)]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=sizes.batch_size,
            num_train_epochs=sizes.epochs, learning_rate=LR, warmup_steps=WARMUP,
            weight_decay=DECAY, max_grad_norm=CLIP, bf16=precision == "bf16", use_cpu=True,
            report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, seed=SEED, train_sampling_strategy=strategy)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tokenizer),
                          processing_class=tokenizer)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    lengths = [len(r["input_ids"]) for r in rows]
    return {"samples_per_s": len(rows) * sizes.epochs / seconds, "seconds": seconds,
            "accuracy": _accuracy(model, tokenizer, test, labels, sizes.max_length),
            "flops": model_flops(model, lengths) * sizes.epochs}


def _warm_imports() -> None:
    """Import what both sides use before either is timed: Python imports of transformers'
    modules (seconds) are a process's start-up, not training, and whichever side ran first
    would otherwise pay them for both."""
    import transformers.models.bert.modeling_bert  # noqa: F401
    from transformers import Trainer  # noqa: F401


def _side_by_side(sizes: Sizes, precision: str) -> dict[str, Any]:
    _warm_imports()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_rate(sizes.matmul_n, dtype)
    runs = {"ours": ours(sizes, precision),
            "hf_default": theirs(sizes, precision, "random"),
            "hf_grouped": theirs(sizes, precision, "group_by_length")}
    out: dict[str, Any] = {}
    for name, r in runs.items():
        out[f"{name}_samples_per_s"] = _r(r["samples_per_s"])
        out[f"{name}_accuracy"] = _r(r["accuracy"])
        out[f"{name}_model_tflops"] = _r(r["flops"] / r["seconds"] / 1e12)
        out[f"{name}_fraction_of_matmul"] = _r(r["flops"] / r["seconds"] / peak)
    best = max(runs["hf_default"]["samples_per_s"], runs["hf_grouped"]["samples_per_s"])
    out["ratio"] = _r(runs["ours"]["samples_per_s"] / best)
    out["ratio_of"] = "ours samples/s / the better transformers.Trainer"
    out["accuracy_difference_points"] = _r(100 * (runs["ours"]["accuracy"] - max(
        runs["hf_default"]["accuracy"], runs["hf_grouped"]["accuracy"])))
    out[f"matmul_{precision}_tflops"] = _r(peak / 1e12)
    return out


def bench_speed(sizes: Sizes) -> dict[str, Any]:
    return {"benchmark": "speed", **_side_by_side(sizes, "fp32"), "target": ">= 1.1",
            **_settings(sizes, "fp32")}


def bench_bf16(sizes: Sizes) -> dict[str, Any]:
    return {"benchmark": "bf16", **_side_by_side(sizes, "bf16"), **_settings(sizes, "bf16")}


def bench_lora_vs_full(sizes: Sizes) -> dict[str, Any]:
    """Each method in a fresh process, so its peak RSS is its own."""
    out: dict[str, Any] = {"benchmark": "lora_vs_full"}
    for method in ("full", "lora"):
        code = ("import json, resource, sys; from benchmarks import bench_trainer as b; "
                f"r = b.ours(b.{'QUICK' if sizes.quick else 'FULL'}, method={method!r}); "
                "r['peak_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; "
                "print(json.dumps(r))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, env={**os.environ, "OMP_NUM_THREADS":
                                                str(torch.get_num_threads())},
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if proc.returncode:
            raise RuntimeError(f"{method} run failed: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[f"{method}_trainable_parameters"] = r["trainable"]
        out[f"{method}_samples_per_s"] = _r(r["samples_per_s"])
        out[f"{method}_peak_rss_mib"] = _r(r["peak_rss"] / 2**20)
        out[f"{method}_training_rss_increase_mib"] = _r(r["rss_increase"] / 2**20)
        out[f"{method}_accuracy"] = _r(r["accuracy"])
    out["parameters"] = r["parameters"]
    out["ratio"] = _r(out["lora_samples_per_s"] / out["full_samples_per_s"])
    out["ratio_of"] = "lora samples/s / full samples/s"
    return {**out, **_settings(sizes, "fp32")}


def _settings(sizes: Sizes, precision: str) -> dict[str, Any]:
    return _config(model=sizes.model, train_rows=sizes.train_rows, test_rows=sizes.test_rows,
                   max_length=sizes.max_length, batch_size=sizes.batch_size,
                   epochs=sizes.epochs, precision=precision, max_grad_norm=CLIP, lr=LR)


BENCHMARKS = {"speed": bench_speed, "bf16": bench_bf16, "lora_vs_full": bench_lora_vs_full}


def main(argv: Sequence[str] | None = None) -> int:
    parser = suite_parser("bench_trainer", __doc__, BENCHMARKS)
    parser.add_argument("--train-rows", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    if args.train_rows:
        sizes = replace(sizes, train_rows=args.train_rows)
    return run_suite(args.only or list(BENCHMARKS), sizes, BENCHMARKS)


if __name__ == "__main__":
    sys.exit(main())
