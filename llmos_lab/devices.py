"""Device choice in one place, so the trainer and the kernel agree on what "auto" means."""

from __future__ import annotations

import re

import torch

from .errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str, parameter: str = "device") -> str:
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(parameter, device, "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    return device


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit choice must exist."""
    check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", device, "a device present here ('cpu'; CUDA is not available)")
    return torch.device(device)
