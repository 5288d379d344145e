"""``llmos-lab serve`` from a shell: serves, and stops cleanly on SIGTERM/SIGINT after the
requests in flight finish."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from llmos_lab.cli import main

HANG_GUARD = 120


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "llmos_lab.cli", "serve", "--port", "0",
                             *args], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    proc.reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],
                                   daemon=True)
    proc.reader.start()
    url = None
    while url is None:  # "loading ...", then "serving ... on http://..."
        line = lines.get(timeout=HANG_GUARD)
        url = re.search(r"http://\S+", line)
    proc.lines = lines
    return proc, url.group(0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_after_the_request_in_flight(tiny_model, sig):
    proc, url = start("--model", "lm=tiny-llama", "--model", "clf=tiny-bert", "--task",
                      "clf=sequence-classification", "--labels", "clf=a,b")
    try:
        models = httpx.get(url + "/v1/models", timeout=HANG_GUARD).json()
        assert {m["id"] for m in models["data"]} == {"lm", "clf"}
        started, events = threading.Event(), []

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/completions", timeout=HANG_GUARD, json={
                    "model": "lm", "prompt": "go", "max_tokens": 40, "temperature": 1.0,
                    "stream": True}) as r:
                for line in r.iter_lines():
                    if line:
                        events.append(line)
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(HANG_GUARD)
        proc.send_signal(sig)
        reader.join(HANG_GUARD)
        assert proc.wait(HANG_GUARD) == 0
        assert events[-1] == "data: [DONE]"
        last = json.loads(events[-2][6:])
        assert last["choices"][0]["finish_reason"] in ("length", "stop")
        assert len(events) > 2
        proc.reader.join(HANG_GUARD)  # until its stdout closed
        assert "stopped" in "".join(proc.lines.queue)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_refuses_bad_arguments_with_a_message(capsys, tiny_model):
    assert main(["serve", "--model", "tiny-llama", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "api_keys" in capsys.readouterr().err
    assert main(["serve", "--adapter", "nocolon=/tmp/x", "--port", "0"]) == 2
    assert "--adapter" in capsys.readouterr().err
    assert main(["serve", "--api-keys", "/nonexistent.json", "--port", "0"]) == 2
