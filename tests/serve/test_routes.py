"""The OpenAI-compatible routes, through the official openai client and raw httpx."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from llmos_lab import events
from llmos_lab.kernel.decode import Sequence, run_to_end
from tests.serve.conftest import in_threads


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def greedy_alone(kernel, prompt: str, n: int) -> str:
    tok = kernel.record("lm").tokenizer
    ids = tok(prompt)["input_ids"][:-1]  # without the end-of-text token
    s = run_to_end(kernel.decoder("lm"), [Sequence(ids, n, stop_ids=frozenset(
        [tok.eos_token_id]))])[0]
    return tok.decode(s.tokens, skip_special_tokens=True)


def test_models_lists_every_model_and_adapter_pair(oai):
    ids = {m.id for m in oai.models.list()}
    assert ids == {"lm", "clf", "clf:lora", "ner"}


def test_completion_is_the_greedy_continuation_with_usage(oai, kernel):
    r = oai.completions.create(model="lm", prompt="the cat sat", max_tokens=7, temperature=0)
    assert r.choices[0].text == greedy_alone(kernel, "the cat sat", 7)
    assert r.choices[0].finish_reason == "length"
    prompt_ids = kernel.record("lm").tokenizer("the cat sat")["input_ids"][:-1]  # [CLS] ...
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt_ids), 7)


def test_streamed_chat_is_openai_chunks_ending_with_done(oai, client):
    stream = oai.chat.completions.create(model="lm", messages=[{"role": "user", "content":
                                         "hi"}], max_tokens=6, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = oai.chat.completions.create(model="lm", messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=6, temperature=0)
    assert text == whole.choices[0].message.content and text
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "lm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "stream": True}) as r:
        lines = [x for x in r.iter_lines() if x]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_stop_strings_cut_the_text_and_say_stop(oai, kernel):
    full = greedy_alone(kernel, "once upon a time", 12)
    stop = full.split()[2]
    r = oai.completions.create(model="lm", prompt="once upon a time", max_tokens=12,
                               temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(stop)]


def test_sampling_with_a_seed_repeats(oai):
    a, b = (oai.completions.create(model="lm", prompt="x y z", max_tokens=8, temperature=1.0,
                                   seed=3).choices[0].text for _ in range(2))
    assert a == b


def test_concurrent_generations_equal_serial_ones(server, oai):
    prompts = [f"prompt number {i} about things" for i in range(8)]
    serial = [oai.completions.create(model="lm", prompt=p, max_tokens=10, temperature=0)
              .choices[0].text for p in prompts]
    got: dict[int, str] = {}
    seen_batches = []
    unsubscribe = events.subscribe("sched.step", lambda e: seen_batches.append(
        server.engine.state().get("lm", {}).get("running", 0)))

    def call(i: int) -> None:
        got[i] = oai.completions.create(model="lm", prompt=prompts[i], max_tokens=10,
                                        temperature=0).choices[0].text

    try:
        in_threads(call, 8)
    finally:
        unsubscribe()
    assert [got[i] for i in range(8)] == serial
    assert max(seen_batches) > 1  # they shared decode steps


def test_classify_with_the_base_and_an_adapter(client, kernel):
    texts = ["good day", "bad day", "meh"]
    base = client.post("/v1/classify", json={"model": "clf", "input": texts}).json()
    tuned = client.post("/v1/classify", json={"model": "clf:lora", "input": texts}).json()
    want = kernel.infer("clf", texts)
    assert [d["label"] for d in base["data"]] == list(want["label"])
    assert base["data"][0]["probabilities"]["pos"] == pytest.approx(want.loc[0, "p_pos"])
    want_tuned = kernel.infer("clf", texts, adapter="lora")
    assert tuned["data"][1]["score"] == pytest.approx(want_tuned.loc[1, "score"])
    assert base["usage"]["prompt_tokens"] > 0


def test_token_classification_gives_one_tag_per_word(client):
    r = client.post("/v1/classify", json={"model": "ner", "input": "fly to new york"}).json()
    assert r["data"][0]["tokens"] == ["fly", "to", "new", "york"]
    assert len(r["data"][0]["tags"]) == 4


def test_classification_requests_in_a_window_share_one_forward_pass(server, kernel):
    calls = []
    unsubscribe = events.subscribe("kernel.infer", lambda e: calls.append(e.payload["n"]))
    server.engine.batch_window = 1.0  # generous, so the test does not depend on speed
    barrier = threading.Barrier(6)
    results = {}

    def call(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            barrier.wait()
            results[i] = c.post("/v1/classify", json={"model": "clf", "input": [f"t{i}"]})

    try:
        in_threads(call, 6)
    finally:
        unsubscribe()
        server.engine.batch_window = 0.005
    assert all(r.status_code == 200 for r in results.values())
    assert len(calls) < 6 and sum(calls) == 6


def test_health_ready_and_metrics(client, server):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    assert client.get("/ready", params={"model": "lm"}).status_code == 200
    client.post("/v1/completions", json={"model": "lm", "prompt": "a", "max_tokens": 2})
    text = client.get("/metrics").text
    for name in ["llmos_requests_total", "llmos_tokens_in_total", "llmos_tokens_out_total",
                 "llmos_queue_depth", "llmos_batch_size", "llmos_time_to_first_token_seconds",
                 "llmos_token_latency_seconds", "llmos_evictions_total", "llmos_fault_ins_total",
                 "llmos_kv_cache_bytes"]:
        assert name in text
    m = server.metrics()
    assert m['llmos_requests_total{route="/v1/completions",status="200"}'] >= 1
    assert m["llmos_tokens_out_total"] >= 2
