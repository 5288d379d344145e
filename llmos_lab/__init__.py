"""llmos-lab: run language-model work the way an operating system runs programs.

Heavy modules (torch, transformers) load on first use, so ``import llmos_lab`` and the
``llmos-lab`` command stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"allocator", "assets", "batching", "checkpoints", "datasets", "devices",
               "distributed", "errors", "events", "inference", "kernel", "loading", "metrics",
               "ner", "peft_methods", "pipelines", "ray_backend", "scheduler", "simulation",
               "swap", "tasks", "train_config", "trainer", "units", "vocab"}
_EXPORTS = {
    "Allocator": "allocator",
    "Demand": "allocator",
    "Resources": "allocator",
    "allocate": "allocator",
    "ModelKernel": "kernel",
    "Scheduler": "scheduler",
    "Task": "scheduler",
    "simulate": "simulation",
    "TrainConfig": "trainer",
    "Trainer": "trainer",
    "ClassificationReport": "metrics",
    "record": "pipelines",
    "LlmosError": "errors",
}

__all__ = sorted(_SUBMODULES | set(_EXPORTS))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'llmos_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
