"""How likely a causal LM finds each continuation of each context: the log-likelihood call
that zero- and few-shot classification is built on (as lm-evaluation-harness scores choices).

A shared ``prefix`` (an instruction and few-shot examples) is run once and its KV cache reused
for every row, so a 16-shot prompt costs its examples once, not once per text and label. Each
row is a context followed by one continuation; rows are right-padded, so positions after the
prefix are the same as in an unpadded run, and only the continuation's tokens are scored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .decode import cache_kwarg, returned_cache


def continuation_ids(tokenizer, continuations: Sequence[str]) -> list[list[int]]:
    """Token ids of each continuation; one that tokenizes to nothing cannot be scored."""
    ids = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    for text, row in zip(continuations, ids, strict=True):
        if not row:
            raise ConfigError("labels", text, "labels that tokenize to at least one token "
                              "(this one is empty to the tokenizer)")
    return ids


@torch.inference_mode()
def loglikelihood(model, tokenizer, prefix: str, contexts: Sequence[str],
                  continuations: Sequence[str], *, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """Summed log-probability of each continuation after ``prefix + context``, shape
    (contexts, continuations)."""
    conts = continuation_ids(tokenizer, continuations)
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        head = [tokenizer.bos_token_id, *head]
    cache = None
    if head:
        cache = returned_cache(model(torch.tensor([head], device=device), use_cache=True))
    rows = [(i, j, ctx, cont) for i, ctx in enumerate(ctx_ids)
            for j, cont in enumerate(conts)]
    out = np.zeros((len(ctx_ids), len(conts)))
    per_batch = max(1, batch_size)
    for start in range(0, len(rows), per_batch):
        part = rows[start:start + per_batch]
        for (i, j, _, _), value in zip(part, _score(model, tokenizer, head, cache, part,
                                                    device), strict=True):
            out[i, j] = value
    return out


def _score(model, tokenizer, head: list[int], cache, part, device) -> list[float]:
    seqs = [ctx + cont for _, _, ctx, cont in part]
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), len(head) + width), dtype=torch.long)
    mask[:, :len(head)] = 1
    for r, seq in enumerate(seqs):
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, len(head):len(head) + len(seq)] = 1
    kwargs = {}
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(seqs))
        kwargs = cache_kwarg(model, past)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for r, (_, _, ctx, cont) in enumerate(part):
        # token t of the row is predicted by the logits at t - 1
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        scores.append(float(logp[r, positions, torch.tensor(cont)].sum()))
    return scores
