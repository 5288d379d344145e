"""widgets/_render.py and the contract every view keeps: DOM classes, chart, mimebundle, close.

The per-view behaviour lives in tests/test_widgets_<view>.py; everything here runs without a
front end (ipywidgets falls back to dummy comms).
"""

from __future__ import annotations

import base64
import itertools
import threading
import time

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.metrics import ClassificationReport
from tests.train.test_trainer import tiny_config
from widgets._render import Throttle, byte_unit, cell_style, html_table

PNG = b"\x89PNG\r\n\x1a\n"


def wait_until(condition, timeout: float = 120.0, every: float = 0.01) -> bool:
    """Poll ``condition``; the timeout only guards against a hang, never paces a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def trace() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "arrival": [0.0, 0.0, 1.0],
                         "steps": [12, 8, 6], "weight": [1.0, 2.0, 3.0]})


def three_task_allocator() -> lab.Allocator:
    alloc = lab.Allocator(capacity=lab.Resources(memory="8GiB", compute=1.0), policy="drf")
    for task, memory in (("train", "4GiB"), ("infer", "1GiB"), ("eval", "2GiB")):
        alloc.add(lab.Demand(task, {"memory": memory, "compute": 1.0}))
    return alloc


def report(seed: int = 0, accuracy: float = 0.7) -> ClassificationReport:
    rng = np.random.default_rng(seed)
    labels = ["neg", "neu", "pos"]
    y = list(rng.choice(labels, 120))
    pred = [t if rng.random() < accuracy else str(rng.choice(labels)) for t in y]
    return ClassificationReport.from_labels(y, pred)


# ------------------------------------------------------------------------------ Throttle


def test_throttle_coalesces_a_burst_and_always_runs_the_last_state():
    state, seen, times = {"x": 0}, [], []

    def draw():
        seen.append(state["x"])
        times.append(time.monotonic())

    throttle = Throttle(draw, interval=0.1)
    started = time.monotonic()
    for i in range(1, 201):
        state["x"] = i
        throttle()
        time.sleep(0.002)  # pace: a burst spread over ~0.4 s
    elapsed = time.monotonic() - started
    assert wait_until(lambda: not throttle.pending and seen and seen[-1] == 200)
    assert len(seen) <= elapsed / 0.1 + 2  # coalesced, not one run per call
    assert len(seen) >= 2
    assert all(b - a >= 0.1 - 0.01 for a, b in itertools.pairwise(times))


def test_throttle_spaces_expensive_runs_to_a_share_of_the_time():
    times = []

    def slow_draw():
        times.append(time.monotonic())
        time.sleep(0.05)  # pace: the drawing's own cost

    throttle = Throttle(slow_draw, interval=0.01, share=0.25)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        throttle()
        time.sleep(0.005)  # pace: requests for a second
    assert wait_until(lambda: not throttle.pending)
    assert throttle.spacing >= 0.05 / 0.25
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 0.19  # 0.05 s of drawing per 0.2 s at most, not per 0.01 s
    assert len(times) <= 7


def test_throttle_close_cancels_and_flush_runs_now():
    calls = []
    throttle = Throttle(lambda: calls.append(threading.current_thread()), interval=5.0)
    throttle()  # the first call runs at once (on the timer thread)
    assert wait_until(lambda: len(calls) == 1)
    throttle()  # the next waits out the interval ...
    assert throttle.pending
    throttle.flush()  # ... unless flushed: runs on this thread
    assert calls[-1] is threading.current_thread() and not throttle.pending
    throttle()
    throttle.close()  # cancels the pending run: nothing is scheduled any more ...
    assert not throttle.pending
    throttle()  # ... and a closed throttle schedules nothing (checked at once: no timer)
    assert len(calls) == 2 and not throttle.pending


# ------------------------------------------------------------------------------ helpers


def test_html_table_colours_by_value_and_escapes_text():
    df = pd.DataFrame({"f1": [1.0, 0.0], "note": ["<b>", "ok"]}, index=["good", "bad"])
    out = html_table(df, scales={"f1": (0.0, 1.0, "RdYlGn")}, formats={"f1": ".2f"})
    good, bad = cell_style(1.0, 0, 1, "RdYlGn"), cell_style(0.0, 0, 1, "RdYlGn")
    assert good != bad and good in out and bad in out
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert "1.00" in out and cell_style(float("nan"), 0, 1, "RdYlGn") == ""


def test_byte_unit_picks_a_readable_scale():
    assert byte_unit(3 * 2**30) == (2**30, "GiB")
    assert byte_unit(5 * 2**20) == (2**20, "MiB")
    assert byte_unit(100) == (1.0, "B")


def test_package_exports_the_seven_views_lazily():
    import llmos_lab.widgets as w

    assert sorted(w.__all__) == sorted(["AllocationView", "SchedulerView",
                                        "TrainingDashboard", "ReportView", "KernelMonitor",
                                        "ResultsView", "AgentView"])
    assert w.AllocationView.__module__ == "llmos_lab.widgets.allocation"
    with pytest.raises(AttributeError, match="Nope"):
        _ = w.Nope


# ------------------------------------------------------------------------------ every view


@pytest.fixture
def make_view(tmp_path):
    from llmos_lab.widgets import (
        AllocationView,
        KernelMonitor,
        ReportView,
        SchedulerView,
        TrainingDashboard,
    )

    def make(name: str):
        if name == "allocation":
            return AllocationView(three_task_allocator())
        if name == "scheduler":
            return SchedulerView(lab.simulate(trace(), "rr"), lab.simulate(trace(), "stride"))
        if name == "training":
            return TrainingDashboard(lab.Trainer(tiny_config()))
        if name == "report":
            return ReportView(report(0), report(1, 0.9))
        return KernelMonitor(lab.ModelKernel(device="cpu", memory_budget="64MiB",
                                             precision="fp32", swap_dir=tmp_path))
    return make


VIEWS = {"allocation": "llmos-allocation-view", "scheduler": "llmos-scheduler-view",
         "training": "llmos-training-dashboard", "report": "llmos-report-view",
         "kernel": "llmos-kernel-monitor"}


@pytest.mark.parametrize("name", list(VIEWS))
def test_view_is_a_vbox_with_its_dom_classes_and_a_png_chart(make_view, name):
    view = make_view(name)
    assert isinstance(view, ipywidgets.VBox)
    assert {"llmos-widget", VIEWS[name]} <= set(view._dom_classes)
    assert isinstance(view.image, ipywidgets.Image) and view.image.format == "png"
    assert "llmos-chart" in view.image._dom_classes
    assert view.image in view.children
    assert bytes(view.image.value).startswith(PNG) and view.png() == bytes(view.image.value)
    view.close()


@pytest.mark.parametrize("name", list(VIEWS))
def test_mimebundle_has_the_live_widget_text_and_a_static_png(make_view, name):
    figures_before = plt.get_fignums()
    view = make_view(name)
    bundle = view._repr_mimebundle_()
    assert {"application/vnd.jupyter.widget-view+json", "text/plain", "image/png",
            "text/html"} <= set(bundle)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(PNG) and len(png) > 2000 and png == view.png()
    text = bundle["text/plain"]
    assert text.splitlines()[0].startswith(type(view).__name__)
    assert len(text.splitlines()) >= 2  # one line per item, not a widget repr
    assert bundle["image/png"] in bundle["text/html"]
    assert plt.get_fignums() == figures_before  # drawn off pyplot
    view.close()


@pytest.mark.parametrize("name", list(VIEWS))
def test_close_unsubscribes_closes_children_and_keeps_a_static_snapshot(make_view, name):
    subscribed = len(events._subscribers)
    view = make_view(name)
    children = list(view.children)
    view.close()
    assert len(events._subscribers) == subscribed
    assert view.closed and all(c.comm is None for c in children)
    redraws = view.redraws
    assert view.refresh().startswith(PNG) and view.redraws == redraws  # no drawing after close
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(PNG)


def test_context_manager_closes():
    from llmos_lab.widgets import AllocationView

    alloc = three_task_allocator()
    with AllocationView(alloc) as view:
        assert not view.closed
    assert view.closed
    alloc.add(lab.Demand("late", {"memory": "1GiB", "compute": 0.5}))
    assert "late" not in view.priority
