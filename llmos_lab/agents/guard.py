"""A guard for agents that never yield: with a step limit, each step of a program runs on a
helper thread, and a step that has not yielded its syscall in time is given up on.

Python cannot stop a thread, so a step that never ends keeps its helper thread (a daemon)
running; the runtime never resumes that generator again and goes on with the others.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any


class Hung(Exception):
    """A program's step ran past the step limit."""


def resume(gen: Generator, value: Any, throw: BaseException | None,
           limit: float | None) -> Any:
    """The program's next syscall (``send(value)``, or ``throw``); Hung after ``limit`` s."""
    def step() -> Any:
        return gen.throw(throw) if throw is not None else gen.send(value)

    if limit is None:
        return step()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["call"] = step()
        except BaseException as exc:  # handed to the runtime's thread below
            box["error"] = exc

    helper = threading.Thread(target=work, name="llmos-lab-agent-step", daemon=True)
    helper.start()
    helper.join(limit)
    if helper.is_alive():
        raise Hung
    if "error" in box:
        raise box["error"]
    return box["call"]
