"""Scheduler: policies interleave real steps, background thread, admission, failures, tasks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.allocator import Allocator, Resources
from llmos_lab.errors import ConfigError, UnknownNameError
from llmos_lab.scheduler import Scheduler, Task, policies
from llmos_lab.tasks import evaluation_task, inference_task, training_task


def spin(n: int, seconds: float = 0.0, log: list | None = None, name: str = ""):
    for i in range(n):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        if log is not None:
            log.append(name)
        yield i


def order_of(policy: str, **kw) -> list[str]:
    log: list[str] = []
    s = Scheduler(policy, **kw)
    for name, prio in (("a", 1), ("b", 3), ("c", 2)):
        s.submit(Task(name, spin(3, log=log, name=name)), priority=prio)
    s.run()
    return log


def test_fifo_runs_each_task_to_completion_in_arrival_order():
    assert order_of("fifo") == list("aaabbbccc")


def test_round_robin_alternates_by_quantum():
    assert order_of("rr") == list("abcabcabc")
    assert order_of("rr", quantum=2) == list("aabbccabc")


def test_priority_runs_higher_classes_first():
    assert order_of("priority") == list("bbbcccaaa")


def test_priority_preempts_at_the_next_step_boundary():
    log: list[str] = []
    s = Scheduler("priority")
    s.submit(Task("low", spin(4, log=log, name="low")), priority=1)
    s.run(max_steps=2)
    s.submit(Task("high", spin(2, log=log, name="high")), priority=5)
    s.run()
    assert log == ["low", "low", "high", "high", "low", "low"]


def test_stride_gives_busy_time_in_proportion_to_weights():
    s = Scheduler("stride")
    for w in (1, 2, 3):
        s.submit(Task(f"w{w}", spin(10_000, 0.001)), weight=w)
    s.run(max_steps=600)
    m = s.metrics().set_index("task")
    for w in (1, 2, 3):
        assert abs(m.loc[f"w{w}", "share"] - w / 6) < 0.04, m[["share", "allocated_share"]]
    assert m.attrs["jain"] > 0.99
    assert 0.9 < m.attrs["utilisation"] <= 1.0 + 1e-9


def test_weights_can_change_while_running():
    s = Scheduler("stride")
    for name in "ab":
        s.submit(Task(name, spin(10_000, 0.001)))
    s.run(max_steps=200)
    s.set_weight("b", 3.0)
    already = len(s.timeline())
    s.run(max_steps=600)
    busy = s.timeline().iloc[already:].groupby("task")["seconds"].sum()
    assert busy["b"] / busy.sum() == pytest.approx(0.75, abs=0.06)


def test_a_failing_task_is_marked_failed_and_the_others_go_on():
    def boom():
        yield 1
        raise ValueError("bad batch")

    s = Scheduler("rr")
    s.submit(Task("ok", spin(4)))
    s.submit(Task("bad", boom))
    s.run()
    m = s.metrics().set_index("task")
    assert m.loc["ok", "state"] == "done" and m.loc["ok", "steps"] == 4
    assert m.loc["bad", "state"] == "failed" and "bad batch" in m.loc["bad", "error"]


def test_background_thread_keeps_the_caller_free_and_stops():
    s = Scheduler("rr").start()
    seen = threading.Event()
    unsubscribe = events.subscribe("sched.step", lambda e: seen.set())
    try:
        s.submit(Task("bg", spin(10_000, 0.001)))
        assert seen.wait(120)
        assert s.running
        s.stop()  # joins the thread: once it returns, no step can run any more
        assert not s.running and not s._thread.is_alive()
        steps = s.metrics().loc[0, "steps"]
        assert 0 < steps < 10_000 and s.metrics().loc[0, "state"] != "done"
    finally:
        unsubscribe()
    s2 = Scheduler("fifo").start()
    s2.submit(Task("quick", spin(5)))
    assert s2.join(120)
    s2.stop()


def test_timeline_and_metrics_columns():
    s = Scheduler("rr")
    s.submit(Task("a", spin(3, 0.001)))
    s.submit(Task("b", spin(2, 0.001)))
    s.run()
    t = s.timeline()
    assert list(t.columns) == ["task", "step", "start", "end", "seconds"]
    assert t["start"].is_monotonic_increasing and (t["seconds"] > 0).all()
    assert t.groupby("task")["step"].max().to_dict() == {"a": 3, "b": 2}
    m = s.metrics().set_index("task")
    assert {"busy_seconds", "share", "allocated_share", "waiting", "turnaround"} <= set(m.columns)
    assert (m["turnaround"] >= m["busy_seconds"]).all()
    assert m["share"].sum() == pytest.approx(1.0)


def test_admission_makes_a_task_wait_until_memory_frees():
    alloc = Allocator(Resources(memory="4GiB", compute=1.0), policy="max-min")
    s = Scheduler("rr", allocator=alloc)
    s.submit(Task("big", spin(3), demand={"memory": "3GiB", "compute": 1.0},
                  minimum={"memory": "3GiB"}))
    s.submit(Task("also-big", spin(3), demand={"memory": "3GiB", "compute": 1.0},
                  minimum={"memory": "3GiB"}))
    assert s._tasks["also-big"].state == "waiting"
    s.run()
    t = s.timeline()
    first_end = t[t["task"] == "big"]["end"].max()
    assert t[t["task"] == "also-big"]["start"].min() >= first_end
    assert set(s.metrics()["state"]) == {"done"}


def test_stride_weights_follow_compute_grants():
    alloc = Allocator(Resources(memory="8GiB", compute=1.0), policy="max-min")
    s = Scheduler("stride", allocator=alloc)
    for w in (1, 3):
        s.submit(Task(f"w{w}", spin(10_000, 0.001), demand={"compute": 1.0}), weight=w)
    assert s._tasks["w3"].weight == pytest.approx(0.75)
    s.run(max_steps=400)
    share = s.metrics().set_index("task")["share"]
    assert share["w3"] == pytest.approx(0.75, abs=0.04)


@pytest.mark.parametrize("kwargs,match", [
    ({"policy": "lottery"}, "fifo, priority, rr, stride"),
    ({"quantum": 0}, "quantum"), ({"quantum_seconds": -1}, "quantum_seconds"),
    ({"backend": "slurm"}, "backend"),
])
def test_bad_scheduler_settings(kwargs, match):
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        Scheduler(**kwargs)


def test_bad_submissions():
    s = Scheduler()
    s.submit(Task("a", spin(1)))
    with pytest.raises(ConfigError, match="'a'"):
        s.submit(Task("a", spin(1)))
    with pytest.raises(ConfigError, match=r"b\.priority"):
        s.submit(Task("b", spin(1)), priority="high")
    with pytest.raises(ConfigError, match=r"c\.weight"):
        s.submit(Task("c", spin(1)), weight=-1)
    with pytest.raises(ConfigError, match=r"c\.priority"):
        s.submit(Task("c", spin(1)), priority=1.5)
    with pytest.raises(UnknownNameError, match="'zz'"):
        s.set_weight("zz", 2.0)
    assert policies() == ["fifo", "priority", "rr", "stride"]


# ---------------------------------------------------------------------------- real tasks


def test_training_inference_and_evaluation_tasks_interleave(tiny_model):
    from tests.train.test_trainer import keyword_frame, tiny_config

    train, test = keyword_frame(128, 0), keyword_frame(64, 1)
    trainer = lab.Trainer(tiny_config(max_steps=12))
    kernel = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    kernel.load("tiny-bert", name="m", task="sequence-classification", labels=["neg", "pos"])
    alloc = Allocator(Resources(memory="2GiB", compute=1.0), policy="drf")
    s = Scheduler("rr", allocator=alloc)
    train_task = training_task(trainer, train, id="train",
                               demand={"memory": "1GiB", "compute": 0.5})
    infer = inference_task(kernel, "m", test["text"], batch_size=16, id="infer",
                           demand={"memory": "256MiB", "compute": 0.5})
    s.submit(train_task)
    s.submit(infer)
    s.run()
    t = s.timeline()
    assert list(t["task"][:4]) == ["train", "infer", "train", "infer"]
    assert t.groupby("task")["step"].max().to_dict() == {"train": 12, "infer": 4}
    result = pd.concat(infer.output, ignore_index=True)
    pd.testing.assert_frame_equal(result, kernel.infer("m", list(test["text"])))
    assert len(trainer.history_) == 12
    evaluation = evaluation_task(trainer, test, batch_size=32, id="eval")
    s.submit(evaluation)
    s.run()
    report = evaluation.output[-1]
    expected = trainer.evaluate(test)
    assert report.accuracy == expected.accuracy
    np.testing.assert_allclose(report.confusion.to_numpy(), expected.confusion.to_numpy())
