"""What a training run checks about its DataFrames before any work, for a given TrainConfig.

Errors name the column and rows at fault; the fingerprint lets a resumed run prove it continues
on the data it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..datasets import require_columns
from ..errors import ColumnTypeError, ConfigError, DataError, UnseenLabelError
from ..model_task import ModelTask
from . import checkpoints, ner
from .config import TrainConfig


def _tokens(cfg: TrainConfig) -> bool:
    return cfg.task == ModelTask.TOKEN_CLASSIFICATION


def labels_of(cfg: TrainConfig, df: pd.DataFrame) -> list[Any]:
    """The classes training learns, sorted (none for masked-lm: its targets are the text)."""
    if cfg.task == ModelTask.MASKED_LM:
        return []
    if _tokens(cfg):
        labels = sorted({t for tags in df[cfg.tags_column] for t in tags})
    else:
        labels = sorted(pd.unique(df[cfg.label_column]), key=str)
    check_classes(labels, cfg.tags_column if _tokens(cfg) else cfg.label_column)
    return labels


def check_frame(cfg: TrainConfig, df: pd.DataFrame, what: str, with_labels: bool) -> None:
    """The configured columns exist and hold the right kinds of values."""
    if not isinstance(df, pd.DataFrame):
        raise ColumnTypeError(f"{what} data must be a pandas DataFrame, got "
                              f"{type(df).__name__}")
    if _tokens(cfg):
        ner.check_frame(df, cfg.tokens_column, cfg.tags_column if with_labels else None, what)
        if with_labels:
            ner.check_iob2(df, cfg.tags_column, what)
        return
    cols = {"text": cfg.text_column}
    with_labels = with_labels and cfg.task != ModelTask.MASKED_LM
    if with_labels:
        cols["label"] = cfg.label_column
    require_columns(df, **cols)
    texts = df[cfg.text_column]
    bad = texts.map(lambda t: not isinstance(t, str))
    if bad.any():
        rows = list(df.index[bad])[:5]
        raise ColumnTypeError(f"{what} column {cfg.text_column!r} must hold strings; rows "
                              f"{rows} do not (e.g. {texts[bad].iloc[0]!r})")
    if with_labels:
        check_label_values(df, cfg.label_column, what)


def check_label_values(df: pd.DataFrame, column: str, what: str) -> None:
    """No missing labels, and no two labels that print alike (the int 1 and the string "1")."""
    col = df[column]
    missing = col.isna()
    if missing.any():
        rows = list(df.index[missing])
        raise DataError(f"{what} column {column!r} has missing labels (None/NaN) in rows "
                        f"{rows[:5]}{' ...' if len(rows) > 5 else ''}; drop or fill them")
    seen: dict[str, Any] = {}
    for value in pd.unique(col):
        other = seen.setdefault(str(value), value)
        if type(other) is not type(value):
            raise DataError(f"{what} column {column!r} mixes labels that print alike: "
                            f"{other!r} ({type(other).__name__}) and {value!r} "
                            f"({type(value).__name__}); make them one type")


def check_classes(labels: Sequence[Any], column: str) -> None:
    """Training needs two classes at least: one class would train a one-output head."""
    if len(labels) < 2:
        raise DataError(f"the training data has one class only in column {column!r} "
                        f"({labels[0]!r}); a classifier needs at least two")


def check_labels(cfg: TrainConfig, df: pd.DataFrame, known: Sequence[Any]) -> None:
    """Every label (or tag) in ``df`` is one training saw; otherwise name the rows."""
    if cfg.task == ModelTask.MASKED_LM:
        return
    if _tokens(cfg):
        known_set = set(known)
        column = df[cfg.tags_column]
        rows = [r for r, tags in zip(df.index, column, strict=True)
                if not set(tags) <= known_set]
        if rows:
            raise UnseenLabelError({t for tags in column for t in tags} - known_set, known, rows)
        return
    col = df[cfg.label_column]
    unseen = ~col.isin(list(known))
    if unseen.any():
        raise UnseenLabelError(set(col[unseen]), known, list(df.index[unseen]))


def check_resumable(cfg: TrainConfig, labels: Sequence[Any], state: dict[str, Any],
                    df: pd.DataFrame, path: Any) -> None:
    """A resumed run continues on the labels and rows its checkpoint was written with."""
    if [str(x) for x in labels] != state["labels"]:
        raise ConfigError("labels", labels, f"the checkpoint's {state['labels']} ({path})")
    if fingerprint(cfg, df) != state["data"]:
        raise ConfigError("train_df", "(these rows)", f"the training data the checkpoint "
                          f"{path} was written with (same rows, same order)")


def fingerprint(cfg: TrainConfig, df: pd.DataFrame) -> str:
    cols = [cfg.tokens_column, cfg.tags_column] if _tokens(cfg) \
        else [cfg.text_column] if cfg.task == ModelTask.MASKED_LM \
        else [cfg.text_column, cfg.label_column]
    return checkpoints.fingerprint([list(map(str, df[c])) for c in cols])
