"""SIGKILL a checkpointing training run at random moments, resume, compare with a reference.

    python -m tests.trials.sigkill --trials 30

Each trial starts the same run in a child process (checkpoint every step, so most moments fall
inside a save), kills it after a random delay, resumes from the checkpoint folder and checks
that the resumed run ends bit-identical to an uninterrupted one and leaves no temporary
files. One JSON line per trial, then a summary line. The suite runs one such kill per test
run (tests/test_checkpoints.py) and injected kills at each moment of a save (tests/test_io.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import llmos_lab as lab
from tests.train.test_trainer import keyword_frame

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
import llmos_lab as lab
from tests.train.test_trainer import keyword_frame
cfg = lab.TrainConfig(model="tiny-bert", max_steps=30, lr=1e-2, batch_size=16, device="cpu",
                      seed=5, checkpoint_every=1, checkpoint_dir=sys.argv[1])
for row in lab.Trainer(cfg).steps(keyword_frame(96, 0)):
    print(row["step"], flush=True)  # the checkpoint of this step is written by now
print("finished", flush=True)
"""


def config(**kw) -> lab.TrainConfig:
    return lab.TrainConfig(model="tiny-bert", max_steps=30, lr=1e-2, batch_size=16,
                           device="cpu", seed=5, **kw)


def trial(reference, folder: Path, at_step: int, delay: float) -> dict:
    """Kill ``delay`` seconds after step ``at_step`` was reported: inside the next step or
    the save of its checkpoint (a step and its save take ~10-60 ms here)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    for line in child.stdout:
        if line.strip() == str(at_step):
            break
    time.sleep(delay)  # pace: a random moment inside the following step and save
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=120)
    out = {"after_step": at_step, "delay_s": round(delay, 4),
           "killed": child.returncode == -signal.SIGKILL}
    try:
        state = lab.checkpoints.read_state(folder)
        out["resumed_from_step"] = state["step"]
        resumed = lab.Trainer.resume(folder, keyword_frame(96, 0), progress=False)
    except lab.errors.CheckpointError as exc:  # killed before the first checkpoint
        out["resumed_from_step"] = None
        out["error"] = str(exc)[:200]
        resumed = lab.Trainer(config(checkpoint_every=1, checkpoint_dir=str(folder))).fit(
            keyword_frame(96, 0), progress=False)
    out["identical"] = all(torch.equal(a, b) for a, b in zip(
        reference.model_.parameters(), resumed.model_.parameters(), strict=True))
    out["temporaries_left"] = [p.name for p in folder.rglob(".*") if ".tmp-" in p.name]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-delay", type=float, default=0.06,
                        help="kill within this many seconds after the chosen step")
    args = parser.parse_args(argv)
    reference = lab.Trainer(config()).fit(keyword_frame(96, 0), progress=False)
    rng = random.Random()
    results = []
    with tempfile.TemporaryDirectory(prefix="sigkill-trials-") as tmp:
        for i in range(args.trials):
            line = trial(reference, Path(tmp) / f"run{i}", rng.randint(1, 28),
                         rng.uniform(0.0, args.max_delay))
            results.append(line)
            print(json.dumps({"trial": i, **line}), flush=True)
    good = sum(r["identical"] and not r["temporaries_left"] for r in results)
    print(json.dumps({"trials": len(results), "identical_and_clean": good,
                      "killed_mid_run": sum(r["killed"] for r in results),
                      "resumed": sum(r["resumed_from_step"] is not None for r in results)}))
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
