"""One kernel with tiny models and one running server for the serving tests."""

from __future__ import annotations

import time

import httpx
import pytest

import llmos_lab as lab

HANG_GUARD = 120.0


def wait_for(condition, what: str) -> None:
    """Wait on a condition; the bound only guards against a hang."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


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
