"""What an agent may ask of the runtime: each syscall is a small frozen value the agent's
generator yields; the runtime sends back the result (or throws an error into the generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Classify:
    """Label texts with a loaded classifier: returns ``kernel.infer``'s DataFrame."""

    model: str
    texts: Sequence[str] | str
    adapter: str | None = None


@dataclass(frozen=True)
class Generate:
    """Complete a prompt (or chat ``messages``) with a causal LM: returns the text."""

    model: str
    prompt: str | None = None
    messages: Sequence[dict] | None = None
    max_tokens: int = 32
    temperature: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class Send:
    """A message to one agent (``to``), or to every subscriber of ``topic`` (``to=None``)."""

    to: str | None
    message: Any
    topic: str | None = None


@dataclass(frozen=True)
class Recv:
    """The next message (of ``topic``, if given); raises AgentError after ``timeout``
    seconds without one. Returns a :class:`Message`."""

    timeout: float | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Subscribe:
    topic: str


@dataclass(frozen=True)
class Tool:
    """Call a registered tool: ``Tool("lookup", key=...)``."""

    name: str
    args: dict = field(default_factory=dict)

    def __init__(self, name: str, **args: Any):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Spawn:
    """Start a child agent running ``program(*args)``; it shares its parent's capabilities
    and ``memory``. Returns the child's name."""

    program: Callable[..., Any]
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Join:
    """Wait until the named child is done; returns its result (the program's return value)."""

    name: str


@dataclass(frozen=True)
class Sleep:
    seconds: float


SYSCALLS = (Classify, Generate, Send, Recv, Subscribe, Tool, Spawn, Join, Sleep)
MODEL_CALLS = (Classify, Generate)


@dataclass(frozen=True)
class Message:
    time: float
    sender: str
    receiver: str
    topic: str | None
    body: Any
