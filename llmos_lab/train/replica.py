"""This process's part in data-parallel training (Accelerate), or the identity in one process.

The trainer trains through a :class:`Replica`; :mod:`llmos_lab.distributed` starts the
processes. Kept apart so the trainer never imports the launcher that imports it.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


class Replica:
    """This process's part in data-parallel training; in a single process, the identity."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.device, self.accelerator = 0, device, None
        if self.world > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device.type == "cpu")
            self.rank = self.accelerator.process_index
            self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train through (DDP across processes); its parameters are the model's."""
        if self.accelerator is None:
            return model
        return self.accelerator.prepare_model(model)

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch[self.rank::self.world]

    def no_sync(self, model: torch.nn.Module, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.accelerator is None or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def mean(self, value: float) -> float:
        """The average of ``value`` over the processes (each saw its own slice of a batch)."""
        if self.accelerator is None:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.accelerator.reduce(t, reduction="mean").item())

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
