"""llmos-lab: run language-model work the way an operating system runs programs.

Heavy modules (torch, transformers) load on first use, so ``import llmos_lab`` and the
``llmos-lab`` command stay fast. The lazy map below is the public surface: flat modules,
the ``kernel`` and ``train`` rooms, the names users reach as ``lab.Name``, and the paths that
moved into a room (``lab.trainer`` is ``llmos_lab.train.trainer``; ``import llmos_lab.vocab``
still works).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"agents", "allocator", "assets", "constraints", "datasets", "devices", "errors",
               "events", "inference", "kernel", "loading", "metrics", "model_task", "optimize",
               "pipelines", "prompting",
               "ray_backend", "registry", "scheduler", "serve", "simulation", "tasks", "train",
               "units"}
_MOVED = {  # old flat path -> module inside a room
    "adapters": "kernel.adapters", "residency": "kernel.residency", "swap": "kernel.swap",
    "batching": "train.batching", "checkpoints": "train.checkpoints",
    "distributed": "train.launch", "fastpath": "packed", "ner": "train.ner",
    "peft_methods": "train.peft_methods", "replica": "train.replica",
    "train_config": "train.config", "train_data": "train.data", "train_step": "train.step",
    "trainer": "train.trainer", "vocab": "train.vocab",
}
_EXPORTS = {
    "Allocator": "allocator",
    "Demand": "allocator",
    "Resources": "allocator",
    "allocate": "allocator",
    "ModelKernel": "kernel",
    "ModelTask": "model_task",
    "Scheduler": "scheduler",
    "Task": "scheduler",
    "simulate": "simulation",
    "TrainConfig": "train",
    "Trainer": "train",
    "ClassificationReport": "metrics",
    "record": "pipelines",
    "LlmosError": "errors",
}

__all__ = sorted(_SUBMODULES | set(_MOVED) | set(_EXPORTS))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _MOVED:
        return importlib.import_module(f".{_MOVED[name]}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'llmos_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import llmos_lab.trainer`` (a path from before the rooms) gives the very module
    object of ``llmos_lab.train.trainer``, so patches and isinstance checks agree."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module) -> None:
        """Already executed under its own name."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
