"""How a model comes off disk: resolve, size up before loading, load, measure, quantize.

One path for every source: a shipped name, a local Hugging Face folder, a GGUF file (through
transformers' ``gguf_file``) or, where a network exists, a hub id. ``estimate_bytes`` builds the
model on the ``meta`` device, so the kernel can make room *before* the weights arrive.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _io, assets, int8, structure
from ._io import quiet
from .errors import ConfigError, LlmosError, ModelSourceError, TaskError
from .model_task import ModelTask

TASKS = tuple(t for t in ModelTask if t is not ModelTask.MASKED_LM)  # what the kernel serves
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Source:
    """Where weights live: a folder, plus a GGUF file name inside it when there is one."""

    folder: str
    gguf_file: str | None = None

    @classmethod
    def resolve(cls, name_or_path: str | Path) -> Source:
        """A GGUF file already converted once resolves to its safetensors conversion."""
        path = assets.model_path(name_or_path)
        if path.endswith(".gguf"):
            converted = gguf_conversion(Path(path))
            if (converted / "config.json").exists():
                return cls(str(converted))
            return cls(str(Path(path).parent), Path(path).name)
        return cls(path)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def model_class(task: str):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    return {ModelTask.SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
            ModelTask.TOKEN_CLASSIFICATION: AutoModelForTokenClassification,
            ModelTask.CAUSAL_LM: AutoModelForCausalLM,
            ModelTask.MASKED_LM: AutoModelForMaskedLM}[ModelTask(task)]


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError("dtype", dtype, "one of " + ", ".join(_DTYPES))
    return _DTYPES[dtype]


def read_config(source: Source):
    from transformers import AutoConfig

    try:
        with quiet():
            return AutoConfig.from_pretrained(source.folder, **source.kwargs)
    except (OSError, ValueError, KeyError) as exc:  # bad JSON, unknown model_type, hub id ...
        raise ModelSourceError(f"cannot read the model config of {source.folder!r}"
                               f"{' (' + source.gguf_file + ')' if source.gguf_file else ''}: "
                               f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


@contextlib.contextmanager
def source_errors(what: str):
    """Turn the many errors of a broken model folder (from transformers, huggingface_hub,
    safetensors, tokenizers) into one ModelSourceError naming it; our own errors pass."""
    try:
        yield
    except LlmosError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"cannot load {what}: {type(exc).__name__}: "
                               f"{_first_line(exc)}") from exc


def can_generate(config, source: Source) -> bool:
    archs = config.architectures or []
    return bool(source.gguf_file) or bool(getattr(config, "is_decoder", False)) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def infer_task(name: str, config, source: Source, task: str | None) -> ModelTask:
    """The task asked for, checked against what the model can do; or the one it was built for."""
    archs = config.architectures or []
    if task is None:
        if can_generate(config, source):
            return ModelTask.CAUSAL_LM
        for arch in archs:
            if arch.endswith("ForSequenceClassification"):
                return ModelTask.SEQUENCE_CLASSIFICATION
            if arch.endswith("ForTokenClassification"):
                return ModelTask.TOKEN_CLASSIFICATION
        raise TaskError(f"model {name!r} ({', '.join(archs) or config.model_type}) is a base "
                        f"model: pass task= one of {', '.join(TASKS)}")
    task = ModelTask.coerce(task)
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r} for model {name!r}; tasks: {', '.join(TASKS)}")
    if task is ModelTask.CAUSAL_LM and not can_generate(config, source):
        raise TaskError(f"model {name!r} ({', '.join(archs) or config.model_type}) is an encoder "
                        f"and cannot do causal-lm; it can do sequence-classification or "
                        f"token-classification")
    return task


def head_kwargs(task: str, config, num_labels: int | None, labels: list[str] | None
                ) -> dict[str, Any]:
    if task == ModelTask.CAUSAL_LM:
        return {}
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or \
                len(labels) == 0:
            raise ConfigError("labels", labels, "a non-empty list of label names")
        labels = [str(x) for x in labels]
        if len(set(labels)) < len(labels):
            raise ConfigError("labels", labels, "distinct label names")
        if num_labels is not None and num_labels != len(labels):
            raise ConfigError("num_labels", num_labels, f"{len(labels)} (the number of labels)")
        num_labels = len(labels)
    elif num_labels is not None:
        labels = [f"LABEL_{i}" for i in range(num_labels)]
    else:  # keep what the checkpoint says (a fine-tuned classifier)
        return {}
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError("num_labels", num_labels, "an integer >= 1")
    return {"num_labels": num_labels, "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def estimate_bytes(config, task: str, head: dict[str, Any], dtype: torch.dtype | None) -> int:
    """Bytes of parameters and buffers, counted on the meta device (no memory used)."""
    import copy

    config = copy.deepcopy(config)
    for key, value in head.items():
        setattr(config, key, value)
    with quiet(), torch.device("meta"):
        skeleton = model_class(task).from_config(config)
    return module_bytes(skeleton, dtype)


def gguf_conversion(gguf: Path) -> Path:
    """Where a GGUF file's dequantised safetensors copy lives (keyed by name, size and mtime):
    dequantising and building the tokenizer from GGUF takes ~15 s, reading the copy ~1 s."""
    stat = gguf.stat()
    return assets.cache_dir() / "gguf" / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def load(source: Source, task: str, head: dict[str, Any], dtype: torch.dtype | None):
    """(model, tokenizer, image): ``image`` is a folder that rebuilds exactly these weights
    (the source itself, or a GGUF file's conversion), or None when a new head was initialised.
    A model with an image is *clean*: evicting it can simply drop it, as an OS drops clean
    pages."""
    from transformers import AutoTokenizer

    model, complete = load_weights(source, task, head, dtype)
    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(source.folder, **source.kwargs)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if source.gguf_file:  # weights are dequantised floats now; drop the GGUF marker
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if not complete:
            return model, tokenizer, None
        image = gguf_conversion(Path(source.folder) / source.gguf_file)
        _io.write_folder(image, lambda folder: (model.save_pretrained(folder),
                                                tokenizer.save_pretrained(folder)),
                         kind="model", replace=False, what="GGUF conversion")
        return model, tokenizer, image
    return model, tokenizer, Path(source.folder) if complete else None


def load_weights(source: Source, task: str, head: dict[str, Any], dtype: torch.dtype | None):
    """(model in eval mode, whether every weight came from the source). A fault-in needs only
    this: the kernel keeps each model's tokenizer while its weights are swapped out."""
    with quiet():
        kwargs = {**source.kwargs, **head}
        if dtype is not None:
            kwargs["dtype"] = dtype
        model, info = from_pretrained(model_class(task), source.folder,
                                      output_loading_info=True, **kwargs)
    model.eval()
    return model, not (info["missing_keys"] or info.get("mismatched_keys"))


def from_pretrained(cls, folder: str | os.PathLike, **kwargs: Any):
    """``cls.from_pretrained``, also for a model whose layers were pruned (structure.py): that
    one is built from its config, given its saved shapes, then given its weights (any whose
    shape still differs, such as a head for other labels, stays freshly initialised)."""
    config_file = Path(folder) / "config.json"
    shapes = json.loads(config_file.read_text()).get(structure.KEY) \
        if config_file.is_file() else None
    if not shapes:
        return cls.from_pretrained(folder, **kwargs)
    from safetensors.torch import load_file
    from transformers import AutoConfig

    with_info = kwargs.pop("output_loading_info", False)
    dtype = kwargs.pop("dtype", None)
    model = cls.from_config(AutoConfig.from_pretrained(folder, **kwargs))
    structure.rebuild(model, shapes)
    own = model.state_dict()
    saved: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        saved.update(load_file(file))
    fits = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fits, strict=False)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    info = {"missing_keys": set(own) - set(fits),
            "mismatched_keys": {k for k in saved if k in own and k not in fits}}
    return (model, info) if with_info else model


def module_bytes(module: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    """Parameters and buffers, each storage once (tied weights count once), plus the packed
    weights of dynamically quantized layers, which ``parameters()`` does not list, and the
    ``runtime_bytes`` a module run by another runtime declares."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        key = (id(t), t.numel()) if t.device.type == "meta" else (t.data_ptr(), t.numel())
        if key in seen:
            continue
        seen.add(key)
        size = (torch.empty((), dtype=dtype).element_size()
                if dtype is not None and t.is_floating_point() else t.element_size())
        total += t.numel() * size
    for m in module.modules():
        total += getattr(m, "runtime_bytes", 0)  # what another runtime's session holds
        packed = getattr(m, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += weight.numel() * weight.element_size()
            total += 0 if bias is None else bias.numel() * bias.element_size()
    return total


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of Linear layers (CPU): weights stored in int8, activations
    quantized on the fly (:mod:`llmos_lab.int8` on oneDNN, else ``torch.ao``). About 4x
    smaller Linear weights; the accuracy change is measured (``bench kernel``)."""
    if int8.available():
        return int8.quantize(model)
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
