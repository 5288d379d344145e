"""TrainingDashboard: state from train.* events, several runs on one chart, the Stop button."""

from __future__ import annotations

import threading

import pytest
from llmos_lab.widgets import TrainingDashboard

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.errors import ConfigError
from tests.test_widgets import wait_until
from tests.train.test_trainer import keyword_frame, tiny_config


def publish_steps(trainer, total: int, steps: range, seconds_per_step: float = 1.0,
                  **metrics) -> None:
    """What Trainer._loop publishes, without training (fast, exact numbers)."""
    if steps.start == 1:
        events.publish("train.start", trainer=trainer, total_steps=total, config=None)
    for step in steps:
        events.publish("train.step", trainer=trainer, total_steps=total, step=step,
                       epoch=step / total, loss=1.0 / step, lr=1e-3, samples_per_s=32.0,
                       micro_batch=16, seconds=step * seconds_per_step, **metrics)


def test_state_progress_eta_and_status_follow_the_events():
    trainer = lab.Trainer(tiny_config())
    dash = TrainingDashboard(trainer, names=["run"])
    publish_steps(trainer, 10, range(1, 5), eval_accuracy=0.75)
    run = dash.runs[0]
    assert run.state == "running" and run.step == 4 and run.total == 10
    dash.png()  # draws what is pending, panels included
    assert (dash.progress.value, dash.progress.max) == (4, 10)
    assert dash.progress.description == "4/10"
    status = run.status()
    assert status["ETA"] == "0:06"  # six steps left at one second a step
    assert status["samples/s"] == 32.0 and status["eval_accuracy"] == 0.75
    assert "0:06" in dash.status.value and "4/10" in dash.status.value
    publish_steps(trainer, 10, range(5, 11))
    events.publish("train.end", trainer=trainer, steps=10)
    dash.png()
    assert run.state == "done" and dash.progress.bar_style == "success"
    assert dash.progress.value == dash.progress.max == 10
    text = dash._repr_mimebundle_()["text/plain"].splitlines()
    assert text[0] == "TrainingDashboard: 1 runs"
    assert text[1].startswith("  run: done, step 10/10") and "eval_accuracy 0.75" in text[1]
    dash.close()


def test_early_stop_and_events_of_other_trainers():
    mine, other = lab.Trainer(tiny_config()), lab.Trainer(tiny_config())
    dash = TrainingDashboard(mine)
    publish_steps(other, 5, range(1, 3))
    assert dash.runs[0].rows == [] and dash.runs[0].state == "waiting"
    publish_steps(mine, 20, range(1, 4))
    events.publish("train.early_stop", trainer=mine, step=3, metric="eval_accuracy",
                   best=0.9)
    events.publish("train.end", trainer=mine, steps=3)
    run = dash.runs[0]
    assert run.state == "early-stopped" and run.total == 3
    assert "best eval_accuracy 0.9" in dash._repr_mimebundle_()["text/plain"]
    dash.png()
    assert dash.progress.bar_style == "warning"
    dash.close()


def test_several_runs_share_one_chart_with_their_names():
    full, lora = lab.Trainer(tiny_config()), lab.Trainer(tiny_config(method="lora"))
    dash = TrainingDashboard(full, lora)
    assert [r.name for r in dash.runs] == ["tiny-bert · full", "tiny-bert · lora"]
    publish_steps(full, 6, range(1, 7), eval_accuracy=0.6)
    publish_steps(lora, 6, range(1, 4), eval_accuracy=0.7)
    fig = dash._draw()
    loss_ax, eval_ax = fig.axes[:2]
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert "tiny-bert · full" in labels and "tiny-bert · lora" in labels
    assert {"tiny-bert · full: accuracy", "tiny-bert · lora: accuracy"} <= {
        line.get_label() for line in eval_ax.get_lines()}
    assert loss_ax.get_xlabel() == "step" and loss_ax.get_ylabel() == "training loss"
    dash.watch(lab.Trainer(tiny_config()))  # same default name: numbered
    assert dash.runs[-1].name == "tiny-bert · full #2"
    dash.png()
    assert dash.progress.value == 9  # 6 + 3 + 0
    dash.close()
    with pytest.raises(ConfigError, match="one per trainer"):
        TrainingDashboard(full, names=["a", "b"])


def test_stop_button_ends_a_real_run_at_the_next_step(tiny_model):
    train = keyword_frame(64, 0)
    trainer = lab.Trainer(tiny_config(epochs=100, batch_size=8))  # 800 steps planned
    dash = TrainingDashboard(trainer)
    assert dash.stop() == []  # nothing running yet: nothing to stop
    thread = threading.Thread(target=trainer.fit, args=(train,), kwargs={"progress": False})
    thread.start()
    assert wait_until(lambda: dash.runs[0].step >= 2, 30)
    dash.stop_button.click()
    thread.join(30)
    assert not thread.is_alive()
    run = dash.runs[0]
    steps = len(trainer.history_)
    assert 2 <= steps < 100 < trainer.total_steps_
    assert run.state == "stopped" and run.step == steps and run.total == steps
    dash.png()
    assert dash.progress.value == dash.progress.max == steps
    assert f"stopped at step {steps}" in dash.status.value
    later = TrainingDashboard(trainer)  # a finished run shows its history
    assert later.runs[0].step == steps and later.runs[0].state == "done"
    dash.close()
    later.close()
