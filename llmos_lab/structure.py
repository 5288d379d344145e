"""Structural edits of BERT-family encoder layers: keep some attention heads and some
feed-forward neurons, and rebuild a model saved that way.

Transformers 5 dropped ``prune_heads``; BERT's attention reshapes with ``-1`` heads, so a layer
whose query/key/value projections keep ``k`` heads' rows (and whose output projection keeps
their columns) simply computes ``k`` heads. A pruned model records its kept counts per layer in
``config.llmos_pruned``; :func:`rebuild` gives a freshly built model those shapes before its
weights are loaded, so ``kernel.load`` and ``Trainer(model=folder)`` read it like any model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import ConfigError

KEY = "llmos_pruned"


def layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder layers of a BERT-family model, or a ConfigError naming its type."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    found = getattr(getattr(base, "encoder", None), "layer", None)
    if found is None or not all(hasattr(x, "attention") and hasattr(x, "intermediate")
                                for x in found):
        raise ConfigError("model", type(model).__name__, "a BERT-family encoder (MiniLM, BERT, "
                          "tiny-bert): structured pruning edits its attention and feed-forward "
                          "layers")
    return list(found)


def head_size(layer: torch.nn.Module) -> int:
    return layer.attention.self.attention_head_size


def heads(layer: torch.nn.Module) -> int:
    return layer.attention.self.query.out_features // head_size(layer)


def neurons(layer: torch.nn.Module) -> int:
    return layer.intermediate.dense.out_features


def _rows(linear: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None,
                          dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        new.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[keep])
    return new


def _columns(linear: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None,
                          dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def keep_heads(layer: torch.nn.Module, keep: Sequence[int]) -> None:
    """Keep only the heads ``keep`` (indices into the layer's current heads)."""
    attn, size = layer.attention.self, head_size(layer)
    idx = torch.tensor([h * size + i for h in sorted(keep) for i in range(size)],
                       dtype=torch.long)
    attn.query, attn.key, attn.value = (_rows(attn.query, idx), _rows(attn.key, idx),
                                        _rows(attn.value, idx))
    attn.num_attention_heads = len(keep)
    attn.all_head_size = len(idx)
    layer.attention.output.dense = _columns(layer.attention.output.dense, idx)


def keep_neurons(layer: torch.nn.Module, keep: Sequence[int]) -> None:
    """Keep only the feed-forward neurons ``keep``."""
    idx = torch.tensor(sorted(keep), dtype=torch.long)
    layer.intermediate.dense = _rows(layer.intermediate.dense, idx)
    layer.output.dense = _columns(layer.output.dense, idx)


def record(model: torch.nn.Module) -> None:
    """Write the kept counts into the config (saved with it)."""
    found = layers(model)
    setattr(model.config, KEY, {"heads": [heads(x) for x in found],
                                "neurons": [neurons(x) for x in found]})


def rebuild(model: torch.nn.Module, shapes: dict) -> None:
    """Give a freshly built model the saved shapes (its weights are loaded afterwards)."""
    for layer, h, n in zip(layers(model), shapes["heads"], shapes["neurons"], strict=True):
        if h != heads(layer):
            keep_heads(layer, range(h))
        if n != neurons(layer):
            keep_neurons(layer, range(n))
