"""Continual learning: continue from a saved result on new data, optionally replaying old rows.

``TrainConfig(init_from=folder)`` starts from a model ``Trainer.save`` wrote (a full fine-tune
of the same task). Its classes are kept and the new data's are added: the head grows by one row
per new class (old rows copied, so what it knew is where it was) and the report on the old test
set after training measures what was forgotten. ``replay`` mixes a share of the old training
rows into the new ones, the simplest defence against forgetting (rehearsal).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import ConfigError
from ..model_task import ModelTask

_SUFFIX = {ModelTask.SEQUENCE_CLASSIFICATION: "ForSequenceClassification",
           ModelTask.TOKEN_CLASSIFICATION: "ForTokenClassification",
           ModelTask.MASKED_LM: "ForMaskedLM"}


def saved_labels(folder: str | Path, task: ModelTask) -> list[str]:
    """The classes of a saved result, after checking it is a full save of ``task``."""
    folder = Path(folder)
    if (folder / "adapter_config.json").exists():
        raise ConfigError("init_from", str(folder), "a full fine-tune's folder (this one holds "
                          "an adapter; merge it or continue with method='full' from a full save)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("init_from", str(folder), f"a folder saved by Trainer.save "
                          f"({type(exc).__name__}: {exc})") from exc
    archs = config.get("architectures") or []
    if not any(a.endswith(_SUFFIX[task]) for a in archs):
        raise ConfigError("init_from", str(folder), f"a result of task {str(task)!r} (it holds "
                          f"{', '.join(archs) or 'no architecture'})")
    if task == ModelTask.MASKED_LM:
        return []
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def joined_labels(old: Sequence[str], new: Sequence[Any]) -> list[Any]:
    """The new data's labels plus the saved ones it lacks (matched as text, since a saved
    config keeps labels as strings), sorted as the Trainer sorts labels."""
    by_text = {str(x): x for x in new}
    return sorted([*new, *(o for o in old if o not in by_text)], key=str)


def grow_head(model: torch.nn.Module, old: Sequence[str], labels: Sequence[Any]) -> None:
    """Give the classifier one output per class of ``labels``, keeping each old class's row."""
    head = model.classifier
    if [str(x) for x in labels] == list(old):
        return
    new = torch.nn.Linear(head.in_features, len(labels), dtype=head.weight.dtype)
    std = getattr(model.config, "initializer_range", 0.02)
    torch.nn.init.normal_(new.weight, std=std)
    torch.nn.init.zeros_(new.bias)
    with torch.no_grad():
        for i, label in enumerate(labels):
            if str(label) in old:
                j = list(old).index(str(label))
                new.weight[i] = head.weight[j]
                new.bias[i] = head.bias[j]
    model.classifier = new
    model.num_labels = model.config.num_labels = len(labels)
    model.config.id2label = {i: str(x) for i, x in enumerate(labels)}
    model.config.label2id = {str(x): i for i, x in enumerate(labels)}


def mix(train_df: pd.DataFrame, replay_data: pd.DataFrame | None, share: float,
        seed: int) -> pd.DataFrame:
    """``train_df`` plus ``share * len(train_df)`` rows drawn from ``replay_data`` (all of it
    when it has fewer)."""
    if not share:
        return train_df
    if replay_data is None or not len(replay_data):
        raise ConfigError("replay_data", replay_data, f"old training rows to replay "
                          f"(replay={share}): pass fit(..., replay_data=old_train_df)")
    count = min(len(replay_data), max(1, round(share * len(train_df))))
    old = replay_data.sample(n=count, random_state=seed)
    return pd.concat([train_df, old], ignore_index=True)
