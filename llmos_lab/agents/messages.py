"""Message syscalls of the agent runtime: Send (to one agent, or to a topic's subscribers),
Recv, Subscribe. The sender of a message is always the agent that yielded the Send; a full
mailbox blocks the sender until there is room (``Runtime._wake`` retries it)."""

from __future__ import annotations

import pandas as pd

from ..errors import AgentError
from . import syscalls as sc


class Messaging:
    """Mixed into Runtime: expects ``_agents``, ``_messages``, ``_block``, ``_now`` and
    ``_live``."""

    def messages(self) -> pd.DataFrame:
        return pd.DataFrame([{"time": m.time, "sender": m.sender, "receiver": m.receiver,
                              "topic": m.topic, "size": len(repr(m.body))}
                             for m in self._messages],
                            columns=["time", "sender", "receiver", "topic", "size"])

    def _do_send(self, agent, call: sc.Send) -> None:
        targets = self._targets(agent, call)
        if targets is None:
            return
        if any(len(t.mailbox) >= t.mailbox.capacity for t in targets):
            self._block(agent, call, f"full mailbox of {call.to or call.topic}")
            return
        for target in targets:
            message = sc.Message(self._now(), agent.name, target.name, call.topic, call.message)
            target.mailbox.offer(message)
            self._messages.append(message)

    def _targets(self, agent, call: sc.Send) -> list | None:
        if call.to is None:
            if call.topic is None:
                agent.throw = AgentError(f"agent {agent.name!r}: Send needs to= or topic=")
                return None
            return [a for a in self._agents.values() if call.topic in a.mailbox.topics
                    and a.state in ("ready", "blocked") and a is not agent]
        target = self._agents.get(call.to)
        if target is None or target.state not in ("ready", "blocked"):
            agent.throw = AgentError(f"agent {agent.name!r}: Send to {call.to!r}: no such "
                                     f"running agent (running: {', '.join(self._live())})")
            return None
        return [target]

    def _do_recv(self, agent, call: sc.Recv) -> None:
        message = agent.mailbox.take(call.topic)
        if message is not None:
            agent.value = message
            return
        deadline = None if call.timeout is None else self._now() + call.timeout
        self._block(agent, call, f"message{f' on {call.topic}' if call.topic else ''}", deadline)

    def _do_subscribe(self, agent, call: sc.Subscribe) -> None:
        agent.mailbox.topics.add(call.topic)
