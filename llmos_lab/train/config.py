"""Training configuration: one validated dataclass, notebook parameters map onto it.

Every field declares its help text and what it accepts (:mod:`llmos_lab.constraints`);
``__post_init__`` checks the declarations with one function and ``TrainConfig.help()`` prints
them, so the documented range is the enforced one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..constraints import (
    COUNT,
    FRACTION,
    NATURAL,
    POSITIVE,
    Interval,
    Options,
    Real,
    Satisfies,
    check_all,
    describe,
)
from ..devices import check_device
from ..errors import ConfigError, check_keywords, did_you_mean
from ..model_task import CLASSIFIERS, ModelTask

TASKS = (*CLASSIFIERS, ModelTask.MASKED_LM)
METHODS = ("full", "lora", "ia3", "distill")
PRECISIONS = ("fp32", "bf16", "fp16")
TASK_KEYS = {"task", "text_column", "label_column", "tokens_column", "tags_column",
             "label_all_subtokens", "weight"}

def _is_teacher(value: Any) -> bool:
    if isinstance(value, tuple):
        return len(value) == 2 and hasattr(value[0], "infer") and isinstance(value[1], str)
    return hasattr(value, "predict") and hasattr(value, "labels_")


def _option(text: str, default: Any, *valid: Any) -> Any:
    """A field with its help text and what it accepts (checked, and shown by ``help()``)."""
    return field(default=default, metadata={"help": text, "valid": valid})


@dataclass
class TrainConfig:
    """Everything a training run needs; notebook parameters map onto it one to one."""

    model: str = _option("shipped model name ('minilm', 'tiny-bert'), local folder or hub id",
                         "minilm", str, os.PathLike)
    task: str = _option("what the model learns", ModelTask.SEQUENCE_CLASSIFICATION,
                        Options(*TASKS))
    method: str = _option("every weight, LoRA / IA3 adapters (PEFT) plus the classification "
                          "head, or 'distill': every weight, learning from a teacher's soft "
                          "targets as well as the labels", "full", Options(*METHODS))
    teacher: Any = _option(  # noqa: RUF009 (a field() with metadata)
        "method='distill': a fitted Trainer, a folder saved by Trainer.save, or (kernel, "
        "model name)", None, None, str, os.PathLike,
        Satisfies(_is_teacher, "a fitted Trainer or a (ModelKernel, model name) pair"))
    temperature: float = _option("distillation: softmax temperature of teacher and student",
                                 2.0, POSITIVE)
    alpha: float = _option("distillation: weight of the soft-target loss (1 - alpha: labels)",
                           0.5, Interval(Real, 0, 1))
    layers: int | None = _option(
        "keep this many of the model's transformer layers, evenly spaced from first to last "
        "(a smaller student taken from a larger model); None: all", None, None, COUNT)
    init_from: str | None = _option(
        "continue from a folder saved by Trainer.save (same task): its weights, and its labels "
        "joined with the new data's", None, None, str, os.PathLike)
    replay: float = _option(
        "continual learning: rows of fit(replay_data=...) mixed into the training set, as a "
        "share of it (0.25: one old row per four new)", 0.0, Interval(Real, 0, 1))
    tasks: dict[str, dict[str, Any]] | None = _option(  # noqa: RUF009
        "multi-task: {name: {'task': 'sequence-classification' | 'token-classification', "
        "optional columns, 'weight'}}: one encoder, a head per task; fit a dict of "
        "DataFrames by name. None: one task", None, None,
        Satisfies(lambda v: isinstance(v, dict) and len(v) >= 1, "a dict of task specs"))
    task_temperature: float = _option(
        "multi-task: draw each step's task with probability ~ rows ** (1 / T): 1 by size, "
        "larger T evens the tasks out", 1.0, POSITIVE)
    mlm_probability: float = _option("task='masked-lm': share of tokens masked", 0.15,
                                     Interval(Real, 0, 1, closed="neither"))
    lora_r: int = _option("LoRA rank (method='lora')", 8, COUNT)
    lora_alpha: float = _option("LoRA scaling numerator: updates scale by lora_alpha / lora_r",
                                16.0, POSITIVE)
    lora_dropout: float = _option("dropout on the LoRA path", 0.1, FRACTION)
    lora_targets: list[str] | None = _option(  # noqa: RUF009 (a field() with metadata)
        "module names that get adapters; None: PEFT's default for the architecture", None,
        None, Satisfies(lambda v: isinstance(v, (list, tuple)) and v and
                        all(isinstance(x, str) for x in v), "a list of module names"))
    text_column: str = _option("DataFrame column holding the input text", "text", str)
    label_column: str = _option("DataFrame column holding the label", "label", str)
    tokens_column: str = _option("token classification: column of word lists", "tokens", str)
    tags_column: str = _option("token classification: column of tag lists (IOB2)", "tags", str)
    label_all_subtokens: bool = _option(
        "token classification: label every sub-token of a word (B- becomes I- after the "
        "first) instead of the first only", False, bool)
    extend_vocab: int = _option(
        "add up to N training-set words (the tokens column, or the text split as the "
        "tokenizer splits words: each Chinese character is a word) that the tokenizer maps to "
        "its unknown token, seen twice or more, most frequent first, and grow the embeddings; "
        "their rows learn during fine-tuning (method 'full' or 'lora'). 0: off", 0, NATURAL)
    epochs: float = _option("passes over the training set (fractions allowed)", 1.0, POSITIVE)
    max_steps: int | None = _option(
        "stop after this many optimizer steps (overrides epochs)", None, None, COUNT)
    batch_size: int = _option("examples per optimizer step (the effective batch)", 16, COUNT)
    micro_batch_size: int | None = _option(
        "examples per forward/backward pass; gradients accumulate to batch_size. None: "
        "batch_size, or what a memory grant allows", None, None, COUNT)
    lr: float = _option("peak learning rate of AdamW", 5e-5, POSITIVE)
    warmup: float = _option("fraction of steps with a linear warm-up, then linear decay", 0.1,
                            FRACTION)
    weight_decay: float = _option("AdamW weight decay (not applied to biases and norms)", 0.01,
                                  Interval(Real, 0, None))
    max_grad_norm: float | None = _option("clip gradients to this L2 norm; None turns it off",
                                          1.0, None, POSITIVE)
    max_length: int = _option("truncate inputs to this many tokens", 64, COUNT)
    group_by_length: bool = _option("batch texts of similar length together", True, bool)
    eval_every: int | None = _option("evaluate every N steps; None evaluates once per epoch",
                                     None, None, COUNT)
    eval_batch_size: int = _option("examples per forward pass at evaluation", 64, COUNT)
    early_stopping: str | None = _option(
        "stop when this eval metric (e.g. 'eval_macro_f1'; losses fall, others rise) has not "
        "improved for `patience` evaluations; None: never", None,
        None, Satisfies(lambda v: isinstance(v, str) and v.startswith("eval_"),
                        "an eval metric name such as 'eval_macro_f1'"))
    patience: int = _option("evaluations without improvement before early stopping", 3, COUNT)
    checkpoint_every: int | None = _option(
        "write a checkpoint (weights, optimizer, RNGs, data position) every N steps", None,
        None, COUNT)
    checkpoint_dir: str | None = _option(
        "folder of checkpoint versions (step-N/, LATEST); new, empty or written by a Trainer",
        None, None, str, os.PathLike)
    keep_checkpoints: int = _option("how many of the newest checkpoint versions to keep", 2,
                                    COUNT)
    precision: str = _option(
        "fp32, or bf16 / fp16 autocast for the forward pass (fp16 with loss scaling, CUDA "
        "only; bf16 is fast on CUDA and on CPUs with avx512_bf16 / AMX)", "fp32",
        Options(*PRECISIONS))
    seed: int = _option("seed for weights of new heads, data order and dropout", 0, NATURAL)
    device: str = _option("'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", "auto", str)

    def __post_init__(self) -> None:
        self.task = ModelTask.coerce(self.task)
        check_all(self, {f.name: f.metadata["valid"] for f in dataclasses.fields(self)})
        self._check_together()
        check_device(self.device)

    def _check_together(self) -> None:
        """Rules between fields (one field's constraints are declared on the field)."""
        if (self.method == "distill") != (self.teacher is not None):
            raise ConfigError("teacher", self.teacher, "a teacher exactly when method='distill'")
        if self.method == "distill" and self.task != ModelTask.SEQUENCE_CLASSIFICATION:
            raise ConfigError("task", self.task, "'sequence-classification' with "
                              "method='distill'")
        if self.task == ModelTask.MASKED_LM and self.method == "distill":
            raise ConfigError("method", self.method, "'full', 'lora' or 'ia3' for masked-lm")
        if self.tasks is not None:
            self._check_tasks()
        if self.extend_vocab and self.task == ModelTask.MASKED_LM:
            raise ConfigError("extend_vocab", self.extend_vocab, "0 with task='masked-lm'")
        if self.extend_vocab and self.method == "ia3":
            raise ConfigError("extend_vocab", self.extend_vocab, "0 with method='ia3' (IA3 "
                              "cannot train new embedding rows; use 'lora' or 'full')")
        if self.checkpoint_every is not None and not self.checkpoint_dir:
            raise ConfigError("checkpoint_dir", self.checkpoint_dir,
                              "a folder when checkpoint_every is set")

    def _check_tasks(self) -> None:
        """Each multi-task spec names a classification task and known keys only."""
        if self.method != "full" or self.extend_vocab or self.init_from:
            raise ConfigError("tasks", list(self.tasks), "method='full' without extend_vocab "
                              "or init_from (one shared encoder with a head per task)")
        for name, spec in self.tasks.items():
            if not isinstance(spec, dict) or ModelTask.coerce(spec.get("task")) not in \
                    CLASSIFIERS:
                raise ConfigError(f"tasks[{name!r}]", spec, "a dict with 'task': "
                                  "'sequence-classification' or 'token-classification'")
            unknown = set(spec) - TASK_KEYS
            if unknown:
                raise ConfigError(f"tasks[{name!r}]", sorted(unknown),
                                  f"keys among {sorted(TASK_KEYS)}")
            weight = spec.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                    not weight > 0:
                raise ConfigError(f"tasks[{name!r}]['weight']", weight, "a number > 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (checkpoints): a teacher object is kept by its description,
        so a checkpointed distillation resumes only from a teacher saved to a folder."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        teacher = values["teacher"]
        if teacher is not None and not isinstance(teacher, (str, os.PathLike)):
            values["teacher"] = repr(teacher)
        return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}

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
        """Every field: its default, what it accepts (the checked declaration) and help."""
        return pd.DataFrame([{"parameter": f.name, "default": f.default,
                              "valid": describe(f.metadata["valid"]),
                              "help": f.metadata.get("help", "")}
                             for f in dataclasses.fields(cls)]).set_index("parameter")


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
