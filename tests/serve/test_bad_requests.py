"""Bad input: each a 4xx in OpenAI's error shape naming the field, never a 500; a client that
leaves mid-stream takes its sequence out of the batch."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

import llmos_lab as lab
from tests.serve.conftest import wait_for

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("route,body,status,param", [
    (COMP, b"{not json", 400, None),
    (COMP, b"[1, 2]", 400, None),
    (COMP, {"prompt": "x"}, 400, "model"),
    (COMP, {"model": "lm"}, 400, "prompt"),
    (COMP, {"model": "lm", "prompt": 5}, 400, "prompt"),
    (COMP, {"model": "lm", "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    (COMP, {"model": "lm", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    (COMP, {"model": "lm", "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    (COMP, {"model": "lm", "prompt": "x", "max_tokens": 10_000}, 400, "max_tokens"),
    (COMP, {"model": "lm", "prompt": "word " * 400}, 400, "prompt"),
    (COMP, {"model": "lm", "prompt": "x", "temperature": -1}, 400, "temperature"),
    (COMP, {"model": "lm", "prompt": "x", "n": 2}, 400, "n"),
    (COMP, {"model": "lm", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (COMP, {"model": "lm", "prompt": "x", "max_tokenz": 3}, 400, "max_tokenz"),
    (COMP, {"model": "nope", "prompt": "x"}, 404, "model"),
    (COMP, {"model": "clf", "prompt": "x"}, 400, "model"),
    (COMP, {"model": "lm:ghost", "prompt": "x"}, 404, "model"),
    (CHAT, {"model": "lm", "messages": []}, 400, "messages"),
    (CHAT, {"model": "lm", "messages": [{"role": "user", "content": 7}]}, 400,
     "messages.0.content"),
    (CHAT, {"model": "lm", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages.0.role"),
    (CHAT, {"model": "lm", "messages": "hi"}, 400, "messages"),
    (CHAT, {"model": "lm", "messages": HI, "stream": "yes"}, 400, "stream"),
    ("/v1/classify", {"model": "lm", "input": ["x"]}, 400, "model"),
    ("/v1/classify", {"model": "clf", "input": []}, 400, "input"),
    ("/v1/classify", {"model": "clf", "input": [1, 2]}, 400, "input.0"),
    ("/v1/classify", {"model": "clf:ghost", "input": ["x"]}, 404, "model"),
])
def test_bad_requests_are_4xx_naming_the_field(client, route, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(route, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]


def test_the_openai_client_raises_its_own_typed_errors(server):
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        oai.completions.create(model="nope", prompt="x")
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
        oai.chat.completions.create(model="lm", messages=HI, n=2)


def test_a_body_over_the_limit_is_413(kernel):
    with lab.serve(kernel, port=0, max_body=1000) as s:
        r = httpx.post(s.url + COMP, json={"model": "lm", "prompt": "x" * 2000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunks():  # no content-length: the limit holds while reading
            yield b'{"model": "lm", "prompt": "'
            for _ in range(40):
                yield b"x" * 100
            yield b'"}'

        r = httpx.post(s.url + COMP, content=chunks())
        assert r.status_code == 413


def test_unknown_routes_and_methods_keep_the_error_shape(client):
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    r = client.get(COMP)
    assert r.status_code == 405 and "error" in r.json()


def test_a_client_that_leaves_mid_stream_frees_its_sequence(server):
    def running() -> int:
        return server.engine.state().get("lm", {}).get("running", 0)

    with httpx.Client(base_url=server.url, timeout=120) as c, c.stream(
            "POST", COMP, json={"model": "lm", "prompt": "go on", "max_tokens": 200,
                                "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # it is in the batch and producing
    # the connection is closed; the sequence leaves at the next step
    wait_for(lambda: running() == 0, "the sequence to leave the batch")
    assert server.engine.state()["lm"]["cache_bytes"] == 0
    ok = httpx.post(server.url + COMP, json={"model": "lm", "prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200
