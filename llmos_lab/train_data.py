"""What a training run checks about its DataFrames before any work, for a given TrainConfig.

Errors name the column and rows at fault; the fingerprint lets a resumed run prove it continues
on the data it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from . import checkpoints, ner
from .datasets import require_columns
from .errors import ColumnTypeError, UnseenLabelError
from .train_config import TrainConfig


def _tokens(cfg: TrainConfig) -> bool:
    return cfg.task == "token-classification"


def check_frame(cfg: TrainConfig, df: pd.DataFrame, what: str, with_labels: bool) -> None:
    """The configured columns exist and hold the right kinds of values."""
    if _tokens(cfg):
        return ner.check_frame(df, cfg.tokens_column, cfg.tags_column if with_labels else None,
                               what)
    cols = {"text": cfg.text_column}
    if with_labels:
        cols["label"] = cfg.label_column
    require_columns(df, **cols)
    texts = df[cfg.text_column]
    bad = texts.map(lambda t: not isinstance(t, str))
    if bad.any():
        rows = list(df.index[bad])[:5]
        raise ColumnTypeError(f"{what} column {cfg.text_column!r} must hold strings; rows "
                              f"{rows} do not (e.g. {texts[bad].iloc[0]!r})")


def check_labels(cfg: TrainConfig, df: pd.DataFrame, known: Sequence[Any]) -> None:
    """Every label (or tag) in ``df`` is one training saw; otherwise name the rows."""
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


def fingerprint(cfg: TrainConfig, df: pd.DataFrame) -> str:
    cols = [cfg.tokens_column, cfg.tags_column] if _tokens(cfg) \
        else [cfg.text_column, cfg.label_column]
    return checkpoints.fingerprint([list(map(str, df[c])) for c in cols])
