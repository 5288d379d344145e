"""Ray backend: the same tasks as Ray actors, resource requests from the allocation."""

from __future__ import annotations

import pytest

from llmos_lab import events
from llmos_lab.allocator import Allocator, Resources
from llmos_lab.errors import ConfigError
from llmos_lab.scheduler import Scheduler, Task

ray = pytest.importorskip("ray", reason="Ray comes with the 'ray' extra (make test installs it)")


@pytest.fixture(scope="module")
def local_ray():
    # a pretend GPU: fractional num_gpus requests need a declared GPU or they wait forever
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def reporting(n: int):
    def steps(grant=None):
        import ray as remote_ray

        for i in range(n):
            yield {"i": i, "resources": remote_ray.get_runtime_context()
                   .get_assigned_resources()}
    return steps


def failing(grant=None):
    yield 1
    raise ValueError("remote step failed")


def test_tasks_run_as_actors_with_fractional_gpus(local_ray):
    alloc = Allocator(Resources(memory="8GiB", compute=2.0, gpus=1.0), policy="drf")
    sched = Scheduler("rr", allocator=alloc, backend="ray")
    values = []
    unsubscribe = events.subscribe("sched.step", lambda e: values.append(
        (e.payload["task"], e.payload["value"])))
    try:
        for name in "ab":
            sched.submit(Task(name, reporting(3),
                              demand={"memory": "1GiB", "compute": 1.0, "gpus": 0.5}))
        sched.run(timeout=120)
    finally:
        unsubscribe()
    m = sched.metrics().set_index("task")
    assert m["state"].to_dict() == {"a": "done", "b": "done"}
    assert m["steps"].to_dict() == {"a": 3, "b": 3}
    ran = [(task, v) for task, v in values if isinstance(v, dict)]
    assert [task for task, _ in ran[:4]] == ["a", "b", "a", "b"]  # interleaved by the policy
    for _, v in ran:
        assert v["resources"]["GPU"] == pytest.approx(0.5)
        assert v["resources"]["CPU"] == pytest.approx(1.0)


def test_remote_failures_mark_the_task_failed(local_ray):
    sched = Scheduler("fifo", backend="ray")
    sched.submit(Task("bad", failing))
    sched.submit(Task("good", reporting(2)))
    sched.run(timeout=120)
    m = sched.metrics().set_index("task")
    assert m.loc["bad", "state"] == "failed" and "remote step failed" in m.loc["bad", "error"]
    assert m.loc["good", "state"] == "done"


def test_generator_objects_cannot_travel(local_ray):
    sched = Scheduler("fifo", backend="ray")
    sched.submit(Task("gen", iter([1, 2])))
    sched.run(timeout=60)
    m = sched.metrics().set_index("task")
    assert m.loc["gen", "state"] == "failed" and "picklable callable" in m.loc["gen", "error"]
    assert isinstance(sched._tasks["gen"].error, ConfigError)
