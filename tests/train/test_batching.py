import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import llmos_lab as lab
from llmos_lab.train import batching
from llmos_lab.train.batching import length_grouped, micro_batch_for, state_bytes, step_bytes


def test_length_grouping_pads_less(tiny_model):
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 60, 640)]
    ids = AutoTokenizer.from_pretrained(tiny_model)(texts, truncation=True, max_length=64)
    lengths = np.array([len(x) for x in ids["input_ids"]])

    def padded_tokens(group: bool) -> int:
        batches = length_grouped(lengths, 16, np.random.default_rng(0), group)
        assert sorted(np.concatenate(batches)) == list(range(len(texts)))  # a permutation
        assert max(len(b) for b in batches) == 16
        return sum(len(b) * lengths[b].max() for b in batches)

    assert padded_tokens(True) < 0.7 * padded_tokens(False)


@pytest.fixture
def model(tiny_model):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)


def test_step_memory_is_measured_and_grows_with_batch_and_length(model):
    cpu = torch.device("cpu")
    one, two, four = (step_bytes(model, 32, b, cpu) for b in (1, 2, 4))
    assert 0 < one < two < four
    assert four - two == pytest.approx(2 * (two - one), rel=0.05)  # linear in the batch
    assert step_bytes(model, 64, 2, cpu) > 1.8 * two  # and at least linear in the length
    assert all(p.grad is None for p in model.parameters())  # measuring leaves no trace


def test_measuring_does_not_move_the_random_stream(model):
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    step_bytes(model, 16, 2, torch.device("cpu"))  # dropout draws happen inside
    torch.testing.assert_close(torch.rand(3), expected)


def test_state_counts_gradients_and_adam_moments_for_trainable_weights_only(model):
    params = sum(p.numel() * 4 for p in model.parameters())
    assert state_bytes(model) == 4 * params  # weight, gradient, two moments
    for p in model.bert.parameters():
        p.requires_grad = False
    head = sum(p.numel() * 4 for p in model.classifier.parameters())
    assert state_bytes(model) == params + 3 * head


def test_micro_batch_is_the_largest_that_fits(model):
    cpu = torch.device("cpu")
    fixed = state_bytes(model)
    per = step_bytes(model, 64, 2, cpu) - step_bytes(model, 64, 1, cpu)
    for want in (1, 3, 7, 12):
        grant = fixed + step_bytes(model, 64, want, cpu) + per // 2
        assert micro_batch_for(model, 64, grant, 16) == want
    assert micro_batch_for(model, 64, 10**12, 16) == 16  # capped by the batch
    assert micro_batch_for(model, 64, 1, 16) == 1  # never below one example


def test_measurements_are_cached_per_model_length_device_and_precision(model, monkeypatch):
    batching._cache.clear()
    calls = []
    real = batching.step_bytes
    monkeypatch.setattr(batching, "step_bytes", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    grant = state_bytes(model) + real(model, 48, 5, torch.device("cpu"))
    first = micro_batch_for(model, 48, grant, 16, key="tiny|full")
    n = len(calls)
    assert first == 5 and n >= 2
    assert micro_batch_for(model, 48, grant, 16, key="tiny|full") == first
    assert len(calls) == n  # nothing measured again
    micro_batch_for(model, 48, grant, 16, key="tiny|full", precision="bf16")
    assert len(calls) > n  # another precision is another measurement
    stored = json.loads((lab.assets.cache_dir() / "micro_batches.json").read_text())
    assert "tiny|full|L=48|cpu|fp32" in stored and "tiny|full|L=48|cpu|bf16" in stored
    batching._cache.clear()  # a new process reads the file
    calls.clear()
    assert micro_batch_for(model, 48, grant, 16, key="tiny|full") == first
    assert calls == []
