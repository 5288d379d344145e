"""The agent runtime: programs as processes whose every model call, message and tool use is
a syscall the runtime checks, schedules and batches.

An agent's program is a generator function; it yields syscalls (``syscalls.py``) and gets
their results back. The runtime goes round: every ready agent runs until it blocks; then the
model calls of all blocked agents go to the kernel together (classifications of one model as
one ``kernel.infer``, generations into the model's running decode batch, one token step per
round); then timers, messages and joins wake who they can. Agents run one at a time on the
runtime's thread, so the ``memory`` dict a parent shares with its children needs no lock.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .. import events
from ..constraints import POSITIVE, PRIORITY, Options, check
from ..errors import AgentError, ConfigError, DeadlockError, PermissionDenied
from ..kernel import Sequence
from ..scheduler import Task
from . import syscalls as sc
from .capabilities import Capabilities
from .guard import Hung, resume
from .mailbox import Mailbox
from .messages import Messaging
from .models import ModelCalls

IMMEDIATE_PER_TURN = 1000  # syscalls one agent may make in a turn before others get theirs
POLICIES = ("fifo", "rr", "priority", "stride")  # as llmos_lab.scheduler's


@dataclass(eq=False)
class Agent:
    """The process control block of one agent."""

    pid: int
    name: str
    gen: Generator
    caps: Capabilities
    priority: int
    weight: float
    parent: str | None
    memory: dict
    mailbox: Mailbox
    created: float
    state: str = "ready"  # ready | blocked | done | failed | killed
    waiting: str = ""
    call: Any = None
    value: Any = None
    throw: BaseException | None = None
    result: Any = None
    error: BaseException | None = None
    syscalls: int = 0
    tokens: int = 0
    blocked_seconds: float = 0.0
    blocked_since: float | None = None
    deadline: float | None = None
    finished: float | None = None
    children: list[str] = field(default_factory=list)
    seq: Sequence | None = None
    turns: int = 0
    generations: int = 0


@dataclass
class Context:
    """What a program whose first parameter is ``ctx`` receives."""

    name: str
    memory: dict


class Runtime(ModelCalls, Messaging):
    """Run agents on a :class:`~llmos_lab.kernel.ModelKernel`."""

    def __init__(self, kernel=None, scheduler=None, *, tools: dict[str, Callable] | None = None,
                 mailbox_size: int = 16, max_batch: int = 16, policy: str = "priority",
                 step_limit: float | None = None):
        self.policy = check("policy", policy, (Options(*POLICIES),))
        self.step_limit = check("step_limit", step_limit, (POSITIVE, None))
        self.kernel, self.scheduler = kernel, scheduler
        self.tools = dict(tools or {})
        self.mailbox_size, self.max_batch = mailbox_size, max_batch
        self._agents: dict[str, Agent] = {}
        self._pid = itertools.count(1)
        self._origin = time.perf_counter()
        self._messages: list[sc.Message] = []
        self._audit: list[dict] = []
        self._classify: list[Agent] = []
        self._spans: list[tuple[str, str, float, float]] = []  # agent, kind, start, end
        self._batches: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ public

    def spawn(self, program: Callable[..., Generator], *args: Any, name: str,
              capabilities: dict | Capabilities | None = None, priority: int = 1,
              weight: float = 1.0, _parent: Agent | None = None) -> str:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", name, "a non-empty agent name")
        if name in self._agents:
            raise AgentError(f"an agent named {name!r} exists already; pick another name")
        caps = _parent.caps if _parent else Capabilities.parse(capabilities, name)
        memory = _parent.memory if _parent else {}
        if not callable(program):
            raise ConfigError(f"{name}.program", program, "a generator function")
        params = list(inspect.signature(program).parameters)
        gen = program(Context(name, memory), *args) if params[:1] == ["ctx"] else program(*args)
        if not inspect.isgenerator(gen):
            raise AgentError(f"agent {name!r}: {getattr(program, '__name__', program)} did not "
                             f"return a generator (a program yields syscalls)")
        priority = check(f"{name}.priority", priority, (PRIORITY,))
        weight = check(f"{name}.weight", weight, (POSITIVE,))
        self._agents[name] = Agent(next(self._pid), name, gen, caps, priority, weight,
                                   _parent.name if _parent else None, memory,
                                   Mailbox(self.mailbox_size), self._now())
        if _parent:
            _parent.children.append(name)
        return name

    def kill(self, name: str) -> None:
        """Stop an agent and, first, its children."""
        agent = self._get(name)
        for child in list(agent.children):
            self.kill(child)
        if agent.state in ("ready", "blocked"):
            self._end(agent, "killed")

    def run(self, until: str | Callable[[Runtime], bool] | None = None,
            timeout: float | None = None) -> Runtime:
        """Go round until every agent has ended, or until the agent named ``until`` has
        (services may wait for messages forever), or ``until(runtime)`` is true. Raises
        DeadlockError when the live agents can never move again before that."""
        if isinstance(until, str):
            name = until
            until = lambda rt: rt._get(name).state not in ("ready", "blocked")  # noqa: E731
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self._stop.is_set() and self._live():
            if until is not None and until(self):
                break
            if deadline is not None and time.perf_counter() > deadline:
                break
            stuck = self.round()
            if stuck and not (until is not None and until(self)):
                raise DeadlockError(stuck)
        return self

    def start(self) -> Runtime:
        """Run in the background until every agent has ended or :meth:`stop`: as a task of
        the runtime's scheduler, one round per step (so agents share the machine with
        training under its policy), or else on a thread of its own."""
        self._stop.clear()
        if self.scheduler is not None:
            self.scheduler.submit(Task(f"agents:{id(self):x}", self._rounds(), "agents"))
            self.scheduler.start()
            return self
        self._thread = threading.Thread(target=self.run, name="llmos-lab-agents", daemon=True)
        self._thread.start()
        return self

    def _rounds(self):
        while not self._stop.is_set() and self._live():
            stuck = self.round()
            if stuck:
                raise DeadlockError(stuck)
            yield len(self._live())

    def wait(self, timeout: float = 600.0) -> bool:
        """Until every agent has ended (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while self._live():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def result(self, name: str) -> Any:
        agent = self._get(name)
        if agent.state == "failed":
            raise AgentError(f"agent {name!r} failed: {agent.error!r}") from agent.error
        return agent.result

    def ps(self) -> pd.DataFrame:
        now = self._now()
        return pd.DataFrame([{
            "pid": a.pid, "name": a.name, "parent": a.parent, "state": a.state,
            "waiting_on": a.waiting if a.state == "blocked" else "", "syscalls": a.syscalls,
            "tokens": a.tokens, "blocked_seconds": a.blocked_seconds + (
                now - a.blocked_since if a.blocked_since is not None else 0.0),
            "turnaround_seconds": (a.finished if a.finished is not None else now) - a.created,
            "error": None if a.error is None else repr(a.error),
        } for a in self._agents.values()])

    def audit(self) -> pd.DataFrame:
        return pd.DataFrame(self._audit, columns=["time", "agent", "syscall", "reason"])

    # ------------------------------------------------------------------ a round

    def round(self) -> str | None:
        """Every ready agent runs until it blocks; model calls go out together; who can
        wake, wakes. Returns what the deadlock is when nobody can ever move again."""
        for agent in sorted(self._ready(), key=self._turn_key):
            agent.turns += 1
            started = self._now()
            self._turn(agent)
            self._spans.append((agent.name, "running", started, self._now()))
        moved = self._flush_models()
        woken = self._wake()
        events.publish("agents.round", runtime=self, ready=len(self._ready()),
                       blocked=sum(a.state == "blocked" for a in self._agents.values()))
        if not self._ready() and not moved and not woken:
            return self._idle()
        return None

    def _turn_key(self, agent: Agent) -> tuple:
        """Who goes first, by policy: arrival, fewest turns, priority, least work per weight."""
        return {"fifo": (agent.pid,), "rr": (agent.turns, agent.pid),
                "priority": (-agent.priority, agent.pid),
                "stride": (agent.tokens / agent.weight, agent.pid)}[self.policy]

    def _turn(self, agent: Agent) -> None:
        for _ in range(IMMEDIATE_PER_TURN):
            if agent.state != "ready":
                return
            try:
                call = resume(agent.gen, agent.value, agent.throw, self.step_limit)
            except Hung:
                agent.error = AgentError(f"agent {agent.name!r} did not yield a syscall within "
                                         f"step_limit={self.step_limit:g} s; it is failed and "
                                         f"its thread abandoned")
                agent.state, agent.finished = "failed", self._now()
                return
            except StopIteration as stop:
                agent.result = stop.value
                self._end(agent, "done")
                return
            except Exception as exc:  # the agent fails; the others go on
                agent.error = exc
                self._end(agent, "failed")
                return
            agent.value, agent.throw = None, None
            self._syscall(agent, call)

    def _syscall(self, agent: Agent, call: Any) -> None:
        if not isinstance(call, sc.SYSCALLS):
            agent.throw = AgentError(f"agent {agent.name!r} yielded {call!r}, not a syscall "
                                     f"(one of {', '.join(c.__name__ for c in sc.SYSCALLS)})")
            return
        reason = agent.caps.refuse(call, agent.syscalls, agent.tokens)
        agent.syscalls += 1
        if reason is not None:
            self._audit.append({"time": self._now(), "agent": agent.name,
                                "syscall": type(call).__name__, "reason": reason})
            agent.throw = PermissionDenied(f"agent {agent.name!r}: {type(call).__name__} "
                                           f"denied: {reason}")
            return
        handler = getattr(self, f"_do_{type(call).__name__.lower()}")
        handler(agent, call)

    # ------------------------------------------------------------------ syscalls

    def timeline(self) -> pd.DataFrame:
        """One row per span of each agent: running its program, waiting on a model call,
        in a tool, or blocked (message, join, sleep, full mailbox)."""
        return pd.DataFrame(self._spans, columns=["agent", "kind", "start", "end"])

    def _block(self, agent: Agent, call: Any, waiting: str, deadline: float | None = None):
        agent.state, agent.call, agent.waiting = "blocked", call, waiting
        agent.blocked_since, agent.deadline = self._now(), deadline

    def _unblock(self, agent: Agent, value: Any = None, throw: BaseException | None = None):
        kind = "model" if isinstance(agent.call, sc.MODEL_CALLS) else "blocked"
        self._spans.append((agent.name, kind, agent.blocked_since or self._now(), self._now()))
        agent.blocked_seconds += self._now() - (agent.blocked_since or self._now())
        agent.state, agent.call, agent.waiting, agent.blocked_since = "ready", None, "", None
        agent.value, agent.throw, agent.deadline = value, throw, None

    def _do_tool(self, agent: Agent, call: sc.Tool) -> None:
        tool = self.tools.get(call.name)
        if tool is None:
            agent.throw = AgentError(f"agent {agent.name!r}: no tool {call.name!r} (tools: "
                                     f"{', '.join(self.tools) or '(none)'})")
            return
        started = self._now()
        try:
            agent.value = tool(**call.args)
        except Exception as exc:
            agent.throw = AgentError(f"agent {agent.name!r}: tool {call.name!r} raised "
                                     f"{type(exc).__name__}: {exc}")
            agent.throw.__cause__ = exc
        finally:
            self._spans.append((agent.name, "tool", started, self._now()))

    def _do_spawn(self, agent: Agent, call: sc.Spawn) -> None:
        try:
            agent.value = self.spawn(call.program, *call.args, name=call.name,
                                     priority=agent.priority, _parent=agent)
        except (AgentError, ConfigError) as exc:
            agent.throw = exc

    def _do_join(self, agent: Agent, call: sc.Join) -> None:
        if call.name not in self._agents:
            agent.throw = AgentError(f"agent {agent.name!r}: Join {call.name!r}: no such agent")
            return
        self._block(agent, call, f"join {call.name}")
        self._wake_join(agent)

    def _do_sleep(self, agent: Agent, call: sc.Sleep) -> None:
        self._block(agent, call, "sleep", self._now() + max(0.0, float(call.seconds)))

    # ------------------------------------------------------------------ models and waking

    def _wake(self) -> bool:
        woken = False
        now = self._now()
        for agent in [a for a in self._agents.values() if a.state == "blocked"]:
            before = agent.state
            if isinstance(agent.call, sc.Recv):
                message = agent.mailbox.take(agent.call.topic)
                if message is not None:
                    self._unblock(agent, message)
                elif agent.deadline is not None and now >= agent.deadline:
                    self._unblock(agent, throw=AgentError(
                        f"agent {agent.name!r}: Recv timed out after {agent.call.timeout:g} s"))
            elif isinstance(agent.call, sc.Sleep) and now >= agent.deadline:
                self._unblock(agent)
            elif isinstance(agent.call, sc.Send):
                call = agent.call
                self._unblock(agent)
                self._do_send(agent, call)
            elif isinstance(agent.call, sc.Join):
                self._wake_join(agent)
            woken |= before != agent.state
        return woken

    def _wake_join(self, agent: Agent) -> None:
        child = self._agents[agent.call.name]
        if child.state == "done":
            self._unblock(agent, child.result)
        elif child.state in ("failed", "killed"):
            self._unblock(agent, throw=AgentError(f"agent {agent.name!r}: Join {child.name!r}: "
                                                  f"it {child.state} ({child.error!r})"))

    def _idle(self) -> str | None:
        """Nothing ran: sleep until the next timer, or say what the deadlock is."""
        blocked = [a for a in self._agents.values() if a.state == "blocked"]
        timers = [a.deadline for a in blocked if a.deadline is not None]
        if timers:
            time.sleep(max(0.0, min(timers) - self._now()))
            return None
        waits = "; ".join(f"{a.name} waits on {a.waiting}" for a in blocked)
        return f"deadlock: every live agent is blocked and nothing can wake them: {waits}" \
            if blocked else None

    # ------------------------------------------------------------------ helpers

    def _end(self, agent: Agent, state: str) -> None:
        if state == "killed":
            agent.gen.close()
            if agent.seq is not None and agent.call is not None:
                self._batches[agent.call.model].cancel(agent.seq)
        agent.state, agent.finished, agent.waiting = state, self._now(), ""

    def _need_kernel(self, agent: Agent, call: Any) -> None:
        if self.kernel is None:
            raise AgentError(f"agent {agent.name!r}: {type(call).__name__} needs a runtime "
                             f"with a kernel: Runtime(kernel)")

    def _ready(self) -> list[Agent]:
        return [a for a in self._agents.values() if a.state == "ready"]

    def _live(self) -> list[str]:
        return [a.name for a in self._agents.values() if a.state in ("ready", "blocked")]

    def _get(self, name: str) -> Agent:
        if name not in self._agents:
            raise AgentError(f"no agent {name!r} (agents: {', '.join(self._agents)})")
        return self._agents[name]

    def _now(self) -> float:
        return time.perf_counter() - self._origin
