"""Extending a tokenizer with the training set's unknown words, and what it buys a NER model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

import llmos_lab as lab
from llmos_lab.errors import ConfigError
from llmos_lab.train import vocab


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def unknown_chars(tokenizer):
    """CJK characters MiniLM's vocabulary maps to [UNK]."""
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    found = [c for c, x in zip(chars, ids, strict=True) if x == [tokenizer.unk_token_id]]
    assert len(found) >= 40
    return found


def sentences(chars: list[str], n: int, seed: int) -> pd.DataFrame:
    """One name character (B-PER) among six filler characters (O): all of them unknown."""
    names, filler = chars[:10], chars[10:40]
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(filler, 6)]
        tags = ["O"] * 6
        at = int(rng.integers(7))
        words.insert(at, str(rng.choice(names)))
        tags.insert(at, "B-PER")
        rows.append((words, tags))
    return pd.DataFrame(rows, columns=["tokens", "tags"])


def test_unknown_words_most_frequent_first_with_a_floor(tokenizer, unknown_chars):
    a, b, c = unknown_chars[:3]
    words = [["hello", a, b, a], [a, b, c, "world"]]
    assert vocab.unknown_words(tokenizer, words) == [a, b]  # c is seen once
    assert vocab.unknown_words(tokenizer, words, min_count=1) == [a, b, c]
    assert vocab.unknown_words(tokenizer, words, min_count=1, limit=1) == [a]
    assert vocab.unknown_rate(tokenizer, words) == pytest.approx(6 / 8)


def test_extend_gives_each_word_its_own_token_and_embedding_row(tiny_model, tokenizer,
                                                                unknown_chars):
    from transformers import AutoModelForTokenClassification

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model, num_labels=2)
    rows = model.get_input_embeddings().weight.shape[0]
    new_ids = vocab.extend(tok, model, unknown_chars[:5])
    assert new_ids == list(range(len(tokenizer), len(tokenizer) + 5))
    assert model.get_input_embeddings().weight.shape[0] == rows + 5
    enc = tok([unknown_chars[:5]], is_split_into_words=True, add_special_tokens=False)
    assert enc["input_ids"][0] == new_ids
    assert vocab.unknown_rate(tok, [unknown_chars[:5]]) == 0.0


def ner_config(**kw) -> lab.TrainConfig:
    base = dict(model="tiny-bert", task="token-classification", epochs=6, lr=1e-2,
                batch_size=16, warmup=0.0, device="cpu", max_length=16)
    return lab.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_extending_the_vocabulary_lets_a_model_learn_unknown_characters(
        tiny_model, unknown_chars, method):
    train, test = sentences(unknown_chars, 240, 0), sentences(unknown_chars, 60, 1)
    kw = dict(method=method, lora_r=4, lr=2e-2) if method == "lora" else {}
    plain = lab.Trainer(ner_config(**kw)).fit(train, progress=False)
    extended = lab.Trainer(ner_config(extend_vocab=100, **kw)).fit(train, progress=False)
    assert extended.added_tokens_[:1] and set(extended.added_tokens_) == set(unknown_chars[:40])
    before, after = plain.evaluate(test).macro_f1, extended.evaluate(test).macro_f1
    assert before < 0.5 < 0.9 < after  # [UNK]s all look alike; own rows tell names apart


def test_extension_is_rebuilt_identically_on_resume(tiny_model, unknown_chars, tmp_path):
    train = sentences(unknown_chars, 64, 0)
    cfg = ner_config(extend_vocab=100, max_steps=6, checkpoint_every=3,
                     checkpoint_dir=str(tmp_path / "ckpt"))
    whole = lab.Trainer(cfg).fit(train, progress=False)
    gen = lab.Trainer(cfg).steps(train)
    for _ in range(3):
        next(gen)
    gen.close()
    resumed = lab.Trainer.resume(tmp_path / "ckpt", train, progress=False)
    assert resumed.added_tokens_ == whole.added_tokens_
    for (name, a), (_, b) in zip(whole.model_.named_parameters(),
                                 resumed.model_.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_extension_options_are_checked():
    with pytest.raises(ConfigError, match="extend_vocab"):
        lab.TrainConfig(task="masked-lm", extend_vocab=10)  # it predicts tokens it has
    with pytest.raises(ConfigError, match="ia3"):
        lab.TrainConfig(task="token-classification", method="ia3", extend_vocab=10)
    with pytest.raises(ConfigError, match="extend_vocab"):
        lab.TrainConfig(task="token-classification", extend_vocab=-1)
