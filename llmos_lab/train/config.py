"""Training configuration: one validated dataclass, notebook parameters map onto it.

Every field carries help text (``TrainConfig.help()`` lists them); ``__post_init__`` rejects a
bad value with a :class:`~llmos_lab.errors.ConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..devices import check_device
from ..errors import ConfigError, check_keywords, did_you_mean

TASKS = ("sequence-classification", "token-classification")
METHODS = ("full", "lora", "ia3")
PRECISIONS = ("fp32", "bf16", "fp16")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything a training run needs; notebook parameters map onto it one to one."""

    model: str = _help("shipped model name ('minilm', 'tiny-bert'), local folder or hub id",
                       "minilm")
    task: str = _help(f"one of {TASKS}", "sequence-classification")
    method: str = _help(f"one of {METHODS}: every weight, or LoRA / IA3 adapters (PEFT) plus "
                        f"the classification head", "full")
    lora_r: int = _help("LoRA rank (method='lora')", 8)
    lora_alpha: float = _help("LoRA scaling numerator: updates scale by lora_alpha / lora_r", 16.0)
    lora_dropout: float = _help("dropout on the LoRA path", 0.1)
    lora_targets: list[str] | None = field(default=None, metadata={
        "help": "module names that get adapters; None: PEFT's default for the architecture"})
    text_column: str = _help("DataFrame column holding the input text", "text")
    label_column: str = _help("DataFrame column holding the label", "label")
    tokens_column: str = _help("token classification: column of word lists", "tokens")
    tags_column: str = _help("token classification: column of tag lists (IOB2)", "tags")
    label_all_subtokens: bool = _help(
        "token classification: label every sub-token of a word (B- becomes I- after the "
        "first) instead of the first only", False)
    extend_vocab: int = _help(
        "token classification: add up to N training-set words the tokenizer maps to its "
        "unknown token (seen twice or more, most frequent first) and grow the embeddings; "
        "their rows learn during fine-tuning (method 'full' or 'lora'). 0: off", 0)
    epochs: float = _help("passes over the training set (fractions allowed)", 1.0)
    max_steps: int | None = _help("stop after this many optimizer steps (overrides epochs)",
                                  None)
    batch_size: int = _help("examples per optimizer step (the effective batch)", 16)
    micro_batch_size: int | None = _help(
        "examples per forward/backward pass; gradients accumulate to batch_size. None: "
        "batch_size, or what a memory grant allows", None)
    lr: float = _help("peak learning rate of AdamW", 5e-5)
    warmup: float = _help("fraction of steps with a linear warm-up, then linear decay", 0.1)
    weight_decay: float = _help("AdamW weight decay (not applied to biases and norms)", 0.01)
    max_grad_norm: float | None = _help("clip gradients to this L2 norm; None turns it off", 1.0)
    max_length: int = _help("truncate inputs to this many tokens", 64)
    group_by_length: bool = _help("batch texts of similar length together", True)
    eval_every: int | None = _help("evaluate every N steps; None evaluates once per epoch", None)
    eval_batch_size: int = _help("examples per forward pass at evaluation", 64)
    early_stopping: str | None = _help(
        "stop when this eval metric (e.g. 'eval_macro_f1'; losses fall, others rise) has not "
        "improved for `patience` evaluations; None: never", None)
    patience: int = _help("evaluations without improvement before early stopping", 3)
    checkpoint_every: int | None = _help(
        "write a checkpoint (weights, optimizer, RNGs, data position) every N steps", None)
    checkpoint_dir: str | None = _help(
        "folder of checkpoint versions (step-N/, LATEST); new, empty or written by a Trainer",
        None)
    keep_checkpoints: int = _help("how many of the newest checkpoint versions to keep", 2)
    precision: str = _help(
        f"one of {PRECISIONS}: fp32, or bf16 / fp16 autocast for the forward pass (fp16 with "
        f"loss scaling, CUDA only; bf16 is fast on CUDA and on CPUs with avx512_bf16 / AMX)",
        "fp32")
    seed: int = _help("seed for weights of new heads, data order and dropout", 0)
    device: str = _help("'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", "auto")

    def __post_init__(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("method", self.method, METHODS)
        _choice("precision", self.precision, PRECISIONS)
        _positive_int("extend_vocab", self.extend_vocab, allow_zero=True)
        if self.extend_vocab and self.task != "token-classification":
            raise ConfigError("extend_vocab", self.extend_vocab,
                              "0 unless task='token-classification' (words come from its tokens)")
        if self.extend_vocab and self.method == "ia3":
            raise ConfigError("extend_vocab", self.extend_vocab, "0 with method='ia3' (IA3 "
                              "cannot train new embedding rows; use 'lora' or 'full')")
        for name in ("batch_size", "max_length", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        _positive_int("seed", self.seed, allow_zero=True)
        _positive_int("lora_r", self.lora_r)
        if not _number(self.lora_alpha) or self.lora_alpha <= 0:
            raise ConfigError("lora_alpha", self.lora_alpha, "a number > 0")
        if not _number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_dropout", self.lora_dropout, "a fraction in [0, 1)")
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        if self.micro_batch_size is not None:
            _positive_int("micro_batch_size", self.micro_batch_size)
        if self.eval_every is not None:
            _positive_int("eval_every", self.eval_every)
        _positive_int("patience", self.patience)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.early_stopping is not None and not (
                isinstance(self.early_stopping, str) and self.early_stopping.startswith("eval_")):
            raise ConfigError("early_stopping", self.early_stopping,
                              "None or an eval metric name such as 'eval_macro_f1'")
        if self.checkpoint_every is not None:
            _positive_int("checkpoint_every", self.checkpoint_every)
            if not self.checkpoint_dir:
                raise ConfigError("checkpoint_dir", self.checkpoint_dir,
                                  "a folder when checkpoint_every is set")
        if not _number(self.epochs) or self.epochs <= 0:
            raise ConfigError("epochs", self.epochs, "a number > 0")
        if not _number(self.lr) or self.lr <= 0:
            raise ConfigError("lr", self.lr, "a number > 0")
        if not _number(self.warmup) or not 0 <= self.warmup < 1:
            raise ConfigError("warmup", self.warmup, "a fraction in [0, 1)")
        if not _number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError("weight_decay", self.weight_decay, "a number >= 0")
        if self.max_grad_norm is not None and (
                not _number(self.max_grad_norm) or self.max_grad_norm <= 0):
            raise ConfigError("max_grad_norm", self.max_grad_norm, "a number > 0 or None")
        check_device(self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from notebook parameters; an unknown key names the valid ones."""
        if not isinstance(values, dict):
            raise ConfigError("config", values, "a dict of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(key, values[key], f"a TrainConfig field{did_you_mean(key, known)}"
                                  f" (one of {sorted(known)})")
        return cls(**values)

    @classmethod
    def help(cls) -> pd.DataFrame:
        return pd.DataFrame([{"parameter": f.name, "default": f.default,
                              "help": f.metadata.get("help", "")}
                             for f in dataclasses.fields(cls)]).set_index("parameter")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            value < (0 if allow_zero else 1):
        raise ConfigError(name, value, "an integer >= " + ("0" if allow_zero else "1"))


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices))


def _checked_init(cls):
    """Wrap the dataclass ``__init__`` so a misspelt field says which one was meant."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_keywords(cls.__name__, kwargs, names)
        init(self, *args, **kwargs)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init
    cls.__init__ = __init__
    return cls


_checked_init(TrainConfig)
