"""Ready-made tasks for the scheduler: training, an inference stream, an evaluation.

Each is a :class:`~llmos_lab.scheduler.Task` whose steps start when the task first runs, so a
training task learns its memory grant (and picks its micro-batch) from the allocator at that
moment. What a task produces is appended to ``task.output``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from . import inference
from .allocator import Resources
from .metrics import ClassificationReport
from .scheduler import Task


def training_task(trainer, train_df: pd.DataFrame, eval_df: pd.DataFrame | None = None, *,
                  id: str = "train", demand: Resources | dict | None = None,
                  minimum: Resources | dict | None = None, priority: int = 1,
                  weight: float = 1.0, tenant: str | None = None) -> Task:
    """One optimizer step per scheduler step; the memory grant sets the micro-batch."""
    def steps(grant: Resources | None = None) -> Iterator[dict[str, Any]]:
        memory = grant.memory if grant is not None and grant.memory > 0 else None
        return trainer.steps(train_df, eval_df, memory=memory)

    return Task(id, steps, "train", demand, minimum, priority, weight, tenant)


def inference_task(kernel, model: str, texts: Sequence[str] | pd.Series, *,
                   batch_size: int = 32, id: str = "infer", adapter: str | None = None,
                   demand: Resources | dict | None = None, priority: int = 1,
                   weight: float = 1.0, tenant: str | None = None) -> Task:
    """A stream of ``kernel.infer`` calls, one batch per step; ``task.output`` collects
    the result frames in order."""
    texts = inference.as_texts(texts)
    batch_size = inference.positive_int("batch_size", batch_size)
    task = Task(id, lambda: iter(()), "infer", demand, None, priority, weight, tenant,
                total_steps=-(-len(texts) // batch_size))

    def steps() -> Iterator[pd.DataFrame]:
        for start in range(0, len(texts), batch_size):
            frame = kernel.infer(model, texts[start:start + batch_size], adapter=adapter)
            task.output.append(frame)
            yield frame

    task.steps = steps
    return task


def evaluation_task(trainer, df: pd.DataFrame, *, batch_size: int = 64, id: str = "eval",
                    demand: Resources | dict | None = None, priority: int = 1,
                    weight: float = 1.0, tenant: str | None = None) -> Task:
    """Predict a labelled frame batch by batch; the last step appends the report."""
    batch_size = inference.positive_int("batch_size", batch_size)
    task = Task(id, lambda: iter(()), "eval", demand, None, priority, weight, tenant,
                total_steps=-(-len(df) // batch_size) + 1)

    def steps() -> Iterator[Any]:
        trainer._check_labels(df, trainer.labels_)  # fail before any work, naming the rows
        predicted: list[Any] = []
        for start in range(0, len(df), batch_size):
            predicted.extend(trainer.predict(df.iloc[start:start + batch_size])["label"])
            yield len(predicted)
        report = ClassificationReport.from_labels(
            list(df[trainer.config.label_column]), predicted, labels=trainer.labels_)
        task.output.append(report)
        yield report

    task.steps = steps
    return task
