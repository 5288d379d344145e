"""Ensembles: several loaded classifiers (or adapters of one base) answering as one model.

``kernel.ensemble(name, members=["a", "b", "base:adapter"], how="mean" | "vote")`` registers a
name that ``kernel.infer`` answers by asking every member in turn through the kernel (each one
faulted in, accounted and evicted as usual; adapters share their base's weights, so an
ensemble of adapters costs one base in memory) and combining: ``mean`` averages the class
probabilities (soft voting), ``vote`` counts each member's label (hard voting; the ``p_``
columns are vote shares and a tie goes to the larger mean probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import inference
from ..errors import ConfigError, TaskError
from ..model_task import ModelTask

HOW = ("mean", "vote")


@dataclass(frozen=True)
class Member:
    model: str
    adapter: str | None

    @classmethod
    def parse(cls, text: str) -> Member:
        if not isinstance(text, str) or not text:
            raise ConfigError("members", text, "model names, or 'model:adapter'")
        model, _, adapter = text.partition(":")
        return cls(model, adapter or None)

    def __str__(self) -> str:
        return self.model + (f":{self.adapter}" if self.adapter else "")


@dataclass(frozen=True)
class Ensemble:
    name: str
    members: tuple[Member, ...]
    how: str
    labels: tuple[str, ...]

    def infer(self, kernel, texts: Sequence[str], **kw) -> pd.DataFrame:
        """Every member's probabilities on ``texts``, combined (see the module docstring)."""
        probs = np.stack([
            kernel.infer(m.model, texts, adapter=m.adapter, **kw)[
                [f"p_{x}" for x in self.labels]].to_numpy() for m in self.members])
        mean = probs.mean(axis=0)
        if self.how == "mean":
            return inference.probabilities_frame(mean, list(self.labels))
        votes = np.zeros_like(mean)
        for member in probs:
            votes[np.arange(len(member)), member.argmax(axis=1)] += 1
        share = votes / len(self.members)
        tie_break = share + mean * 1e-6  # more votes first, then the larger mean probability
        frame = inference.probabilities_frame(share, list(self.labels))
        frame["label"] = [self.labels[i] for i in tie_break.argmax(axis=1)]
        frame["score"] = share[np.arange(len(share)), tie_break.argmax(axis=1)]
        return frame


def build(kernel, name: str, members: Sequence[str], how: str) -> Ensemble:
    """Check the members (loaded sequence classifiers with one label set) and the name."""
    if how not in HOW:
        raise ConfigError("how", how, "one of " + ", ".join(HOW))
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError("name", name, "a non-empty name without ':'")
    if isinstance(members, str) or len(members) < 2:
        raise ConfigError("members", members, "a list of two or more model names")
    parsed = tuple(Member.parse(m) for m in members)
    if len(set(parsed)) != len(parsed):
        raise ConfigError("members", list(members), "distinct members")
    labels = None
    for member in parsed:
        rec = kernel.record(member.model)
        if rec.task is not ModelTask.SEQUENCE_CLASSIFICATION:
            raise TaskError(f"ensemble {name!r}: member {str(member)!r} is a {rec.task} model; "
                            f"ensembles combine sequence classifiers")
        if member.adapter is not None and member.adapter not in rec.adapters:
            raise ConfigError("members", str(member), f"an adapter of {member.model!r} (it has "
                              f"{', '.join(rec.adapters) or 'none'})")
        if labels is not None and sorted(rec.labels) != sorted(labels):
            raise ConfigError("members", str(member), f"a model with the labels {labels} of "
                              f"{str(parsed[0])!r}; it has {rec.labels}")
        labels = labels or list(rec.labels)
    return Ensemble(name, parsed, how, tuple(labels))
