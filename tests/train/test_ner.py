"""Token classification: sub-token alignment, word-level tags, entity reports, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

import llmos_lab as lab
from llmos_lab.errors import ColumnTypeError, DataError, UnseenLabelError
from llmos_lab.train import ner

FIRST = ["alice", "bob", "carol", "dave", "erin"]
LAST = ["smith", "jones", "brown", "wilson", "taylor"]
FILLER = ["met", "the", "team", "today", "and", "saw", "a", "film", "with", "later"]


def people(n: int, seed: int) -> pd.DataFrame:
    """Sentences with a two-word name (B-PER I-PER) among filler words (O)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(FILLER, 5)]
        tags = ["O"] * 5
        at = int(rng.integers(6))
        words[at:at] = [str(rng.choice(FIRST)), str(rng.choice(LAST))]
        tags[at:at] = ["B-PER", "I-PER"]
        rows.append((words, tags))
    return pd.DataFrame(rows, columns=["tokens", "tags"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def config(**kw) -> lab.TrainConfig:
    base = dict(model="tiny-bert", task="token-classification", epochs=4, lr=1e-2,
                batch_size=16, warmup=0.0, device="cpu")
    return lab.TrainConfig(**{**base, **kw})


def test_first_subtoken_alignment_and_all_subtokens(tokenizer):
    words = [["unbelievably", "ok"]]
    pieces = tokenizer.tokenize("unbelievably")
    assert len(pieces) > 1  # the word really splits
    enc = ner.encode(tokenizer, words, 32)
    index = {"O": 0, "B-X": 1, "I-X": 2}
    first = ner.align(enc, [["B-X", "O"]], index)[0]
    assert first == [-100, 1] + [-100] * (len(pieces) - 1) + [0, -100]
    every = ner.align(enc, [["B-X", "O"]], index, all_subtokens=True)[0]
    assert every == [-100, 1] + [2] * (len(pieces) - 1) + [0, -100]
    padded = ner.pad([[1, 2], [3]])
    assert padded.tolist() == [[1, 2], [3, -100]]


def test_token_classifier_learns_names_and_reports_entities(tiny_model):
    train, test = people(200, 0), people(60, 1)
    trainer = lab.Trainer(config()).fit(train, test, progress=False)
    assert trainer.labels_ == ["B-PER", "I-PER", "O"]
    report = trainer.evaluate(test)
    assert report.task == "token-classification"
    assert report.accuracy > 0.9 and report.extras["micro_f1"] > 0.8
    assert list(report.table.index[:1]) == ["PER"]
    assert report.confusion.shape == (3, 3)
    assert "eval_micro_f1" in trainer.history_.columns
    pred = trainer.predict(test)
    assert [len(t) for t in pred["tags"]] == [len(t) for t in test["tokens"]]
    assert trainer.predict([["bob", "smith", "met", "erin"]])["tags"][0][:2] == ["B-PER",
                                                                                  "I-PER"]


def test_all_subtokens_option_trains_too(tiny_model):
    trainer = lab.Trainer(config(max_steps=3, label_all_subtokens=True))
    assert len(list(trainer.steps(people(64, 2)))) == 3


def test_bad_token_frames_name_the_row(tiny_model):
    bad = people(10, 3)
    bad.at[4, "tags"] = ["O"]
    with pytest.raises(DataError, match="row 4: 7 tokens but 1 tags"):
        lab.Trainer(config()).fit(bad)
    worse = people(10, 3)
    worse.at[2, "tokens"] = "not a list"
    with pytest.raises(ColumnTypeError, match="row 2"):
        lab.Trainer(config()).fit(worse)


def test_unseen_tags_at_evaluation(tiny_model):
    trainer = lab.Trainer(config(max_steps=2)).fit(people(32, 4), progress=False)
    other = people(8, 5)
    other.at[3, "tags"] = ["B-LOC", *other.at[3, "tags"][1:]]
    with pytest.raises(UnseenLabelError, match="B-LOC") as err:
        trainer.evaluate(other)
    assert err.value.rows == [3]


def test_unknown_token_rate_sees_chinese_characters(tokenizer):
    msra = lab.datasets.split(lab.datasets.load("msra"), "test").head(200)
    assert ner.unknown_rate(tokenizer, msra["tokens"]) > 0.3
    assert ner.unknown_rate(tokenizer, [["hello", "world"]]) == 0.0
