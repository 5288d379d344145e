"""How long each widget takes to redraw at the notebooks' sizes, one JSON line per view.

    python -m benchmarks.bench_widgets            # 7 redraws per view, the median reported
    python -m benchmarks.bench_widgets --quick    # 2 redraws per view (the tests)
    llmos-lab bench widgets

A redraw is what the throttle runs: the chart drawn and encoded as PNG, plus the view's HTML
panels. Target: at most 100 ms per view on a 2-core CPU (``target_ms``), so the throttle keeps
redraws well under 10% of the time of the work they show. ``first_ms`` is the first drawing
(layout computed once); views of immutable inputs (``static``: a report, finished
simulations) draw each state once, so their redraws are cache hits: ``first_ms`` is theirs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

import llmos_lab as lab

TARGET_MS = 100.0


def _words_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Three classes decided by one word among fillers (what the tiny model can learn)."""
    rng = np.random.default_rng(seed)
    cue = {"negative": ["awful", "bad", "sad"], "neutral": ["okay", "fine", "plain"],
           "positive": ["great", "good", "happy"]}
    fill = ["the", "a", "day", "was", "it", "today", "and", "so", "very", "my"]
    labels = list(cue)
    rows = []
    for _ in range(n):
        y = labels[int(rng.integers(3))]
        words = list(rng.choice(fill, 6))
        words.insert(int(rng.integers(7)), str(rng.choice(cue[y])))
        rows.append((" ".join(words), y))
    return pd.DataFrame(rows, columns=["text", "label"])


def allocation_view():
    from llmos_lab.widgets import AllocationView

    alloc = lab.Allocator(lab.Resources(memory="8GiB", compute=1.0), policy="drf")
    for i, (mem, comp) in enumerate([("2GiB", 1.0), ("3GiB", 0.5), ("1GiB", 0.25),
                                     ("2GiB", 0.75), ("1GiB", 1.0), ("4GiB", 0.5)]):
        alloc.add({"id": f"task{i}", "want": {"memory": mem, "compute": comp},
                   "priority": i % 3, "weight": 1.0 + i % 2})
    return AllocationView(alloc)


def scheduler_view():
    from llmos_lab.widgets import SchedulerView

    contenders = pd.DataFrame({"id": ["a", "b", "c", "d"], "arrival": 0.0, "steps": 40,
                               "priority": [1, 2, 3, 1], "weight": [1.0, 1.0, 2.0, 4.0]})
    return SchedulerView(lab.simulate(contenders, "rr"), lab.simulate(contenders, "stride"),
                         names=("rr", "stride"))


def live_scheduler_view():
    """Notebook 02's part 3: a fine-tuning task, two inference streams and an evaluation on
    one live scheduler (run to the end here, so every redraw shows all ~60 slices)."""
    from llmos_lab.widgets import SchedulerView

    sched = lab.Scheduler(policy="stride")
    for name, steps, weight in (("train", 40, 2.0), ("serve", 8, 1.0), ("batch", 8, 1.0),
                                ("eval", 3, 1.0)):
        sched.submit(lab.Task(name, iter(range(steps)), weight=weight))
    view = SchedulerView(sched, names=["stride (real tasks)"])
    sched.run()
    return view


def training_dashboard():
    from llmos_lab.widgets import TrainingDashboard

    cfg = lab.TrainConfig(model="tiny-bert", epochs=1, batch_size=16, eval_every=25,
                          device="cpu", lr=1e-3)
    data = _words_frame(2000)
    trainer = lab.Trainer(cfg).fit(data, data.head(200), progress=False)  # 125 steps
    return TrainingDashboard(trainer)


def report_view():
    from llmos_lab.widgets import ReportView

    rng = np.random.default_rng(0)
    labels = ["negative", "neutral", "positive"]
    truth = list(rng.choice(labels, 3000))
    guess = [t if rng.random() < 0.7 else str(rng.choice(labels)) for t in truth]
    other = [t if rng.random() < 0.6 else str(rng.choice(labels)) for t in truth]
    a = lab.ClassificationReport.from_labels(truth, guess, labels=labels)
    b = lab.ClassificationReport.from_labels(truth, other, labels=labels)
    return ReportView(a, b, names=("full", "LoRA"))


def kernel_monitor():
    from llmos_lab.widgets import KernelMonitor

    kernel = lab.ModelKernel(device="cpu", memory_budget="64MiB")
    kernel.load("tiny-bert", name="sent", task="sequence-classification", num_labels=3)
    kernel.load("tiny-bert", name="ner", task="token-classification", num_labels=5)
    kernel.load("tiny-llama", name="lm")
    kernel.evict("ner")
    kernel.pin("sent")
    kernel.infer("sent", ["a day", "so good"])
    return KernelMonitor(kernel)


VIEWS: dict[str, Callable[[], Any]] = {
    "AllocationView": allocation_view, "SchedulerView": scheduler_view,
    "SchedulerView (live)": live_scheduler_view,
    "TrainingDashboard": training_dashboard, "ReportView": report_view,
    "KernelMonitor": kernel_monitor,
}


def measure(name: str, repeats: int) -> dict[str, Any]:
    view = VIEWS[name]()
    try:
        view._static.clear()
        started = time.perf_counter()
        view.refresh()  # first draw: layout computed, fonts and caches warm up
        first = (time.perf_counter() - started) * 1e3
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            png = view.refresh()
            times.append((time.perf_counter() - started) * 1e3)
        return {"benchmark": "redraw", "view": name, "median_ms": round(statistics.median(times),
                                                                          1),
                "min_ms": round(min(times), 1), "first_ms": round(first, 1),
                "static": view._state_key() is not None, "repeats": repeats,
                "png_bytes": len(png),
                "target_ms": TARGET_MS, "within_target": statistics.median(times) <= TARGET_MS}
    finally:
        view.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two redraws per view")
    parser.add_argument("--only", choices=list(VIEWS), action="append")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    failed = 0
    for name in args.only or VIEWS:
        try:
            line = measure(name, 2 if args.quick else 7)
        except Exception as exc:  # one view failing still reports the others
            traceback.print_exc()
            line, failed = {"benchmark": "redraw", "view": name, "error": repr(exc)}, 1
        line["quick"] = args.quick
        print(json.dumps(line), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
