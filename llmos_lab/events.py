"""A tiny publish/subscribe bus: the core says what happened, widgets listen.

The core never imports a UI; it publishes plain dictionaries on topics such as ``"train.step"``.
Subscribers run synchronously on the publishing thread (often a scheduler's background thread),
so they must be quick and thread-safe. A subscriber that raises is logged and dropped from that
delivery, never allowed to break the work that published.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]
    time: float = field(default_factory=time.time)


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
    event = Event(topic, payload)
    with _lock:
        targets = [cb for pattern, cb in _subscribers if fnmatch.fnmatchcase(topic, pattern)]
    for callback in targets:
        try:
            callback(event)
        except Exception:  # a broken view must not stop training
            log.exception("event subscriber %r failed on %s", callback, topic)
    return event
