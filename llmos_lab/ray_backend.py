"""Run scheduled tasks on Ray: each task's steps live in an actor with a resource request
derived from its allocation (``num_cpus`` from compute, fractional ``num_gpus``).

The scheduler still decides who runs when, one step at a time; a step becomes a remote call
``actor.step()``. Task steps must be a picklable callable returning an iterator (a generator
object cannot travel to another process). Ray comes with the ``ray`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .allocator import Resources
from .errors import ConfigError, RayStepError

_DONE = "__llmos_lab_done__"


def _actor_class():
    import ray

    @ray.remote
    class StepActor:
        def __init__(self, factory: Callable[..., Iterator[Any]], grant: Resources | None):
            import inspect

            params = inspect.signature(factory).parameters
            self.iterator = iter(factory(grant=grant) if "grant" in params else factory())

        def step(self) -> Any:
            try:
                return next(self.iterator)
            except StopIteration:
                return _DONE

    return StepActor


def resource_request(grant: Resources | None) -> dict[str, float]:
    """Ray options for an allocation: compute is in CPUs, GPUs may be fractional."""
    if grant is None:
        return {"num_cpus": 1}
    return {"num_cpus": float(grant.compute), "num_gpus": float(grant.gpus)}


class RemoteSteps:
    """An iterator whose ``next()`` runs one step in a Ray actor."""

    def __init__(self, factory: Callable[..., Iterator[Any]], grant: Resources | None,
                 task_id: str):
        import ray

        if not callable(factory) or hasattr(factory, "__next__"):
            raise ConfigError(f"{task_id}.steps", factory,
                              "a picklable callable returning an iterator (Ray runs it remotely)")
        try:
            ray.cloudpickle.dumps(factory)
        except Exception as exc:
            raise ConfigError(f"{task_id}.steps", factory,
                              f"something Ray can pickle ({exc})") from exc
        self.request = resource_request(grant)
        self.actor = _actor_class().options(**self.request).remote(factory, grant)
        self._ray = ray

    def __iter__(self) -> RemoteSteps:
        return self

    def __next__(self) -> Any:
        try:
            value = self._ray.get(self.actor.step.remote())
        except self._ray.exceptions.RayTaskError as exc:
            raise RayStepError(str(exc)) from exc
        if isinstance(value, str) and value == _DONE:
            self.close()
            raise StopIteration
        return value

    def close(self) -> None:
        if self.actor is not None:
            self._ray.kill(self.actor)
            self.actor = None
