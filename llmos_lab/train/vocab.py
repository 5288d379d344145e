"""Teach a tokenizer the words it does not know, so fine-tuning does not learn from ``[UNK]``.

MiniLM's English word pieces map 62% of MSRA's Chinese characters to ``[UNK]``: those tokens all
share one embedding, so the model cannot tell them apart. Adding the training set's frequent
unknown words as whole tokens and resizing the embeddings gives each its own row (initialised
to the mean of the old rows by transformers), which then learns during fine-tuning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch


def unknown_rate(tokenizer, words: Sequence[Sequence[str]]) -> float:
    """Fraction of words the tokenizer maps to its unknown token."""
    flat = [w for ws in words for w in ws]
    if not flat or tokenizer.unk_token_id is None:
        return 0.0
    unknown = set(unknown_words(tokenizer, [flat], min_count=1))
    return sum(w in unknown for w in flat) / len(flat)


def unknown_words(tokenizer, words: Iterable[Sequence[str]], *, min_count: int = 2,
                  limit: int | None = None) -> list[str]:
    """Words that tokenize to something containing the unknown token, seen at least
    ``min_count`` times; most frequent first (ties in sorted order, so runs agree)."""
    unk = tokenizer.unk_token_id
    counts = Counter(w for ws in words for w in ws)
    if unk is None or not counts:
        return []
    distinct = sorted(counts)
    ids = tokenizer(distinct, add_special_tokens=False)["input_ids"]
    found = [w for w, x in zip(distinct, ids, strict=True)
             if unk in x and counts[w] >= min_count]
    found.sort(key=lambda w: (-counts[w], w))
    return found[:limit]


def extend(tokenizer, model: torch.nn.Module, new_words: Sequence[str]) -> list[int]:
    """Add ``new_words`` to the tokenizer and grow the model's input embeddings to match;
    returns the new token ids."""
    if not new_words:
        return []
    before = len(tokenizer)
    tokenizer.add_tokens(list(new_words))
    model.resize_token_embeddings(len(tokenizer))
    return list(range(before, len(tokenizer)))
