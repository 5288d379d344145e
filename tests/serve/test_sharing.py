"""One machine, one policy: requests are scheduler steps beside a training task; evicted
models fault back in on the first request; results under eviction churn equal serial ones."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

import llmos_lab as lab
from llmos_lab.tasks import training_task
from tests.serve.conftest import HANG_GUARD, answer, in_threads, same, tiny_kernel, wait_for
from tests.train.test_trainer import keyword_frame, tiny_config


def train_steps(sched) -> int:
    table = sched.timeline()
    return int((table["task"] == "train").sum())


@pytest.fixture
def shared(kernel):
    """A priority scheduler running an endless training task, and a server on it."""
    sched = lab.Scheduler(policy="priority")
    trainer = lab.Trainer(tiny_config(epochs=1000, batch_size=8))
    sched.submit(training_task(trainer, keyword_frame(64, 0), priority=1))
    server = lab.serve(kernel, port=0, scheduler=sched)
    wait_for(lambda: train_steps(sched) >= 2, "training to start")
    try:
        yield server, sched
    finally:
        server.stop()
        sched.cancel("train")
        sched.stop()


def serve_rows(sched) -> list:
    table = sched.timeline()
    return table[table["task"].str.startswith("serve:")]


def test_requests_preempt_training_at_step_boundaries_and_training_goes_on(shared):
    server, sched = shared
    before = train_steps(sched)
    r = httpx.post(server.url + "/v1/completions", timeout=HANG_GUARD, json={
        "model": "lm", "prompt": "hello", "max_tokens": 8, "temperature": 0, "priority": 2})
    assert r.status_code == 200
    tokens = r.json()["usage"]["completion_tokens"]
    # the answer can reach us before the scheduler has recorded the step that produced it
    wait_for(lambda: len(serve_rows(sched)) >= tokens, "the request's last step to be recorded")
    served = serve_rows(sched)
    table = sched.timeline()
    train = table[table["task"] == "train"]
    # while the request had work, no training step ran: its steps are contiguous
    inside = train[(train["start"] > served["start"].min()) & (train["end"] < served["end"].max())]
    assert tokens == 8 and len(served) >= 8 and inside.empty
    wait_for(lambda: train_steps(sched) > before + 2, "training to go on")
    m = sched.metrics().set_index("task")
    assert m.loc["train", "steps"] > before and m.loc["train", "state"] == "ready"
    shares = sched.shares()
    assert set(shares["task"]) >= {"train"}


def test_a_low_priority_request_waits_for_training_under_priority(kernel):
    sched = lab.Scheduler(policy="priority")
    trainer = lab.Trainer(tiny_config(epochs=1, max_steps=6, batch_size=8))
    sched.submit(training_task(trainer, keyword_frame(64, 0), priority=1))
    try:
        with lab.serve(kernel, port=0, scheduler=sched) as server:
            wait_for(lambda: train_steps(sched) >= 1, "training to start")
            r = httpx.post(server.url + "/v1/classify", timeout=HANG_GUARD, json={
                "model": "clf", "input": ["x"], "priority": 0})
            assert r.status_code == 200
            table = sched.timeline()
            first_serve = serve_rows(sched)["start"].min()
            assert first_serve >= table[table["task"] == "train"]["end"].max()
            assert train_steps(sched) == 6
    finally:
        sched.stop()


def test_stride_shares_the_machine_between_serving_and_training(kernel):
    sched = lab.Scheduler(policy="stride")
    trainer = lab.Trainer(tiny_config(epochs=1000, batch_size=8))
    sched.submit(training_task(trainer, keyword_frame(64, 0), priority=1))
    try:
        with lab.serve(kernel, port=0, scheduler=sched) as server:
            wait_for(lambda: train_steps(sched) >= 1, "training to start")
            r = httpx.post(server.url + "/v1/completions", timeout=HANG_GUARD, json={
                "model": "lm", "prompt": "a b c", "max_tokens": 200, "temperature": 1.0})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 100
            table = sched.timeline()
            served = serve_rows(sched)
            lo, hi = served["start"].min(), served["end"].max()
            window = table[(table["start"] >= lo) & (table["start"] < hi)]
            busy = (window["end"].clip(upper=hi) - window["start"]).groupby(
                window["task"].str.startswith("serve:")).sum()
            share = busy[True] / busy.sum()  # serving's measured share of busy time
            assert 0.25 <= share <= 0.75, (share, busy)
    finally:
        sched.cancel("train")
        sched.stop()


def test_an_evicted_model_faults_in_on_the_first_request_and_ready_says_so(kernel, client,
                                                                          server):
    kernel.evict("clf")
    r = client.get("/ready", params={"model": "clf"})
    assert r.status_code == 503 and r.json()["models"]["clf"] == "disk"
    assert client.get("/ready", params={"model": "ghost"}).status_code == 404
    faults = server.metrics().get("llmos_fault_ins_total", 0)
    assert client.post("/v1/classify", json={"model": "clf", "input": "x"}).status_code == 200
    assert client.get("/ready", params={"model": "clf"}).status_code == 200
    assert server.metrics()["llmos_fault_ins_total"] == faults + 1
    assert server.metrics()["llmos_evictions_total"] >= 1


def churn_calls(groups: int) -> list[tuple[str, dict]]:
    """Six kinds of request per group, over three models and an adapter."""
    calls = []
    for i in range(groups):
        calls += [("/v1/classify", {"model": "clf", "input": [f"text {i}", "good"]}),
                  ("/v1/classify", {"model": "clf:lora", "input": f"lora {i}"}),
                  ("/v1/classify", {"model": "ner", "input": f"to paris {i} now"}),
                  ("/v1/completions", {"model": "lm", "prompt": f"story {i}", "max_tokens": 4,
                                       "temperature": 0}),
                  ("/v1/chat/completions", {"model": "lm", "max_tokens": 3, "temperature": 0,
                                            "messages": [{"role": "user", "content": str(i)}]}),
                  ("/v1/completions", {"model": "lm", "prompt": f"seed {i}", "max_tokens": 4,
                                       "temperature": 1.0, "seed": i})]
    return calls


def test_mixed_requests_from_8_threads_under_eviction_churn_equal_serial_ones(tmp_path):
    """48 requests here; tests/trials/serve_churn.py runs 8 threads x 200."""
    sizes = tiny_kernel(tmp_path / "sizes").ps().set_index("name")
    total = sizes["bytes"] + sizes["adapter_bytes"]
    budget = int(total.max() * 1.3)  # one model at a time: every switch evicts
    k = tiny_kernel(tmp_path / "swap", budget=budget)
    calls = churn_calls(8)

    with lab.serve(k, port=0) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        serial = [answer(c.post(route, json=body)) for route, body in calls]
        got: list = [None] * len(calls)
        errors: list = []

        def worker(w: int) -> None:
            with httpx.Client(base_url=server.url, timeout=HANG_GUARD) as wc:
                for i in range(w, len(calls), 8):
                    try:
                        got[i] = answer(wc.post(calls[i][0], json=calls[i][1]))
                    except Exception as exc:  # reported below
                        errors.append(exc)

        in_threads(worker, 8)
        assert not errors, errors[:3]
        assert all(same(a, b) for a, b in zip(got, serial, strict=True))
        assert server.metrics()["llmos_evictions_total"] > 10
        assert k.ps()["faults"].sum() > 10


def test_a_higher_priority_request_preempts_one_in_a_full_batch(kernel):
    """max_batch=1: the urgent request takes the running one's place at the next token; the
    preempted one keeps its KV cache and its answer is unchanged. The scheduler is paused
    while the urgent request queues, so nothing here depends on speed."""
    body = {"model": "lm", "prompt": "a long story", "max_tokens": 60, "temperature": 0,
            "ignore_eos": True}
    sched = lab.Scheduler(policy="priority")
    with lab.serve(kernel, port=0, max_batch=1, scheduler=sched) as server:
        url = server.url + "/v1/completions"
        alone = httpx.post(url, json=body, timeout=HANG_GUARD).json()["choices"][0]["text"]
        finished = []

        def send(name: str, extra: dict) -> None:
            with httpx.stream("POST", url, json={**body, "stream": True, **extra},
                              timeout=HANG_GUARD) as r:
                pieces = []
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        pieces.append(json.loads(line[6:])["choices"][0]["text"])
                finished.append((name, "".join(pieces)))

        def pause_after_first_step(event) -> None:  # on the scheduler's own thread
            if event.payload["task"].startswith("serve:"):
                sched.stop(wait=False)

        unsubscribe = lab.events.subscribe("sched.step", pause_after_first_step)
        low = threading.Thread(target=send, args=("low", {"priority": 1}))
        low.start()
        wait_for(lambda: not sched.running, "the pause after low's first step")
        unsubscribe()
        urgent = threading.Thread(target=send, args=("urgent", {"priority": 5,
                                                                 "max_tokens": 3}))
        urgent.start()
        wait_for(lambda: server.engine.state()["lm"]["queued"] == 1, "the urgent request")
        sched.start()
        low.join(HANG_GUARD)
        urgent.join(HANG_GUARD)
    sched.stop()
    assert [name for name, _ in finished] == ["urgent", "low"]
    assert dict(finished)["low"] == alone
