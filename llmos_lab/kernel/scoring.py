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
    (contexts, continuations). ``batch_size`` counts rows (a context with one continuation)."""
    conts = continuation_ids(tokenizer, continuations)
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        head = [tokenizer.bos_token_id, *head]
    if not head and any(not c for c in ctx_ids):
        raise ConfigError("contexts", [c for c, i in zip(contexts, ctx_ids, strict=True)
                                       if not i][:3], "texts of at least one token (or a prefix)")
    cache, head_logp = None, None
    if head:
        out = model(torch.tensor([head], device=device), use_cache=True)
        cache, head_logp = returned_cache(out), torch.log_softmax(out.logits[0, -1].float(), -1)
    scores = np.zeros((len(ctx_ids), len(conts)))
    texts = max(1, batch_size // len(conts))
    for start in range(0, len(ctx_ids), texts):
        scores[start:start + texts] = _score(model, tokenizer, (head, cache, head_logp),
                                             ctx_ids[start:start + texts], conts, device)
    return scores


def _score(model, tokenizer, prefix, ctxs: list[list[int]], conts: list[list[int]],
           device) -> np.ndarray:
    """Contexts in one pass over the prefix's cache; then every continuation of every context
    from the context's cache (copied per continuation), minus each continuation's last token,
    which predicts nothing. Rows are right-padded; explicit positions keep each row's tokens
    where an unpadded run would put them."""
    head, cache, head_logp = prefix
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width, start = max(1, max(map(len, ctxs))), len(head)
    ids, mask = _padded(ctxs, width, pad, start)
    positions = torch.arange(start, start + width).expand(len(ctxs), width)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), use_cache=True,
                **_expanded(model, cache, len(ctxs)))
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    first = torch.stack([logp[r, len(c) - 1] if c else head_logp for r, c in enumerate(ctxs)])
    scores = first[:, [c[0] for c in conts]].cpu().numpy().astype(np.float64)
    rest = max(len(c) for c in conts) - 1
    if rest == 0:
        return scores
    n = len(conts)
    past = returned_cache(out)
    past.batch_repeat_interleave(n)  # row r * n + j: context r, continuation j
    tails = [c[:-1] for c in conts] * len(ctxs)
    tail_ids, tail_mask = _padded(tails, rest, pad, 0)
    mask2 = torch.cat([mask.repeat_interleave(n, dim=0), tail_mask], dim=1)
    lengths = torch.tensor([len(c) for c in ctxs]).repeat_interleave(n)
    pos2 = start + lengths[:, None] + torch.arange(rest)[None, :]
    logits = model(input_ids=tail_ids.to(device), attention_mask=mask2.to(device),
                   position_ids=pos2.to(device), **cache_kwarg(model, past)).logits
    logp2 = torch.log_softmax(logits.float(), dim=-1)
    for row in range(len(ctxs) * n):
        cont = conts[row % n]
        if len(cont) > 1:  # position k predicts token k + 1
            steps = torch.arange(len(cont) - 1)
            scores[row // n, row % n] += float(logp2[row, steps, torch.tensor(cont[1:])].sum())
    return scores


def _padded(rows: list[list[int]], width: int, pad: int, start: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (width) and an attention mask over ``start`` cached positions + them."""
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), start + width), dtype=torch.long)
    mask[:, :start] = 1
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, start:start + len(row)] = 1
    return ids, mask


def _expanded(model, cache, count: int) -> dict:
    if cache is None:
        return {}
    past = copy.deepcopy(cache)
    past.batch_repeat_interleave(count)
    return cache_kwarg(model, past)
