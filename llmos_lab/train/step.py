"""One optimizer step's work for the Trainer: the optimizer, micro-batches with gradient
accumulation (halving on out-of-memory), the step itself, evaluation and early stopping.

Mixed into :class:`~llmos_lab.train.trainer.Trainer`, whose loop calls these once per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import events, inference
from ..errors import ConfigError, TrainingError
from . import distill, mlm, ner


@dataclass
class _RunState:
    """Where a training run is, as the scheduler's TaskState is for a task."""

    total: int  # steps in this run (shrinks to the current step when it is stopped)
    started: float  # perf_counter at the start, for the history's "seconds"
    eval_every: int
    step: int = 0
    skip: int = 0  # batches of the current epoch already trained (after a resume)
    epoch_rng: dict | None = None  # the RNG state that draws this epoch's batch order
    fingerprint: str | None = None  # of the training data, checked on resume


class TrainingStep:
    """Expects the Trainer's ``config``, ``model_``, ``micro_batch_size_``, ``device_``,
    ``replica_``, ``_train_model``, ``_embedding_rows``, ``_collate``, ``_tokens`` and
    ``_per_epoch``."""

    def _build_optimizer(self, total: int):
        """AdamW (fused on CPU and CUDA; no decay on biases and norms), linear warm-up then
        decay over ``total`` steps, and a gradient scaler that is on only for fp16."""
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        params = [(n, p) for n, p in self.model_.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in params if not no_decay(n)],
              "weight_decay": cfg.weight_decay},
             {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0}],
            lr=cfg.lr, fused=self.device_.type in ("cpu", "cuda"))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total), total)
        scaler = torch.amp.GradScaler(self.device_.type, enabled=cfg.precision == "fp16")
        return optimizer, scheduler, scaler

    def _optimizer_step(self, batch: np.ndarray, ids: list[list[int]], targets: list[Any],
                        run: _RunState, optimizer, scheduler, scaler) -> dict[str, Any]:
        """Forward, backward, clip and step on one batch; returns its history row."""
        cfg = self.config
        t0 = time.perf_counter()
        loss = self.replica_.mean(self._accumulate(
            self.replica_.shard(batch), ids, targets, run.step + 1, scaler))
        self._embedding_rows.densify()
        if cfg.max_grad_norm:
            scaler.unscale_(optimizer)
            self._embedding_rows.clip_(list(self.model_.parameters()), cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        seconds = time.perf_counter() - t0
        return {"step": run.step, "epoch": run.step / self._per_epoch, "loss": loss,
                "lr": scheduler.get_last_lr()[0], "samples_per_s": len(batch) / seconds,
                "micro_batch": self.micro_batch_size_,
                "seconds": time.perf_counter() - run.started}

    def _evaluate_step(self, row: dict[str, Any], eval_df: pd.DataFrame | None,
                       run: _RunState) -> bool:
        """Every ``eval_every`` steps and at the last: eval metrics into the row; True when
        early stopping says the run should end."""
        if eval_df is None or not len(eval_df) or not (
                row["step"] % run.eval_every == 0 or row["step"] == run.total):
            return False
        row.update(self._eval_metrics(eval_df))
        return self._should_stop(row)

    def _accumulate(self, batch: np.ndarray, ids: list[list[int]], targets: list[Any],
                    step: int, scaler: torch.amp.GradScaler) -> float:
        """Forward and backward the batch in micro-batches (loss weighted by their size, so
        the gradient equals the whole batch's); on an out-of-memory error halve the
        micro-batch and retry the step."""
        while True:
            micro = self.micro_batch_size_
            try:
                total = 0.0
                for start in range(0, len(batch), micro):
                    part = batch[start:start + micro]
                    last = start + micro >= len(batch)
                    loss = self._batch_loss(part, ids, targets, last)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"loss became {loss.item()} at step {step}; lower lr "
                            f"(now {self.config.lr}) or check the inputs; last good "
                            f"checkpoint: {getattr(self, '_last_checkpoint', None) or 'none'}")
                    with self.replica_.no_sync(self._train_model, last):
                        scaler.scale(loss * (len(part) / len(batch))).backward()
                    total += loss.item() * len(part) / len(batch)
                return total
            except torch.OutOfMemoryError:
                self.model_.zero_grad(set_to_none=True)
                if micro == 1:
                    raise
                self.micro_batch_size_ = max(1, micro // 2)
                if self.device_.type == "cuda":
                    torch.cuda.empty_cache()
                events.publish("train.oom", trainer=self, step=step,
                               micro_batch=self.micro_batch_size_)

    def _batch_loss(self, part: np.ndarray, ids: list[list[int]], targets: list[Any],
                    last: bool) -> torch.Tensor:
        """The loss of one micro-batch: the model's own (cross-entropy, or masked-token for
        masked-lm), mixed with the teacher's soft targets when distilling."""
        cfg = self.config
        if self._collator is not None:
            inputs = mlm.masked_batch(self._collator, [ids[i] for i in part], self.device_)
        else:
            labels = ner.pad([targets[i] for i in part]) if self._tokens \
                else torch.tensor([targets[i] for i in part])
            inputs = {**self._collate([ids[i] for i in part]), "labels": labels.to(self.device_)}
        with self.replica_.no_sync(self._train_model, last), self._embedding_rows.sparse(), \
                inference.autocast(self.device_, cfg.precision):
            out = self._train_model(**inputs)
            if cfg.method != "distill":
                return out.loss
            return distill.loss(out.logits, out.loss, self._soft[part].to(self.device_),
                                cfg.temperature, cfg.alpha)

    def _should_stop(self, row: dict[str, Any]) -> bool:
        """Early stopping: count evaluations since the best value of the chosen metric."""
        name = self.config.early_stopping
        if name is None:
            return False
        if name not in row:
            raise ConfigError("early_stopping", name, "one of the evaluation metrics: "
                              + ", ".join(k for k in row if k.startswith("eval_")))
        value = row[name] if "loss" not in name else -row[name]
        if getattr(self, "best_score_", None) is None or value > self._best_value:
            self._best_value, self.best_score_, self.best_step_ = value, row[name], row["step"]
            self._stale = 0
            return False
        self._stale += 1
        return self._stale >= self.config.patience

    def _eval_metrics(self, df: pd.DataFrame) -> dict[str, float]:
        report = self.evaluate(df)
        return {f"eval_{k}": v for k, v in report.to_dict().items()}


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layernorm" in name
