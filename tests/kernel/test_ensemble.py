"""kernel.ensemble: members' probabilities averaged or their labels counted, checked members."""

from __future__ import annotations

import numpy as np
import pytest

from llmos_lab.errors import ConfigError, TaskError, UnknownNameError

from .test_kernel import TEXTS, kernel, perturb

LABELS = ["neg", "pos"]


@pytest.fixture
def three(tiny_model, tmp_path):
    k = kernel(swap_dir=tmp_path / "swap")
    k.load("tiny-bert", name="a", task="sequence-classification", labels=LABELS)
    k.load("tiny-bert", name="b", task="sequence-classification", labels=LABELS[::-1])
    k.add_adapter("a", "x", {"r": 4})
    perturb(k, "a", "x", 1)
    return k


def columns(frame):
    return frame[[f"p_{x}" for x in LABELS]].to_numpy()


def test_mean_averages_member_probabilities_by_label_name(three):
    three.ensemble("avg", ["a", "b", "a:x"])
    members = [three.infer("a", TEXTS), three.infer("b", TEXTS),
               three.infer("a", TEXTS, adapter="x")]
    out = three.infer("avg", TEXTS)
    expected = np.mean([columns(m) for m in members], axis=0)
    np.testing.assert_allclose(columns(out), expected, rtol=1e-6)
    assert list(out["label"]) == [LABELS[i] for i in expected.argmax(axis=1)]
    assert len(three.ps()) == 2  # an ensemble holds no weights of its own


def test_vote_counts_labels_and_breaks_ties_by_mean(three):
    three.ensemble("vote", ["a", "b", "a:x"], how="vote")
    members = [three.infer("a", TEXTS), three.infer("b", TEXTS),
               three.infer("a", TEXTS, adapter="x")]
    out = three.infer("vote", TEXTS)
    for row, *answers in zip(out.itertuples(), *(m["label"] for m in members), strict=True):
        counts = {x: answers.count(x) for x in LABELS}
        assert row.label == max(counts, key=counts.get)
        assert row.score == pytest.approx(counts[row.label] / 3)


def test_bad_ensembles_name_what_is_wrong(three, tmp_path):
    with pytest.raises(ConfigError, match="how"):
        three.ensemble("e", ["a", "b"], how="median")
    with pytest.raises(ConfigError, match="members"):
        three.ensemble("e", ["a"])
    with pytest.raises(ConfigError, match="adapter of 'a'"):
        three.ensemble("e", ["a", "a:nope"])
    with pytest.raises(UnknownNameError, match="ghost"):
        three.ensemble("e", ["a", "ghost"])
    with pytest.raises(ConfigError, match="name"):
        three.ensemble("a", ["a", "b"])
    three.load("tiny-bert", name="c", task="sequence-classification", labels=["x", "y"])
    with pytest.raises(ConfigError, match="labels"):
        three.ensemble("e", ["a", "c"])
    three.load("tiny-bert", name="t", task="token-classification", labels=["O", "B-X"])
    with pytest.raises(TaskError, match="token-classification"):
        three.ensemble("e", ["a", "t"])
    assert three.ensembles == {}


def test_an_ensemble_of_adapters_survives_eviction_and_unloads(three):
    three.ensemble("e", ["a", "a:x"])
    first = three.infer("e", TEXTS)
    three.evict("a", to="disk")
    np.testing.assert_allclose(columns(three.infer("e", TEXTS)), columns(first), rtol=1e-5)
    three.unload("e")
    with pytest.raises(UnknownNameError):
        three.infer("e", TEXTS)
