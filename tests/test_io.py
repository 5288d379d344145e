"""Outputs never delete what we did not write, never report a failed write as done, and a
SIGKILL at any moment of a save leaves a complete copy that resume finds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmos_lab as lab
from llmos_lab import _io
from llmos_lab.errors import CheckpointError, OutputError
from llmos_lab.train import checkpoints
from tests.train.test_trainer import keyword_frame

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, **kw) -> lab.TrainConfig:
    base = dict(model="tiny-bert", max_steps=4, lr=1e-2, batch_size=16, device="cpu", seed=3)
    return lab.TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def fitted(tiny_model):
    return lab.Trainer(small(Path("."))).fit(keyword_frame(64, 0), progress=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def test_save_refuses_a_folder_of_someone_elses_files(fitted, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"results.*did not write.*notes\.txt"):
        fitted.save(results)
    assert tree(results) == {"notes.txt": b"mine"}


def test_save_refuses_a_file(fitted, tmp_path):
    target = tmp_path / "m"
    target.write_text("a file")
    with pytest.raises(OutputError, match="is a file"):
        fitted.save(target)
    assert target.read_text() == "a file"


def test_save_replaces_its_own_folder_but_not_files_added_to_it(fitted, tmp_path):
    target = fitted.save(tmp_path / "m")
    first = tree(target)
    fitted.save(target)  # ours: replaced in place
    assert set(tree(target)) == set(first)
    (target / "notes.txt").write_text("added by hand")
    with pytest.raises(OutputError, match=r"notes\.txt"):
        fitted.save(target)
    assert (target / "notes.txt").read_text() == "added by hand"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left


def test_a_failed_replace_raises_and_keeps_the_old_copy(fitted, tmp_path, monkeypatch):
    target = fitted.save(tmp_path / "m")
    before = tree(target)

    def refuse(a, b):
        raise PermissionError(1, "Operation not permitted", str(b))

    monkeypatch.setattr(_io, "_exchange", refuse)
    with pytest.raises(OutputError, match=r"cannot replace .*m'.*previous copy is unchanged"):
        fitted.save(target)
    assert tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.fixture
def read_only(tmp_path):
    """Make a folder unwritable, for root too (chattr +i), or skip where that is not possible."""
    made = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o500)
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        made.append(folder)
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o700)


def test_an_immutable_save_folder_raises_and_keeps_the_old_weights(fitted, tmp_path,
                                                                   read_only):
    target = fitted.save(tmp_path / "m")
    before = tree(target)
    other = lab.Trainer(small(tmp_path, seed=9)).fit(keyword_frame(64, 1), progress=False)
    read_only(tmp_path)
    with pytest.raises(OutputError, match=r"'[^']*/m'") as info:
        other.save(target)
    assert ".tmp-" not in str(info.value)
    assert tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_checkpoint_dir_with_other_files_is_refused_before_training(tiny_model, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.csv").write_text("text,label\n")
    trainer = lab.Trainer(small(tmp_path, checkpoint_every=1, checkpoint_dir=str(data_dir)))
    with pytest.raises(OutputError, match=r"checkpoint_dir.*train\.csv"):
        trainer.steps(keyword_frame(32, 0))
    assert tree(data_dir) == {"train.csv": b"text,label\n"}
    assert not hasattr(trainer, "model_")  # refused before any work


def test_a_checkpoint_that_cannot_be_written_stops_training(tiny_model, tmp_path, monkeypatch):
    ckpt = tmp_path / "ck"
    trainer = lab.Trainer(small(tmp_path, checkpoint_every=1, checkpoint_dir=str(ckpt)))
    gen = trainer.steps(keyword_frame(32, 0))
    next(gen)

    def broken_folder(path, writer, **kw):
        raise OutputError(path, f"cannot write {str(path)!r}: disk full")

    monkeypatch.setattr(_io, "write_folder", broken_folder)
    with pytest.raises(OutputError, match="disk full"):
        next(gen)
    assert checkpoints.read_state(ckpt)["step"] == 1


def test_versions_rotate_and_resume_takes_the_newest_complete_one(tiny_model, tmp_path):
    ckpt = tmp_path / "ck"
    lab.Trainer(small(tmp_path, checkpoint_every=1, checkpoint_dir=str(ckpt),
                      keep_checkpoints=2)).fit(keyword_frame(64, 0), progress=False)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        ".llmos-lab", "step-00000003", "step-00000004"]
    assert checkpoints.read_state(ckpt)["step"] == 4
    (ckpt / "step-00000004" / _io.MANIFEST).unlink()  # as if killed before it was complete
    assert checkpoints.read_state(ckpt)["step"] == 3


KILLER = """
import os, signal, sys
import llmos_lab as lab
from llmos_lab import _io
from llmos_lab.train import checkpoints
from tests.train.test_trainer import keyword_frame
point = sys.argv[2]
real_switch, real_rmtree = _io._switch, checkpoints.shutil.rmtree

def switch(tmp, target):
    if point == "before-rename" and "step-00000004" in str(target):
        os.kill(os.getpid(), signal.SIGKILL)
    real_switch(tmp, target)

def rmtree(path, **kw):
    if point == "before-prune" and os.path.basename(path) == "step-00000002":
        os.kill(os.getpid(), signal.SIGKILL)
    real_rmtree(path, **kw)

def torch_save(obj, path, _real=checkpoints.torch.save):
    _real(obj, path)
    if point == "mid-optimizer" and "step-00000004" in str(path):
        with open(path, "r+b") as fh:
            fh.truncate(100)
        os.kill(os.getpid(), signal.SIGKILL)

_io._switch, checkpoints.shutil.rmtree, checkpoints.torch.save = switch, rmtree, torch_save
cfg = lab.TrainConfig(model="tiny-bert", max_steps=8, lr=1e-2, batch_size=16, device="cpu",
                      seed=3, checkpoint_every=2, checkpoint_dir=sys.argv[1])
lab.Trainer(cfg).fit(keyword_frame(64, 0), progress=False)
"""


@pytest.mark.parametrize("point", ["before-rename", "before-prune", "mid-optimizer"])
def test_sigkill_inside_a_checkpoint_save_resumes_from_a_complete_one(tiny_model, tmp_path,
                                                                      point):
    data = keyword_frame(64, 0)
    ckpt = tmp_path / "ck"
    child = subprocess.run([sys.executable, "-c", KILLER, str(ckpt), point], cwd=ROOT,
                           env=os.environ.copy(), timeout=300, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    state = checkpoints.read_state(ckpt)
    assert state["step"] == (6 if point == "before-prune" else 2)
    resumed = lab.Trainer.resume(ckpt, data, progress=False)
    reference = lab.Trainer(small(tmp_path, max_steps=8)).fit(data, progress=False)
    for (name, a), (_, b) in zip(reference.model_.named_parameters(),
                                 resumed.model_.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not [p.name for p in ckpt.iterdir() if ".tmp-" in p.name]  # dead writer's part gone


def _checkpointed(tmp_path: Path) -> Path:
    ckpt = tmp_path / "ck"
    lab.Trainer(small(tmp_path, checkpoint_every=2, checkpoint_dir=str(ckpt))).fit(
        keyword_frame(64, 0), progress=False)
    return ckpt


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


CORRUPTIONS = {
    "weights truncated": ("model.safetensors", _truncate),
    "weights emptied": ("model.safetensors", lambda p: p.write_bytes(b"")),
    "weights deleted": ("model.safetensors", lambda p: p.unlink()),
    "weights random": ("model.safetensors", lambda p: p.write_bytes(os.urandom(4096))),
    "optimizer deleted": ("optimizer.pt", lambda p: p.unlink()),
    "optimizer truncated": ("optimizer.pt", _truncate),
    "state garbage": ("state.json", lambda p: p.write_bytes(b"\x00garbage{")),
    "state truncated": ("state.json", _truncate),
    "state empty object": ("state.json", lambda p: p.write_text("{}")),
    "state a list": ("state.json", lambda p: p.write_text("[]")),
    "state rng corrupted": ("state.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "epoch_rng": {"bit_generator": "PCG64", "state": 7}}))),
    "state config garbage": ("state.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "config": {"epoch": 2}}))),
}


@pytest.fixture(scope="module")
def pristine(tiny_model, tmp_path_factory):
    return _checkpointed(tmp_path_factory.mktemp("pristine"))


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_names_the_file_and_the_intact_one(pristine, tmp_path, case):
    import shutil

    ckpt = tmp_path / "ck"
    shutil.copytree(pristine, ckpt)
    name, damage = CORRUPTIONS[case]
    damage(ckpt / "step-00000004" / name)
    with pytest.raises(CheckpointError) as info:
        lab.Trainer.resume(ckpt, keyword_frame(64, 0), progress=False)
    message = str(info.value)
    assert name in message and "step-00000004" in message
    assert "step-00000002" in message and "is intact" in message
    assert info.value.intact == ckpt / "step-00000002"
    lab.Trainer.resume(info.value.intact, keyword_frame(64, 0), progress=False)  # it is


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".m.tmp-{dead}-abcd"
    stale.mkdir()
    (stale / "optimizer.pt").write_bytes(b"half")
    live = tmp_path / f".m.tmp-{os.getpid()}-abcd"
    live.mkdir()
    _io.write_folder(tmp_path / "m", lambda f: Path(f, "x").write_text("1"))
    assert not stale.exists() and live.exists()


def test_two_rename_fallback_recovers_after_a_crash_between_the_renames(tmp_path, monkeypatch):
    target = _io.write_folder(tmp_path / "m", lambda f: Path(f, "x").write_text("old"))
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)
    _io.write_folder(target, lambda f: Path(f, "x").write_text("new"))
    assert (target / "x").read_text() == "new"
    # a crash after the first rename: target gone, the new complete copy under a dead pid
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    os.rename(target, tmp_path / f".m.tmp-{dead}-ffff")
    assert _io.recover(target) == target and (target / "x").read_text() == "new"
