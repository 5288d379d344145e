"""Serving side by side with its peers: real HTTP over loopback, concurrent clients.

Every server runs in a process of its own (``llmos-lab serve``, or a peer from
``serving_peers.py``) and is driven by the same asyncio client here, so the clients' own work
is the same for all. Each benchmark prints ONE JSON line with both sides and ``ratio``.

- ``generate``: SmolLM2, concurrent clients arriving as a Poisson process, each asking for the
  same number of new tokens (``ignore_eos``): tokens/s and p50/p99 latency of continuous
  batching vs a per-request ``model.generate`` server vs static batches of 8.
- ``classify``: MiniLM, concurrent clients of one text each: requests/s vs per-request.
- ``ttft_training``: time to first token while a training task runs in the same scheduler:
  idle, with priority (the request preempts at a step boundary), and under stride.
- ``decode_step``: one decode step at batch 16 with a KV cache, written as a new user writes
  it (``model(...)`` with transformers' cache) vs ``DecodeBatch.step``, against the FLOP bound
  (the measured fp32 matmul rate) and the bytes bound (weights / measured copy bandwidth).

    python -m benchmarks.bench_serving            # full sizes (minutes)
    python -m benchmarks.bench_serving --quick    # tiny models (seconds; used by the tests)
    llmos-lab bench serving --only decode_step
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import llmos_lab as lab
from llmos_lab import inference
from llmos_lab.kernel.decode import Sequence as DecodeSequence
from llmos_lab.kernel.decode import cache_kwarg
from llmos_lab.kernel.llama import decode_flops
from llmos_lab.tasks import training_task

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 900.0


@dataclass(frozen=True)
class Sizes:
    quick: bool = False
    lm: str = "smollm2"
    encoder: str = "minilm"
    trainee: str = "minilm"
    clients: int = 32
    new_tokens: int = 64
    rate: float = 8.0  # Poisson arrivals per second
    clf_clients: int = 64
    clf_requests: int = 512
    ttft_requests: int = 6
    step_batch: int = 16
    prompt_tokens: int = 32


FULL = Sizes()
QUICK = Sizes(True, "tiny-llama", "tiny-bert", "tiny-bert", clients=6, new_tokens=6, rate=50.0,
              clf_clients=8, clf_requests=24, ttft_requests=2, step_batch=4, prompt_tokens=8)
LABELS = "negative,neutral,positive"


# ---------------------------------------------------------------------- servers and clients


class Process:
    """A server in a child process; a line of its stdout names its URL."""

    def __init__(self, args: list[str]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout],
                         daemon=True).start()
        found = None
        while found is None:  # the line naming its URL comes once the models are loaded
            try:
                found = re.search(r"http://\S+", lines.get(timeout=HANG_GUARD))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{args} did not start") from None
        self.url = found.group(0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def ours(model: str, *extra: str) -> Process:
    return Process(["-m", "llmos_lab.cli", "serve", "--port", "0", "--memory-budget", "4GiB",
                    "--model", model, *extra])


def peer(kind: str, model: str, *extra: str) -> Process:
    return Process(["-m", "benchmarks.serving_peers", kind, model, "--port", "0", *extra])


def drive(url: str, route: str, bodies: list[dict], arrivals: list[float]) -> dict:
    """Send each body at its arrival time; latencies, answers and the wall time."""
    import httpx

    async def run():
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=HANG_GUARD, limits=limits) as client:
            async def one(i: int):
                await asyncio.sleep(arrivals[i])
                sent = time.perf_counter()
                r = await client.post(url + route, json=bodies[i])
                r.raise_for_status()
                return time.perf_counter() - sent, r.json()

            started = time.perf_counter()
            out = await asyncio.gather(*[one(i) for i in range(len(bodies))])
            return out, time.perf_counter() - started

    out, wall = asyncio.run(run())
    latency = [x for x, _ in out]
    return {"latency": latency, "answers": [a for _, a in out], "wall": wall,
            "p50": float(np.percentile(latency, 50)), "p99": float(np.percentile(latency, 99))}


def poisson(n: int, rate: float, seed: int = 0) -> list[float]:
    return list(np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n)))


def prompts(n: int) -> list[str]:
    tweets = lab.datasets.load("tweets-sentiment", seed=0)
    return [f"Reply to this tweet: {t}" for t in tweets["text"].head(n)]


# ---------------------------------------------------------------------- benchmarks


def bench_generate(s: Sizes) -> dict:
    bodies = [{"model": "lm", "prompt": p, "max_tokens": s.new_tokens, "temperature": 0,
               "ignore_eos": True} for p in prompts(s.clients)]
    arrivals = poisson(len(bodies), s.rate)
    runs = {}
    with ours(f"lm={s.lm}", "--max-batch", str(s.clients)) as server:
        runs["ours"] = drive(server.url, "/v1/completions", bodies, arrivals)
    with peer("per-request", s.lm) as server:
        runs["per_request"] = drive(server.url, "/v1/completions", bodies, arrivals)
    with peer("static", s.lm, "--batch", "8") as server:
        runs["static8"] = drive(server.url, "/v1/completions", bodies, arrivals)
    out = {"benchmark": "generate", "model": s.lm, "clients": s.clients,
           "new_tokens": s.new_tokens, "arrival_rate_per_s": s.rate}
    texts = {}
    for name, r in runs.items():
        tokens = sum(a["usage"]["completion_tokens"] for a in r["answers"])
        out[f"{name}_tokens_per_s"] = _r(tokens / r["wall"])
        out[f"{name}_p50_s"], out[f"{name}_p99_s"] = _r(r["p50"]), _r(r["p99"])
        texts[name] = [a["choices"][0]["text"] for a in r["answers"]]
    out["ratio"] = _r(out["ours_tokens_per_s"] / out["per_request_tokens_per_s"])
    out["ratio_of"] = "ours / per_request tokens per second"
    out["ratio_static8"] = _r(out["ours_tokens_per_s"] / out["static8_tokens_per_s"])
    out["greedy_agreement_with_per_request"] = _agree(texts["ours"], texts["per_request"])
    return out


def bench_classify(s: Sizes) -> dict:
    texts = lab.datasets.load("tweets-sentiment", seed=0)["text"].head(s.clf_requests).tolist()
    bodies = [{"model": "clf", "input": [t]} for t in texts]
    runs = {}  # closed loop: clf_clients requests in flight at any time
    with ours(f"clf={s.encoder}", "--task", "clf=sequence-classification",
              "--labels", f"clf={LABELS}") as server:
        runs["ours"] = _closed_loop(server.url, bodies, s.clf_clients)
    with peer("per-request", s.encoder, "--task", "sequence-classification",
              "--labels", LABELS) as server:
        runs["per_request"] = _closed_loop(server.url, bodies, s.clf_clients)
    out = {"benchmark": "classify", "model": s.encoder, "clients": s.clf_clients,
           "requests": len(bodies)}
    for name, r in runs.items():
        out[f"{name}_requests_per_s"] = _r(len(bodies) / r["wall"])
        out[f"{name}_p50_s"], out[f"{name}_p99_s"] = _r(r["p50"]), _r(r["p99"])
    out["ratio"] = _r(out["ours_requests_per_s"] / out["per_request_requests_per_s"])
    out["ratio_of"] = "ours / per_request requests per second"
    return out


def _closed_loop(url: str, bodies: list[dict], clients: int) -> dict:
    """``clients`` workers, each sending its next request when the last one answered."""
    import httpx

    async def run():
        latency: list[float] = []
        todo = list(range(len(bodies)))

        async def worker(client):
            while todo:
                i = todo.pop()
                sent = time.perf_counter()
                r = await client.post(url + "/v1/classify", json=bodies[i])
                r.raise_for_status()
                latency.append(time.perf_counter() - sent)

        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            started = time.perf_counter()
            await asyncio.gather(*[worker(client) for _ in range(clients)])
            return latency, time.perf_counter() - started

    latency, wall = asyncio.run(run())
    return {"wall": wall, "p50": float(np.percentile(latency, 50)),
            "p99": float(np.percentile(latency, 99))}


def bench_ttft_training(s: Sizes) -> dict:
    """In one process: a server and a training task share a scheduler."""
    import httpx

    kernel = lab.ModelKernel(memory_budget="4GiB")
    kernel.load(s.lm, name="lm")
    tweets = lab.datasets.load("tweets-sentiment", seed=0)
    train = lab.datasets.split(tweets, "train").sample(256, random_state=0)
    out = {"benchmark": "ttft_training", "model": s.lm, "trainee": s.trainee,
           "requests": s.ttft_requests}
    for mode, policy, priority in [("idle", "priority", 1), ("priority", "priority", 2),
                                   ("stride", "stride", 1)]:
        sched = lab.Scheduler(policy=policy)
        if mode != "idle":
            trainer = lab.Trainer(lab.TrainConfig(model=s.trainee, max_steps=100_000,
                                                  batch_size=16, max_length=64))
            sched.submit(training_task(trainer, train, priority=1))
        firsts = []
        with lab.serve(kernel, port=0, scheduler=sched) as server:
            while mode != "idle" and (sched.timeline()["task"] == "train").sum() < 2:
                state = sched.metrics().set_index("task").loc["train"]
                if state["state"] == "failed":
                    raise RuntimeError(f"the training task failed: {state['error']}")
                time.sleep(0.01)
            for i in range(s.ttft_requests):
                sent = time.perf_counter()
                with httpx.stream("POST", server.url + "/v1/completions", timeout=HANG_GUARD,
                                  json={"model": "lm", "prompt": f"Hello {i}",
                                        "max_tokens": 4, "stream": True,
                                        "priority": priority}) as r:
                    lines = r.iter_lines()
                    next(line for line in lines if line.startswith("data: {"))
                    firsts.append(time.perf_counter() - sent)
                    for _ in lines:
                        pass
                time.sleep(0.05 * (i % 3))  # land at different moments of a training step
        if mode != "idle":
            table = sched.timeline()
            out["train_step_median_s"] = _r(table[table["task"] == "train"]["seconds"].median())
            sched.cancel("train")
        sched.stop()
        out[f"ttft_{mode}_median_s"] = _r(statistics.median(firsts))
        out[f"ttft_{mode}_max_s"] = _r(max(firsts))
    out["ratio"] = _r(out["ttft_stride_median_s"] / out["ttft_priority_median_s"])
    out["ratio_of"] = "stride / priority median time to first token under training"
    return out


def bench_decode_step(s: Sizes) -> dict:
    kernel = lab.ModelKernel(memory_budget="4GiB", precision="fp32")
    kernel.load(s.lm, name="lm")
    model = kernel.record("lm").model
    ids = [list(range(100 + i, 100 + i + s.prompt_tokens)) for i in range(4 * s.step_batch)]
    out = {"benchmark": "decode_step", "model": s.lm, "batch": s.step_batch,
           "prompt_tokens": s.prompt_tokens, "threads": torch.get_num_threads()}
    out["transformers_step_ms"] = _r(1e3 * _hf_step(model, ids[:s.step_batch]))
    ours_s, context = _our_step(kernel, "lm", ids[:s.step_batch])
    out["ours_step_ms"] = _r(1e3 * ours_s)
    out["transformers_step_after_layout_ms"] = _r(1e3 * _hf_step(model, ids[:s.step_batch]))
    rate = _matmul_rate(torch.float32)
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
                       if isinstance(m, torch.nn.Linear))
    bandwidth = _copy_bandwidth()
    flops = decode_flops(model, s.step_batch, context)
    out.update({"gflop_per_step": _r(flops / 1e9), "fp32_matmul_gflop_s": _r(rate / 1e9),
                "flop_bound_ms": _r(1e3 * flops / rate),
                "weight_mb": _r(weight_bytes / 2**20),
                "copy_bandwidth_gb_s": _r(bandwidth / 1e9),
                "bytes_bound_ms": _r(1e3 * weight_bytes / bandwidth)})
    out["fraction_of_flop_bound"] = _r(out["flop_bound_ms"] / out["ours_step_ms"])
    roofline = max(out["flop_bound_ms"], out["bytes_bound_ms"])
    out["fraction_of_roofline"] = _r(roofline / out["ours_step_ms"])
    out["ratio"] = _r(out["transformers_step_ms"] / out["ours_step_ms"])
    out["ratio_of"] = "transformers / ours step time"
    sweep = {}
    for rows in (1, 4 * s.step_batch):  # the roofline moves with the batch
        seconds, ctx = _our_step(kernel, "lm", ids[:rows])
        sweep[rows] = {"step_ms": _r(1e3 * seconds), "tokens_per_s": _r(rows / seconds),
                       "fraction_of_flop_bound": _r(decode_flops(model, rows, ctx) / rate
                                                    / seconds)}
    out["batch_sweep"] = sweep
    out["fast_bf16_cpu"] = inference.cpu_has_fast_bf16()
    if out["fast_bf16_cpu"]:  # weights stored in bf16: half the bytes, AMX/avx512_bf16
        kernel.unload("lm")
        kernel.load(s.lm, name="lm16", dtype="bf16")
        seconds, _ = _our_step(kernel, "lm16", ids[:s.step_batch])
        out["ours_bf16_weights_step_ms"] = _r(1e3 * seconds)
        out["bf16_matmul_gflop_s"] = _r(_matmul_rate(torch.bfloat16) / 1e9)
    return out


def _our_step(kernel, name: str, ids: list[list[int]]) -> tuple[float, int]:
    """Median seconds of a DecodeBatch step with every sequence decoding; its context."""
    batch = kernel.decoder(name, max_batch=len(ids))
    seqs = [batch.add(DecodeSequence(p, 64)) for p in ids]
    batch.step()  # prefill
    times = []
    for _ in range(8):
        started = time.perf_counter()
        batch.step()
        times.append(time.perf_counter() - started)
    for seq in seqs:
        batch.cancel(seq)
    batch.step()
    return statistics.median(times), len(seqs[0].prompt) + len(seqs[0].tokens)


def _hf_step(model, ids: list[list[int]]) -> float:
    """As a new user writes it: prefill with a cache, then feed one token at a time."""
    x = torch.tensor(ids)
    mask = torch.ones_like(x)
    times = []
    with torch.inference_mode():
        out = model(input_ids=x, attention_mask=mask, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(8):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            started = time.perf_counter()
            out = model(input_ids=token, attention_mask=mask, use_cache=True,
                        **cache_kwarg(model, cache))
            times.append(time.perf_counter() - started)
            cache = getattr(out, "cache", None) or out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return statistics.median(times)


def _matmul_rate(dtype: torch.dtype, n: int = 1024) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best


def _copy_bandwidth(mb: int = 512) -> float:
    """Bytes moved per second by a large copy (read plus write), best of a few."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * 4 / best


# ---------------------------------------------------------------------- harness


def _r(x: float) -> float:
    return round(float(x), 4)


def _agree(a: list[str], b: list[str]) -> float:
    return _r(sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1))


BENCHMARKS = {"generate": bench_generate, "classify": bench_classify,
              "ttft_training": bench_ttft_training, "decode_step": bench_decode_step}


def run(name: str, sizes: Sizes) -> dict:
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            out = BENCHMARKS[name](sizes)
    except Exception as exc:  # report and go on with the others
        traceback.print_exc(file=sys.stderr)
        out = {"benchmark": name, "error": f"{type(exc).__name__}: {exc}"}
    out.update({"quick": sizes.quick, "seconds": _r(time.perf_counter() - started),
                "torch": torch.__version__, "cpus": os.cpu_count()})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_serving", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models (for the tests)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME")
    parser.add_argument("--threads", type=int, default=2, help="torch threads here (2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    failed = False
    for name in args.only or list(BENCHMARKS):
        line = run(name, sizes)
        failed |= "error" in line
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
