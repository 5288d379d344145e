"""The shipped models behind the server: SmolLM2-Instruct streams a chat answer through the
openai client, and MiniLM classifies with a LoRA adapter chosen by the model field."""

from __future__ import annotations

import httpx
import openai
import pytest

import llmos_lab as lab


@pytest.mark.slow
def test_openai_client_streams_smollm2_chat_and_classifies_with_a_minilm_lora():
    k = lab.ModelKernel(device="cpu", memory_budget="2GiB", precision="fp32")
    k.load("smollm2", name="smollm2")
    k.load("minilm", name="minilm", task="sequence-classification",
           labels=["negative", "neutral", "positive"])
    k.add_adapter("minilm", "tweets-lora", {"r": 8, "init_lora_weights": False})
    with lab.serve(k, port=0) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        chunks = list(client.chat.completions.create(
            model="smollm2", messages=question, max_tokens=12, temperature=0, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" in text
        whole = client.chat.completions.create(model="smollm2", messages=question,
                                               max_tokens=12, temperature=0)
        assert whole.choices[0].message.content == text
        texts = ["I love this airline", "worst flight ever"]
        r = httpx.post(server.url + "/v1/classify", timeout=120,
                       json={"model": "minilm:tweets-lora", "input": texts}).json()
        want = k.infer("minilm", texts, adapter="tweets-lora")
        assert [d["label"] for d in r["data"]] == list(want["label"])
        assert r["data"][0]["score"] == pytest.approx(float(want.loc[0, "score"]), rel=1e-5)
