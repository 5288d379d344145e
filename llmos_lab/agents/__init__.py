"""Agents: programs that run on the kernel, talk through mailboxes, and are checked on every
syscall.

``syscalls.py`` what a program may yield; ``runtime.py`` the runtime that runs programs as
processes, batches their model calls and wakes them; ``mailbox.py`` bounded mailboxes with
topics; ``capabilities.py`` what each agent may do; ``models.py`` the model syscalls of all
agents sent together. ``llmos_lab.widgets.AgentView`` draws a runtime.
"""

from .capabilities import Capabilities
from .runtime import Context, Runtime
from .syscalls import (
    Classify,
    Generate,
    Join,
    Message,
    Recv,
    Send,
    Sleep,
    Spawn,
    Subscribe,
    Tool,
)

__all__ = ["Capabilities", "Classify", "Context", "Generate", "Join", "Message", "Recv",
           "Runtime", "Send", "Sleep", "Spawn", "Subscribe", "Tool"]
