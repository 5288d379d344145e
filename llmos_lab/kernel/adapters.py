"""Adapters over a resident base: checked before PEFT touches the model, switched cheaply.

A saved adapter folder, or a dict of LoRA options, is validated first (a garbage config, missing
or unreadable weights, a misspelt option), so a bad adapter never leaves half of itself inside
the base model. Switching between resident adapters only repoints PEFT's layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import loading
from ..errors import AdapterError, check_keywords
from ..model_task import ModelTask
from .swap import ModelRecord

LORA_ALIASES = {"rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
                 "targets": "target_modules"}


def check_lora_keys(options: dict[str, Any]) -> None:
    import dataclasses

    from peft import LoraConfig

    known = [f.name for f in dataclasses.fields(LoraConfig)]
    for key in options:
        if key in LORA_ALIASES:
            raise AdapterError(f"unknown LoRA option {key!r}; did you mean "
                               f"{LORA_ALIASES[key]!r}?")
        check_keywords("LoraConfig", [key], known)


def check_folder(path: Path) -> None:
    """A saved adapter has a readable adapter_config.json and a weights file that opens."""
    from peft import PeftConfig
    from safetensors import safe_open

    if not (path / "adapter_config.json").is_file():
        raise AdapterError(f"{str(path)!r} is not a saved adapter (no adapter_config.json)")
    try:
        with loading.quiet():
            PeftConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AdapterError(f"{str(path / 'adapter_config.json')!r} is not a valid adapter "
                           f"config: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                           ) from None
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        if (path / "adapter_model.bin").is_file():
            return
        raise AdapterError(f"{str(path)!r} has no adapter weights (adapter_model.safetensors)")
    try:
        with safe_open(str(weights), "pt") as fh:
            fh.keys()
    except Exception as exc:  # SafetensorError
        raise AdapterError(f"{str(weights)!r} cannot be read: {exc}") from None


def normalise(path_or_config: Any, rec: ModelRecord, model: str) -> Path | Any:
    """Every accepted form as one of two: a checked adapter folder, or a PEFT config (a dict
    of LoRA options and None become a LoraConfig, r=8 and PEFT's default targets)."""
    import os

    from peft import LoraConfig, PeftConfig

    if isinstance(path_or_config, (str, os.PathLike)):
        path = Path(path_or_config)
        check_folder(path)  # before PEFT touches the model
        return path
    config = path_or_config
    if isinstance(config, dict):
        check_lora_keys(config)
    if config is None or isinstance(config, dict):
        config = LoraConfig(**{"r": 8, "lora_alpha": 16,
                               "task_type": ModelTask(rec.task).peft_task_type,
                               **(config or {})})
    if not isinstance(config, PeftConfig):
        raise AdapterError(f"adapter for {model!r}: expected a path, a PEFT config or a dict, "
                           f"got {type(config).__name__}")
    return config


def attach(rec: ModelRecord, adapter: str, source: Path | Any) -> None:
    """Load (a folder) or create (a config) ``adapter`` on the record's model; the first
    adapter wraps the base in a PeftModel, later ones join it. A failure leaves no half of
    the adapter behind."""
    from peft import PeftModel, get_peft_model

    is_peft = isinstance(rec.model, PeftModel)
    try:
        with loading.quiet():
            if isinstance(source, Path) and is_peft:
                rec.model.load_adapter(str(source), adapter_name=adapter)
            elif isinstance(source, Path):
                rec.model = PeftModel.from_pretrained(rec.model, str(source),
                                                      adapter_name=adapter)
            elif is_peft:
                rec.model.add_adapter(adapter, source)
            else:
                rec.model = get_peft_model(rec.model, source, adapter_name=adapter)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        drop_half_added(rec, adapter)
        where = f" from {str(source)!r}" if isinstance(source, Path) else ""
        raise AdapterError(f"cannot add adapter {adapter!r} to {rec.name!r}{where}: "
                           f"{type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0][:300]}") from None


def drop_half_added(rec: ModelRecord, adapter: str) -> None:
    """PEFT may have registered the adapter before failing on its weights: remove it."""
    from contextlib import suppress

    with suppress(Exception):
        if adapter in getattr(rec.model, "peft_config", {}):
            rec.model.delete_adapter(adapter)


def switch(model: torch.nn.Module, adapter: str) -> None:
    """Activate one adapter for inference. PEFT's ``set_adapter`` walks every module and
    toggles gradients (~1 ms for MiniLM); here the first switch goes through it (freezing every
    adapter) and later ones only point each adapter layer at the new name (~0.05 ms)."""
    base = model.base_model
    if getattr(base, "active_adapter", None) == adapter:
        return
    layers = getattr(model, "_llmos_adapter_layers", None)
    if layers is None:  # first switch since adapters changed: PEFT's own path, all frozen
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        base.set_adapter(adapter, inference_mode=True)
        model._llmos_adapter_layers = [
            m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
    else:  # every adapter is frozen already: only which one is active changes
        for layer in layers:
            layer._active_adapter = [adapter]
    base.active_adapter = adapter


def adapter_bytes(model: torch.nn.Module, adapter: str) -> int:
    marker = f".{adapter}."
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if marker in f".{n}.")
