"""Continued pre-training: masked-language modelling on unlabelled in-domain text.

``TrainConfig(task="masked-lm")`` fits a text column with transformers' own
``DataCollatorForLanguageModeling`` (15% of tokens chosen; of those 80% ``[MASK]``, 10% a random
token, 10% unchanged) and saves a model to fine-tune from (``TrainConfig(model=folder)``).
Sentence-embedding checkpoints such as all-MiniLM-L6-v2 ship no MLM head, so the head starts
fresh; the encoder's pretrained pooler is carried along so the classifier fine-tuned
afterwards starts from it as it would from the shipped model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import loading


@dataclass
class LanguageModelReport:
    """Masked-token loss and perplexity on held-out text (lower is better)."""

    loss: float
    perplexity: float
    tokens: int

    def to_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "perplexity": self.perplexity}


def collator(tokenizer, probability: float):
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability,
                                           return_tensors="pt")


def masked_batch(collate, ids: Sequence[Sequence[int]], device: torch.device
                 ) -> dict[str, torch.Tensor]:
    """Inputs with masked tokens and ``labels`` (-100 where nothing is predicted)."""
    batch = collate([{"input_ids": list(x)} for x in ids])
    return {k: v.to(device) for k, v in batch.items()}


def keep_pooler(model: torch.nn.Module, path) -> None:
    """Attach the source encoder's pooler to a masked-LM model so it is saved with it."""
    base = getattr(model, model.base_model_prefix, None)
    if base is None or getattr(base, "pooler", "absent") is not None:
        return
    from transformers import AutoModel

    with loading.quiet():
        full = AutoModel.from_pretrained(path)
    if getattr(full, "pooler", None) is not None:
        base.pooler = full.pooler


@torch.no_grad()
def evaluate(model, tokenizer, ids: Sequence[Sequence[int]], probability: float,
             batch_size: int, device: torch.device, seed: int) -> LanguageModelReport:
    """Loss over the same masked positions every time (a fixed seed), so runs compare."""
    collate = collator(tokenizer, probability)
    was_training = model.training
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    total, count = 0.0, 0
    try:
        for start in range(0, len(ids), batch_size):
            batch = masked_batch(collate, ids[start:start + batch_size], device)
            n = int((batch["labels"] != -100).sum())
            if n:
                total += float(model(**batch).loss) * n
                count += n
    finally:
        torch.set_rng_state(state)
        model.train(was_training)
    loss = total / max(1, count)
    return LanguageModelReport(loss, math.exp(min(loss, 50.0)), count)
