"""The agent runtime: programs as processes, batched model syscalls, mailboxes, threads,
capabilities checked on every syscall, and the errors that name the agent and syscall."""

from __future__ import annotations

import pytest

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.agents import (
    Classify,
    Generate,
    Join,
    Recv,
    Runtime,
    Send,
    Sleep,
    Spawn,
    Subscribe,
    Tool,
)
from llmos_lab.errors import AgentError, DeadlockError, PermissionDenied


@pytest.fixture(scope="module")
def kernel(tiny_model, tmp_path_factory):
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32",
                        swap_dir=tmp_path_factory.mktemp("swap"))
    k.load("tiny-llama", name="lm")
    k.load("tiny-bert", name="clf", task="sequence-classification", labels=["neg", "pos"])
    return k


def test_messages_flow_in_order_and_are_logged():
    def ping(n):
        for i in range(n):
            yield Send("pong", i)
        reply = yield Recv(timeout=60)
        return reply.body

    def pong(n):
        got = []
        for _ in range(n):
            message = yield Recv(timeout=60)
            got.append(message.body)
        yield Send("ping", got)

    rt = Runtime()
    rt.spawn(ping, 5, name="ping")
    rt.spawn(pong, 5, name="pong")
    rt.run()
    assert rt.result("ping") == [0, 1, 2, 3, 4]
    log = rt.messages()
    assert list(log["sender"]) == ["ping"] * 5 + ["pong"] and (log["size"] > 0).all()
    assert set(rt.ps()["state"]) == {"done"}


def test_classifications_ready_together_are_one_forward_pass(kernel):
    calls = []
    unsubscribe = events.subscribe("kernel.infer", lambda e: calls.append(e.payload["n"]))

    def router(text):
        frame = yield Classify("clf", text)
        return frame.loc[0, "label"]

    texts = ["good day", "bad day", "meh", "great", "awful"]
    rt = Runtime(kernel)
    for i, t in enumerate(texts):
        rt.spawn(router, t, name=f"r{i}")
    try:
        rt.run()
    finally:
        unsubscribe()
    assert calls == [5]
    assert [rt.result(f"r{i}") for i in range(5)] == list(kernel.infer("clf", texts)["label"])


def test_generations_share_the_decode_batch_and_equal_the_kernels(kernel):
    prompts = ["the cat", "a dog", "one two"]

    def writer(p):
        return (yield Generate("lm", p, max_tokens=6))

    rt = Runtime(kernel)
    for i, p in enumerate(prompts):
        rt.spawn(writer, p, name=f"w{i}")
    sizes = []
    unsubscribe = events.subscribe("kernel.generate", lambda e: sizes.append(e.payload["n"]))
    try:
        rt.run()
    finally:
        unsubscribe()
    want = kernel.generate("lm", prompts, max_new_tokens=6, batch_size=1)["completion"]
    assert [rt.result(f"w{i}") for i in range(3)] == list(want)
    assert sizes == [3]  # all three finished in the same decode step
    assert (rt.ps()["tokens"] == 6).all()


def test_a_syscall_outside_the_capabilities_raises_inside_the_agent_and_is_audited(kernel):
    def nosy():
        try:
            yield Classify("clf", "x")
        except PermissionDenied as exc:
            yield Send("boss", str(exc))
        yield Send("stranger", "hi")

    def boss():
        return (yield Recv(timeout=60)).body

    def stranger():
        yield Recv()

    rt = Runtime(kernel)
    rt.spawn(nosy, name="nosy", capabilities={"models": ["lm"], "send_to": ["boss"]})
    rt.spawn(boss, name="boss")
    rt.spawn(stranger, name="stranger", capabilities={"max_syscalls": 1})
    with pytest.raises(DeadlockError, match="stranger waits on message"):
        rt.run()
    assert "model 'clf'" in rt.result("boss")
    audit = rt.audit()
    assert list(audit["syscall"]) == ["Classify", "Send"]
    assert list(audit["agent"]) == ["nosy", "nosy"]
    ps = rt.ps().set_index("name")
    assert ps.loc["nosy", "state"] == "failed" and "stranger" in ps.loc["nosy", "error"]


def test_children_share_memory_join_returns_results_and_kill_takes_the_children():
    def child(ctx, n):
        ctx.memory[ctx.name] = n * n
        yield Sleep(0)
        return n + 1

    def parent(ctx):
        names, results = [], []
        for i in range(3):
            names.append((yield Spawn(child, f"c{i}", (i,))))
        for n in names:
            results.append((yield Join(n)))
        return results, dict(ctx.memory)

    rt = Runtime()
    rt.spawn(parent, name="p")
    rt.run()
    results, memory = rt.result("p")
    assert results == [1, 2, 3] and memory == {"c0": 0, "c1": 1, "c2": 4}
    assert list(rt.ps().set_index("name").loc[["c0", "c1"], "parent"]) == ["p", "p"]

    def waiter():
        yield Recv()

    def elder(ctx):
        yield Spawn(waiter, "kid")
        yield Recv()

    rt = Runtime()
    rt.spawn(elder, name="elder")
    rt.round()
    rt.kill("elder")
    assert set(rt.ps()["state"]) == {"killed"}


def test_a_full_mailbox_blocks_the_sender_and_ps_says_so():
    def flood():
        for i in range(5):
            yield Send("slow", i)

    def slow():
        yield Sleep(0.05)
        got = []
        for _ in range(5):
            got.append((yield Recv()).body)
        return got

    rt = Runtime(mailbox_size=2)
    rt.spawn(flood, name="flood")
    rt.spawn(slow, name="slow")
    rt.round()
    ps = rt.ps().set_index("name")
    assert ps.loc["flood", "state"] == "blocked"
    assert ps.loc["flood", "waiting_on"] == "full mailbox of slow"
    rt.run()
    assert rt.result("slow") == [0, 1, 2, 3, 4]


def test_topics_reach_their_subscribers_only():
    def listener(topic):
        yield Subscribe(topic)
        yield Send("hub", "ready")
        return (yield Recv(topic=topic)).body

    def hub():
        for _ in range(2):
            yield Recv()
        yield Send(None, "news!", topic="news")

    rt = Runtime()
    rt.spawn(listener, "news", name="a")
    rt.spawn(listener, "sport", name="b")
    rt.spawn(hub, name="hub")
    with pytest.raises(DeadlockError, match="b waits on message on sport"):
        rt.run()
    assert rt.result("a") == "news!"


@pytest.mark.parametrize("program,message", [
    (lambda: (yield 42), "yielded 42, not a syscall"),
    (lambda: (yield Send("ghost", 1)), "Send to 'ghost': no such running agent"),
    (lambda: (yield Recv(timeout=0.01)), "Recv timed out"),
    (lambda: (yield Tool("boom")), "tool 'boom' raised ZeroDivisionError"),
    (lambda: (yield Tool("nothing")), "no tool 'nothing'"),
    (lambda: (yield Spawn(lambda: (yield Sleep(0)), "solo")), "named 'solo' exists already"),
    (lambda: (yield Join("ghost")), "Join 'ghost': no such agent"),
])
def test_bad_syscalls_fail_the_agent_naming_it_and_the_syscall(program, message):
    rt = Runtime(tools={"boom": lambda: 1 / 0})
    rt.spawn(program, name="solo")
    rt.run()
    row = rt.ps().set_index("name").loc["solo"]
    assert row["state"] == "failed" and message in row["error"] and "solo" in row["error"]
    with pytest.raises(AgentError, match="solo"):
        rt.result("solo")


def test_spawn_errors_and_deadlock_say_who_waits_on_what():
    rt = Runtime()
    with pytest.raises(AgentError, match="did not return a generator"):
        rt.spawn(lambda: 1, name="plain")
    rt.spawn(lambda: (yield Recv()), name="a")
    with pytest.raises(AgentError, match="'a' exists already"):
        rt.spawn(lambda: (yield Recv()), name="a")
    rt.spawn(lambda: (yield Recv()), name="b")
    with pytest.raises(DeadlockError, match="a waits on message; b waits on message"):
        rt.run()


def test_agents_run_as_a_scheduler_task_beside_training(kernel):
    from llmos_lab.tasks import training_task
    from tests.train.test_trainer import keyword_frame, tiny_config

    sched = lab.Scheduler(policy="rr")
    trainer = lab.Trainer(tiny_config(max_steps=4, batch_size=8))
    sched.submit(training_task(trainer, keyword_frame(32, 0)))

    def writer():
        text = yield Generate("lm", "hello", max_tokens=5)
        return text

    rt = Runtime(kernel, sched)
    rt.spawn(writer, name="w")
    rt.start()
    try:
        assert rt.wait() and sched.join(timeout=600)
    finally:
        sched.stop()
    tasks = set(sched.timeline()["task"])
    assert "train" in tasks and any(t.startswith("agents:") for t in tasks)
    assert rt.result("w") == kernel.generate("lm", "hello", max_new_tokens=5).loc[0, "completion"]


@pytest.mark.parametrize("policy,first", [("priority", "urgent"), ("fifo", "early")])
def test_the_policy_decides_whose_generation_enters_a_full_batch_first(kernel, policy, first):
    finished = []

    def writer(ctx):
        yield Generate("lm", "story", max_tokens=3)
        finished.append(ctx.name)

    rt = Runtime(kernel, max_batch=1, policy=policy)
    rt.spawn(writer, name="early", priority=1)
    rt.spawn(writer, name="urgent", priority=5)
    rt.run()
    assert finished[0] == first and len(finished) == 2


def test_a_step_that_never_yields_fails_its_agent_and_the_others_go_on():
    import threading

    release = threading.Event()

    def spin():
        while not release.is_set():  # a program stuck in a loop without a syscall
            pass
        yield Sleep(0)

    def worker():
        yield Sleep(0)
        return "fine"

    rt = Runtime(step_limit=0.2)
    rt.spawn(spin, name="spin")
    rt.spawn(worker, name="worker")
    try:
        rt.run()
    finally:
        release.set()  # let the abandoned thread end
    ps = rt.ps().set_index("name")
    assert ps.loc["spin", "state"] == "failed" and "did not yield" in ps.loc["spin", "error"]
    assert rt.result("worker") == "fine"


def test_bad_runtime_options_are_named():
    with pytest.raises(lab.errors.ConfigError, match="policy"):
        Runtime(policy="lottery")
    with pytest.raises(lab.errors.ConfigError, match="step_limit"):
        Runtime(step_limit=0)
    with pytest.raises(lab.errors.ConfigError, match=r"w\.weight"):
        Runtime().spawn(lambda: (yield Sleep(0)), name="w", weight=0)
