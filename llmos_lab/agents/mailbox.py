"""Mailboxes: bounded, first in first out (so FIFO per sender-receiver pair), with topics.

A full mailbox refuses a message and the runtime blocks the sender until there is room, as a
pipe blocks its writer.
"""

from __future__ import annotations

from collections import deque

from .syscalls import Message


class Mailbox:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._messages: deque[Message] = deque()
        self.topics: set[str] = set()

    def __len__(self) -> int:
        return len(self._messages)

    def offer(self, message: Message) -> bool:
        if len(self._messages) >= self.capacity:
            return False
        self._messages.append(message)
        return True

    def take(self, topic: str | None = None) -> Message | None:
        """The oldest message (of ``topic``), or None."""
        for i, m in enumerate(self._messages):
            if topic is None or m.topic == topic:
                del self._messages[i]
                return m
        return None
