"""The trainer: full and parameter-efficient fine-tuning, one optimizer step per ``next()``.

``trainer.py`` is the public ``Trainer``; ``config.py`` its ``TrainConfig``; ``step.py`` what one
step does; ``data.py`` the checks on training frames; ``batching.py`` length grouping and the
micro-batch a memory grant allows; ``checkpoints.py`` versioned, resumable checkpoints;
``peft_methods.py`` LoRA and IA3; ``rowgrad.py`` the embedding's gradient in one buffer;
``ner.py`` and ``vocab.py`` token classification; ``replica.py`` and ``launch.py`` training on
several processes (Accelerate).
"""

from .config import TrainConfig
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
