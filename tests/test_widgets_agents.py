"""AgentView: the messages and syscall lanes of a runtime, live and as a static snapshot."""

from __future__ import annotations

import pytest
from llmos_lab.widgets import AgentView

from llmos_lab.agents import Recv, Runtime, Send, Sleep, Tool
from llmos_lab.errors import ArgumentTypeError


def test_agent_view_draws_messages_and_lanes_and_keeps_a_static_fallback():
    def ping():
        yield Tool("double", x=2)
        yield Send("pong", "hi")
        yield Recv()

    def pong():
        yield Sleep(0.01)
        message = yield Recv()
        yield Send(message.sender, "back")

    rt = Runtime(tools={"double": lambda x: 2 * x})
    rt.spawn(ping, name="ping")
    rt.spawn(pong, name="pong")
    view = AgentView(rt)
    before = view.redraws
    rt.run()
    view.png()  # waits for the pending redraw the rounds asked for
    assert view.redraws > before
    kinds = set(rt.timeline()["kind"])
    assert {"running", "tool", "blocked"} <= kinds
    bundle = view._repr_mimebundle_()
    assert bundle["image/png"] and "2 messages" in bundle["text/plain"]
    assert "pong: done" in bundle["text/plain"] and "<table" in bundle["text/html"]
    view.close()


def test_agent_view_needs_a_runtime():
    with pytest.raises(ArgumentTypeError, match="Runtime"):
        AgentView("not a runtime")
