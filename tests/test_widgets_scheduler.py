"""SchedulerView: simulated what-ifs side by side, and a live scheduler on its own thread."""

from __future__ import annotations

import html
import time

import pandas as pd
import pytest
from llmos_lab.widgets import SchedulerView

import llmos_lab as lab
from llmos_lab.errors import ConfigError
from tests.test_widgets import trace, wait_until


def sleepy(n: int, seconds: float):
    for i in range(n):
        time.sleep(seconds)
        yield i


def test_two_policies_side_by_side_with_their_shares_and_jain():
    rr, drf = lab.simulate(trace(), "rr"), lab.simulate(trace(), "drf", memory="8GiB")
    view = SchedulerView(rr, drf, names=("round robin", "DRF"))
    jains = [rr.shares().attrs["jain"], drf.shares().attrs["jain"]]
    assert jains[0] != pytest.approx(jains[1], abs=1e-3)  # the comparison shows a difference
    for name, jain in zip(("round robin", "DRF"), jains, strict=True):
        assert html.escape(f"{name} · Jain's index {jain:.3f}") in view.table.value
    text = view._repr_mimebundle_()["text/plain"].splitlines()
    assert text[0] == "SchedulerView: round robin vs DRF"
    shares = drf.shares().set_index("task")
    assert (f"    a: measured share {shares.loc['a', 'share']:.3f} vs allocated "
            f"{shares.loc['a', 'allocated_share']:.3f}") in text
    fig = view._draw()
    assert len(fig.axes) == 4  # two Gantt panels above two share panels
    assert fig.axes[0].get_xlabel().startswith("seconds") and fig.axes[0].get_ylabel() == "task"
    view.close()


def test_same_policy_twice_is_told_apart_and_names_must_match():
    a, b = lab.simulate(trace(), "rr"), lab.simulate(trace(), "rr", quantum=3)
    view = SchedulerView(a, b)
    assert [s.name for s in view.sources] == ["A: rr", "B: rr"]
    view.close()
    with pytest.raises(ConfigError, match="one per source"):
        SchedulerView(a, b, names=["only one"])
    with pytest.raises(TypeError, match="Scheduler or a SimulationResult"):
        SchedulerView(trace())


def test_gantt_shows_at_most_thirty_tasks_and_says_so():
    many = pd.DataFrame({"arrival": [0.0] * 40, "steps": [2] * 40})
    view = SchedulerView(lab.simulate(many, "rr"))
    fig = view._draw()
    assert "first 30 of 40 tasks" in fig.axes[0].get_title(loc="left")
    assert len(fig.axes[0].get_yticks()) == 30
    view.close()


def test_live_scheduler_redraws_while_its_thread_runs_and_ends_with_every_step():
    holder = {}

    def gated(n: int):
        """Steps that pause halfway until the view has redrawn: a redraw during the run is
        then certain, however slow drawing is on this machine."""
        for i in range(n):
            if i == n // 2:  # a view that drew only at the end would hang here (and fail)
                assert wait_until(lambda: holder["view"].redraws > holder["before"])
                holder.setdefault("during", len(holder["sched"].timeline()))
            yield i

    sched = holder["sched"] = lab.Scheduler(policy="stride")
    sched.submit(lab.Task("x", gated(40), weight=1.0))
    sched.submit(lab.Task("y", gated(40), weight=3.0))
    view = holder["view"] = SchedulerView(sched)
    redraws = holder["before"] = view.redraws
    started = time.monotonic()
    sched.start()
    assert sched.join(120)
    sched.stop()
    assert holder["during"] < 80  # drawn during the run, before the last step
    view._throttle.flush()  # the trailing redraw, whenever its spacing would allow it
    elapsed = time.monotonic() - started
    # redraws are spaced at least the throttle's interval apart, on any machine
    assert view.redraws - redraws <= elapsed / view._throttle.interval + 3
    text = view._repr_mimebundle_()["text/plain"]
    assert "2 tasks, 80 slices" in text
    shares = sched.shares().set_index("task")
    assert f"y: measured share {shares.loc['y', 'share']:.3f}" in text
    assert "x" in view.table.value and "y" in view.table.value
    view.close()


def test_live_view_ignores_other_schedulers_and_compares_with_a_simulation():
    mine, other = lab.Scheduler(policy="rr"), lab.Scheduler(policy="rr")
    mine.submit(lab.Task("m", sleepy(3, 0.0)))
    view = SchedulerView(mine, lab.simulate(trace(), "stride"), names=("live", "simulated"))
    mine.run()
    view.png()
    redraws = view.redraws
    other.submit(lab.Task("o", sleepy(5, 0.0)))
    other.run()  # its events are delivered synchronously: a redraw would be pending now
    assert not view._throttle.pending and view.redraws == redraws
    assert "o:" not in view._repr_mimebundle_()["text/plain"]
    assert "live: 1 tasks, 3 slices" in view._repr_mimebundle_()["text/plain"]
    view.close()
