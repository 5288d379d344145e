"""Make a trained classifier smaller after training: structured and unstructured pruning.

``prune(result, heads=0.5, ffn=0.3)`` removes that share of all attention heads and
feed-forward neurons, the least important first, across layers (each layer keeps one of each);
the model really shrinks (structure.py), so it is smaller and faster through the kernel.
Importance, given labelled ``data``, is Michel et al.'s (2019) first-order estimate: the
gradient of the loss with respect to a gate of 1 on each head's and neuron's output, summed in
absolute value over batches; without data it is the weight norm of the unit's output
projection. ``magnitude=0.5`` zeroes that share of all encoder weights by absolute value
(``torch.nn.utils.prune``): sparsity, not speed, on a CPU's dense kernels. A short recovery
fine-tune is ``pruned.recover(train_df)``.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _io, inference, loading, structure
from .constraints import FRACTION, check
from .errors import ConfigError
from .model_task import ModelTask


@dataclass
class Pruned:
    """A pruned model and its tokenizer; ``summary`` says what was removed."""

    model: torch.nn.Module
    tokenizer: Any
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model (loadable by ``kernel.load`` and ``Trainer(model=...)``), atomically."""
        def write(folder: str) -> None:
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)

        with loading.quiet():
            return _io.write_folder(path, write, kind="model", what="pruned model folder")

    def recover(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None = None,
                **config: Any):
        """A short fine-tune of the pruned model (a Trainer; default 50 steps at lr 3e-5)."""
        from .train import TrainConfig, Trainer

        folder = Path(tempfile.mkdtemp(prefix="pruned-")) / "model"
        self.save(folder)
        values = {"max_steps": 50, "lr": 3e-5, **config, "model": str(folder)}
        return Trainer(TrainConfig(**values)).fit(train_df, eval_df, progress=False)


def prune(source: Any, *, heads: float = 0.0, ffn: float = 0.0, magnitude: float = 0.0,
          data: pd.DataFrame | None = None, text_column: str = "text",
          label_column: str = "label", max_length: int = 128, batch_size: int = 32) -> Pruned:
    """Prune a fitted Trainer's model or a saved classifier folder (a copy; the source is
    untouched). ``heads``, ``ffn``, ``magnitude``: shares in [0, 1) to remove."""
    heads, ffn, magnitude = (check(n, v, [FRACTION]) for n, v in
                             (("heads", heads), ("ffn", ffn), ("magnitude", magnitude)))
    model, tokenizer = _model_of(source)
    model.eval()  # no dropout while importance is measured
    before = _count(model)
    if heads or ffn:
        head_scores, neuron_scores = importance(model, tokenizer, data, text_column,
                                                label_column, max_length, batch_size)
        for layer, keep_h, keep_n in zip(structure.layers(model),
                                         _keep(head_scores, heads), _keep(neuron_scores, ffn),
                                         strict=True):
            if len(keep_h) < structure.heads(layer):
                structure.keep_heads(layer, keep_h)
            if len(keep_n) < structure.neurons(layer):
                structure.keep_neurons(layer, keep_n)
        structure.record(model)
    if magnitude:
        _magnitude(model, magnitude)
    model.eval()
    return Pruned(model, tokenizer, {
        "parameters_before": before, "parameters": _count(model),
        "bytes": loading.module_bytes(model),
        "heads": sum(map(structure.heads, structure.layers(model))),
        "neurons": sum(map(structure.neurons, structure.layers(model))),
        "sparsity": _sparsity(model)})


def _model_of(source: Any) -> tuple[torch.nn.Module, Any]:
    if hasattr(source, "model_") and hasattr(source, "tokenizer_"):  # a fitted Trainer
        if getattr(source.config, "method", "full") in ("lora", "ia3"):
            raise ConfigError("source", f"Trainer({source.config.model!r})", "a full "
                              "fine-tune (an adapter's base is shared; merge it first)")
        model = copy.deepcopy(source.model_).cpu()
        return _plain_forward(model), source.tokenizer_
    if isinstance(source, (str, os.PathLike)) and (Path(source) / "config.json").is_file():
        src = loading.Source.resolve(source)
        model, tokenizer, _ = loading.load(src, ModelTask.SEQUENCE_CLASSIFICATION, {}, None)
        return model, tokenizer
    raise ConfigError("source", repr(source)[:80], "a fitted Trainer or a folder saved by "
                      "Trainer.save")


def _plain_forward(model: torch.nn.Module) -> torch.nn.Module:
    """Drop the Trainer's first-token shortcut (an instance attribute) from the copy."""
    for layer in model.modules():
        layer.__dict__.pop("forward", None)
    return model


def importance(model, tokenizer, data, text_column, label_column, max_length, batch_size
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer, a score per head and per neuron (larger: more important)."""
    found = structure.layers(model)
    if data is None:
        return ([_head_norms(x) for x in found],
                [x.output.dense.weight.norm(dim=0).detach().numpy() for x in found])
    gates_h = [torch.ones(structure.heads(x), requires_grad=True) for x in found]
    gates_n = [torch.ones(structure.neurons(x), requires_grad=True) for x in found]
    hooks = []
    for layer, gh, gn in zip(found, gates_h, gates_n, strict=True):
        size = structure.head_size(layer)
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(
            lambda _m, args, g=gh, s=size: (args[0] * g.repeat_interleave(s),)))
        hooks.append(layer.output.dense.register_forward_pre_hook(
            lambda _m, args, g=gn: (args[0] * g,)))
    score_h = [torch.zeros_like(g) for g in gates_h]
    score_n = [torch.zeros_like(g) for g in gates_n]
    texts = list(data[text_column])
    label2id = {str(k): v for k, v in model.config.label2id.items()}
    targets = [label2id.get(str(y)) for y in data[label_column]]
    if None in targets:
        raise ConfigError("data", label_column, f"labels the model knows: {list(label2id)}")
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    try:
        for start in range(0, len(ids), batch_size):
            part = ids[start:start + batch_size]
            batch = inference.collate(part, tokenizer.pad_token_id or 0, torch.device("cpu"))
            labels = torch.tensor(targets[start:start + batch_size])
            model(**batch, labels=labels).loss.backward()
            for acc, gate in zip([*score_h, *score_n], [*gates_h, *gates_n], strict=True):
                acc += gate.grad.abs()
                gate.grad = None
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
    return ([_normalise(s) for s in score_h], [_normalise(s) for s in score_n])


def _head_norms(layer) -> np.ndarray:
    weight, size = layer.attention.output.dense.weight, structure.head_size(layer)
    return np.array([float(weight[:, h * size:(h + 1) * size].detach().norm())
                     for h in range(structure.heads(layer))])


def _normalise(score: torch.Tensor) -> np.ndarray:
    """Per-layer L2 normalisation (Michel et al.): layers compare on one scale."""
    score = score.detach()
    return (score / score.norm().clamp_min(1e-12)).numpy()


def _keep(scores: list[np.ndarray], share: float) -> list[list[int]]:
    """Indices to keep per layer after removing ``share`` of all units, lowest score first,
    never a layer's last unit."""
    flat = sorted((float(s), layer, i) for layer, row in enumerate(scores)
                  for i, s in enumerate(row))
    left = [len(row) for row in scores]
    removed: set[tuple[int, int]] = set()
    for _, layer, i in flat[:]:
        if len(removed) >= round(share * len(flat)):
            break
        if left[layer] > 1:
            removed.add((layer, i))
            left[layer] -= 1
    return [[i for i in range(len(row)) if (layer, i) not in removed]
            for layer, row in enumerate(scores)]


def _magnitude(model: torch.nn.Module, amount: float) -> None:
    from torch.nn.utils import prune as torch_prune

    targets = [(m, "weight") for layer in _encoder_modules(model) for m in layer.modules()
               if isinstance(m, torch.nn.Linear)]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured,
                                    amount=amount)
    for module, name in targets:
        torch_prune.remove(module, name)


def _encoder_modules(model) -> list[torch.nn.Module]:
    try:
        return structure.layers(model)
    except ConfigError:
        return [model]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sparsity(model: torch.nn.Module) -> float:
    weights = [m.weight for layer in _encoder_modules(model) for m in layer.modules()
               if isinstance(m, torch.nn.Linear)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / max(1, total))
