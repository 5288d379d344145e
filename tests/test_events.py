"""llmos_lab.events: glob subscriptions, delivery, unsubscribe, isolation of failures, threads."""

from __future__ import annotations

import logging
import threading

import pytest

from llmos_lab import events


@pytest.fixture
def bus():
    """Subscribe through this; every subscription is undone after the test."""
    undo: list = []

    def subscribe(pattern, callback):
        unsubscribe = events.subscribe(pattern, callback)
        undo.append(unsubscribe)
        return unsubscribe

    yield subscribe
    for unsubscribe in undo:
        unsubscribe()


def test_publish_delivers_payload(bus):
    got: list[events.Event] = []
    bus("job.step", got.append)
    returned = events.publish("job.step", step=3, loss=0.5)
    assert len(got) == 1
    assert got[0] is returned
    assert got[0].topic == "job.step"
    assert got[0].payload == {"step": 3, "loss": 0.5}
    assert got[0].time > 0


def test_glob_patterns(bus):
    seen: dict[str, list[str]] = {"job.*": [], "*": [], "*.step": [], "eval.done": []}
    for pattern, topics in seen.items():
        bus(pattern, lambda e, topics=topics: topics.append(e.topic))
    for topic in ["job.step", "job.done", "eval.step", "eval.done", "disk.load"]:
        events.publish(topic)
    assert seen["job.*"] == ["job.step", "job.done"]
    assert seen["*"] == ["job.step", "job.done", "eval.step", "eval.done", "disk.load"]
    assert seen["*.step"] == ["job.step", "eval.step"]
    assert seen["eval.done"] == ["eval.done"]


def test_patterns_are_case_sensitive_and_anchored(bus):
    got: list[str] = []
    bus("train.*", lambda e: got.append(e.topic))
    events.publish("Train.step")
    events.publish("pretrain.step")
    events.publish("train")
    assert got == []


def test_publish_without_subscribers_returns_event():
    event = events.publish("nobody.listens", x=1)
    assert event.topic == "nobody.listens"
    assert event.payload == {"x": 1}


def test_unsubscribe_stops_delivery(bus):
    got: list[int] = []
    unsubscribe = bus("t.*", lambda e: got.append(e.payload["n"]))
    events.publish("t.x", n=1)
    unsubscribe()
    events.publish("t.x", n=2)
    unsubscribe()  # a second call is harmless
    events.publish("t.x", n=3)
    assert got == [1]


def test_unsubscribe_only_removes_its_own_subscription(bus):
    a: list[int] = []
    b: list[int] = []
    stop_a = bus("t", lambda e: a.append(1))
    bus("t", lambda e: b.append(1))
    stop_a()
    events.publish("t")
    assert a == [] and b == [1]


def test_raising_subscriber_does_not_stop_others(bus, caplog):
    got: list[str] = []

    def broken(event):
        raise RuntimeError("widget crashed")

    bus("job.*", lambda e: got.append("before"))
    bus("job.*", broken)
    bus("job.*", lambda e: got.append("after"))
    with caplog.at_level(logging.ERROR, logger=events.__name__):
        event = events.publish("job.step", step=1)  # must not raise
    assert event.topic == "job.step"
    assert got == ["before", "after"]
    assert any("job.step" in r.getMessage() for r in caplog.records)
    # the broken subscriber stays subscribed and the bus keeps working
    events.publish("job.step", step=2)
    assert got == ["before", "after", "before", "after"]


def test_subscriber_may_publish_and_unsubscribe_itself(bus):
    got: list[str] = []
    holder: dict = {}

    def once(event):
        got.append(event.topic)
        holder["stop"]()
        events.publish("inner.topic")  # re-entrant publish must not deadlock

    holder["stop"] = bus("outer.*", once)
    bus("inner.*", lambda e: got.append(e.topic))

    worker = threading.Thread(target=events.publish, args=("outer.topic",), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "publish deadlocked"
    events.publish("outer.topic")
    assert got == ["outer.topic", "inner.topic"]


def test_delivery_from_many_threads(bus):
    lock = threading.Lock()
    counts: dict[int, int] = {}

    def count(event):
        with lock:
            counts[event.payload["thread"]] = counts.get(event.payload["thread"], 0) + 1

    bus("work.*", count)
    n_threads, n_events = 8, 200
    start = threading.Barrier(n_threads)

    def worker(i):
        start.wait()
        for _ in range(n_events):
            events.publish("work.step", thread=i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(not t.is_alive() for t in threads)
    assert counts == dict.fromkeys(range(n_threads), n_events)


def test_subscribe_while_publishing_from_threads(bus):
    lock = threading.Lock()
    delivered = [0]
    errors: list[BaseException] = []
    stop = threading.Event()

    def count(event):
        with lock:
            delivered[0] += 1

    bus("busy", count)

    def publisher():
        try:
            while not stop.is_set():
                events.publish("busy")
        except BaseException as exc:
            errors.append(exc)

    def churner():
        try:
            for _ in range(300):
                events.subscribe("busy", lambda e: None)()
        except BaseException as exc:
            errors.append(exc)

    pubs = [threading.Thread(target=publisher) for _ in range(4)]
    churn = [threading.Thread(target=churner) for _ in range(4)]
    for t in pubs + churn:
        t.start()
    for t in churn:
        t.join(timeout=120)
    stop.set()
    for t in pubs:
        t.join(timeout=120)
    assert errors == []
    assert delivered[0] > 0
    # the churned subscriptions are all gone again
    before = delivered[0]
    events.publish("busy")
    assert delivered[0] == before + 1


def test_declared_topics_refuse_payloads_that_do_not_match(bus):
    from llmos_lab.errors import EventError

    with pytest.raises(EventError, match=r"'kernel.unload' must carry kernel, model.*missing "
                                         r"\['model'\]"):
        events.publish("kernel.unload", kernel=None)
    with pytest.raises(EventError, match=r"unexpected \['extra'\]"):
        events.publish("kernel.unload", kernel=None, model="m", extra=1)
    # an open topic may carry more; a topic outside the table is free-form
    events.publish("train.step", trainer=None, total_steps=1, step=1, loss=0.5, eval_f1=0.9)
    events.publish("my.own.topic", anything=1)


def test_every_topic_the_core_publishes_is_declared():
    import ast
    from pathlib import Path

    root = Path(events.__file__).parent
    published = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "publish" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                published.add(node.args[0].value)
    assert published and published <= set(events.TOPICS), published - set(events.TOPICS)
    assert set(events.TOPICS) <= published  # no declaration left over
