"""Swap space: where evicted models go, and the process-table entry that tracks them.

A model's *image* is a folder that rebuilds its base weights exactly with ``from_pretrained``:
its own source when every weight came from there (clean), else a copy written here once
(dirty: a new classification head, or a model about to be quantised). Adapters are written
separately by PEFT, so a base image never has to be rewritten when adapters change.
"""

from __future__ import annotations

import os
import shutil
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import _io, loading


@dataclass(eq=False)
class ModelRecord:
    """One entry of the process table."""

    name: str
    source: loading.Source
    task: str
    head: dict[str, Any]
    dtype: torch.dtype | None
    quantize: str | None
    model: torch.nn.Module | None
    tokenizer: Any
    labels: list[str]
    state: str = "resident"  # resident | host | disk
    bytes: int = 0
    cuda_bytes: int = 0
    adapters: dict[str, int] = field(default_factory=dict)
    pinned: bool = False
    last_used: float = 0.0
    tick: int = 0
    hits: int = 0
    faults: int = 0
    load_seconds: float = 0.0
    image: Path | None = None  # folder that rebuilds the base model exactly
    adapter_image: Path | None = None  # folder with every adapter, once written
    active: int = 0  # calls in flight: never evicted while > 0
    max_positions: int | None = None  # the longest input the model takes, in tokens
    runtime: str = "torch"  # or "onnxruntime" (kernel/runtimes.py)
    runtime_image: Path | None = None  # the exported graph: a runtime model's whole image
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def total_bytes(self) -> int:
        return self.bytes + sum(self.adapters.values())


class SwapSpace:
    """A folder of model images, each written atomically under a unique name."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._serial = 0
        self._lock = threading.Lock()
        self._written: list[Path] = []
        _remove_orphans(self.folder)
        # images die with their kernel (or the process), as swap does with its system
        weakref.finalize(self, _remove, self._written)

    def write_base(self, rec: ModelRecord) -> None:
        """Write a dirty base model once; clean ones already have their source (and a runtime
        model its exported graph)."""
        if rec.image is not None or rec.runtime_image is not None:
            return

        def save(folder: str) -> None:
            rec.model.save_pretrained(folder)
            rec.tokenizer.save_pretrained(folder)

        rec.image = self.write(save, rec.name)

    def write_adapters(self, rec: ModelRecord) -> None:
        if rec.adapters and rec.adapter_image is None:
            rec.adapter_image = self.write(rec.model.save_pretrained, f"{rec.name}-adapters")

    def attach_adapters(self, model: torch.nn.Module, rec: ModelRecord) -> torch.nn.Module:
        """Re-attach adapters written by PEFT's save_pretrained ("default" at the root)."""
        from peft import PeftModel

        for i, adapter in enumerate(rec.adapters):
            folder = rec.adapter_image if adapter == "default" else rec.adapter_image / adapter
            if i == 0:
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter)
            else:
                model.load_adapter(str(folder), adapter_name=adapter)
        return model

    def drop(self, rec: ModelRecord) -> None:
        """Delete what this swap space wrote for a model (never a model's own source)."""
        for folder in (rec.image, rec.adapter_image, rec.runtime_image):
            if folder is not None and folder.parent == self.folder:
                shutil.rmtree(folder, ignore_errors=True)

    def write(self, writer, label: str) -> Path:
        """``writer(folder)`` fills a new image folder, written atomically; its path."""
        with self._lock:
            self._serial += 1
            target = self.folder / f"{label}-{os.getpid()}-{self._serial}"
        with loading.quiet():
            written = _io.write_folder(target, writer, kind="swap", what="swap image")
        self._written.append(written)
        return written


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_orphans(folder: Path) -> None:
    """Images (``LABEL-PID-N``) whose process is gone, and half-written temporaries."""
    if not folder.is_dir():
        return
    _io.clean_stale(folder)
    for entry in folder.iterdir():
        parts = entry.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and \
                not _io.alive(int(parts[1])) and _io.manifest(entry) is not None:
            shutil.rmtree(entry, ignore_errors=True)
