"""Data-parallel training on several devices through Accelerate, with the same Trainer code.

Run ``Trainer(cfg).fit(...)`` under ``accelerate launch --num_processes N script.py``, or call
:func:`launch` from a notebook (Accelerate's ``notebook_launcher``; on a machine without GPUs it
starts N CPU processes that talk over gloo, which is how the tests exercise this path). Every
process draws the same batch order from the seed and trains on its slice of each batch; DDP
averages the gradients, so all replicas take the same optimizer step. The main process writes
checkpoints and the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .replica import Replica

__all__ = ["Replica", "launch"]


def launch(config, train_df: pd.DataFrame, eval_df: pd.DataFrame | None = None, *,
           num_processes: int, output_dir: str | os.PathLike, port: int | None = None) -> Path:
    """Train ``config`` on ``num_processes`` devices (GPUs, or CPU processes without them) from a
    notebook; the main process saves the model (or adapter) and ``history.csv`` in
    ``output_dir``, which is returned."""
    from accelerate import notebook_launcher

    from ..constraints import COUNT, check

    num_processes = check("num_processes", num_processes, (COUNT,))
    output_dir = Path(output_dir)
    notebook_launcher(_worker, (config, train_df, eval_df, str(output_dir)),
                      num_processes=num_processes, use_port=str(port or _free_port()))
    return output_dir


def _worker(config, train_df, eval_df, output_dir: str) -> None:
    from .trainer import Trainer

    trainer = Trainer(config).fit(train_df, eval_df, progress=False)
    if trainer.replica_.is_main:
        trainer.save(output_dir)
    trainer.replica_.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
