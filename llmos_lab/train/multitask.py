"""Multi-task fine-tuning: one encoder, a head per task, one optimizer.

``Trainer(TrainConfig(tasks={"sentiment": {"task": "sequence-classification"}, "ner":
{"task": "token-classification"}}))`` returns a :class:`MultiTaskTrainer`; ``fit`` takes a dict
of DataFrames by task name. Each optimizer step draws one task with probability proportional to
``rows ** (1 / task_temperature)`` (1: by size; larger evens the tasks out, as in multilingual
BERT's sampling) and trains on one length-grouped batch of it, its loss multiplied by the task's
``weight``. Each task's data is checked as a single-task run checks it, with the task named.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import assets, events, inference, loading
from ..datasets import require_rows
from ..devices import resolve_device
from ..errors import ConfigError, NotFittedError
from ..metrics import ClassificationReport
from ..model_task import ModelTask
from . import batching, ner
from . import data as train_data
from .config import TASK_KEYS, TrainConfig
from .step import TrainingStep


class MultiTaskModel(torch.nn.Module):
    """A shared encoder (with its pooler) and one linear head per task."""

    def __init__(self, encoder: torch.nn.Module, heads: dict[str, tuple[str, int]]):
        super().__init__()
        self.encoder = encoder
        size = encoder.config.hidden_size
        self.kinds = {name: kind for name, (kind, _) in heads.items()}
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(size, n)
                                          for name, (_, n) in heads.items()})
        self.dropout = torch.nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))

    def forward(self, task: str, input_ids, attention_mask) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.kinds[task] == ModelTask.SEQUENCE_CLASSIFICATION:
            pooled = out.pooler_output if out.pooler_output is not None \
                else out.last_hidden_state[:, 0]
            return self.heads[task](self.dropout(pooled))
        return self.heads[task](self.dropout(out.last_hidden_state))


class _Head:
    """One task of a MultiTaskModel, shaped like a transformers classifier (``config``,
    ``logits``) for inference.class_probabilities and inference.word_tags."""

    def __init__(self, model: MultiTaskModel, task: str, labels: list[Any]):
        self.model, self.task = model, task
        self.config = SimpleNamespace(num_labels=len(labels),
                                      id2label={i: str(x) for i, x in enumerate(labels)})

    def __call__(self, input_ids, attention_mask) -> SimpleNamespace:
        return SimpleNamespace(logits=self.model(self.task, input_ids, attention_mask))


class MultiTaskTrainer(TrainingStep):
    """Learned state: ``model_``, ``tokenizer_``, ``labels_`` (per task), ``history_``,
    ``steps_per_task_``."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.views = {name: task_view(config, name) for name in config.tasks}
        self._rows: list[dict[str, Any]] = []
        self._training = self._stop_requested = False

    def stop(self) -> None:
        """End a running fit after the step under way (as Trainer.stop; widgets call it)."""
        self._stop_requested = True

    def fit(self, train: dict[str, pd.DataFrame], eval_data: dict[str, pd.DataFrame] |
            None = None, *, progress: bool = False) -> MultiTaskTrainer:
        for _ in self.steps(train, eval_data):
            pass
        return self

    def steps(self, train: dict[str, pd.DataFrame],
              eval_data: dict[str, pd.DataFrame] | None = None) -> Iterator[dict[str, Any]]:
        """Check every task's data now, then yield once per optimizer step."""
        self._check_dict(train, "train")
        if eval_data is not None:
            self._check_dict(eval_data, "eval_data", partial=True)
        self.labels_ = {}
        for name, view in self.views.items():
            train_data.check_frame(view, train[name], f"task {name!r} training", True)
            require_rows(train[name], f"task {name!r} training")
            self.labels_[name] = train_data.labels_of(view, train[name])
        for name, frame in (eval_data or {}).items():
            view = self.views[name]
            train_data.check_frame(view, frame, f"task {name!r} evaluation", True)
            train_data.check_labels(view, frame, self.labels_[name])
        self._setup()
        cfg = self.config
        self._per_epoch = sum(math.ceil(len(df) / cfg.batch_size) for df in train.values())
        self.total_steps_ = cfg.max_steps or max(1, math.ceil(cfg.epochs * self._per_epoch))
        return self._loop(train, eval_data)

    def _check_dict(self, frames: Any, what: str, partial: bool = False) -> None:
        if not isinstance(frames, dict):
            raise ConfigError(what, type(frames).__name__, f"a dict of DataFrames by task name "
                              f"({sorted(self.views)})")
        missing, unknown = set(self.views) - set(frames), set(frames) - set(self.views)
        if unknown or (missing and not partial):
            raise ConfigError(what, sorted(frames), f"one DataFrame per task of "
                              f"TrainConfig.tasks {sorted(self.views)} (missing "
                              f"{sorted(missing)}, unknown {sorted(unknown)})")

    def _setup(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        cfg = self.config
        torch.manual_seed(cfg.seed)
        path = assets.model_path(cfg.model)
        self.device_ = resolve_device(cfg.device)
        with loading.quiet(), loading.source_errors(f"model {cfg.model!r} ({path})"):
            self.tokenizer_ = AutoTokenizer.from_pretrained(path)
            encoder = AutoModel.from_pretrained(path)
        heads = {name: (view.task, len(self.labels_[name]))
                 for name, view in self.views.items()}
        self.model_ = MultiTaskModel(encoder, heads).to(self.device_)

    def _encoded(self, name: str, df: pd.DataFrame) -> tuple[list[list[int]], list[Any]]:
        view, index = self.views[name], {x: i for i, x in enumerate(self.labels_[name])}
        if view.task == ModelTask.TOKEN_CLASSIFICATION:
            enc = ner.encode(self.tokenizer_, df[view.tokens_column], view.max_length)
            return enc["input_ids"], ner.align(enc, list(df[view.tags_column]), index,
                                               view.label_all_subtokens)
        ids = self.tokenizer_(list(df[view.text_column]), truncation=True,
                              max_length=view.max_length)["input_ids"]
        return ids, [index[y] for y in df[view.label_column]]

    def _loop(self, train, eval_data) -> Iterator[dict[str, Any]]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        data = {name: self._encoded(name, train[name]) for name in self.views}
        names = list(self.views)
        sizes = np.array([len(train[n]) for n in names], dtype=float)
        weights = sizes ** (1.0 / cfg.task_temperature)
        self.task_probabilities_ = {n: float(w) for n, w in zip(names, weights / weights.sum(),
                                                               strict=True)}
        batches = {n: self._batches(data[n][0], rng) for n in names}
        optimizer, scheduler, _ = self._build_optimizer(self.total_steps_)
        self.steps_per_task_ = dict.fromkeys(names, 0)
        started = time.perf_counter()
        events.publish("train.start", trainer=self, total_steps=self.total_steps_, config=cfg)
        self.model_.train()
        self._training, self._stop_requested = True, False
        for step in range(1, self.total_steps_ + 1):
            name = names[rng.choice(len(names), p=weights / weights.sum())]
            batch = next(batches[name])
            t0 = time.perf_counter()
            loss = self._step(name, batch, data[name], optimizer, scheduler)
            self.steps_per_task_[name] += 1
            row = {"step": step, "epoch": step / self._per_epoch, "task": name, "loss": loss,
                   "lr": scheduler.get_last_lr()[0],
                   "samples_per_s": len(batch) / (time.perf_counter() - t0),
                   "seconds": time.perf_counter() - started}
            if eval_data and (step % (cfg.eval_every or self._per_epoch) == 0 or
                              step == self.total_steps_):
                for task, report in self.evaluate(eval_data).items():
                    row.update({f"eval_{task}_{k}": v for k, v in report.to_dict().items()})
            self._rows.append(row)
            events.publish("train.step", trainer=self, total_steps=self.total_steps_, **row)
            yield row
            if self._stop_requested:
                events.publish("train.stopped", trainer=self, step=step)
                break
        self.model_.eval()
        self._training = False
        events.publish("train.end", trainer=self, steps=step)

    def _batches(self, ids: list[list[int]], rng: np.random.Generator) -> Iterator[np.ndarray]:
        lengths = np.array([len(x) for x in ids])
        while True:  # epochs of this task, as many as its draws need
            yield from batching.length_grouped(lengths, self.config.batch_size, rng,
                                               self.config.group_by_length)

    def _step(self, name: str, batch: np.ndarray, data, optimizer, scheduler) -> float:
        ids, targets = data
        view = self.views[name]
        inputs = inference.collate([ids[i] for i in batch], self.tokenizer_.pad_token_id or 0,
                                   self.device_)
        with inference.autocast(self.device_, self.config.precision):
            logits = self.model_(name, **inputs)
        if view.task == ModelTask.TOKEN_CLASSIFICATION:
            labels = ner.pad([targets[i] for i in batch]).to(self.device_)
            loss = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        else:
            labels = torch.tensor([targets[i] for i in batch], device=self.device_)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        (loss * self.config.tasks[name].get("weight", 1.0)).backward()
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model_.parameters(), self.config.max_grad_norm,
                                           foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def predict(self, data: pd.DataFrame, task: str) -> pd.DataFrame:
        """One task's predictions: labels and probabilities, or words and tags (through the
        same inference helpers as a single-task model)."""
        self._fitted()
        if task not in self.views:
            raise ConfigError("task", task, f"one of {sorted(self.views)}")
        view = self.views[task]
        train_data.check_frame(view, data, f"task {task!r} prediction", False)
        head = _Head(self.model_, task, self.labels_[task])
        kw = dict(max_length=view.max_length, batch_size=view.eval_batch_size,
                  device=self.device_, precision=self.config.precision)
        was = self.model_.training
        self.model_.eval()
        try:
            if view.task == ModelTask.TOKEN_CLASSIFICATION:
                words = [list(w) for w in data[view.tokens_column]]
                return pd.DataFrame({"tokens": words, "tags": inference.word_tags(
                    head, self.tokenizer_, words, **kw)})
            probs = inference.class_probabilities(head, self.tokenizer_,
                                                  list(data[view.text_column]), **kw)
            return inference.probabilities_frame(probs, self.labels_[task])
        finally:
            self.model_.train(was)

    def evaluate(self, data: dict[str, pd.DataFrame]) -> dict[str, ClassificationReport]:
        """A report per task given (a dict of labelled DataFrames by task name)."""
        self._fitted()
        self._check_dict(data, "data", partial=True)
        reports = {}
        for task, frame in data.items():
            train_data.check_frame(self.views[task], frame, f"task {task!r} evaluation", True)
            train_data.check_labels(self.views[task], frame, self.labels_[task])
            view, pred = self.views[task], self.predict(frame, task)
            if view.task == ModelTask.TOKEN_CLASSIFICATION:
                reports[task] = ClassificationReport.from_tags(
                    [list(t) for t in frame[view.tags_column]], list(pred["tags"]),
                    labels=self.labels_[task])
            else:
                reports[task] = ClassificationReport.from_labels(
                    list(frame[view.label_column]), list(pred["label"]),
                    labels=self.labels_[task])
        return reports

    @property
    def history_(self) -> pd.DataFrame:
        self._fitted()
        return pd.DataFrame(self._rows)

    def _fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this multi-task Trainer is not fitted yet: call fit()")


def task_view(cfg: TrainConfig, name: str) -> TrainConfig:
    """A single-task config for one task of ``cfg.tasks`` (its columns and kind), so its data
    is checked and encoded exactly as a single-task run's."""
    spec = {k: v for k, v in cfg.tasks[name].items() if k in TASK_KEYS - {"weight"}}
    return dataclasses.replace(cfg, tasks=None, **spec)
