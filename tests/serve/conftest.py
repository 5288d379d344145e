"""One kernel with tiny models and one running server for the serving tests."""

from __future__ import annotations

import threading

import httpx
import pytest

import llmos_lab as lab
from tests.test_widgets import wait_until

HANG_GUARD = 120.0


def wait_for(condition, what: str) -> None:
    """Wait on a condition (the project's poller); the bound only guards against a hang."""
    assert wait_until(condition, HANG_GUARD), f"gave up waiting for {what}"


def in_threads(call, n: int) -> None:
    """Run ``call(0)`` ... ``call(n - 1)`` on n threads at once and wait for them all."""
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD)


def answer(r: httpx.Response):
    """What a request answered, comparable across runs: a text, or rows without the
    per-class probabilities."""
    body = r.json()
    if r.status_code != 200:
        raise AssertionError(f"{r.status_code}: {body}")
    if "choices" in body:
        c = body["choices"][0]
        return c.get("text", c.get("message", {}).get("content"))
    return [{k: v for k, v in d.items() if k != "probabilities"} for d in body["data"]]


def same(a, b) -> bool:
    """Texts, labels and tags exactly; scores to 1e-5 (a classification batch pads to its
    longest text, which moves the last bits of a probability, as it does in kernel.infer)."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(x.keys() == y.keys() and all(
            abs(x[k] - y[k]) <= 1e-5 if k == "score" else x[k] == y[k] for k in x)
            for x, y in zip(a, b, strict=True))
    return a == b


def tiny_kernel(swap_dir, budget="1GiB") -> lab.ModelKernel:
    k = lab.ModelKernel(device="cpu", memory_budget=budget, precision="fp32", swap_dir=swap_dir)
    k.load("tiny-llama", name="lm")
    k.load("tiny-bert", name="clf", task="sequence-classification", labels=["neg", "neu", "pos"])
    k.load("tiny-bert", name="ner", task="token-classification", labels=["O", "B-LOC", "I-LOC"])
    k.add_adapter("clf", "lora", {"r": 4, "init_lora_weights": False})
    return k


@pytest.fixture(scope="module")
def kernel(tiny_model, tmp_path_factory):
    return tiny_kernel(tmp_path_factory.mktemp("swap"))


@pytest.fixture(scope="module")
def server(kernel):
    with lab.serve(kernel, port=0) as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
