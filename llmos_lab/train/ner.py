"""Token classification: words in, one tag per word out, sub-tokens in between.

A word-piece tokenizer splits words into sub-tokens; training labels the first sub-token of each
word (the others are ignored with -100) or, with ``all_subtokens``, every sub-token (a ``B-X``
word continues as ``I-X``). Predictions come back per word (see
:func:`llmos_lab.inference.word_tags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from ..datasets import require_columns
from ..errors import ColumnTypeError, DataError
from .vocab import unknown_rate

__all__ = ["IGNORE", "align", "check_frame", "encode", "pad", "unknown_rate"]

IGNORE = -100  # the label id PyTorch's cross-entropy skips


def check_frame(df: pd.DataFrame, tokens: str, tags: str | None, what: str) -> None:
    """Lists of strings, and as many tags as tokens in every row; errors name the row."""
    require_columns(df, tokens=tokens, **({"tags": tags} if tags else {}))
    for row, words in zip(df.index, df[tokens], strict=True):
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
            raise ColumnTypeError(f"{what} row {row!r}, column {tokens!r}: expected a list of "
                                  f"strings, got {words!r}")
    if tags:
        for row, words, labels in zip(df.index, df[tokens], df[tags], strict=True):
            if not isinstance(labels, (list, tuple)) or len(labels) != len(words):
                n = len(labels) if isinstance(labels, (list, tuple)) else "no list of"
                raise DataError(f"{what} row {row!r}: {len(words)} tokens but {n} tags in "
                                f"column {tags!r}")


def as_sentences(data: object) -> list[list[str]]:
    """Sentences as word lists: a string is one sentence split on whitespace; a sequence
    holds strings (split likewise) or word lists."""
    if isinstance(data, str):
        return [data.split()]
    if data is None or isinstance(data, (bytes, dict)) or not isinstance(data, Sequence):
        raise ColumnTypeError(f"sentences must be a string, a list of strings or a list of "
                              f"word lists, got {type(data).__name__}")
    out = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            out.append(item.split())
        elif isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item):
            out.append(list(item))
        else:
            raise ColumnTypeError(f"sentence {i} must be a string or a list of words, got "
                                  f"{item!r}")
    return out


def check_iob2(df: pd.DataFrame, tags: str, what: str) -> None:
    """Every tag is ``O`` or ``B-TYPE`` / ``I-TYPE``, as seqeval's strict IOB2 reads them."""
    for row, labels in zip(df.index, df[tags], strict=True):
        for tag in labels:
            if not (tag == "O" or (isinstance(tag, str) and len(tag) > 2
                                   and tag[:2] in ("B-", "I-"))):
                raise DataError(f"{what} row {row!r}, column {tags!r}: tag {tag!r} is not "
                                f"IOB2 ('O', 'B-TYPE' or 'I-TYPE'); convert the scheme first "
                                f"(datasets.read_conll(..., scheme=...))")


def encode(tokenizer, words: Sequence[Sequence[str]], max_length: int):
    return tokenizer([list(w) for w in words], is_split_into_words=True, truncation=True,
                     max_length=max_length)


def align(encoding, tags: Sequence[Sequence[str]], label_index: Mapping[str, int],
          all_subtokens: bool = False) -> list[list[int]]:
    """One label id per sub-token: the word's tag on its first sub-token, IGNORE elsewhere
    (or the tag, B- turned into I-, with ``all_subtokens``); special tokens IGNORE."""
    out = []
    for i, word_tags in enumerate(tags):
        row, previous = [], None
        for word in encoding.word_ids(i):
            if word is None:
                row.append(IGNORE)
            elif word != previous:
                row.append(label_index[word_tags[word]])
            elif all_subtokens:
                tag = word_tags[word]
                inside = "I-" + tag[2:] if tag.startswith("B-") else tag
                row.append(label_index.get(inside, label_index[tag]))
            else:
                row.append(IGNORE)
            previous = word
        out.append(row)
    return out


def pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [IGNORE] * (width - len(r)) for r in rows])
