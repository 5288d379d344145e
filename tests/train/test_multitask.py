"""Multi-task fine-tuning: one encoder, a sequence head and a token head, sampled by size or
temperature; bad task specs and data are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab.errors import ColumnError, ConfigError, UnseenLabelError
from llmos_lab.train.multitask import MultiTaskTrainer

from .test_trainer import keyword_frame

BASE = dict(model="tiny-bert", epochs=3, lr=1e-2, batch_size=16, warmup=0.0, device="cpu")
TASKS = {"sentiment": {"task": "sequence-classification"},
         "ner": {"task": "token-classification", "weight": 2.0}}
WORDS = ["the", "a", "went", "to", "paris", "london", "bob", "alice", "today"]


def ner_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(WORDS, 6)]
        tags = ["B-LOC" if w in ("paris", "london") else "B-PER" if w in ("bob", "alice")
                else "O" for w in words]
        rows.append((words, tags))
    return pd.DataFrame(rows, columns=["tokens", "tags"])


@pytest.fixture(scope="module")
def data():
    return ({"sentiment": keyword_frame(256, 0), "ner": ner_frame(128, 0)},
            {"sentiment": keyword_frame(80, 1), "ner": ner_frame(40, 1)})


@pytest.fixture(scope="module")
def fitted(tiny_model, data):
    return lab.Trainer(lab.TrainConfig(**BASE, tasks=TASKS)).fit(*data)


def test_one_encoder_learns_both_tasks(fitted, data):
    assert isinstance(fitted, MultiTaskTrainer)
    reports = fitted.evaluate(data[1])
    assert reports["sentiment"].accuracy >= 0.9
    assert reports["ner"].macro_f1 >= 0.8
    assert fitted.labels_["ner"] == ["B-LOC", "B-PER", "O"]
    assert sum(fitted.steps_per_task_.values()) == fitted.total_steps_ == 3 * (16 + 8)
    assert set(fitted.history_["task"]) == {"sentiment", "ner"}
    assert "eval_ner_macro_f1" in fitted.history_.columns
    tags = fitted.predict(data[1]["ner"].head(3), "ner")
    assert [len(t) for t in tags["tags"]] == [6, 6, 6]


def test_tasks_are_drawn_by_size_or_evened_by_temperature(tiny_model, data):
    by_size = lab.Trainer(lab.TrainConfig(**BASE, tasks=TASKS, max_steps=1)).fit(data[0])
    assert by_size.task_probabilities_["sentiment"] == pytest.approx(256 / 384)
    even = lab.Trainer(lab.TrainConfig(**BASE, tasks=TASKS, max_steps=1,
                                       task_temperature=1000.0)).fit(data[0])
    assert even.task_probabilities_["sentiment"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(("tasks", "match"), [
    ({"a": {"task": "masked-lm"}}, r"tasks\['a'\]"),
    ({"a": {"task": "sequence-classification", "colour": 1}}, "colour"),
    ({"a": {"task": "sequence-classification", "weight": 0}}, "weight"),
    ({}, "tasks"),
])
def test_bad_task_specs_are_named(tasks, match):
    with pytest.raises(ConfigError, match=match):
        lab.TrainConfig(**BASE, tasks=tasks)
    with pytest.raises(ConfigError, match="tasks"):
        lab.TrainConfig(**BASE, tasks=TASKS, method="lora")


def test_bad_multi_task_data_names_the_task(tiny_model, data):
    trainer = lab.Trainer(lab.TrainConfig(**BASE, tasks=TASKS))
    with pytest.raises(ConfigError, match=r"missing \['ner'\]"):
        trainer.fit({"sentiment": data[0]["sentiment"]})
    with pytest.raises(ColumnError):
        trainer.fit({"sentiment": data[0]["ner"], "ner": data[0]["ner"]})
    clash = data[1]["sentiment"].assign(label="other")
    with pytest.raises(UnseenLabelError):
        trainer.fit(data[0], {"sentiment": clash})


def test_a_training_view_follows_and_stops_a_multi_task_run(tiny_model, data):
    from llmos_lab.widgets import TrainingDashboard

    trainer = lab.Trainer(lab.TrainConfig(**BASE, tasks=TASKS))
    view = TrainingDashboard(trainer)
    steps = trainer.steps(*data)
    next(steps)
    trainer.stop()
    assert list(steps) == []
    assert len(trainer.history_) == 1 and view.runs[0].state == "stopped"
    view.close()
