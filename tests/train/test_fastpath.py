"""The first-token shortcut gives the same logits and gradients as the full last layer."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from llmos_lab import inference
from llmos_lab import packed as fastpath


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_same_logits_and_gradients(tiny_model, attn):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["a short one", "a much longer text with many more words in it than the first",
             "mid sized text here"]
    batch = inference.collate(tokenizer(texts)["input_ids"], 0, torch.device("cpu"))
    results = []
    for patch in (False, True):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            tiny_model, num_labels=3, attn_implementation=attn)
        model.eval()  # no dropout: the two must agree exactly
        assert fastpath.first_token_only(model) if patch else True
        out = model(**batch, labels=torch.tensor([0, 1, 2]))
        out.loss.backward()
        results.append((out.logits.detach(),
                        {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}))
    (logits, grads), (fast_logits, fast_grads) = results
    torch.testing.assert_close(fast_logits, logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == fast_grads.keys()
    for name in grads:
        torch.testing.assert_close(fast_grads[name], grads[name], rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_other_models_are_left_alone(tiny_model):
    model = AutoModelForTokenClassification.from_pretrained(tiny_model, num_labels=3)
    assert not fastpath.first_token_only(model)
    assert "forward" not in vars(model.bert.encoder.layer[-1])
