"""AllocationView: controls follow the allocator, and moving them re-allocates through it."""

from __future__ import annotations

import threading

import pytest
from llmos_lab.widgets import AllocationView

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.errors import ConfigError
from tests.test_widgets import three_task_allocator, wait_until


@pytest.fixture
def view():
    v = AllocationView(three_task_allocator())
    yield v
    v.close()


def test_one_slider_row_per_task_with_the_demands_values(view):
    assert list(view.priority) == list(view.weight) == ["train", "infer", "eval"]
    assert view.policy.value == "drf" and set(lab.allocator.policies()) == set(
        view.policy.options)
    assert all(s.value == 1 for s in view.priority.values())
    assert all(s.value == 1.0 for s in view.weight.values())
    assert view.waiting.value == "no task waiting"


def test_weight_slider_reallocates_and_redraws(view):
    alloc = view.allocator
    before_png, before = view.png(), alloc.grant("train").compute
    view.weight["train"].value = 3.0
    assert alloc.demands["train"].weight == 3.0
    after = alloc.grant("train").compute
    assert after == pytest.approx(3 * alloc.grant("infer").compute)  # DRF by weight
    assert after > before
    assert view.png() != before_png
    assert "weight 3" in view._repr_mimebundle_()["text/plain"]


def test_priority_slider_and_policy_dropdown_go_through_the_allocator(view):
    alloc = view.allocator
    view.policy.value = "priority"
    assert alloc.policy == "priority" and alloc.allocation_.policy == "priority"
    view.priority["eval"].value = 5
    assert alloc.demands["eval"].priority == 5
    assert alloc.grant("eval").compute == pytest.approx(1.0)  # the top class takes it all
    assert alloc.grant("train").compute == pytest.approx(0.0)
    assert "policy priority" in view._repr_mimebundle_()["text/plain"]


def test_changes_made_in_code_move_the_controls(view):
    alloc = view.allocator
    alloc.set("infer", weight=2.5, priority=12)  # beyond the slider's default range
    assert view.weight["infer"].value == 2.5
    assert view.priority["infer"].value == 12 and view.priority["infer"].max >= 12
    alloc.set_policy("max-min")
    assert view.policy.value == "max-min"


def test_new_tasks_get_sliders_and_removed_tasks_lose_them(view):
    alloc = view.allocator
    alloc.add(lab.Demand("late", {"memory": "1GiB", "compute": 0.5}, priority=3))
    assert view.priority["late"].value == 3
    old = view.weight["infer"]
    alloc.remove("infer")
    assert "infer" not in view.weight and old.comm is None
    assert len(view.controls.children) == 3


def test_waiting_tasks_are_shown(view):
    alloc = view.allocator
    alloc.add(lab.Demand("huge", {"memory": "6GiB", "compute": 0.5},
                         minimum={"memory": "6GiB"}))
    alloc.add(lab.Demand("huge2", {"memory": "6GiB", "compute": 0.5},
                         minimum={"memory": "6GiB"}))
    assert alloc.allocation_.waiting == ["huge2"]
    view.png()  # draws the pending update (and its panels) now
    assert "huge2" in view.waiting.value and "huge," not in view.waiting.value
    text = view._repr_mimebundle_()["text/plain"]
    assert "huge2: waiting" in text and "1 waiting" in text.splitlines()[0]


def test_updates_of_another_allocator_are_ignored(view):
    other = lab.Allocator(capacity={"memory": "1GiB", "compute": 1.0})
    view.png()
    redraws = view.redraws
    other.add(lab.Demand("stranger", {"memory": "1GiB", "compute": 1.0}))
    assert "stranger" not in view.priority
    view.png()
    assert view.redraws == redraws


def test_updates_from_a_background_thread_redraw_while_the_main_thread_waits(view):
    alloc = view.allocator
    view.png()
    redraws = view.redraws

    def work():
        for i in range(20):
            alloc.set("eval", weight=1.0 + i / 10)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert wait_until(lambda: view.redraws > redraws and not view._throttle.pending)
    assert view.weight["eval"].value == pytest.approx(2.9)
    assert view.redraws - redraws <= 3  # twenty updates, coalesced
    assert "weight 2.9" in view._repr_mimebundle_()["text/plain"]


def test_closed_view_ignores_updates():
    alloc = three_task_allocator()
    view = AllocationView(alloc)
    view.close()
    count, redraws = len(events._subscribers), view.redraws
    alloc.add(lab.Demand("late", {"memory": "1GiB", "compute": 0.5}))  # delivered at once
    assert "late" not in view.priority and len(events._subscribers) == count
    assert view.redraws == redraws and not view._throttle.pending


def test_with_a_scheduler_sliders_steer_its_tasks_too():
    alloc = lab.Allocator(capacity={"memory": "8GiB", "compute": 1.0}, policy="drf")
    sched = lab.Scheduler(policy="priority", allocator=alloc)
    sched.submit(lab.Task("t", iter(range(3)), demand={"memory": "1GiB", "compute": 1.0}))
    alloc.add(lab.Demand("outside", {"memory": "1GiB", "compute": 1.0}))  # not the scheduler's
    view = AllocationView(alloc, scheduler=sched)
    view.priority["t"].value = 4
    metrics = sched.metrics().set_index("task")
    assert metrics.loc["t", "priority"] == 4 and alloc.demands["t"].priority == 4
    view.weight["outside"].value = 2.0  # straight to the allocator
    assert alloc.demands["outside"].weight == 2.0
    view.close()
    with pytest.raises(ConfigError, match="allocator"):
        AllocationView(lab.Allocator(capacity={"memory": "1GiB"}), scheduler=sched)
