"""One optimizer step's inner work for the Trainer: micro-batches with gradient
accumulation (halving on out-of-memory), and the early-stopping rule.

Mixed into :class:`~llmos_lab.trainer.Trainer`, whose loop calls these once per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import events, inference
from ..errors import ConfigError, TrainingError
from . import ner


class TrainingStep:
    """Expects the Trainer's ``config``, ``model_``, ``micro_batch_size_``, ``device_``,
    ``replica_``, ``_train_model``, ``_collate`` and ``_tokens``."""

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
                    labels = ner.pad([targets[i] for i in part]) if self._tokens \
                        else torch.tensor([targets[i] for i in part])
                    with self.replica_.no_sync(self._train_model, last), \
                            inference.autocast(self.device_, self.config.precision):
                        out = self._train_model(**self._collate([ids[i] for i in part]),
                                                labels=labels.to(self.device_))
                    if not torch.isfinite(out.loss):
                        raise TrainingError(
                            f"loss became {out.loss.item()} at step {step}; lower lr "
                            f"(now {self.config.lr}) or check the inputs; last good "
                            f"checkpoint: {getattr(self, '_last_checkpoint', None) or 'none'}")
                    with self.replica_.no_sync(self._train_model, last):
                        scaler.scale(out.loss * (len(part) / len(batch))).backward()
                    total += out.loss.item() * len(part) / len(batch)
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
