"""Writing files and folders so that a crash never leaves half of one and nothing is deleted
that llmos-lab did not write.

Every folder we write carries a manifest, ``.llmos-lab``, listing the files in it; it is
written last, so a folder with a manifest is complete. Replacing a folder writes the new one
under a hidden temporary name, then swaps the two names in one ``renameat2(RENAME_EXCHANGE)``
call (Linux), so there is no moment without a complete copy; elsewhere two renames are used
and :func:`recover` puts a complete copy back if a crash fell between them. Temporary names
carry the writer's pid, so what a killed process left behind is removed by the next writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

MANIFEST = ".llmos-lab"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a folder we wrote, or None (not ours, or written only in part)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def check_target(target: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse a target we must not replace: a file, or a non-empty folder that we did not
    write (or that holds files since added by someone else). Returns the path."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputError(target, f"the {what} {str(target)!r} is a file, not a folder; "
                          f"choose another path or remove it")
    if not target.is_dir():
        return target
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return target
    info = manifest(target)
    if info is None:
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise OutputError(target, f"the {what} {str(target)!r} already holds files that "
                          f"llmos-lab did not write ({shown}); choose an empty or new folder")
    foreign = sorted(set(entries) - set(info["files"]) - {MANIFEST})
    if foreign:
        raise OutputError(target, f"the {what} {str(target)!r} holds files llmos-lab did not "
                          f"write ({', '.join(foreign[:5])}); move them or choose another path")
    return target


def write_folder(target: str | os.PathLike, writer: Callable[[str], Any], *,
                 kind: str = "folder", replace: bool = True, what: str = "output folder"
                 ) -> Path:
    """Call ``writer(tmp)`` to fill a hidden temporary folder, then put it at ``target``.

    An existing ``target`` is replaced only if we wrote it (see :func:`check_target`); with
    ``replace=False`` a complete one is kept as it is (content-addressed caches).
    """
    target = Path(target)
    if not replace and manifest(target) is not None:
        return target
    check_target(target, what)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(target, f"cannot create the folder {str(parent)!r} for "
                          f"{str(target)!r}: {exc.strerror or exc}") from exc
    clean_stale(parent, target.name)
    tmp = temporary_name(parent / target.name)
    try:
        try:
            tmp.mkdir()
            writer(str(tmp))
            _write_manifest(tmp, kind)
        except OSError as exc:
            raise OutputError(target, f"cannot write {str(target)!r}: "
                              f"{exc.strerror or exc}") from exc
        _switch(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new folder on failure, else the old one
    return target


def writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``folder``, created if missing, checked to be a folder we may write in; an
    OutputError naming ``what`` otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, f"{what} {str(folder)!r} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the {what} {str(folder)!r}: "
                          f"{exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(folder, f"{what} {str(folder)!r} is not writable")
    return folder


def temporary_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden sibling of ``path`` tagged with this process's pid (``.NAME.tmp-PID-*``):
    whatever a killed writer leaves under it, :func:`clean_stale` removes. ``suffix`` keeps
    an extension a third-party writer insists on (papermill's ``.ipynb``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def move(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rename ``src`` over ``dst`` in one step (readers see the old file or the new one)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise OutputError(dst, f"cannot write {str(dst)!r}: {exc.strerror or exc}") from exc
    return Path(dst)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success it is renamed to ``path``
    (readers see the old file or the new one, never half of one)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        enc = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=enc) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(path, f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)


def clean_stale(folder: Path, name: str | None = None) -> list[Path]:
    """Remove temporary entries (``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*``) whose writer is
    no longer alive; a complete one of them is first moved to ``NAME`` when ``NAME`` is gone
    (see :func:`recover`). Returns what was removed."""
    if name is not None:
        recover(folder / name)
    removed = []
    pattern = f".{name}.*" if name else ".*"
    with contextlib.suppress(OSError):
        for entry in folder.glob(pattern):
            pid = _writer_pid(entry.name)
            if pid is not None and not alive(pid):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def recover(target: Path) -> Path | None:
    """If ``target`` is missing but a complete temporary copy of it survives a crash (the
    two-rename fallback), move the newest such copy back to ``target``."""
    if target.exists():
        return target
    best: tuple[float, Path] | None = None
    with contextlib.suppress(OSError):
        for entry in target.parent.glob(f".{target.name}.*"):
            info = manifest(entry) if entry.is_dir() else None
            pid = _writer_pid(entry.name)
            if info is not None and pid is not None and not alive(pid):
                written = float(info.get("written", 0))
                if best is None or written > best[0]:
                    best = (written, entry)
    if best is None:
        return None
    with contextlib.suppress(OSError):
        os.rename(best[1], target)
        return target
    return None


def _write_manifest(folder: Path, kind: str) -> None:
    files = sorted(p.name for p in folder.iterdir())
    with open(folder / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump({"kind": kind, "files": files, "written": time.time(),
                   "pid": os.getpid()}, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _switch(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target``; the previous ``target`` (if any) ends up at ``tmp``."""
    try:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if not target.exists():
            os.rename(tmp, target)
            return
        if _exchange(tmp, target):
            return
        old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(target, old)
        os.rename(tmp, target)
        os.rename(old, tmp)  # removed by the caller, as after an exchange
    except OSError as exc:
        raise OutputError(target, f"cannot replace {str(target)!r}: "
                          f"{exc.strerror or exc}; the previous copy is unchanged") from exc


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the call is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _writer_pid(name: str) -> int | None:
    for tag in (".tmp-", ".old-"):
        if tag in name:
            head = name.rsplit(tag, 1)[1].split("-", 1)[0]
            return int(head) if head.isdigit() else None
    return None


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def quiet():
    """Silence transformers' progress bars and expected warnings (new heads, GGUF)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
