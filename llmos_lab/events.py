"""A tiny publish/subscribe bus: the core says what happened, widgets listen.

The core never imports a UI; it publishes plain dictionaries on topics such as ``"train.step"``.
Every topic the core publishes is declared once in :data:`TOPICS` with its payload fields, and
``publish`` refuses a payload that does not match its declaration, so a subscriber reads fields
by name and never guesses what happened from which keys are present. (Topics outside the table
are free-form, for users' own events.) Subscribers run synchronously on the publishing thread
(often a scheduler's background thread), so they must be quick and thread-safe. A subscriber
that raises is logged and dropped from that delivery, never allowed to break the work that
published.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import EventError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Topic:
    """A declared topic: the fields every payload has; ``open`` topics may carry more (a
    training step's metrics, which grow with the evaluation metrics)."""

    fields: tuple[str, ...]
    doc: str
    open: bool = False


TOPICS: dict[str, Topic] = {
    "alloc.update": Topic(("allocator", "allocation"), "an Allocator re-divided its capacity"),
    "kernel.load": Topic(("kernel", "model", "bytes", "seconds"), "a model was loaded"),
    "kernel.unload": Topic(("kernel", "model"), "a model left the process table"),
    "kernel.pin": Topic(("kernel", "model", "pinned"), "a model was pinned or unpinned"),
    "kernel.evict": Topic(("kernel", "model", "source", "to", "bytes"),
                          "a model moved out of device memory (source -> to: host or disk)"),
    "kernel.fault": Topic(("kernel", "model", "source", "seconds"),
                          "an evicted model was brought back (from host or disk)"),
    "kernel.infer": Topic(("kernel", "model", "adapter", "n", "seconds"),
                          "a batch of texts was classified or tagged"),
    "kernel.generate": Topic(("kernel", "model", "n", "seconds"), "prompts were completed"),
    "kernel.adapter": Topic(("kernel", "model", "adapter", "bytes"), "an adapter was added"),
    "agents.round": Topic(("runtime", "ready", "blocked"),
                          "the agent runtime went round once (its agents moved)"),
    "sched.submit": Topic(("scheduler", "task"), "a task was submitted"),
    "sched.change": Topic(("scheduler", "task"), "a task's priority or weight changed "
                          "(the new value as 'priority' or 'weight')", open=True),
    "sched.step": Topic(("scheduler", "task", "step", "seconds", "state", "value"),
                        "a task ran one step"),
    "train.start": Topic(("trainer", "total_steps", "config"), "a training run began"),
    "train.step": Topic(("trainer", "total_steps", "step", "loss"),
                        "one optimizer step, with the history row's other metrics", open=True),
    "train.oom": Topic(("trainer", "step", "micro_batch"),
                       "a step ran out of memory; the micro-batch was halved"),
    "train.early_stop": Topic(("trainer", "step", "metric", "best"),
                              "the early-stopping metric stopped improving"),
    "train.stopped": Topic(("trainer", "step"), "stop() ended the run after this step"),
    "train.end": Topic(("trainer", "steps"), "a training run ended"),
}


def check_payload(topic: str, payload: dict[str, Any]) -> None:
    """A declared topic's payload has exactly its fields (or more, for an open topic)."""
    declared = TOPICS.get(topic)
    if declared is None:
        return
    missing = [f for f in declared.fields if f not in payload]
    extra = [] if declared.open else [k for k in payload if k not in declared.fields]
    if missing or extra:
        raise EventError(f"event {topic!r} must carry {', '.join(declared.fields)}"
                        f"{' (and may carry more)' if declared.open else ''}; "
                        f"missing {missing}, unexpected {extra}")


Callback = Callable[[Event], None]
_lock = threading.Lock()
_subscribers: list[tuple[str, Callback]] = []


def subscribe(pattern: str, callback: Callback) -> Callable[[], None]:
    """Call ``callback(event)`` for topics matching ``pattern`` (glob, e.g. ``"train.*"``).

    Returns a function that unsubscribes, so a widget can detach when it is closed.
    """
    entry = (pattern, callback)
    with _lock:
        _subscribers.append(entry)

    def unsubscribe() -> None:
        with _lock:
            if entry in _subscribers:
                _subscribers.remove(entry)

    return unsubscribe


def publish(topic: str, **payload: Any) -> Event:
    check_payload(topic, payload)
    event = Event(topic, payload)
    with _lock:
        targets = [cb for pattern, cb in _subscribers if fnmatch.fnmatchcase(topic, pattern)]
    for callback in targets:
        try:
            callback(event)
        except Exception:  # a broken view must not stop training
            log.exception("event subscriber %r failed on %s", callback, topic)
    return event
