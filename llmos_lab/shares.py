"""Measured against entitled: shares of busy time while every task competes, Jain's index,
and per-task metrics (waiting, turnaround), for the live scheduler and the simulation alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def entitled_shares(policy: str, tasks: Iterable[tuple[str, float, bool]]
                    ) -> dict[str, float]:
    tasks = list(tasks)
    weights = {tid: (w if policy == "stride" else 1.0) if ran else 0.0 for tid, w, ran in tasks}
    total = sum(weights.values()) or 1.0
    return {tid: w / total for tid, w in weights.items()}


def window_shares(timeline: pd.DataFrame, entitled: dict[str, float],
                  until: float | None = None) -> pd.DataFrame:
    """Measured shares of busy time in ``[start, until]`` (default: until the first task
    finishes, while every task still competes), against entitled shares, with Jain's index."""
    if until is None and len(timeline):
        until = float(timeline.groupby("task")["end"].max().min())
    clipped = (timeline["end"].clip(upper=until) - timeline["start"].clip(upper=until))
    if "compute" in timeline:  # processor sharing: busy time is compute granted x seconds
        clipped = clipped * timeline["compute"]
    busy = clipped.groupby(timeline["task"]).sum()
    out = pd.DataFrame({"task": list(entitled)})
    out["busy_seconds"] = out["task"].map(busy).fillna(0.0)
    total = out["busy_seconds"].sum()
    out["share"] = out["busy_seconds"] / total if total else 0.0
    out["allocated_share"] = out["task"].map(entitled)
    ratio = (out["share"] / out["allocated_share"]).to_numpy()[out["allocated_share"] > 0]
    out.attrs = {"until": until, "jain": _jain(ratio)}
    return out


def _jain(x: np.ndarray) -> float:
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum())) if len(x) and (x ** 2).sum() > 0 \
        else 1.0


def task_metrics(rows: Iterable[dict[str, Any]], span: float) -> pd.DataFrame:
    """Shares, waiting, turnaround, utilisation and Jain's index from per-task rows."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        df.attrs = {"utilisation": 0.0, "jain": 1.0, "busy_seconds": 0.0, "span": span}
        return df
    busy = df["busy_seconds"].sum()
    df["share"] = df["busy_seconds"] / busy if busy else 0.0
    df["waiting"] = df["first_run"] - df["submitted"]
    df["turnaround"] = df["finished"] - df["submitted"]
    ran = df[df["allocated_share"] > 0]
    jain = _jain((ran["share"] / ran["allocated_share"]).to_numpy())
    df.attrs = {"utilisation": float(busy / span) if span > 0 else 0.0, "jain": jain,
                "busy_seconds": float(busy), "span": float(span)}
    return df
