"""Capabilities: what each agent may do, checked on every syscall.

``{"models": [...], "tools": [...], "send_to": [...], "max_tokens": N, "max_syscalls": N}``;
an absent key allows everything of that kind. The runtime holds them (an agent only ever sees
syscall results), so a program cannot raise its own; a spawned child gets its parent's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constraints import COUNT, check
from ..errors import ConfigError
from . import syscalls as sc

KEYS = ("models", "tools", "send_to", "max_tokens", "max_syscalls")


@dataclass(frozen=True)
class Capabilities:
    models: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    send_to: frozenset[str] | None = None
    max_tokens: int | None = None
    max_syscalls: int | None = None

    @classmethod
    def parse(cls, spec: dict | Capabilities | None, agent: str) -> Capabilities:
        if spec is None or isinstance(spec, Capabilities):
            return spec or cls()
        if not isinstance(spec, dict):
            raise ConfigError(f"{agent}.capabilities", spec, f"a dict with {', '.join(KEYS)}")
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ConfigError(f"{agent}.capabilities.{unknown[0]}", spec[unknown[0]],
                              f"one of {', '.join(KEYS)}")
        names = {}
        for key in ("models", "tools", "send_to"):
            value = spec.get(key)
            if value is not None and (isinstance(value, str) or not all(
                    isinstance(v, str) for v in value)):
                raise ConfigError(f"{agent}.capabilities.{key}", value, "a list of names")
            names[key] = None if value is None else frozenset(value)
        return cls(**names,
                   max_tokens=check(f"{agent}.max_tokens", spec.get("max_tokens"), (COUNT, None)),
                   max_syscalls=check(f"{agent}.max_syscalls", spec.get("max_syscalls"),
                                      (COUNT, None)))

    def refuse(self, call: object, syscalls: int, tokens: int) -> str | None:
        """Why ``call`` is not allowed (None when it is)."""
        if self.max_syscalls is not None and syscalls >= self.max_syscalls:
            return f"max_syscalls {self.max_syscalls} reached"
        if isinstance(call, sc.MODEL_CALLS) and self.models is not None and \
                call.model not in self.models and \
                f"{call.model}:{getattr(call, 'adapter', None)}" not in self.models:
            return f"model {call.model!r} is not among {sorted(self.models)}"
        if isinstance(call, sc.Generate) and self.max_tokens is not None and \
                tokens + call.max_tokens > self.max_tokens:
            return f"{tokens} + {call.max_tokens} tokens exceed max_tokens {self.max_tokens}"
        if isinstance(call, sc.Tool) and self.tools is not None and call.name not in self.tools:
            return f"tool {call.name!r} is not among {sorted(self.tools)}"
        if isinstance(call, sc.Send) and call.to is not None and self.send_to is not None \
                and call.to not in self.send_to:
            return f"sending to {call.to!r} is not allowed (send_to: {sorted(self.send_to)})"
        return None
