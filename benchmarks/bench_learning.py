"""Ways to learn and to shrink, measured side by side on the shipped tweets (one JSON line each).

    python -m benchmarks.bench_learning             # full sizes (about 25 minutes on 2 cores)
    python -m benchmarks.bench_learning --quick     # tiny models, used by the tests
    llmos-lab bench learning --only distill --only prune

- ``distill``: a MiniLM teacher fine-tuned on the training tweets; a 3-layer student taken from
  the teacher's own layers (1, 3, 6) trained with ``method="distill"``, and the same student
  trained on the labels only; the same pair for the config-built tiny BERT (3 epochs, lr 1e-3):
  parameters, bytes, texts/s through the kernel, accuracy.
- ``prune``: the teacher with 30% and 50% of its heads and feed-forward neurons removed (Taylor
  importance on 256 training tweets), with and without a 100-step recovery fine-tune, and with
  50% magnitude pruning: accuracy and texts/s against the share removed.
- ``prompting``: SmolLM2-135M-Instruct zero-, 4- and 16-shot (raw and calibrated) against MiniLM
  fine-tuned on 16, 100 and the full training rows, all on the same test tweets; texts/s.
- ``ensemble``: three LoRA adapters of one MiniLM (different seeds and halves of the data)
  combined by mean and by vote, against the best member: accuracy, texts/s, bytes.

The methods that change what is learned rather than its cost (multi-task, continued
pre-training, continual learning, Chinese text) are in learning_methods.py and run here too.
Speeds are through ``kernel.infer`` (fp32, batch 64, best of ``repeats`` rounds).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import llmos_lab as lab
from benchmarks.bench_kernel import _config, _r, _tweets, run_suite, suite_parser
from llmos_lab import optimize, prompting


@dataclass(frozen=True)
class Sizes:
    model: str = "minilm"
    lm: str = "smollm2"
    train_rows: int = 2000
    test_rows: int = 1000
    prompt_rows: int = 200  # prompting is ~50x slower per text: a smaller shared test set
    student_layers: int = 3
    recover_steps: int = 100
    shots: tuple[int, ...] = (0, 4, 16)
    few_rows: tuple[int, ...] = (16, 100)
    repeats: int = 3
    lr: float = 5e-5
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(model="tiny-bert", lm="tiny-llama", train_rows=64, test_rows=32, prompt_rows=8,
              student_layers=1, recover_steps=4, shots=(0, 2), few_rows=(16,), repeats=1,
              lr=1e-3, quick=True)
SEED = 0


def data(sizes: Sizes):
    df = _tweets()
    train = df[df["split"] == "train"].sample(sizes.train_rows, random_state=SEED)
    test = df[df["split"] == "test"].sample(sizes.test_rows, random_state=SEED)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def fit(sizes: Sizes, train, **kw) -> lab.Trainer:
    cfg = {"model": sizes.model, "epochs": 1.0 if not sizes.quick else 2.0, "lr": sizes.lr,
           "batch_size": 16, "max_length": 64, "seed": SEED, "device": "cpu", **kw}
    return lab.Trainer(lab.TrainConfig(**cfg)).fit(train, progress=False)


def served(folder: Path | str, test, sizes: Sizes, name: str = "m") -> dict[str, Any]:
    """Accuracy and texts/s of a saved classifier through the kernel; its bytes."""
    kernel = lab.ModelKernel(device="cpu", precision="fp32", memory_budget="8GiB")
    kernel.load(folder, name)
    texts = list(test["text"])
    kernel.infer(name, texts[:64])  # warm-up
    best, labels = float("inf"), None
    for _ in range(sizes.repeats):
        started = time.perf_counter()
        labels = kernel.infer(name, texts, batch_size=64)["label"]
        best = min(best, time.perf_counter() - started)
    row = kernel.ps().loc[0]
    params = sum(p.numel() for p in kernel.record(name).model.parameters())
    return {"accuracy": _r(float((labels == test["label"]).mean())), "parameters": params,
            "bytes": int(row["bytes"]), "texts_per_s": _r(len(texts) / best)}


def distill(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    root = Path(tempfile.mkdtemp(prefix="distill-"))
    teacher = fit(sizes, train)
    folder = teacher.save(root / "teacher")
    rows = {"teacher": served(folder, test, sizes)}
    for name, kw in (("student_distilled", dict(method="distill", teacher=str(folder))),
                     ("student_labels_only", {})):
        student = fit(sizes, train, **{**kw, "model": str(folder),
                                       "layers": sizes.student_layers})
        rows[name] = served(student.save(root / name), test, sizes)
    for name, kw in (("tiny_distilled", dict(method="distill", teacher=str(folder))),
                     ("tiny_labels_only", {})):  # a student built from a config, not taken
        student = fit(sizes, train, model="tiny-bert", lr=1e-3, epochs=3.0, **kw)
        rows[name] = served(student.save(root / name), test, sizes)
    return {"benchmark": "distill", **_flat(rows), "ratio": _r(
        rows["student_distilled"]["texts_per_s"] / rows["teacher"]["texts_per_s"]),
            "ratio_of": "student texts/s / teacher texts/s",
            **_config(model=sizes.model, layers=sizes.student_layers, temperature=2.0,
                      alpha=0.5, train_rows=len(train), test_rows=len(test))}


def prune(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    root = Path(tempfile.mkdtemp(prefix="prune-"))
    teacher = fit(sizes, train)
    rows = {"unpruned": served(teacher.save(root / "unpruned"), test, sizes)}
    sample = train.sample(min(256, len(train)), random_state=SEED)
    for share in (0.3, 0.5):
        pruned = optimize.prune(teacher, heads=share, ffn=share, data=sample)
        rows[f"structured_{share}"] = served(pruned.save(root / f"s{share}"), test, sizes)
        recovered = pruned.recover(train, max_steps=sizes.recover_steps, lr=sizes.lr * 2,
                                   device="cpu", max_length=64)
        rows[f"structured_{share}_recovered"] = served(recovered.save(root / f"r{share}"),
                                                       test, sizes)
    magnitude = optimize.prune(teacher, magnitude=0.5)
    rows["magnitude_0.5"] = {**served(magnitude.save(root / "mag"), test, sizes),
                             "sparsity": _r(magnitude.summary["sparsity"])}
    return {"benchmark": "prune", **_flat(rows), "ratio": _r(
        rows["structured_0.5"]["texts_per_s"] / rows["unpruned"]["texts_per_s"]),
            "ratio_of": "texts/s with 50% of heads and neurons removed / unpruned",
            **_config(model=sizes.model, recover_steps=sizes.recover_steps,
                      train_rows=len(train), test_rows=len(test))}


def prompting_vs_fine_tuning(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    test = test.head(sizes.prompt_rows)
    labels = sorted(train["label"].unique())
    kernel = lab.ModelKernel(device="cpu", precision="fp32", memory_budget="8GiB")
    kernel.load(sizes.lm, "lm")
    rows: dict[str, dict[str, Any]] = {}
    for shots in sizes.shots:
        for calibrate in (False, True):
            started = time.perf_counter()
            pred = prompting.classify(kernel, "lm", test, labels, shots, train=train,
                                      calibrate=calibrate, seed=SEED)
            seconds = time.perf_counter() - started
            rows[f"prompt_{shots}shot{'_calibrated' if calibrate else ''}"] = {
                "accuracy": _r(float((pred["label"] == test["label"]).mean())),
                "texts_per_s": _r(len(test) / seconds)}
    root = Path(tempfile.mkdtemp(prefix="prompting-"))
    for n in (*sizes.few_rows, len(train)):
        per_label = min(max(1, n // len(labels)), int(train["label"].value_counts().min()))
        few = train.groupby("label").sample(n=per_label, random_state=SEED)
        trainer = fit(sizes, few, **({"epochs": 10.0, "lr": sizes.lr * 4} if n < 500 else {}))
        rows[f"minilm_{n}_rows"] = served(trainer.save(root / f"ft{n}"), test, sizes)
    best_prompt = max((v for k, v in rows.items() if k.startswith("prompt")),
                      key=lambda v: v["accuracy"])
    return {"benchmark": "prompting", **_flat(rows), "ratio": _r(
        rows[f"minilm_{len(train)}_rows"]["texts_per_s"] / best_prompt["texts_per_s"]),
            "ratio_of": "fine-tuned MiniLM texts/s / best prompt's texts/s",
            **_config(lm=sizes.lm, model=sizes.model, test_rows=len(test),
                      majority_share=_r(float(test["label"].value_counts(normalize=True)
                                              .iloc[0])))}


def ensemble(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    root = Path(tempfile.mkdtemp(prefix="ensemble-"))
    kernel = lab.ModelKernel(device="cpu", precision="fp32", memory_budget="8GiB")
    labels = sorted(train["label"].unique())
    kernel.load(sizes.model, "base", task="sequence-classification", labels=labels)
    names = []
    for seed in range(3):
        part = train.sample(frac=0.5, random_state=seed)
        trainer = fit(sizes, part, method="lora", lr=1e-3, seed=seed)
        kernel.add_adapter("base", f"a{seed}", trainer.save_adapter(root / f"a{seed}"))
        names.append(f"base:a{seed}")
    kernel.ensemble("mean", names, how="mean")
    kernel.ensemble("vote", names, how="vote")
    texts, rows = list(test["text"]), {}
    for name in [*names, "mean", "vote"]:
        model, _, adapter = name.partition(":")
        started = time.perf_counter()
        pred = kernel.infer(model, texts, adapter=adapter or None, batch_size=64)
        rows[name.replace("base:", "member_")] = {
            "accuracy": _r(float((pred["label"] == test["label"]).mean())),
            "texts_per_s": _r(len(texts) / (time.perf_counter() - started))}
    best = max((v for k, v in rows.items() if k.startswith("member")),
               key=lambda v: v["accuracy"])
    ps = kernel.ps().loc[0]
    return {"benchmark": "ensemble", **_flat(rows),
            "base_bytes": int(ps["bytes"]), "adapter_bytes": int(ps["adapter_bytes"]),
            "ratio": _r(rows["mean"]["accuracy"] - best["accuracy"]),
            "ratio_of": "mean ensemble accuracy - best member's (points as a fraction)",
            **_config(model=sizes.model, members=3, train_rows=len(train),
                      test_rows=len(test))}


def _flat(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}_{key}": value for name, row in rows.items() for key, value in row.items()}


def benchmarks() -> dict[str, Any]:
    from benchmarks import learning_methods

    return {"distill": distill, "prune": prune, "prompting": prompting_vs_fine_tuning,
            "ensemble": ensemble, **learning_methods.BENCHMARKS}


def main(argv: Sequence[str] | None = None) -> int:
    table = benchmarks()
    args = suite_parser("bench_learning", __doc__, table).parse_args(argv)
    torch.set_num_threads(args.threads)
    return run_suite(args.only or list(table), QUICK if args.quick else FULL, table)


if __name__ == "__main__":
    sys.exit(main())
