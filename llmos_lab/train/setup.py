"""What a Trainer starts from: the tokenizer and model a TrainConfig asks for.

One place decides the starting weights (a shipped or local model, a saved result to continue
from, a masked-LM head for continued pre-training), the student's layers, the vocabulary
extension, the exact first-token fast path and the PEFT adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from .. import assets, inference, loading, packed
from ..errors import ConfigError
from ..model_task import ModelTask
from . import continual, distill, mlm, peft_methods, vocab


def model_source(cfg) -> Any:
    """The folder the run starts from (``init_from`` wins over ``model``)."""
    return cfg.init_from if cfg.init_from is not None else assets.model_path(cfg.model)


def load(cfg, path, labels: Sequence[Any]) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, model) with a head for ``labels`` (none for masked-lm)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    cls = loading.model_class(cfg.task)
    if cfg.init_from is not None:
        model = loading.from_pretrained(cls, path)  # steps() checked its task already
        if cfg.task != ModelTask.MASKED_LM:
            old = [model.config.id2label[i] for i in range(model.config.num_labels)]
            continual.grow_head(model, old, labels)
    elif cfg.task == ModelTask.MASKED_LM:
        model = cls.from_pretrained(path)
        mlm.keep_pooler(model, path)
    else:
        model = loading.from_pretrained(
            cls, path, num_labels=len(labels),
            id2label={i: str(label) for i, label in enumerate(labels)},
            label2id={str(label): i for i, label in enumerate(labels)})
    return tokenizer, model


def new_words(cfg, tokenizer, train_df: pd.DataFrame) -> list[str]:
    """Training-set words the tokenizer cannot spell (``extend_vocab``): from the tokens
    column, or the text split into words as the tokenizer's pre-tokenizer splits it."""
    if cfg.task == ModelTask.TOKEN_CLASSIFICATION:
        words = train_df[cfg.tokens_column]
    else:
        split = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
        if split is None:
            raise ConfigError("extend_vocab", cfg.extend_vocab, f"0 for {cfg.model!r}: its "
                              f"tokenizer has no word splitter to find unknown words with")
        normalize = tokenizer.backend_tokenizer.normalizer
        words = [[w for w, _ in split.pre_tokenize_str(
            normalize.normalize_str(t) if normalize else t)] for t in train_df[cfg.text_column]]
    return vocab.unknown_words(tokenizer, words, limit=cfg.extend_vocab)


def build(cfg, path, labels: Sequence[Any], train_df: pd.DataFrame, device: torch.device):
    """(tokenizer, model on ``device``, added words) ready to train."""
    with loading.quiet(), loading.source_errors(f"model {cfg.model!r} ({path})"):
        # quiet: "newly initialized classifier" is the point here
        tokenizer, model = load(cfg, path, labels)
        inference.check_max_length(
            cfg.max_length, tokenizer,
            getattr(model.config, "max_position_embeddings", None), cfg.model)
        if cfg.layers is not None:
            distill.keep_layers(model, cfg.layers, repr(cfg.model))
        added = new_words(cfg, tokenizer, train_df) if cfg.extend_vocab else []
        new_ids = vocab.extend(tokenizer, model, added)
        # the head reads [CLS] only: compute the last layer for it alone (same numbers)
        packed.first_token_only(model)
        if cfg.method in ("lora", "ia3"):
            model = peft_methods.wrap(model, cfg, new_ids)
        model.to(device)
    return tokenizer, model, added
