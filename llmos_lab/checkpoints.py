"""Training checkpoints that resume to the bit: weights, optimizer, schedule, RNGs, data position.

A checkpoint is one folder, replaced atomically each time (a crash or SIGKILL mid-write leaves
the previous one whole): ``model.safetensors`` (weights, adapters included), ``optimizer.pt``
(AdamW moments and the LR schedule) and ``state.json`` (step, where in the epoch's data order,
the numpy generator that draws that order, config, labels, history, a data fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import loading
from .errors import ConfigError


def fingerprint(values: list[Any]) -> str:
    """A short hash of the training data, so a resume on other data is caught."""
    digest = hashlib.sha256()
    for v in values:
        digest.update(repr(v).encode())
    return digest.hexdigest()[:16]


def save(folder: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler,
         state: dict[str, Any]) -> Path:
    from safetensors.torch import save_model

    def write(tmp: str) -> None:
        save_model(model, os.path.join(tmp, "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, os.path.join(tmp, "optimizer.pt"))
        with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as fh:
            json.dump(state, fh, default=_jsonable)

    return loading.save_atomically(Path(folder), write, marker="state.json", overwrite=True)


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "state.json"
    if not path.exists():
        raise ConfigError("checkpoint", str(folder), "a folder written by a Trainer checkpoint "
                          "(it has no state.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def restore(folder: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler) -> None:
    from safetensors.torch import load_model

    load_model(model, str(Path(folder) / "model.safetensors"))
    saved = torch.load(Path(folder) / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
