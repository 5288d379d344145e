"""Bearer keys, per-key models, tenants' token rates, and where the server may listen."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

import llmos_lab as lab
from llmos_lab.errors import ConfigError
from llmos_lab.serve.auth import Access

KEYS = {
    "key-lab-a-0001": {"tenant": "lab-a", "priority": 2, "models": ["lm", "clf"]},
    "key-lab-b-0002": {"tenant": "lab-b", "priority": 1, "models": ["clf:lora"],
                       "tokens_per_minute": 10},
}


@pytest.fixture(scope="module")
def keyed(kernel):
    with lab.serve(kernel, port=0, api_keys=KEYS) as s:
        yield s


def post(server, key, body, route="/v1/classify"):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + route, json=body, headers=headers, timeout=120)


def test_missing_or_wrong_keys_are_401(keyed):
    for key in [None, "key-lab-a-0002", "wrong"]:
        r = post(keyed, key, {"model": "clf", "input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(keyed.url + "/v1/models", headers={"authorization": "Basic abc"})
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_a_model_the_key_may_not_use_is_403(keyed):
    assert post(keyed, "key-lab-a-0001", {"model": "clf", "input": "x"}).status_code == 200
    assert post(keyed, "key-lab-a-0001", {"model": "clf:lora", "input": "x"}).status_code == 200
    r = post(keyed, "key-lab-b-0002", {"model": "clf", "input": "x"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
    r = post(keyed, "key-lab-a-0001", {"model": "ner", "input": "x"})
    assert r.status_code == 403


def test_a_priority_above_the_keys_own_is_403(keyed):
    ok = post(keyed, "key-lab-a-0001", {"model": "clf", "input": "x", "priority": 2})
    assert ok.status_code == 200
    r = post(keyed, "key-lab-a-0001", {"model": "clf", "input": "x", "priority": 3})
    assert r.status_code == 403 and r.json()["error"]["param"] == "priority"


def test_a_tenant_over_its_rate_gets_429_with_retry_after(keyed):
    body = {"model": "clf:lora", "input": ["some words to count here"]}
    statuses = [post(keyed, "key-lab-b-0002", body) for _ in range(4)]
    assert statuses[0].status_code == 200
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert 1 <= int(limited[0].headers["retry-after"]) <= 60
    assert limited[0].json()["error"]["type"] == "rate_limit_error"
    # another tenant is not affected
    assert post(keyed, "key-lab-a-0001", {"model": "clf", "input": "x"}).status_code == 200


def test_keys_never_appear_in_errors_or_logs(keyed, caplog):
    with caplog.at_level(logging.DEBUG):
        r = post(keyed, "key-lab-a-0001-wrong", {"model": "clf", "input": "x"})
        post(keyed, "key-lab-b-0002", {"model": "clf", "input": "x"})
    assert "key-lab" not in r.text
    assert "key-lab" not in caplog.text
    with pytest.raises(ConfigError) as info:
        Access({"short": {}})
    assert "short" not in str(info.value)


def test_keys_are_validated_naming_the_entry():
    with pytest.raises(ConfigError, match=r"api_keys\[#0\]\.prio"):
        Access({"key-abcdefgh": {"prio": 1}})
    with pytest.raises(ConfigError, match="tokens_per_minute"):
        Access({"key-abcdefgh": {"tokens_per_minute": 0}})
    with pytest.raises(ConfigError, match="models"):
        Access({"key-abcdefgh": {"models": "lm"}})


def test_without_keys_only_loopback(kernel):
    with pytest.raises(ConfigError, match="api_keys"):
        lab.serve(kernel, port=0, host="0.0.0.0")
    with lab.serve(kernel, port=0, host="0.0.0.0", api_keys=KEYS) as s:
        assert post(s, "key-lab-a-0001", {"model": "clf", "input": "x"}).status_code == 200


def test_a_port_in_use_is_a_clear_error(kernel, server):
    with pytest.raises(ConfigError, match="port"):
        lab.serve(kernel, port=server.port)
