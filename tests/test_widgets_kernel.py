"""KernelMonitor over a real kernel with tiny models: events, buttons, errors shown not raised."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from llmos_lab.widgets import KernelMonitor

import llmos_lab as lab
from llmos_lab import events
from tests.test_widgets import PNG


@pytest.fixture
def kernel(tiny_model, tmp_path):
    k = lab.ModelKernel(device="cpu", memory_budget="64MiB", precision="fp32",
                        swap_dir=tmp_path / "swap")
    k.load("tiny-bert", name="a", task="sequence-classification", labels=["neg", "pos"])
    return k


@pytest.fixture
def monitor(kernel):
    m = KernelMonitor(kernel)
    yield m
    m.close()


def state(kernel, name):
    return kernel.ps().set_index("name").loc[name]


def test_models_and_events_appear(kernel, monitor):
    assert monitor.model.options == ("a",)
    kernel.load("tiny-bert", name="b", task="sequence-classification", num_labels=2)
    kernel.infer("b", ["hello there"])
    monitor.png()
    assert monitor.model.options == ("a", "b")
    assert "load b" in monitor.log.value and "infer b 1 inputs" in monitor.log.value
    lines = monitor._repr_mimebundle_()["text/plain"].splitlines()
    assert lines[0] == "KernelMonitor: 2 models, budget 64.0 MiB on cpu"
    assert any(line.startswith("  b: resident,") for line in lines)


def test_pin_button_toggles_and_evicting_a_pinned_model_is_reported(kernel, monitor):
    monitor.model.value = "a"
    monitor.pin_button.click()
    assert bool(state(kernel, "a")["pinned"]) and monitor.pin_button.description == "Unpin"
    monitor.evict_button.click()  # refused by the kernel: shown, not raised
    assert state(kernel, "a")["state"] == "resident"
    assert "evict a failed: ModelStateError" in monitor.log.value
    assert "color:#b00" in monitor.log.value and "pinned" in monitor.log.value
    monitor.pin_button.click()
    assert not state(kernel, "a")["pinned"] and monitor.pin_button.description == "Pin"
    assert "(pinned)" not in monitor._repr_mimebundle_()["text/plain"]


def test_evict_button_swaps_out_and_the_chart_follows(kernel, monitor):
    before = monitor.png()
    monitor.model.value = "a"
    monitor.evict_button.click()
    assert state(kernel, "a")["state"] == "disk"
    assert "evict a resident -&gt; disk" in monitor.log.value
    assert monitor.png() != before
    assert "  a: disk," in monitor._repr_mimebundle_()["text/plain"]


def test_load_button_loads_under_the_typed_name_and_reports_failures(kernel, monitor):
    monitor.model.value = "c"
    monitor.source.value = "tiny-bert"
    monitor.load_button.click()  # a base encoder: the task must be given
    assert "c" not in kernel and "load c failed: TaskError" in monitor.log.value
    monitor.task.value = "sequence-classification"
    monitor.load_button.click()
    assert "c" in kernel and "c" in monitor.model.options
    monitor.model.value = "  "
    monitor.evict_button.click()
    assert "type or pick a model name first" in monitor.log.value
    monitor.model.value = "nope"
    monitor.pin_button.click()
    assert "pin nope failed: UnknownNameError" in monitor.log.value


def test_only_its_own_kernel_and_the_last_events(kernel, tmp_path):
    other = lab.ModelKernel(device="cpu", memory_budget="64MiB", precision="fp32",
                            swap_dir=tmp_path / "other")
    monitor = KernelMonitor(kernel, history=3)
    other.load("tiny-bert", name="stranger", task="sequence-classification", num_labels=2)
    assert "stranger" not in monitor.log.value
    for n in range(1, 8):
        events.publish("kernel.infer", kernel=kernel, model="a", adapter=None, n=n,
                       seconds=0.0)
    monitor.png()
    log = monitor.log.value
    assert log.count("<div style='color:") == 3 and "7 inputs" in log and "4 inputs" not in log
    assert log.index("7 inputs") < log.index("5 inputs")  # newest first
    monitor.close()
    kernel.unload("a")
    assert "unload" not in monitor.log.value


def test_log_panel_still_serves_as_the_widget_logger(monitor):
    monitor.log.warning("a protocol message %s", "ignored")  # what ipywidgets may call
    assert monitor.png().startswith(PNG)


class FakeGpuKernel:
    """What the monitor reads from a CUDA kernel with one model offloaded to host memory
    (no GPU needed to check the drawing)."""

    device = torch.device("cuda")
    precision, memory_budget = "bf16", 2**30

    def ps(self):
        return pd.DataFrame({"name": ["gpu", "offloaded"], "state": ["resident", "host"],
                             "bytes": [300 * 2**20, 200 * 2**20], "adapter_bytes": [0, 0],
                             "pinned": [True, False]})

    def memory(self):
        return {"budget": self.memory_budget, "used": 300 * 2**20}


def test_on_a_gpu_host_memory_gets_its_own_bar():
    monitor = KernelMonitor(FakeGpuKernel())
    top, bottom = monitor._draw().axes[:2]
    assert [t.get_text() for t in top.get_yticklabels()] == ["device (cuda)", "host"]
    assert [t.get_text() for t in bottom.get_yticklabels()] == ["gpu (pinned)", "offloaded"]
    assert "300.0 MiB of 1.0 GiB" in top.get_title(loc="left")
    assert "  offloaded: host, 200.0 MiB" in monitor._repr_mimebundle_()["text/plain"]
    monitor.close()
