"""The widgets in a real JupyterLab, in headless Chromium, as a person would use them.

A throwaway JupyterLab (tests/browser/jupyter.py) serves a notebook that uses every view; the
browser runs all its cells (Run > Run All Cells) once the kernel is connected and idle, waits
for each view's chart, moves AllocationView's weight slider for one task with the keyboard and
presses KernelMonitor's Evict button, checking each time that the kernel redraws the chart,
then saves screenshots (the page and each view) and the console log into the test's tmp_path.
Any error in the browser console fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

import nbformat
import pytest

from tests.browser.jupyter import CHROMIUM_ARGS, chromium_path, start_lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DONE = "LLMOS-BROWSER-DONE"
VIEWS = ["allocation-view", "scheduler-view", "training-dashboard", "report-view",
         "kernel-monitor"]

# The notebook the browser runs: every view over tiny, config-built models, CPU only.
CELLS = [
    """\
import numpy as np
import pandas as pd

import llmos_lab as lab
from llmos_lab.widgets import (AllocationView, KernelMonitor, ReportView, SchedulerView,
                               TrainingDashboard)""",
    """\
# Three tasks that all want the whole processor: DRF splits it by weight.
alloc = lab.Allocator(capacity=lab.Resources(memory="8GiB", compute=1.0), policy="drf")
for task, memory in (("train", "4GiB"), ("infer", "1GiB"), ("eval", "2GiB")):
    alloc.add(lab.Demand(task, {"memory": memory, "compute": 1.0}))
allocation_view = AllocationView(alloc)
allocation_view.weight["train"].add_class("browser-test-weight")   # the slider the test moves
allocation_view""",
    """\
trace = pd.DataFrame({"id": ["a", "b", "c", "d"], "arrival": [0.0, 0.0, 1.0, 2.0],
                      "steps": [6, 3, 4, 2], "priority": [1, 3, 2, 1],
                      "weight": [1.0, 2.0, 1.0, 1.0]})
SchedulerView(lab.simulate(trace, "rr"), lab.simulate(trace, "stride"), names=("rr", "stride"))""",
    """\
rng = np.random.default_rng(0)
WORDS = {"pos": ["good", "great", "happy", "lovely"], "neg": ["bad", "awful", "sad", "ugly"]}
FILL = ["the", "a", "day", "movie", "was", "it", "and", "so"]

def frame(n):
    rows = []
    for _ in range(n):
        label = "pos" if rng.random() < 0.5 else "neg"
        words = list(rng.choice(FILL, 4)) + [str(rng.choice(WORDS[label]))]
        rows.append((" ".join(rng.permutation(words)), label))
    return pd.DataFrame(rows, columns=["text", "label"])

train, val, test = frame(96), frame(32), frame(32)
trainer = lab.Trainer(lab.TrainConfig(model="tiny-bert", max_steps=12, batch_size=8, lr=1e-2,
                                      warmup=0.0, eval_every=4, device="cpu"))
dashboard = TrainingDashboard(trainer, names=["tiny-bert"])
display(dashboard)
trainer.fit(train, val);""",
    """\
report = trainer.evaluate(test)
ReportView(report)""",
    """\
kernel = lab.ModelKernel(device="cpu", memory_budget="256MiB", precision="fp32")
kernel.load("tiny-bert", name="bert", task="sequence-classification", labels=["neg", "pos"])
kernel.load("tiny-llama", name="llama")
kernel.infer("bert", ["a good day"])
KernelMonitor(kernel)""",
    f'print("{DONE}")',
]

# Console messages of type "error" that are not about this page's code. Each entry is a
# regular expression and why it is harmless; everything else fails the test.
# None is needed today with JupyterLab 4.6, ipywidgets 8.1 and Debian's chromium 156 (news and
# update checks are off, see tests/browser/jupyter.py); every message of every type is kept in
# tmp_path/console.log to judge a new one before adding it here.
IGNORED_CONSOLE_ERRORS: list[tuple[str, str]] = []


def _ignored(text: str) -> bool:
    return any(re.search(pattern, text) for pattern, _ in IGNORED_CONSOLE_ERRORS)


@pytest.fixture
def chromium() -> str:
    path = chromium_path()
    if path is None:
        wanted = os.environ.get("CHROMIUM")
        pytest.skip(f"no Chromium: $CHROMIUM={wanted} is not an executable" if wanted else
                    "no Chromium: /usr/bin/chromium is missing and $CHROMIUM is not set "
                    "(as root, `make test` installs Debian's chromium)")
    return path


@pytest.fixture
def lab_server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, root / "widgets.ipynb")
    # The server, and so its kernels, inherit this process's environment, LLMOS_LAB_HOME
    # included (tests/conftest.py points it at a temporary folder).
    server = start_lab(root, tmp_path / "jupyter")
    try:
        yield server
    finally:
        server.stop()


def test_every_widget_renders_and_reacts_in_jupyterlab(chromium, lab_server, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    console_errors: list[str] = []
    with open(tmp_path / "console.log", "w") as console_log, sync_playwright() as p:

        def on_console(message) -> None:
            console_log.write(f"{message.type}: {message.text}\n")
            if message.type == "error" and not _ignored(message.text):
                console_errors.append(f"console: {message.text}")

        def on_page_error(error) -> None:
            console_log.write(f"pageerror: {error}\n")
            console_errors.append(f"pageerror: {error}")

        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.on("console", on_console)
            page.on("pageerror", on_page_error)

            page.goto(lab_server.notebook_url("widgets.ipynb"))
            lab_server.wait_for_kernel()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            _wait_for_cells(page, lab_server)

            for view in VIEWS:
                chart = page.locator(f".llmos-{view} img.llmos-chart").first
                chart.wait_for(state="visible")
                page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                       arg=chart.element_handle())
            assert page.locator(".llmos-widget").count() >= len(VIEWS)

            _move_weight_slider(page)
            _evict_from_kernel_monitor(page)
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            for view in VIEWS:
                page.locator(f".llmos-{view}").first.screenshot(path=str(tmp_path / f"{view}.png"))
        except BaseException:
            with contextlib.suppress(Exception):  # what the page looked like when it failed
                page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"browser test artefacts (screenshots, console.log): {tmp_path}")
            print("console errors so far:", *console_errors or ["none"], sep="\n  ")
            raise
        finally:
            context.close()
    assert not console_errors, "errors in the browser console:\n" + "\n".join(console_errors)


def _wait_for_cells(page, server) -> None:
    """Wait for the last cell's marker; fail early with the traceback if a cell raised."""
    deadline = time.monotonic() + 180
    done = page.locator(".jp-OutputArea-output", has_text=DONE)
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
    while time.monotonic() < deadline:
        if errors.count():
            pytest.fail("a notebook cell raised in JupyterLab:\n" + errors.first.inner_text())
        if done.count():
            return
        page.wait_for_timeout(250)
    pytest.fail(f"the notebook did not finish in JupyterLab; kernels: {server.api('/api/kernels')}"
                f"\nserver log:\n{server.log()[-3000:]}")


def _move_weight_slider(page) -> None:
    """Raise the train task's weight with the keyboard; the kernel re-allocates and redraws."""
    chart = page.locator(".llmos-allocation-view img.llmos-chart").first
    before = chart.get_attribute("src")
    slider = page.locator(".browser-test-weight")
    readout = slider.locator(".widget-readout")
    value_before = readout.inner_text()
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([el, old]) => el.textContent.trim() !== old.trim()",
        arg=[readout.element_handle(), value_before], timeout=10_000)
    page.wait_for_function("([img, old]) => img.getAttribute('src') !== old",
                           arg=[chart.element_handle(), before], timeout=20_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=chart.element_handle())


def test_chromium_path_prefers_the_environment(monkeypatch, tmp_path):
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CHROMIUM", str(fake))
    assert chromium_path() == str(fake)
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "missing"))
    assert chromium_path() is None



def _evict_from_kernel_monitor(page) -> None:
    """Type a model's name into KernelMonitor and press Evict: the kernel swaps it out, the
    chart and the event log follow."""
    monitor = page.locator(".llmos-kernel-monitor").first
    chart = monitor.locator("img.llmos-chart").first
    before = chart.get_attribute("src")
    monitor.get_by_placeholder("model name").fill("bert")
    monitor.get_by_role("button", name="Evict").click()
    page.wait_for_function("([img, old]) => img.getAttribute('src') !== old",
                           arg=[chart.element_handle(), before], timeout=20_000)
    assert "evict" in monitor.inner_text().lower()
