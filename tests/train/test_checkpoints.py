"""Checkpoints: a run killed with SIGKILL and resumed ends with exactly the weights of an
uninterrupted one; resuming on other data or labels is refused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmos_lab as lab
from llmos_lab.errors import CheckpointError, ConfigError, TrainingError
from tests.train.test_trainer import keyword_frame

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
import llmos_lab as lab
from tests.train.test_trainer import keyword_frame
cfg = lab.TrainConfig(model="tiny-bert", epochs=3, lr=1e-2, batch_size=16, warmup=0.1,
                      device="cpu", checkpoint_every=2, checkpoint_dir=sys.argv[1], seed=7)
for row in lab.Trainer(cfg).steps(keyword_frame(128, 0)):
    print(row["step"], flush=True)
"""


def config(folder: Path, **kw) -> lab.TrainConfig:
    base = dict(model="tiny-bert", epochs=3, lr=1e-2, batch_size=16, warmup=0.1, device="cpu",
                checkpoint_every=2, checkpoint_dir=str(folder), seed=7)
    return lab.TrainConfig(**{**base, **kw})


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model, tmp_path):
    data = keyword_frame(128, 0)
    reference = lab.Trainer(config(tmp_path / "reference")).fit(data, progress=False)
    kill_at = random.Random().randint(5, 20)  # of 24 steps
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    for line in child.stdout:
        if int(line) >= kill_at:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    state = lab.checkpoints.read_state(folder)
    assert 0 < state["step"] <= kill_at and state["step"] % 2 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "run"]  # no temp left

    resumed = lab.Trainer.resume(folder, data, progress=False)
    assert not [p for p in folder.rglob(".*") if ".tmp-" in p.name]  # the dead writer's part
    for (name, a), (_, b) in zip(reference.model_.named_parameters(),
                                 resumed.model_.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert list(resumed.history_["step"]) == list(range(1, 25))
    assert resumed.history_["loss"].tolist() == reference.history_["loss"].tolist()


def test_resume_refuses_other_data_or_labels(tiny_model, tmp_path):
    data = keyword_frame(64, 0)
    lab.Trainer(config(tmp_path / "ck", max_steps=2)).fit(data, progress=False)
    with pytest.raises(ConfigError, match=r"same rows, same order"):
        lab.Trainer.resume(tmp_path / "ck", keyword_frame(64, 1), progress=False)
    relabelled = data.assign(label=data["label"].map({"pos": "good", "neg": "bad"}))
    with pytest.raises(ConfigError, match="labels"):
        lab.Trainer.resume(tmp_path / "ck", relabelled, progress=False)
    with pytest.raises(CheckpointError, match=r"no state\.json"):
        lab.Trainer.resume(tmp_path, data, progress=False)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        lab.TrainConfig(checkpoint_every=5)


def test_a_nan_loss_names_the_step_and_the_last_checkpoint(tiny_model, tmp_path):
    trainer = lab.Trainer(config(tmp_path / "ck", lr=1e-2))
    gen = trainer.steps(keyword_frame(64, 0))
    for _ in range(2):
        next(gen)
    with torch.no_grad():
        for p in trainer.model_.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"at step 3; .*last good checkpoint: .*ck"):
        next(gen)
