"""The gate: did a gated metric get worse than its baseline, beyond noise?

A metric regresses only when the seed repeats say so: the mean difference (tonight minus
baseline, turned so that positive is better) is worse than the tolerance (``atol + rtol *
|baseline mean|``) *and* a bootstrap confidence interval of the mean difference lies entirely
on the worse side of zero. With one value on either side there is no interval: the
difference is compared with the tolerance alone, and the verdict says so ("worse (1 run)").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .suite import Gate

COLUMNS = ["key", "metric", "verdict", "baseline", "current", "difference", "ci_low",
           "ci_high", "tolerance", "n_baseline", "n_current", "higher_is_better"]


def bootstrap_interval(current: np.ndarray, baseline: np.ndarray, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean(current) - mean(baseline), resampling each side."""
    rng = np.random.default_rng(seed)
    a = rng.choice(current, size=(resamples, len(current))).mean(axis=1)
    b = rng.choice(baseline, size=(resamples, len(baseline))).mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(a - b, [tail, 1 - tail])
    return float(low), float(high)


def judge(gate: Gate, current: np.ndarray, baseline: np.ndarray,
          level: float = 0.95) -> dict:
    """One metric's verdict: "ok", "better", "worse" (or "... (1 run)" without repeats)."""
    sign = 1.0 if gate.higher_is_better else -1.0
    diff = float(current.mean() - baseline.mean())
    tolerance = gate.atol + gate.rtol * abs(float(baseline.mean()))
    repeats = len(current) > 1 and len(baseline) > 1
    low, high = bootstrap_interval(current, baseline, level) if repeats else (np.nan, np.nan)
    good = sign * diff  # > 0: better
    good_low, good_high = sorted((sign * low, sign * high)) if repeats else (good, good)
    if good < -tolerance and good_high < 0:  # the whole interval on the worse side
        verdict = "worse"
    elif good > tolerance and good_low > 0:
        verdict = "better"
    else:
        verdict = "ok"
    if not repeats and verdict != "ok":
        verdict += " (1 run)"
    return {"verdict": verdict, "baseline": float(baseline.mean()),
            "current": float(current.mean()), "difference": diff, "ci_low": low,
            "ci_high": high, "tolerance": tolerance, "n_baseline": len(baseline),
            "n_current": len(current), "higher_is_better": gate.higher_is_better}


def compare(current: pd.DataFrame, baseline: pd.DataFrame | None,
            gates: dict[str, tuple[Gate, ...]], level: float = 0.95) -> pd.DataFrame:
    """Every gated (configuration, metric) of tonight against the baseline's values.

    ``current`` and ``baseline`` have columns key, metric, value (one row per run);
    the verdict is "no baseline" where the baseline lacks that metric, "missing" where
    tonight has no value (every run of it failed)."""
    rows = []
    for key, key_gates in gates.items():
        for gate in key_gates:
            now = _values(current, key, gate.metric)
            then = _values(baseline, key, gate.metric) if baseline is not None else \
                np.array([])
            base = {"key": key, "metric": gate.metric,
                    "higher_is_better": gate.higher_is_better}
            if not len(now):
                rows.append({**base, "verdict": "missing", "n_baseline": len(then)})
            elif not len(then):
                rows.append({**base, "verdict": "no baseline", "current": float(now.mean()),
                             "n_current": len(now)})
            else:
                rows.append({**base, **judge(gate, now, then, level)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _values(frame: pd.DataFrame, key: str, metric: str) -> np.ndarray:
    rows = frame[(frame["key"] == key) & (frame["metric"] == metric)]
    return rows["value"].dropna().to_numpy(dtype=float)


def regressed(verdicts: pd.DataFrame) -> bool:
    return bool(verdicts["verdict"].astype(str).str.startswith("worse").any())


def reference(store, suite: str, night: int, name: str | None) -> pd.DataFrame | None:
    """The baseline's values (key, metric, value): "last" is the last passing night of
    ``suite`` before ``night``; another name a saved baseline; None none."""
    if name is None:
        return None
    if name == "last":
        last = store.latest_night(suite, passed=True, before=night)
        return None if last is None else store.metrics(last)[["key", "metric", "value"]]
    return store.baseline(name, suite)
