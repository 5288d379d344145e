"""Prompting: label likelihoods from a causal LM (the kernel's loglikelihood call), few-shot
examples, calibration and bad input, on the tiny decoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import llmos_lab as lab
from llmos_lab import prompting
from llmos_lab.errors import ConfigError, TaskError

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def kernel(tiny_model):
    from llmos_lab import assets

    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    k.load(assets.tiny_causal_lm_path(), "lm")
    k.load("tiny-bert", "enc", task="sequence-classification", labels=LABELS)
    return k


@pytest.fixture(scope="module")
def train():
    rows = [(f"text number {i} is {'good' if i % 2 else 'bad'}", LABELS[i % 2])
            for i in range(20)]
    return pd.DataFrame(rows, columns=["text", "label"])


def direct(kernel, prefix, context, continuation) -> float:
    """The same log-likelihood computed on the whole sequence at once, no cache."""
    rec = kernel.record("lm")
    tok = rec.tokenizer
    head = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(rec.model(input_ids=ids).logits.float(), dim=-1)[0]
    start = len(head) + len(ctx)
    return float(sum(logp[start + i - 1, t] for i, t in enumerate(cont)))


@pytest.mark.parametrize("batch_size", [3, 64])
@pytest.mark.parametrize("prefix", ["", "an instruction with examples\n\n"])
def test_loglikelihood_with_a_shared_prefix_equals_the_whole_sequence(kernel, prefix,
                                                                       batch_size):
    contexts = ["a short one", "a much longer context than the other one here", "mid length"]
    conts = [" yes", " no way", " maybe not today"]
    scores = kernel.loglikelihood("lm", contexts, conts, prefix=prefix, batch_size=batch_size)
    assert scores.shape == (3, 3)
    for i, ctx in enumerate(contexts):
        for j, cont in enumerate(conts):
            assert scores[i, j] == pytest.approx(direct(kernel, prefix, ctx, cont), abs=1e-4)


def test_classify_gives_one_label_and_normalised_probabilities(kernel, train):
    texts = ["this is good", "this is bad", "neither"]
    out = prompting.classify(kernel, "lm", texts, LABELS, examples=4, train=train)
    assert list(out.columns) == ["label", "score", "p_negative", "p_positive"]
    np.testing.assert_allclose(out[["p_negative", "p_positive"]].sum(axis=1), 1, rtol=1e-6)
    assert set(out["label"]) <= set(LABELS)
    calibrated = prompting.classify(kernel, "lm", texts, LABELS, examples=4, train=train,
                                    calibrate=True)
    assert not np.allclose(calibrated["p_positive"], out["p_positive"])
    report = prompting.evaluate(kernel, "lm", train.head(6), LABELS, examples=0)
    assert 0 <= report.accuracy <= 1 and list(report.confusion.index) == LABELS


def test_examples_are_balanced_and_shuffled(train):
    picked = prompting.pick_examples(train, 6, LABELS, seed=1)
    assert picked["label"].value_counts().to_dict() == {"negative": 3, "positive": 3}
    assert set(picked["text"]) <= set(train["text"])
    assert list(picked["label"]) != sorted(picked["label"])  # not grouped by label
    again = prompting.pick_examples(train, 6, LABELS, seed=1)
    pd.testing.assert_frame_equal(picked, again)


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"labels": ["negative", " "]}, ConfigError, "labels"),
    ({"labels": ["negative"]}, ConfigError, "labels"),
    ({"examples": 3}, ConfigError, "train"),
    ({"examples": -1}, ConfigError, "examples"),
    ({"model": "enc"}, TaskError, "causal-lm"),
])
def test_bad_prompting_input_names_the_parameter(kernel, kw, error, match):
    args = {"model": "lm", "labels": LABELS, **kw}
    with pytest.raises(error, match=match):
        prompting.classify(kernel, args.pop("model"), ["a text"], args.pop("labels"), **args)


def test_labels_that_tokenize_to_nothing_are_refused(kernel):
    with pytest.raises(ConfigError, match="tokenize"):
        kernel.loglikelihood("lm", ["a text"], ["", " yes"])
