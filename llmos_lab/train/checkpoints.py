"""Training checkpoints that resume to the bit: weights, optimizer, schedule, RNGs, data position.

``checkpoint_dir`` is a folder of versions, ``step-00000012/`` and so on, each written under a
temporary name and renamed in whole (a rename to a new name is atomic; the manifest written
last marks it complete); then versions older than the newest ``keep`` are removed. A SIGKILL
at any moment leaves at least one complete version, and :func:`locate` resumes from the newest
complete one. A version holds ``model.safetensors`` (weights, adapters
included), ``optimizer.pt`` (AdamW moments, LR schedule, torch RNG) and ``state.json`` (step,
position in the epoch's data order, the numpy generator that draws that order, config, labels,
history, a data fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .. import _io
from ..errors import CheckpointError

KIND = "checkpoints"
FILES = ("model.safetensors", "optimizer.pt", "state.json")
_STATE_KEYS = {"step": int, "batch_index": int, "epoch_rng": dict, "config": dict,
               "labels": list, "history": list}


def fingerprint(values: list[Any]) -> str:
    """A short hash of the training data, so a resume on other data is caught."""
    digest = hashlib.sha256()
    for v in values:
        digest.update(repr(v).encode())
    return digest.hexdigest()[:16]


def prepare(folder: str | os.PathLike) -> Path:
    """Check, before training starts, that ``folder`` may hold checkpoints: new, empty, or
    a checkpoint folder written by us (never a folder of someone else's files)."""
    folder = Path(folder)
    if (_io.manifest(folder) or {}).get("kind") != KIND:
        _io.check_target(folder, "checkpoint_dir")
    return folder


def save(folder: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler,
         state: dict[str, Any], keep: int = 2) -> Path:
    """Write one version, then drop versions older than the newest ``keep``; returns the
    version's folder. Raises OutputError if it cannot be written."""
    from safetensors.torch import save_model

    root = _own(Path(folder))
    version = root / f"step-{int(state['step']):08d}"

    def write(tmp: str) -> None:
        save_model(model, os.path.join(tmp, "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, os.path.join(tmp, "optimizer.pt"))
        with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as fh:
            json.dump(state, fh, default=_jsonable)

    _io.write_folder(version, write, kind="checkpoint", what="checkpoint")
    for old in _versions(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    _refresh_manifest(root)
    return version


def locate(folder: str | os.PathLike) -> Path:
    """The version to resume from: ``folder`` itself if it is one, else its newest complete
    version (what a dead writer left half-written is removed first)."""
    folder = Path(folder)
    if (folder / "state.json").exists() or (_io.manifest(folder) or {}).get("kind") == \
            "checkpoint":
        return folder
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} does not exist", folder)
    _io.clean_stale(folder)
    versions = _versions(folder)
    if versions:
        return versions[-1]
    raise CheckpointError(f"{str(folder)!r} is not a checkpoint folder: it has no state.json "
                          f"and no complete step-* version written by a Trainer", folder)


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``state.json`` of the version :func:`locate` finds, checked key by key."""
    version = locate(folder)
    path = version / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _fail(version, path, "is missing")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _fail(version, path, f"is not valid JSON ({exc})")
    if not isinstance(state, dict):
        _fail(version, path, f"holds a {type(state).__name__}, not the checkpoint's object")
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            _fail(version, path, f"has no valid {key!r} (expected {kind.__name__})")
    state["version"] = str(version)
    return state


def restore(folder: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler) -> None:
    """Load weights, optimizer, schedule and the torch RNG; each failure a CheckpointError
    naming the file (and an intact version to use instead, if any)."""
    from safetensors.torch import load_model

    version = locate(folder)
    weights = version / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except FileNotFoundError:
        _fail(version, weights, "is missing")
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        _fail(version, weights, f"cannot be read ({type(exc).__name__}: {exc})")
    if missing or unexpected:
        _fail(version, weights, f"does not match the model (missing {sorted(missing)[:3]}, "
              f"unexpected {sorted(unexpected)[:3]})")
    moments = version / "optimizer.pt"
    try:
        saved = torch.load(moments, weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
    except FileNotFoundError:
        _fail(version, moments, "is missing")
    except Exception as exc:  # torch's unpickler raises RuntimeError, EOFError, KeyError...
        _fail(version, moments, f"cannot be read ({type(exc).__name__}: {exc})")


def config_of(state: dict[str, Any], build):
    """The run's config from ``state.json``, rebuilt by ``build`` (TrainConfig.from_dict)."""
    try:
        return build(state["config"])
    except (TypeError, ValueError) as exc:
        version = Path(state["version"])
        _fail(version, version / "state.json", f"has an invalid 'config' ({exc})")


def restore_rng(rng, state: dict[str, Any]) -> None:
    """Put back the generator that draws the epoch's data order."""
    try:
        rng.bit_generator.state = state["epoch_rng"]
    except (TypeError, ValueError, KeyError) as exc:
        version = Path(state["version"])
        _fail(version, version / "state.json", f"has a corrupted 'epoch_rng' ({exc!r})")


def intact(folder: Path, but: Path | None = None) -> Path | None:
    """The newest version in ``folder`` other than ``but`` whose three files all read."""
    for version in reversed(_versions(folder)):
        if version != but and _reads(version):
            return version
    return None


def _reads(version: Path) -> bool:
    from safetensors import safe_open

    try:
        state = json.loads((version / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or any(
                not isinstance(state.get(k), t) for k, t in _STATE_KEYS.items()):
            return False
        with safe_open(str(version / "model.safetensors"), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                fh.get_tensor(key)
        torch.load(version / "optimizer.pt", weights_only=False)
    except Exception:
        return False
    return True


def _fail(version: Path, path: Path, problem: str):
    other = intact(version.parent, but=version) if version.parent.is_dir() else None
    hint = (f"; {str(other)!r} is intact: Trainer.resume({str(other)!r}, ...) continues from "
            f"its step" if other else "; no other intact checkpoint was found")
    raise CheckpointError(f"checkpoint file {str(path)!r} {problem}{hint}", path, other)


def _own(root: Path) -> Path:
    prepare(root)
    if _io.manifest(root) is None:
        root.mkdir(parents=True, exist_ok=True)
        _refresh_manifest(root)
    return root


def _versions(root: Path) -> list[Path]:
    """Complete versions (their manifest was written last), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*")
                  if p.is_dir() and _io.manifest(p) is not None)


def _refresh_manifest(root: Path) -> None:
    files = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    _io.write_text(root / _io.MANIFEST, json.dumps({"kind": KIND, "files": files}))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
