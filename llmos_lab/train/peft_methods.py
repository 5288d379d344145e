"""Parameter-efficient fine-tuning through PEFT: which adapter a ``TrainConfig.method`` means.

``lora`` adds low-rank updates to the attention and feed-forward projections; ``ia3`` learns one
scaling vector per key, value and feed-forward output (about a tenth of LoRA's parameters). In
both, PEFT trains and saves the new classification head with the adapter (``modules_to_save``).
Prefix tuning is not offered: PEFT 0.21 finds no ``past_key_values`` in the signatures of
transformers 5 classification models and refuses them, for encoders and decoders alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..model_task import ModelTask


def wrap(model: torch.nn.Module, cfg, new_token_ids: Sequence[int] = ()) -> torch.nn.Module:
    """The model with the adapter of ``cfg.method`` attached and only it (and the head) trainable.

    ``new_token_ids``: embedding rows added to the vocabulary; with LoRA they train too (PEFT's
    ``trainable_token_indices``), so an extended tokenizer is not wasted on frozen rows.
    """
    from peft import IA3Config, LoraConfig, get_peft_model

    task_type = ModelTask(cfg.task).peft_task_type
    if cfg.method == "lora":
        extra = {"trainable_token_indices": list(new_token_ids)} if new_token_ids else {}
        config = LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                            lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_targets,
                            **extra)
    elif cfg.method == "ia3":
        config = IA3Config(task_type=task_type)
    else:
        raise ConfigError("method", cfg.method, "'lora' or 'ia3' for an adapter")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. no default target modules for this architecture
        raise ConfigError("method", cfg.method, f"an adapter {cfg.model!r} can take "
                          f"(PEFT: {exc}); set lora_targets or use method='full'") from exc
