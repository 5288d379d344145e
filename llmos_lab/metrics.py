"""Classification reports computed by scikit-learn (classes) and seqeval (entities).

A :class:`ClassificationReport` holds everything as DataFrames so a notebook can sort, join and
plot them, and renders itself as HTML. Token-classification reports are entity-level (seqeval,
strict IOB2) with a token-level confusion matrix beside them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import DataError
from .model_task import ModelTask


@dataclass
class ClassificationReport:
    """Per-class precision/recall/F1/support, accuracy, macro-F1 and a confusion matrix.

    ``table`` has one row per class (entity type for NER) plus ``macro avg`` and
    ``weighted avg``; ``confusion`` is indexed by true label, columns by predicted label.
    """

    table: pd.DataFrame
    confusion: pd.DataFrame
    accuracy: float
    macro_f1: float
    task: str = ModelTask.SEQUENCE_CLASSIFICATION.value
    extras: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_labels(cls, y_true: Sequence[str], y_pred: Sequence[str],
                    labels: Sequence[str] | None = None) -> ClassificationReport:
        from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

        if len(y_true) == 0 or len(y_true) != len(y_pred):
            raise DataError(f"need equally many true and predicted labels, at least one; "
                            f"got {len(y_true)} and {len(y_pred)}")
        labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
        raw = classification_report(y_true, y_pred, labels=labels, output_dict=True,
                                    zero_division=0)
        table = _table(raw, labels)
        confusion = pd.DataFrame(confusion_matrix(y_true, y_pred, labels=labels),
                                 index=pd.Index(labels, name="true"),
                                 columns=pd.Index(labels, name="predicted"))
        return cls(table, confusion, float(accuracy_score(y_true, y_pred)),
                   float(table.loc["macro avg", "f1"]))

    @classmethod
    def from_tags(cls, y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]],
                  labels: Sequence[str] | None = None) -> ClassificationReport:
        """Entity-level report (seqeval, strict IOB2) plus token-level confusion and accuracy."""
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2
        from sklearn.metrics import confusion_matrix

        with warnings.catch_warnings(), np.errstate(all="ignore"):  # no entities: mean of []
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = classification_report(y_true, y_pred, mode="strict", scheme=IOB2,
                                        output_dict=True, zero_division=0)
        entity_types = sorted(k for k in raw if not k.endswith(" avg"))
        table = _table(raw, entity_types)
        flat_true = [t for seq in y_true for t in seq]
        flat_pred = [t for seq in y_pred for t in seq]
        tags = list(labels) if labels is not None else sorted(set(flat_true) | set(flat_pred))
        confusion = pd.DataFrame(confusion_matrix(flat_true, flat_pred, labels=tags),
                                 index=pd.Index(tags, name="true"),
                                 columns=pd.Index(tags, name="predicted"))
        token_acc = float(np.mean(np.array(flat_true) == np.array(flat_pred))) \
            if flat_true else 0.0
        micro = raw.get("micro avg", {}).get("f1-score", 0.0)
        return cls(table, confusion, token_acc, float(table.loc["macro avg", "f1"]),
                   task=ModelTask.TOKEN_CLASSIFICATION.value, extras={"micro_f1": float(micro)})

    @property
    def labels(self) -> list[str]:
        return [i for i in self.table.index if i not in _AVERAGES]

    def to_dict(self) -> dict[str, float]:
        """Flat summary, the shape ``lab.record`` and history rows use."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, **self.extras}

    def plot(self, ax=None, normalize: bool = True):
        """Confusion-matrix heat map (rows normalised to recall by default) on ``ax`` or a
        new Agg figure; returns a Display with ``ax_`` and ``figure_``."""
        from . import plots

        side = 1.2 + 0.6 * len(self.confusion)
        ax = plots.axes_or_new(ax, side, side)
        plots.confusion_heatmap(ax, self.confusion, normalize)
        ax.set_title(f"accuracy {self.accuracy:.3f} · macro-F1 {self.macro_f1:.3f}")
        return plots.Display(ax)

    def __repr__(self) -> str:
        return (f"ClassificationReport(task={self.task!r}, accuracy={self.accuracy:.4f}, "
                f"macro_f1={self.macro_f1:.4f}, classes={len(self.labels)})\n"
                f"{self.table.round(3).to_string()}")

    def _repr_html_(self) -> str:
        head = (f"<p><b>accuracy</b> {self.accuracy:.4f} &nbsp; <b>macro-F1</b> "
                f"{self.macro_f1:.4f}" + "".join(
                    f" &nbsp; <b>{k}</b> {v:.4f}" for k, v in self.extras.items()) + "</p>")
        return head + self.table.round(3).to_html() + "<p><b>confusion</b> (rows: true)</p>" \
            + self.confusion.to_html()


_AVERAGES = ("macro avg", "weighted avg")


def _table(raw: dict, labels: Sequence[str]) -> pd.DataFrame:
    """Rows per class plus averages; an average over no classes is 0, not NaN (zero_division)."""
    rows = {}
    for key in [*labels, *_AVERAGES]:
        r = raw.get(key, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        rows[key] = {m: float(np.nan_to_num(r[src])) for m, src in
                     (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"))}
        rows[key]["support"] = int(r["support"])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "class"
    return table


def majority_baseline(train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Accuracy of always predicting the most frequent training label."""
    if len(test_labels) == 0:
        return 0.0
    majority = pd.Series(list(train_labels)).mode().iloc[0]
    return float(np.mean([y == majority for y in test_labels]))
