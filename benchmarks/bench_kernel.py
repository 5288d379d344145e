"""The model kernel side by side with its peers, in the same run on the same CPU.

Each benchmark prints ONE JSON line: ``benchmark``, the kernel's figures, the peer's figures,
``ratio`` (with ``ratio_of`` saying which way round), and the configuration (sizes, batch sizes,
threads, library versions). Peers: ``transformers.pipeline`` on the very same model object for
inference; one full merged model per adapter loaded with ``from_pretrained`` for adapter
switching; plain ``from_pretrained`` for fault-in; the fp32 model for int8.

    python -m benchmarks.bench_kernel                 # everything, full sizes (minutes)
    python -m benchmarks.bench_kernel --quick         # tiny sizes (< 60 s), used by the tests
    python -m benchmarks.bench_kernel --only infer_fp32 --only fault_in
    llmos-lab bench kernel --quick                    # the same through the command

Timings take the best of ``--repeats`` interleaved rounds (contenders alternate inside each
round, so a noisy neighbour slows all of them alike). Swap files and the GGUF conversion go to
a private ``LLMOS_LAB_HOME`` that is deleted afterwards, so SmolLM2's first load is a real one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import llmos_lab as lab
from llmos_lab import assets, datasets, inference, loading
from llmos_lab.kernel import runtimes

CPU = torch.device("cpu")
MAX_LENGTH = 128


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; ``--quick`` swaps in tiny sizes."""

    texts: int = 2000  # tweets per inference pass
    repeats: int = 3  # interleaved timing rounds; the best one counts
    adapters: int = 8
    switches: int = 40
    switch_batch: int = 16  # texts per adapter switch
    fault_reps: int = 5
    smollm2: bool = True  # SmolLM2's first load converts the GGUF (~15 s)
    train_rows: int = 1000
    test_texts: int | None = None  # None: the whole test split
    matmul_n: int = 2048  # the matrix size at which the machine's matmul rate is measured
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(texts=64, repeats=1, adapters=2, switches=4, fault_reps=2, smollm2=False,
              train_rows=100, test_texts=64, matmul_n=256, quick=True)


# ---------------------------------------------------------------------------------- helpers


@functools.cache
def _tweets():
    return datasets.load("tweets-sentiment")


def _eval_texts(n: int) -> list[str]:
    """``n`` texts drawn (seeded) from the test and validation splits: the file is sorted by
    sentiment, so its first rows would all be alike."""
    df = _tweets()
    pool = df[df["split"].isin(["test", "validation"])]
    return list(pool.sample(min(n, len(pool)), random_state=0)["text"])


def _kernel(precision: str = "fp32") -> lab.ModelKernel:
    return lab.ModelKernel(device="cpu", memory_budget="2GiB", precision=precision)


def _load_sent(kernel: lab.ModelKernel, quantize: str | None = None, name: str = "sent",
               runtime: str = "torch"):
    """MiniLM with a fresh 3-class head (seeded: the same head every time), and its
    process-table record."""
    torch.manual_seed(0)
    kernel.load("minilm", name=name, task="sequence-classification", num_labels=3,
                quantize=quantize, runtime=runtime)
    return kernel.record(name)


def _pipeline(model, tokenizer):
    import transformers

    return transformers.pipeline("text-classification", model=model, tokenizer=tokenizer,
                                 device=-1)


def _pipe_labels(pipe, texts: Sequence[str], context: Callable[[], Any], **kw) -> list[str]:
    with context():
        out = pipe(list(texts), truncation=True, max_length=MAX_LENGTH, **kw)
    return [row["label"] for row in out]


def _labels(model, tokenizer, texts: Sequence[str], precision: str = "fp32",
            batch_size: int = 64) -> list[str]:
    """Argmax labels through the shared inference path (untimed references; the onnxruntime
    peer's timed runs)."""
    probs = inference.class_probabilities(model, tokenizer, texts, max_length=MAX_LENGTH,
                                          batch_size=batch_size, device=CPU,
                                          precision=precision)
    return [model.config.id2label[int(i)] for i in probs.argmax(axis=1)]


@torch.inference_mode()
def _forward_labels(model, tokenizer, texts: Sequence[str]) -> list[str]:
    """What a plain transformers user writes: pad the batch, one forward, argmax."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_LENGTH,
                    return_tensors="pt")
    return [model.config.id2label[int(i)] for i in model(**enc).logits.argmax(-1)]


def _agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return round(sum(x == y for x, y in zip(a, b, strict=True)) / max(1, len(a)), 4)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _race(contenders: dict[str, Callable[[], Any]], repeats: int
          ) -> tuple[dict[str, float], dict[str, Any]]:
    """Best wall time of each contender over interleaved rounds, and its last result."""
    best = {name: float("inf") for name in contenders}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds, results[name] = _timed(fn)
            best[name] = min(best[name], seconds)
    return best, results


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    return statistics.median(_timed(fn)[0] for _ in range(reps))


def _r(x: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits (JSON stays short and readable)."""
    if x is None:
        return None
    return float(f"{x:.{digits}g}")


def _config(**extra: Any) -> dict[str, Any]:
    import peft
    import transformers

    return {**extra, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "cpu_fast_bf16": inference.cpu_has_fast_bf16(), "cpus": os.cpu_count()}


def _machine_busy_s() -> float | None:
    """CPU seconds every process on the machine has used (Linux ``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def _release() -> None:
    gc.collect()


# ---------------------------------------------------------------------------------- inference


def _float_model(rec, quantize: str | None):
    """The float model an int8 one was made from (the kernel keeps its image), else itself."""
    if not quantize:
        return rec.model
    return loading.load(loading.Source(str(rec.image)), rec.task, rec.head, None)[0]


def _peers(rec, float_model, precision: str, quantize: str | None, folder: Path
           ) -> dict[str, Callable[[Sequence[str]], list]]:
    """transformers.pipeline on the kernel's own model object (default batch and 32) and
    ONNX Runtime on the same weights (its int8 for the int8 line; fp32 otherwise, as it has no
    CPU bf16) at batches of 32 and of the kernel's 64, set up as a user who wants fast CPU
    inference would: the plain graph (no first-token shortcut) from the TorchScript exporter,
    which onnxruntime runs fastest (side by side on MiniLM: 322 texts/s vs 281 for the dynamo
    exporter's graph, 293 / 279 after onnxruntime's BERT fusion optimizer), every graph
    optimisation on, torch's number of threads, the same tokenizer (timed) and length-sorted
    batches; int8 by ``quantize_dynamic``. The kernel's own export and session code serves."""
    pipe = _pipeline(rec.model, rec.tokenizer)
    if precision == "bf16":
        def context():
            return torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        context = contextlib.nullcontext
    graph = runtimes.export(float_model, rec.tokenizer, folder, quantize, first_token_only=False)
    peer = runtimes.OnnxClassifier(graph, float_model.config, torch.get_num_threads())
    ort = "onnxruntime_int8" if quantize else "onnxruntime_fp32"
    return {
        "pipeline_default": lambda t: _pipe_labels(pipe, t, context),
        "pipeline_b32": lambda t: _pipe_labels(pipe, t, context, batch_size=32),
        **{f"{ort}_b{b}": functools.partial(_labels, peer, rec.tokenizer, batch_size=b)
           for b in (32, 64)},
    }


def _infer_vs_peers(bench: str, precision: str, quantize: str | None, sizes: Sizes
                    ) -> dict[str, Any]:
    texts = _eval_texts(sizes.texts)
    kernel = _kernel(precision)
    rec = _load_sent(kernel, quantize)
    float_model = _float_model(rec, quantize)
    peak = matmul_rate(sizes.matmul_n, torch.bfloat16 if precision == "bf16" else torch.float32)
    if precision != "bf16":  # the same model run by onnxruntime inside the kernel
        _load_sent(kernel, quantize, "sent_ort", runtime="onnxruntime")
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        contenders = {"kernel": lambda t: list(kernel.infer("sent", t)["label"]),
                      **({"kernel_onnxruntime": lambda t: list(kernel.infer("sent_ort", t)[
                          "label"])} if precision != "bf16" else {}),
                      **_peers(rec, float_model, precision, quantize, Path(tmp))}
        for fn in contenders.values():  # warm-up: first calls allocate and pick kernels
            fn(texts[:8])
        best, labels = _race({k: functools.partial(fn, texts) for k, fn in contenders.items()},
                             sizes.repeats)
    # peers at the kernel's precision: onnxruntime has no CPU bf16, so not on the bf16 line
    equal = [k for k in best if not k.startswith("kernel")
             and not (precision == "bf16" and "onnx" in k)]
    flops = model_flops(float_model, _lengths(rec.tokenizer, texts), training=False)
    out = {"benchmark": bench, **_rates(best, len(texts), flops, peak, equal),
           "target": ">= 1.2 the best peer at equal precision",
           **{f"agreement_{k}": _agreement(labels["kernel"], v)
              for k, v in labels.items() if k != "kernel"}}
    if "kernel_onnxruntime" in best:
        out["ratio_runtime_onnxruntime"] = _r(best[out["best_peer"]] / best["kernel_onnxruntime"])
    if precision != "fp32" or quantize:
        ref = _labels(float_model, rec.tokenizer, texts)
        out["kernel_agreement_with_fp32"] = _agreement(labels["kernel"], ref)
        out["best_peer_agreement_with_fp32"] = _agreement(labels[out["best_peer"]], ref)
    out.update(_config(n=len(texts), kernel_batch_size=64, max_length=MAX_LENGTH,
                       precision=precision, quantize=quantize, onnxruntime=_onnxruntime_version(),
                       timing=f"best of {sizes.repeats} interleaved rounds",
                       flops="model FLOPs 2 N T + 4 L d T^2 per text (N without embeddings, "
                             "T its tokens without padding), whatever a contender skips"))
    for name in list(kernel.ps()["name"]):
        kernel.unload(name)
    return out


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _rates(best: dict[str, float], n: int, flops: float, peak: float, peers: Sequence[str]
           ) -> dict[str, Any]:
    """texts/s and fraction of the matmul rate of every contender; ratio to the best peer."""
    rate = {k: n / s for k, s in best.items()}
    peer = max(peers, key=rate.__getitem__)
    return {**{f"{k}_texts_per_s": _r(v) for k, v in rate.items()},
            **{f"{k}_fraction_of_matmul": _r(flops / best[k] / peak, 3) for k in best},
            "matmul_tflops": _r(peak / 1e12), "best_peer": peer,
            "ratio": _r(rate["kernel"] / rate[peer]),
            "ratio_of": f"kernel texts/s / the best peer's at equal precision ({peer})"}


def _lengths(tokenizer, texts: Sequence[str], max_length: int = MAX_LENGTH) -> list[int]:
    return [len(x) for x in tokenizer(list(texts), truncation=True,
                                      max_length=max_length)["input_ids"]]


def matmul_rate(n: int, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """This machine's dense matrix-multiply FLOP/s at ``n x n`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm up the kernels
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_flops(model, lengths: Sequence[int], training: bool = True) -> float:
    """FLOPs of one pass over examples of these token lengths (no padding): ``6 N T + 12 L d
    T^2`` to train, a third of it to infer; N counts parameters outside the embeddings."""
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    base = getattr(model, "base_model", model)
    emb_module = getattr(base, "embeddings", None)
    if emb_module is not None:
        embeddings |= {id(p) for p in emb_module.parameters()}
    n = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    c = model.config
    t = np.asarray(lengths, dtype=float)
    train = 6 * n * t.sum() + 12 * c.num_hidden_layers * c.hidden_size * (t**2).sum()
    return float(train if training else train / 3)


def infer_fp32(sizes: Sizes = FULL) -> dict[str, Any]:
    """kernel.infer vs transformers.pipeline and onnxruntime (batches of 32 and 64), fp32."""
    return _infer_vs_peers("infer_fp32", "fp32", None, sizes)


def infer_bf16(sizes: Sizes = FULL) -> dict[str, Any]:
    """A bf16 kernel vs the pipeline under bf16 autocast; both also checked against fp32."""
    return _infer_vs_peers("infer_bf16", "bf16", None, sizes)


def infer_int8(sizes: Sizes = FULL) -> dict[str, Any]:
    """quantize='int8' in the kernel vs the pipeline on the same int8 model object and
    onnxruntime's dynamic int8 of the same weights."""
    return _infer_vs_peers("infer_int8", "fp32", "int8", sizes)


# ---------------------------------------------------------------------------------- adapters


def adapter_switch(sizes: Sizes = FULL) -> dict[str, Any]:
    """Round-robin LoRA adapters on one resident base vs loading a merged model per switch."""
    from transformers import AutoModelForSequenceClassification

    n, b = sizes.adapters, sizes.switch_batch
    texts = _eval_texts(sizes.switches * b)
    batches = [texts[i * b:(i + 1) * b] for i in range(sizes.switches)]
    names = [f"a{i}" for i in range(n)]
    kernel = _kernel()
    rec = _load_sent(kernel)
    torch.manual_seed(1)
    for name in names:
        kernel.add_adapter("sent", name, {"r": 8})
        for pname, p in rec.model.named_parameters():
            if f".lora_B.{name}." in pname:  # fresh LoRA is a no-op (B = 0): make them differ
                torch.nn.init.normal_(p, std=0.02)
    tokenizer = rec.tokenizer
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        folders = []
        for name in names:  # the peer's world: one full merged model per adapter, on disk
            twin = copy.deepcopy(rec.model)
            twin.set_adapter(name)
            merged = twin.merge_and_unload(adapter_names=[name])
            folders.append(Path(tmp) / name)
            merged.save_pretrained(folders[-1])
            del twin, merged
        _release()

        def kernel_run(switch: bool = True) -> list[str]:
            return [label for j, batch in enumerate(batches) for label in kernel.infer(
                "sent", batch, adapter=names[j % n if switch else 0])["label"]]

        def peer_one(j: int, batch: Sequence[str]) -> tuple[list[str], float, int]:
            load_s, model = _timed(lambda: AutoModelForSequenceClassification.from_pretrained(
                folders[j % n]).eval())
            return _forward_labels(model, tokenizer, batch), load_s, loading.module_bytes(model)

        def peer_run() -> tuple[list[str], float]:
            runs = [peer_one(j, batch) for j, batch in enumerate(batches)]
            return [label for r in runs for label in r[0]], sum(r[1] for r in runs)

        kernel.infer("sent", batches[0], adapter=names[0])  # warm-up
        _, _, model_bytes = peer_one(0, batches[0])
        best, results = _race({"kernel": kernel_run, "peer": peer_run,
                               "kernel_no_switch": functools.partial(kernel_run, False)},
                              sizes.repeats)
        labels = {"kernel": results["kernel"], "peer": results["peer"][0]}
        peer_load_s = results["peer"][1] / sizes.switches
    # the switch alone: an empty call with another adapter runs the syscall path and switches
    rounds = 25 * n
    started = time.perf_counter()
    for j in range(rounds):
        kernel.infer("sent", [], adapter=names[j % n])
    switch_s = (time.perf_counter() - started) / rounds
    row = kernel.ps().set_index("name").loc["sent"]
    resident = int(row["bytes"] + row["adapter_bytes"])
    kernel_s, peer_s = best["kernel"] / sizes.switches, best["peer"] / sizes.switches
    same_s = best["kernel_no_switch"] / sizes.switches
    out = {
        "benchmark": "adapter_switch",
        "kernel_switch_s": _r(switch_s, 7),
        "peer_load_s_per_switch": _r(peer_load_s),
        "ratio": _r(peer_load_s / switch_s),
        "ratio_of": "peer s to load a merged model (files in the OS page cache) / kernel s to "
                    "switch adapter (an empty infer call with the next adapter)",
        "target": ">= 50",
        "kernel_s_per_switch": _r(kernel_s),
        "peer_s_per_switch": _r(peer_s),
        "end_to_end_ratio": _r(peer_s / kernel_s),
        "end_to_end_ratio_of": "the same with 16 texts inferred per switch on both sides",
        "kernel_same_adapter_s_per_batch": _r(same_s),
        "kernel_switch_overhead_s": _r(kernel_s - same_s),
        "kernel_resident_bytes": resident,
        "kernel_base_bytes": int(row["bytes"]),
        "kernel_adapter_bytes": int(row["adapter_bytes"]),
        "model_bytes": int(model_bytes),
        "resident_ratio": _r(resident / model_bytes),
        "resident_ratio_of": "kernel base + all adapters bytes / one full model's bytes",
        "resident_target": "<= 1.2",
        "peer_bytes_all_resident": int(model_bytes) * n,
        "agreement": _agreement(labels["kernel"], labels["peer"]),
    }
    out.update(_config(adapters=n, lora_r=8, switches=sizes.switches, batch_size=b,
                       max_length=MAX_LENGTH, precision="fp32",
                       timing=f"best of {sizes.repeats} interleaved rounds"))
    kernel.unload("sent")
    return out


# ---------------------------------------------------------------------------------- fault-in


def _generate_one(model, tokenizer, prompt: str) -> None:
    enc = tokenizer([prompt], return_tensors="pt")
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=1, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)


def fault_in(sizes: Sizes = FULL) -> dict[str, Any]:
    """Latency of using an evicted model: the next call minus a warm call, median of reps."""
    from transformers import AutoModelForSequenceClassification

    reps = sizes.fault_reps
    one = _eval_texts(1)
    kernel = _kernel()
    rec = _load_sent(kernel)
    kernel.evict("sent")  # the first eviction writes the new head to swap (not timed)
    kernel.infer("sent", one)
    warm = _median_time(lambda: kernel.infer("sent", one), 2 * reps + 1)
    faults = []
    for _ in range(reps):
        kernel.evict("sent")
        faults.append(_timed(lambda: kernel.infer("sent", one))[0] - warm)
    image, tokenizer = rec.image, rec.tokenizer

    # the peer: a plain from_pretrained of the same folder, then the same one-text call
    model = AutoModelForSequenceClassification.from_pretrained(image).eval()
    _forward_labels(model, tokenizer, one)
    peer_warm = _median_time(lambda: _forward_labels(model, tokenizer, one), 2 * reps + 1)
    model = None  # the peer holds one model at a time

    def peer_cold() -> None:
        cold = AutoModelForSequenceClassification.from_pretrained(image).eval()
        _forward_labels(cold, tokenizer, one)

    peer_faults = []
    for _ in range(reps):
        _release()
        peer_faults.append(_timed(peer_cold)[0] - peer_warm)
    kernel_fault, peer_fault = statistics.median(faults), statistics.median(peer_faults)
    out: dict[str, Any] = {
        "benchmark": "fault_in",
        "minilm_disk_fault_in_s": _r(kernel_fault),
        "minilm_warm_infer_s": _r(warm),
        "minilm_faults_s": [_r(x) for x in faults],
        "peer_minilm_load_s": _r(peer_fault),
        "peer_minilm_warm_infer_s": _r(peer_warm),
        "ratio": _r(peer_fault / kernel_fault),
        "ratio_of": "peer (from_pretrained + infer - warm) / kernel disk fault-in",
        "minilm_host_fault_in_s": None,
        "host_fault_in_reason": "on the CPU host memory is device memory: there is no host "
                                "tier (evict(to='host') is refused), models go straight to disk",
    }
    kernel.unload("sent")
    _release()
    out.update(_smollm2_fault_in(kernel, sizes) if sizes.smollm2 else {
        "smollm2_first_load_s": None, "smollm2_disk_fault_in_s": None,
        "smollm2_reason": "skipped with --quick (its first load converts the GGUF file)"})
    out.update(_config(n=1, reps=reps, precision="fp32", statistic="median"))
    return out


def _smollm2_fault_in(kernel: lab.ModelKernel, sizes: Sizes) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    reps, prompt = sizes.fault_reps, "Hello"
    gguf = assets.path("smollm2")
    converted = (loading.gguf_conversion(gguf) / "config.json").exists()
    first_load, _ = _timed(lambda: kernel.load("smollm2", name="lm"))
    rec = kernel.record("lm")

    def gen() -> Any:
        return kernel.generate("lm", [prompt], max_new_tokens=1)

    gen()
    warm = _median_time(gen, 2 * reps + 1)
    faults = []
    for _ in range(reps):
        kernel.evict("lm")
        faults.append(_timed(gen)[0] - warm)
    tokenizer = rec.tokenizer
    kernel.unload("lm")
    _release()
    # the peer: transformers straight from the GGUF file, dequantising on every load
    peer_load, model = _timed(lambda: AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name).eval())
    first = _timed(lambda: _generate_one(model, tokenizer, prompt))[0]
    peer_warm = _median_time(lambda: _generate_one(model, tokenizer, prompt), 2 * reps + 1)
    model = None
    _release()
    kernel_fault = statistics.median(faults)
    peer_fault = peer_load + first - peer_warm
    return {
        "smollm2_first_load_s": _r(first_load),
        "smollm2_first_load_converted_gguf": not converted,
        "smollm2_disk_fault_in_s": _r(kernel_fault),
        "smollm2_warm_generate_s": _r(warm),
        "smollm2_faults_s": [_r(x) for x in faults],
        "peer_smollm2_gguf_load_s": _r(peer_fault),
        "smollm2_ratio": _r(peer_fault / kernel_fault),
        "smollm2_ratio_of": "peer (from_pretrained(gguf_file) + 1 token - warm) / kernel "
                            "disk fault-in (from its one-time safetensors conversion)",
        "smollm2_peer_reps": 1,
    }


# ---------------------------------------------------------------------------------- int8


def int8_quality(sizes: Sizes = FULL) -> dict[str, Any]:
    """int8 vs fp32 on a quickly fine-tuned MiniLM: bytes, latency per text, accuracy."""
    df = _tweets()
    train = datasets.split(df, "train").sample(sizes.train_rows, random_state=0)
    test = datasets.split(df, "test")
    if sizes.test_texts is not None:  # seeded sample: the file is sorted by sentiment
        test = test.sample(min(sizes.test_texts, len(test)), random_state=0)
    texts, truth = list(test["text"]), list(test["label"])
    cfg = lab.TrainConfig(model="minilm", epochs=1, lr=1e-4, max_length=64, device="cpu")
    train_s, trainer = _timed(lambda: lab.Trainer(cfg).fit(train))
    kernel = _kernel()
    with tempfile.TemporaryDirectory(prefix="bench-finetuned-") as folder:
        trainer.model_.save_pretrained(folder)
        trainer.tokenizer_.save_pretrained(folder)
        del trainer
        _release()
        kernel.load(folder, name="ft", task="sequence-classification")
        kernel.load(folder, name="ft8", task="sequence-classification", quantize="int8")
        contenders = {name: functools.partial(kernel.infer, name) for name in ("ft", "ft8")}
        for fn in contenders.values():
            fn(texts[:8])
        best, frames = _race({k: functools.partial(fn, texts) for k, fn in contenders.items()},
                             sizes.repeats)
        table = kernel.ps().set_index("name")
        kernel.unload("ft")
        kernel.unload("ft8")
    fp32_bytes, int8_bytes = int(table.loc["ft", "bytes"]), int(table.loc["ft8", "bytes"])
    labels = {k: list(f["label"]) for k, f in frames.items()}
    acc = {k: sum(a == t for a, t in zip(v, truth, strict=True)) / len(truth)
           for k, v in labels.items()}
    lat = {k: s / len(texts) for k, s in best.items()}
    out = {
        "benchmark": "int8_quality",
        "int8_bytes": int8_bytes,
        "int8_latency_ms_per_text": _r(lat["ft8"] * 1e3),
        "int8_accuracy": _r(acc["ft8"]),
        "fp32_bytes": fp32_bytes,
        "fp32_latency_ms_per_text": _r(lat["ft"] * 1e3),
        "fp32_accuracy": _r(acc["ft"]),
        "bytes_saved": fp32_bytes - int8_bytes,
        "bytes_ratio": _r(fp32_bytes / int8_bytes),
        "accuracy_change": _r(acc["ft8"] - acc["ft"]),
        "agreement_with_fp32": _agreement(labels["ft8"], labels["ft"]),
        "ratio": _r(lat["ft"] / lat["ft8"]),
        "ratio_of": "fp32 latency / int8 latency (both through kernel.infer)",
    }
    out.update(_config(n=len(texts), split="test", train_rows=len(train),
                       train_seconds=_r(train_s), epochs=1, lr=1e-4, train_max_length=64,
                       kernel_batch_size=64, max_length=MAX_LENGTH,
                       timing=f"best of {sizes.repeats} interleaved rounds"))
    return out


# ---------------------------------------------------------------------------------- driver

BENCHMARKS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "infer_fp32": infer_fp32,
    "infer_bf16": infer_bf16,
    "infer_int8": infer_int8,
    "adapter_switch": adapter_switch,
    "fault_in": fault_in,
    "int8_quality": int8_quality,
}


@contextlib.contextmanager
def private_home() -> Iterator[Path]:
    """Point ``LLMOS_LAB_HOME`` at a fresh folder for the run, then delete it."""
    previous = os.environ.get("LLMOS_LAB_HOME")
    home = Path(tempfile.mkdtemp(prefix="llmos-lab-bench-"))
    os.environ["LLMOS_LAB_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("LLMOS_LAB_HOME", None)
        else:
            os.environ["LLMOS_LAB_HOME"] = previous
        shutil.rmtree(home, ignore_errors=True)


def run(name: str, sizes: Any = FULL, table: dict[str, Callable] | None = None
        ) -> dict[str, Any]:
    """One benchmark of ``table`` (this module's by default), quietly (library chatter goes to
    stderr); adds ``seconds``, ``quick`` and ``others_cpu_share``. A failure becomes
    ``{"benchmark": name, "error": ...}`` so the other lines still come."""
    started, busy, mine = time.perf_counter(), _machine_busy_s(), time.process_time()
    try:
        with contextlib.redirect_stdout(sys.stderr), loading.quiet():
            out = (table or BENCHMARKS)[name](sizes)
    except Exception as exc:  # a benchmark suite reports, it does not stop at the first
        traceback.print_exc(file=sys.stderr)
        out = {"benchmark": name, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        _release()
    wall = time.perf_counter() - started
    out["quick"] = sizes.quick
    out["seconds"] = _r(wall)
    # share of the machine's CPU that *other* processes used meanwhile: they skew timings
    after = _machine_busy_s()
    out["others_cpu_share"] = None if busy is None or after is None else round(max(
        0.0, (after - busy - (time.process_time() - mine)) / (wall * (os.cpu_count() or 1))), 3)
    return out


def suite_parser(prog: str, doc: str, table: dict[str, Callable]) -> argparse.ArgumentParser:
    """The options every benchmark module shares: --quick, --only NAME, --threads N."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--only", action="append", choices=list(table), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(table)}")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (2)")
    return parser


def run_suite(names: Sequence[str], sizes: Any, table: dict[str, Callable]) -> int:
    """Each benchmark in a private LLMOS_LAB_HOME, one JSON line each on stdout; 1 if any
    failed."""
    stdout, failed = sys.stdout, False
    with private_home():
        for name in names:
            line = run(name, sizes, table)
            failed |= "error" in line
            print(json.dumps(line), file=stdout, flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = suite_parser("bench_kernel", __doc__, BENCHMARKS)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing rounds, best counts (default 3; 1 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=max(1, args.repeats))
    torch.set_num_threads(args.threads)
    return run_suite(args.only or list(BENCHMARKS), sizes, BENCHMARKS)


if __name__ == "__main__":
    sys.exit(main())
