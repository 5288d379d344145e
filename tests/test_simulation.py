"""simulate(trace, policy): the scheduler's policies on simulated time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmos_lab.errors import ColumnError, ConfigError, DataError, UnknownNameError
from llmos_lab.simulation import compare, simulate


def trace3(**extra) -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "arrival": [0.0, 0.0, 0.0],
                         "steps": [4, 4, 4], **extra})


def test_fifo_turnaround_is_cumulative():
    r = simulate(trace3(), "fifo")
    m = r.metrics.set_index("task")
    assert m["finished"].to_dict() == {"a": 4.0, "b": 8.0, "c": 12.0}
    assert m["waiting"].to_dict() == {"a": 0.0, "b": 4.0, "c": 8.0}
    assert r.summary()["mean_turnaround"] == pytest.approx(8.0)


def test_round_robin_interleaves_single_steps():
    r = simulate(trace3(), "rr")
    assert list(r.timeline["task"][:6]) == ["a", "b", "c", "a", "b", "c"]
    assert r.metrics.set_index("task")["finished"].to_dict() == {"a": 10.0, "b": 11.0,
                                                                 "c": 12.0}


def test_priority_preempts_on_arrival():
    trace = pd.DataFrame({"id": ["low", "high"], "arrival": [0.0, 2.0], "steps": [5, 2],
                          "priority": [1, 5]})
    r = simulate(trace, "priority")
    m = r.metrics.set_index("task")
    assert m.loc["high", "first_run"] == 2.0 and m.loc["high", "finished"] == 4.0
    assert m.loc["low", "finished"] == 7.0


def test_priority_names_a_policy_in_each_registry_and_kind_says_which():
    trace = pd.DataFrame({"id": ["low", "high"], "arrival": [0.0, 2.0], "steps": [5, 2],
                          "priority": [1, 5]})
    sliced = simulate(trace, "priority")
    assert sliced.kind == "schedule" == simulate(trace, "priority", kind="schedule").kind
    shared = simulate(trace, "priority", kind="allocate")
    assert shared.kind == "allocate" and simulate(trace, "drf").kind == "allocate"
    # strict-priority sharing gives the whole machine to "high" on arrival, as preemption
    # does; the time-slicer's timeline has whole steps, the sharer's has rate segments
    assert shared.metrics.set_index("task").loc["high", "finished"] == pytest.approx(4.0)
    assert "steps" in sliced.timeline and "steps" not in shared.timeline
    with pytest.raises(UnknownNameError, match="scheduling policy"):
        simulate(trace, "drf", kind="schedule")
    with pytest.raises(ConfigError, match="kind"):
        simulate(trace, "rr", kind="slice")


def test_stride_shares_follow_weights_while_tasks_compete():
    r = simulate(trace3(weight=[1, 2, 3], steps=[600, 600, 600]), "stride")
    shares = r.shares().set_index("task")
    np.testing.assert_allclose(shares["share"], [1 / 6, 2 / 6, 3 / 6], atol=0.01)
    assert shares.attrs["jain"] > 0.999


def test_memory_admission_serialises_tasks_that_do_not_fit():
    trace = trace3(memory=["3GiB", "3GiB", "1GiB"])
    r = simulate(trace, "rr", memory="4GiB")
    m = r.metrics.set_index("task")
    assert m.loc["b", "first_run"] >= m.loc["a", "finished"]  # a and b never together
    assert m.loc["c", "first_run"] < m.loc["a", "finished"]  # c fits beside a
    with pytest.raises(DataError, match="could never run"):
        simulate(trace3(memory=["5GiB", "1GiB", "1GiB"]), "rr", memory="4GiB")


def test_durations_and_idle_gaps():
    trace = pd.DataFrame({"arrival": [0.0, 10.0], "duration": [2.0, 3.0],
                          "step_seconds": [0.5, 1.0]})
    r = simulate(trace, "fifo")
    m = r.metrics
    assert list(m["steps"]) == [4, 3]
    assert list(m["finished"]) == [2.0, 13.0]
    assert m.attrs["utilisation"] == pytest.approx(5.0 / 13.0)


def test_compare_policies_side_by_side():
    table = compare(trace3(weight=[1, 2, 3]))
    assert list(table.index) == ["fifo", "priority", "rr", "stride"]
    assert table.loc["fifo", "mean_turnaround"] < table.loc["rr", "mean_turnaround"]


@pytest.mark.parametrize("trace,match", [
    (pd.DataFrame({"steps": [1]}), "arrival"),
    (pd.DataFrame({"arrival": [0]}), "steps"),
    (pd.DataFrame({"arrival": [0, -1], "steps": [1, 1]}), "row 1, column 'arrival'"),
    (pd.DataFrame({"arrival": [0, float("nan")], "steps": [1, 1]}), "column 'arrival'"),
    (pd.DataFrame({"arrival": [0], "steps": [float("inf")]}), "column 'steps'"),
    (pd.DataFrame({"id": ["x", "x"], "arrival": [0, 0], "steps": [1, 1]}), "'x' appears"),
    (pd.DataFrame({"arrival": [0], "steps": [1], "priority": [1.5]}), "priority"),
])
def test_bad_traces_name_the_row_and_column(trace, match):
    with pytest.raises((DataError, ColumnError), match=match):
        simulate(trace, "fifo")


def test_bad_policy_and_memory():
    with pytest.raises(UnknownNameError, match="stride"):
        simulate(trace3(), "lottery")
    with pytest.raises(ConfigError, match="memory"):
        simulate(trace3(memory=[-1, 1, 1]), "fifo")


def test_allocation_policies_share_the_machine_by_demands():
    """DRF charges a memory-heavy task for its memory: it gets less compute than under
    max-min, which looks at compute alone (worked by hand: x_A = 1 / 1.15)."""
    trace = pd.DataFrame({"id": ["A", "B"], "arrival": [0.0, 0.0], "steps": [100, 100],
                          "memory": ["6GiB", "1GiB"], "compute": [0.4, 1.0]})
    first = {}
    for policy in ("drf", "max-min"):
        t = simulate(trace, policy, memory="8GiB").timeline
        first[policy] = t[t["start"] == 0].set_index("task")["compute"]
    assert first["max-min"]["A"] == pytest.approx(0.4)
    assert first["max-min"]["B"] == pytest.approx(0.6)
    assert first["drf"]["A"] == pytest.approx(0.4 / 1.15)
    assert first["drf"]["B"] == pytest.approx(0.75 / 1.15)
    r = simulate(trace, "drf", memory="8GiB")
    m = r.metrics.set_index("task")
    assert m["steps"].to_dict() == {"A": 100, "B": 100}
    # work is conserved: compute-seconds granted equal the work each task had to do
    assert m.loc["A", "busy_seconds"] == pytest.approx(100 * 0.4)
    assert m.loc["B", "busy_seconds"] == pytest.approx(100 * 1.0)


def test_allocation_policy_with_memory_admission():
    trace = pd.DataFrame({"arrival": [0.0, 0.0], "steps": [10, 10],
                          "memory": ["3GiB", "3GiB"]})
    m = simulate(trace, "max-min", memory="4GiB").metrics
    assert list(m["first_run"]) == [0.0, 10.0]
    assert list(m["finished"]) == [10.0, 20.0]
