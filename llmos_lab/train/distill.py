"""Knowledge distillation (Hinton et al., 2015): a smaller student learns the teacher's
softened class probabilities as well as the labels.

The teacher is asked once, before training, for every training text (its probabilities are
fixed, so asking again each epoch would only repeat work); the student's loss is
``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels)``, where
``_T`` is a softmax at temperature ``T`` (the ``T^2`` keeps the soft term's gradients on the
labels' scale as ``T`` grows). A student is made smaller either by being a smaller model
(``model='tiny-bert'``) or by keeping ``layers`` of a larger one, evenly spaced.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import inference, loading
from ..errors import ConfigError
from ..model_task import ModelTask


def teacher_probabilities(teacher: Any, texts: Sequence[str], labels: Sequence[Any], *,
                          max_length: int, batch_size: int) -> tuple[np.ndarray, int]:
    """(probabilities of each of ``labels`` per text, the teacher's parameter count).

    The teacher's labels must be the data's: a teacher that knows other classes cannot say how
    likely this data's classes are.
    """
    if isinstance(teacher, tuple):
        kernel, name = teacher
        frame = kernel.infer(name, list(texts), batch_size=batch_size, max_length=max_length)
        record = kernel.record(name.split(":")[0])  # infer just faulted it in
        size = _params(record.model) if record.model is not None else record.bytes // 4
    elif hasattr(teacher, "predict"):
        frame, size = teacher.predict(list(texts)), _params(teacher.model_)
    else:
        frame, size = _saved_teacher(Path(teacher), texts, max_length, batch_size)
    known = [c[2:] for c in frame.columns if c.startswith("p_")]
    wanted = [str(x) for x in labels]
    if sorted(known) != sorted(wanted):
        raise ConfigError("teacher", _name(teacher), f"a teacher with the data's labels "
                          f"{wanted}; it knows {known}")
    return frame[[f"p_{x}" for x in wanted]].to_numpy(dtype=np.float32), size


def _saved_teacher(folder: Path, texts: Sequence[str], max_length: int, batch_size: int):
    from transformers import AutoTokenizer

    if not (folder / "config.json").exists():
        raise ConfigError("teacher", str(folder), "a folder saved by Trainer.save (no "
                          "config.json there)")
    source = loading.Source.resolve(folder)
    model, _ = loading.load_weights(source, ModelTask.SEQUENCE_CLASSIFICATION, {}, None)
    with loading.quiet():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    probs = inference.class_probabilities(model, tokenizer, list(texts), max_length=max_length,
                                          batch_size=batch_size, device=torch.device("cpu"))
    labels = [model.config.id2label[i] for i in range(probs.shape[1])]
    return inference.probabilities_frame(probs, labels), _params(model)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _name(teacher: Any) -> str:
    if isinstance(teacher, tuple):
        return f"kernel model {teacher[1]!r}"
    if hasattr(teacher, "config"):
        return f"Trainer({teacher.config.model!r})"
    return str(teacher)


def warn_if_larger(student: torch.nn.Module, teacher_params: int) -> None:
    """A student as large as its teacher is allowed (self-distillation) but rarely meant."""
    size = _params(student)
    if size > teacher_params:
        warnings.warn(f"the student has {size:,} parameters, more than its teacher's "
                      f"{teacher_params:,}: distillation usually trains a smaller model",
                      UserWarning, stacklevel=4)


def loss(logits: torch.Tensor, label_loss: torch.Tensor, teacher_probs: torch.Tensor,
         temperature: float, alpha: float) -> torch.Tensor:
    """The student's loss on one micro-batch (see the module docstring)."""
    t = temperature
    soft_teacher = torch.softmax(torch.log(teacher_probs.clamp_min(1e-12)) / t, dim=-1)
    student = torch.log_softmax(logits.float() / t, dim=-1)
    kl = torch.nn.functional.kl_div(student, soft_teacher, reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * label_loss


def keep_layers(model: torch.nn.Module, count: int, what: str) -> list[int]:
    """Keep ``count`` of the encoder's layers, evenly spaced with the first and the last, in
    place (DistilBERT-style initialisation); returns the kept indices."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError("layers", count, f"None for {what} (no encoder.layer list to take "
                          f"layers from)")
    total = len(layers)
    if count > total:
        raise ConfigError("layers", count, f"at most {total}, the layers {what} has")
    keep = sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)}) \
        if count > 1 else [total - 1]
    base.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    for new, layer in enumerate(base.encoder.layer):  # attention caches index by layer
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new
    return keep
