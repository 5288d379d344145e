"""Fine-tuning as a process that advances one optimizer step per ``next()``.

``Trainer.steps()`` is the unit the scheduler interleaves; ``fit`` just drains it. Texts are
tokenized once, batches are grouped by length (shuffled in chunks, sorted inside a chunk, the
batch order shuffled again) and padded only to their own longest row: on short, uneven texts
such as tweets this is most of the speed difference against a padded-to-max loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import _io, events, inference, loading
from ..datasets import require_rows
from ..devices import resolve_device
from ..errors import ConfigError, NotFittedError
from ..metrics import ClassificationReport
from ..model_task import ModelTask
from . import (
    batching,
    checkpoints,
    continual,
    distill,
    mlm,
    multitask,
    ner,
    replica,
    rowgrad,
    setup,
)
from . import data as train_data
from .batching import micro_batch_for
from .config import METHODS, PRECISIONS, TASKS, TrainConfig
from .step import TrainingStep, _RunState

__all__ = ["METHODS", "PRECISIONS", "TASKS", "TrainConfig", "Trainer", "micro_batch_for"]

class Trainer(TrainingStep):
    """Fine-tune a pretrained encoder on a DataFrame.

    ``Trainer(cfg).fit(train_df, eval_df)`` returns self; learned state ends in ``_``:
    ``model_``, ``tokenizer_``, ``labels_``, ``history_``, ``device_``.
    """

    def __new__(cls, config: TrainConfig | None = None, **overrides: Any):
        """A config with ``tasks`` gets a MultiTaskTrainer (one encoder, a head per task)."""
        config = config or TrainConfig()
        tasks = overrides.get("tasks", config.tasks)
        if cls is Trainer and tasks is not None:
            merged = dataclasses.replace(config, **overrides) if overrides else config
            return multitask.MultiTaskTrainer(merged)
        return super().__new__(cls)

    def __init__(self, config: TrainConfig | None = None, **overrides: Any):
        config = config or TrainConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self._rows: list[dict[str, Any]] = []
        self._training = False
        self._stop_requested = False

    # ------------------------------------------------------------------ public API

    def fit(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None = None, *,
            progress: bool = True, replay_data: pd.DataFrame | None = None) -> Trainer:
        """Run every step; ``progress`` shows a ``tqdm.auto`` bar (a widget in notebooks)."""
        from tqdm.auto import tqdm

        steps = self.steps(train_df, eval_df, replay_data=replay_data)
        with tqdm(steps, total=self.total_steps_, disable=not progress, unit="step",
                  desc=f"{self.config.model} ({self.config.method})", leave=False) as bar:
            for row in bar:
                bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        return self

    @classmethod
    def resume(cls, path: str | os.PathLike, train_df: pd.DataFrame,
               eval_df: pd.DataFrame | None = None, *, progress: bool = True) -> Trainer:
        """Continue an interrupted run from its checkpoint folder: on the same data and
        machine it ends with exactly the weights of an uninterrupted run."""
        state = checkpoints.read_state(path)
        trainer = cls(checkpoints.config_of(state, TrainConfig.from_dict))
        trainer._resume_from = Path(state["version"])
        return trainer.fit(train_df, eval_df, progress=progress)

    def steps(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None = None, *,
              memory: int | str | None = None, replay_data: pd.DataFrame | None = None
              ) -> Iterator[dict[str, Any]]:
        """Validate and set up now, then yield once per optimizer step with its metrics.

        ``memory`` (a grant from the allocator, in bytes or "512MiB") caps the micro-batch:
        the largest that fits by :func:`~llmos_lab.batching.micro_batch_for` (measured once
        per model, method, max_length, device and precision, then cached), with gradient
        accumulation keeping the effective batch at ``batch_size``. ``replay_data``: old
        training rows, of which ``config.replay`` mixes a share into ``train_df``.
        """
        cfg = self.config
        self._check_frame(train_df, "training", with_labels=True)
        require_rows(train_df, "training")
        if replay_data is not None:
            self._check_frame(replay_data, "replay", with_labels=True)
        train_df = continual.mix(train_df, replay_data, cfg.replay, cfg.seed)
        labels = train_data.labels_of(cfg, train_df)
        if cfg.init_from is not None:
            labels = continual.joined_labels(continual.saved_labels(cfg.init_from, cfg.task),
                                             labels)
        if eval_df is not None:
            self._check_frame(eval_df, "evaluation", with_labels=True)
            self._check_labels(eval_df, labels)
        self.labels_ = labels
        resume = getattr(self, "_resume_from", None)
        if cfg.checkpoint_every:  # refuse a folder of someone else's files before training
            checkpoints.prepare(cfg.checkpoint_dir)
        if resume is not None:
            train_data.check_resumable(cfg, labels, checkpoints.read_state(resume), train_df,
                                       resume)
        self._setup_model(train_df)
        micro = cfg.micro_batch_size or cfg.batch_size
        if memory is not None:
            key = f"{self._model_path}|{cfg.method}|{self.trainable_parameters_[0]}"
            micro = min(micro, micro_batch_for(
                self.model_, cfg.max_length, memory, cfg.batch_size, device=self.device_,
                precision=cfg.precision, key=key))
        self.micro_batch_size_ = min(micro, cfg.batch_size)
        self._stop_requested = False  # a new run; stop() from here on ends it
        self._per_epoch = math.ceil(len(train_df) / cfg.batch_size)
        self.total_steps_ = cfg.max_steps or max(1, math.ceil(cfg.epochs * self._per_epoch))
        return self._loop(train_df, eval_df, resume)

    def stop(self) -> None:
        """Ask a running ``fit``/``steps`` to end after the step under way (thread-safe: a
        widget's Stop button calls it while the loop runs elsewhere)."""
        self._stop_requested = True

    def evaluate(self, df: pd.DataFrame) -> ClassificationReport | mlm.LanguageModelReport:
        """A ClassificationReport on labelled data; masked-token loss and perplexity for a
        masked-lm run."""
        self._check_fitted()
        self._check_frame(df, "evaluation", with_labels=True)
        require_rows(df, "evaluation")
        self._check_labels(df, self.labels_)
        cfg = self.config
        if cfg.task == ModelTask.MASKED_LM:
            return mlm.evaluate(self.model_, self.tokenizer_, self._encode(df[cfg.text_column]),
                                cfg.mlm_probability, cfg.eval_batch_size, self.device_, cfg.seed)
        pred = self.predict(df)
        if self._tokens:
            return ClassificationReport.from_tags(
                [list(t) for t in df[self.config.tags_column]], list(pred["tags"]),
                labels=self.labels_)
        return ClassificationReport.from_labels(
            list(df[self.config.label_column]), list(pred["label"]), labels=self.labels_)

    def predict(self, data: pd.DataFrame | Sequence[str]) -> pd.DataFrame:
        """Label, its probability and every class's probability, in input order; for token
        classification, the tokens and one tag per token."""
        self._check_fitted()
        if self.config.task == ModelTask.MASKED_LM:
            raise ConfigError("task", "masked-lm", "a classification task to predict with; a "
                              "masked-lm result is fine-tuned from: TrainConfig(model=<saved "
                              "folder>)")
        if self._tokens:
            return self._predict_tags(data)
        if isinstance(data, pd.DataFrame):
            self._check_frame(data, "prediction", with_labels=False)
        texts = inference.as_texts(data, column=self.config.text_column)
        cfg = self.config
        self.model_.eval()  # no dropout; training mode comes back if a run is under way
        probs = inference.class_probabilities(
            self.model_, self.tokenizer_, inference.check_texts(texts),
            max_length=cfg.max_length, batch_size=cfg.eval_batch_size, device=self.device_,
            precision=cfg.precision)
        self.model_.train(self._training)
        return inference.probabilities_frame(probs, self.labels_)

    @property
    def history_(self) -> pd.DataFrame:
        """One row per optimizer step: step, epoch, loss, lr, samples/s, seconds, eval_*."""
        if not self._rows and not hasattr(self, "model_"):
            raise NotFittedError("this Trainer has no history yet: call fit() or steps()")
        return pd.DataFrame(self._rows)

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Save the LoRA adapter and its classification head (a few hundred KB), written
        atomically; ``ModelKernel.add_adapter(model, name, path)`` serves it over a base loaded
        with the same labels."""
        self._check_fitted()
        if self.config.method == "full":
            raise ConfigError("method", self.config.method,
                              "'lora' or 'ia3' to save an adapter (a full fine-tune saves the "
                              "model)")
        return _io.write_folder(path, self._save_adapter_files, kind="adapter",
                                what="adapter folder")

    def save(self, path: str | os.PathLike) -> Path:
        """Save what was trained, atomically: the whole model (full fine-tune; loads with
        ``ModelKernel.load(path)``) or the adapter and head, the tokenizer, and
        ``history.csv``."""
        self._check_fitted()

        def write(folder: str) -> None:
            self.model_.save_pretrained(folder)
            self.tokenizer_.save_pretrained(folder)
            self.history_.to_csv(Path(folder) / "history.csv", index=False)

        with loading.quiet():
            return _io.write_folder(path, write, kind="model", what="save folder")

    def _save_adapter_files(self, folder: str) -> None:
        self.model_.save_pretrained(folder)
        if getattr(self, "added_tokens_", None):  # the adapter's embeddings need these ids
            self.tokenizer_.save_pretrained(folder)

    def plot(self, ax=None):
        """Training loss (per step and smoothed) and evaluation metrics against steps, on
        ``ax`` or a new Agg figure; returns a Display with ``ax_`` and ``figure_``."""
        from .. import plots

        h = self.history_
        ax = plots.axes_or_new(ax, 7, 3.5)
        plots.loss_curves(ax, h, label="loss (smoothed)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        metrics = [c for c in h.columns if c.startswith("eval_") and c != "eval_loss"]
        if metrics:
            right = ax.twinx()
            for i, col in enumerate(metrics):
                rows = h.dropna(subset=[col])
                right.plot(rows["step"], rows[col], "o-", color=f"C{i + 1}", label=col)
            right.set_ylabel("eval metric")
            right.set_ylim(0, 1)
            right.legend(loc="center right")
        ax.legend(loc="upper right")
        ax.set_title(f"{self.config.model} · {self.config.method} · {self.config.task}")
        return plots.Display(ax)

    # ------------------------------------------------------------------ internals

    @property
    def _tokens(self) -> bool:
        return self.config.task == ModelTask.TOKEN_CLASSIFICATION

    def _predict_tags(self, data: pd.DataFrame | Sequence[Sequence[str]]) -> pd.DataFrame:
        cfg = self.config
        if isinstance(data, pd.DataFrame):
            ner.check_frame(data, cfg.tokens_column, None, "prediction")
            words = [list(w) for w in data[cfg.tokens_column]]
        else:  # a string is one sentence; a list holds sentences (strings or word lists)
            words = ner.as_sentences(data)
        self.model_.eval()
        tags = inference.word_tags(self.model_, self.tokenizer_, words,
                                   max_length=cfg.max_length, batch_size=cfg.eval_batch_size,
                                   device=self.device_, precision=cfg.precision)
        self.model_.train(self._training)
        return pd.DataFrame({"tokens": words, "tags": tags})

    def _check_frame(self, df: pd.DataFrame, what: str, with_labels: bool) -> None:
        train_data.check_frame(self.config, df, what, with_labels)

    def _check_labels(self, df: pd.DataFrame, known: Sequence[Any]) -> None:
        train_data.check_labels(self.config, df, known)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this Trainer is not fitted yet: call fit() or steps() first")

    def _setup_model(self, train_df: pd.DataFrame) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        path = self._model_path = setup.model_source(cfg)
        self.replica_ = replica.Replica(resolve_device(cfg.device))
        self.device_ = self.replica_.device
        if cfg.precision == "fp16" and self.device_.type != "cuda":
            raise ConfigError("precision", "fp16", f"'fp32' or 'bf16' on {self.device_.type} "
                              f"(fp16 autocast with loss scaling needs CUDA)")
        self.tokenizer_, self.model_, self.added_tokens_ = setup.build(
            cfg, path, self.labels_, train_df, self.device_)
        trainable = sum(p.numel() for p in self.model_.parameters() if p.requires_grad)
        self.trainable_parameters_ = (trainable,
                                      sum(p.numel() for p in self.model_.parameters()))
        self._rows = []

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer_(list(texts), truncation=True, max_length=self.config.max_length)
        return enc["input_ids"]

    def _collate(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return inference.collate(ids, self.tokenizer_.pad_token_id or 0, self.device_)

    def _loop(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None,
              resume: Path | None = None) -> Iterator[dict[str, Any]]:
        """Epochs of length-grouped batches, one optimizer step each; the named steps below
        do the work, ``_RunState`` says where the run is (as a scheduler's TaskState)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        ids, targets = self._training_data(train_df)
        lengths = np.array([len(x) for x in ids])
        run = _RunState(total=self.total_steps_, started=time.perf_counter(),
                        eval_every=cfg.eval_every or self._per_epoch)
        optimizer, scheduler, scaler = self._build_optimizer(run.total)
        events.publish("train.start", trainer=self, total_steps=run.total, config=cfg)
        self._last_checkpoint = None
        if resume is not None:
            self._restore(resume, run, rng, optimizer, scheduler)
        run.fingerprint = train_data.fingerprint(cfg, train_df) if cfg.checkpoint_every \
            else None
        self.best_score_ = None
        self._train_model = self.replica_.wrap(self.model_)  # DDP across processes, if any
        self._embedding_rows = rowgrad.EmbeddingRows(self.model_, self.device_,
                                                     self.replica_.world)
        self.model_.train()
        self._training = True
        while run.step < run.total:
            run.epoch_rng = rng.bit_generator.state  # the epoch's order can be drawn again
            for index, batch in enumerate(batching.length_grouped(
                    lengths, cfg.batch_size, rng, cfg.group_by_length)):
                if index < run.skip:
                    continue
                if run.step >= run.total:
                    break
                row = self._optimizer_step(batch, ids, targets, run, optimizer, scheduler,
                                           scaler)
                stop = self._evaluate_step(row, eval_df, run)
                self._rows.append(row)
                self._checkpoint(run, index, optimizer, scheduler)
                events.publish("train.step", trainer=self, total_steps=run.total, **row)
                yield row
                self._end_if_asked(run, stop)
            run.skip = 0
        self.model_.eval()
        self._training = False
        events.publish("train.end", trainer=self, steps=run.step)

    def _training_data(self, train_df: pd.DataFrame) -> tuple[list[list[int]], list[Any]]:
        """Token ids and targets (a label id per text, a label id per sub-token, or nothing
        for masked-lm); a distilling run also asks its teacher about every text, once."""
        cfg = self.config
        label_index = {label: i for i, label in enumerate(self.labels_)}
        self._collator = mlm.collator(self.tokenizer_, cfg.mlm_probability) \
            if cfg.task == ModelTask.MASKED_LM else None
        if self._tokens:
            enc = ner.encode(self.tokenizer_, train_df[cfg.tokens_column], cfg.max_length)
            return enc["input_ids"], ner.align(enc, list(train_df[cfg.tags_column]),
                                               label_index, cfg.label_all_subtokens)
        ids = self._encode(train_df[cfg.text_column])
        if cfg.method == "distill":
            probs, size = distill.teacher_probabilities(
                cfg.teacher, list(train_df[cfg.text_column]), self.labels_,
                max_length=cfg.max_length, batch_size=cfg.eval_batch_size)
            distill.warn_if_larger(self.model_, size)
            self._soft = torch.from_numpy(probs)
        if self._collator is not None:
            return ids, [None] * len(ids)
        return ids, [label_index[v] for v in train_df[cfg.label_column]]

    def _restore(self, resume: Path, run: _RunState, rng: np.random.Generator,
                 optimizer, scheduler) -> None:
        """Weights, optimizer, schedule, RNG and data position from a checkpoint version."""
        state = checkpoints.read_state(resume)
        checkpoints.restore(resume, self.model_, optimizer, scheduler)
        checkpoints.restore_rng(rng, state)
        run.step, run.skip, self._rows = state["step"], state["batch_index"], state["history"]
        self._last_checkpoint = resume

    def _checkpoint(self, run: _RunState, index: int, optimizer, scheduler) -> None:
        """Every ``checkpoint_every`` steps, on the main process: a new version on disk."""
        cfg = self.config
        if not cfg.checkpoint_every or run.step % cfg.checkpoint_every or \
                not self.replica_.is_main:
            return
        self._last_checkpoint = checkpoints.save(
            cfg.checkpoint_dir, self.model_, optimizer, scheduler, {
                "step": run.step, "batch_index": index + 1, "epoch_rng": run.epoch_rng,
                "config": cfg.to_dict(), "data": run.fingerprint,
                "labels": [str(x) for x in self.labels_], "history": self._rows},
            keep=cfg.keep_checkpoints)

    def _end_if_asked(self, run: _RunState, stop: bool) -> None:
        """Early stopping or a stop() request ends the run after the step just yielded."""
        if stop:
            run.total = run.step  # leaves both loops
            events.publish("train.early_stop", trainer=self, step=run.step,
                           metric=self.config.early_stopping, best=self.best_score_)
        elif self._stop_requested:
            run.total = run.step
            events.publish("train.stopped", trainer=self, step=run.step)
