"""The model kernel: which models are resident where, within a measured memory budget.

``kernel.py`` holds the public calls (load, infer, generate, pin, evict, add_adapter, ps);
``residency.py`` the moves (choose a victim, make room, evict, fault in); ``swap.py`` where an
evicted model's bytes go; ``adapters.py`` the checks and switches for PEFT adapters;
``decode.py`` continuous batching (sequences join and leave a running decode batch) with
``llama.py`` its fast path. Nothing here
imports ``llmos_lab.train``.
"""

from .decode import DecodeBatch, Sequence
from .kernel import ModelHandle, ModelKernel
from .swap import ModelRecord

__all__ = ["DecodeBatch", "ModelHandle", "ModelKernel", "ModelRecord", "Sequence"]
