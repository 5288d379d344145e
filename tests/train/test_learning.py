"""Distillation, continued pre-training, continual learning and vocabulary growth for text
classification, on the tiny model in seconds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import llmos_lab as lab
from llmos_lab.errors import ConfigError
from llmos_lab.train import continual, distill

from .test_trainer import keyword_frame

BASE = dict(model="tiny-bert", epochs=3, lr=1e-2, batch_size=16, warmup=0.0, device="cpu")


@pytest.fixture(scope="module")
def data():
    return keyword_frame(256, 0), keyword_frame(100, 1)


@pytest.fixture(scope="module")
def teacher(tiny_model, data):
    return lab.Trainer(lab.TrainConfig(**BASE)).fit(*data, progress=False)


@pytest.fixture(scope="module")
def saved_teacher(teacher, tmp_path_factory):
    return teacher.save(tmp_path_factory.mktemp("teacher") / "model")


def test_distilled_student_keeps_one_layer_and_learns(teacher, data):
    student = lab.Trainer(lab.TrainConfig(**BASE, method="distill", teacher=teacher, layers=1))
    student.fit(*data, progress=False)
    assert student.model_.config.num_hidden_layers == 1
    assert len(student.model_.bert.encoder.layer) == 1
    assert student.evaluate(data[1]).accuracy >= 0.9


@pytest.mark.parametrize("source", ["folder", "kernel"])
def test_teacher_from_a_saved_folder_or_the_kernel(source, saved_teacher, data):
    if source == "kernel":
        kernel = lab.ModelKernel(device="cpu")
        kernel.load(saved_teacher, "teacher")
        teacher = (kernel, "teacher")
    else:
        teacher = str(saved_teacher)
    probs, size = distill.teacher_probabilities(teacher, list(data[1]["text"]), ["neg", "pos"],
                                                max_length=64, batch_size=32)
    assert probs.shape == (100, 2) and size > 0
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    agree = (probs.argmax(axis=1) == (data[1]["label"] == "pos").to_numpy()).mean()
    assert agree >= 0.9


def test_soft_loss_reduces_to_the_label_loss_and_vanishes_on_the_teacher():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    label_loss = torch.tensor(0.7)
    teacher = torch.softmax(logits, dim=-1)
    assert distill.loss(logits, label_loss, teacher, 2.0, 0.0).item() == pytest.approx(0.7)
    assert distill.loss(logits, label_loss, teacher, 3.0, 1.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])
    assert distill.loss(logits, label_loss, other, 2.0, 1.0).item() > 0.1


def test_teacher_with_other_labels_is_refused(teacher, data):
    relabelled = data[0].assign(label=data[0]["label"].map({"pos": "good", "neg": "bad"}))
    student = lab.Trainer(lab.TrainConfig(**BASE, method="distill", teacher=teacher))
    with pytest.raises(ConfigError, match=r"teacher.*labels"):
        student.fit(relabelled, progress=False)


def test_student_larger_than_teacher_warns(data, tiny_model):
    small = lab.Trainer(lab.TrainConfig(**BASE, layers=1, max_steps=1)).fit(data[0],
                                                                          progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab.Trainer(lab.TrainConfig(**BASE, method="distill", teacher=small, max_steps=1)) \
            .fit(data[0], progress=False)
    assert any("more than its teacher" in str(w.message) for w in caught)


@pytest.mark.parametrize(("kw", "name"), [
    ({"method": "distill"}, "teacher"),
    ({"teacher": "somewhere"}, "teacher"),
    ({"method": "distill", "teacher": "x", "task": "token-classification"}, "task"),
    ({"alpha": 1.5}, "alpha"),
    ({"temperature": 0}, "temperature"),
    ({"layers": 0}, "layers"),
    ({"replay": -0.1}, "replay"),
    ({"task": "masked-lm", "extend_vocab": 5}, "extend_vocab"),
])
def test_bad_learning_options_name_the_parameter(kw, name):
    with pytest.raises(ConfigError, match=f"invalid {name}="):
        lab.TrainConfig(**{**BASE, **kw})


def test_more_layers_than_the_model_has_is_refused(data, tiny_model):
    with pytest.raises(ConfigError, match=r"layers.*at most 2"):
        lab.Trainer(lab.TrainConfig(**BASE, layers=5)).fit(data[0], progress=False)


def test_masked_lm_lowers_held_out_loss_and_fine_tunes_after(data, tmp_path, tiny_model):
    cfg = lab.TrainConfig(**{**BASE, "task": "masked-lm", "eval_every": 16})
    mlm = lab.Trainer(cfg).fit(*data, progress=False)
    losses = mlm.history_["eval_loss"].dropna().to_numpy()
    assert len(losses) == 3 and losses[-1] < losses[0]
    report = mlm.evaluate(data[1])
    assert report.perplexity == pytest.approx(np.exp(report.loss))
    with pytest.raises(ConfigError, match="masked-lm"):
        mlm.predict(["a text"])
    folder = mlm.save(tmp_path / "mlm")
    tuned = lab.Trainer(lab.TrainConfig(**{**BASE, "model": str(folder), "epochs": 6}))
    assert tuned.fit(*data, progress=False).evaluate(data[1]).accuracy >= 0.9


def test_init_from_keeps_old_classes_and_replay_mixes_old_rows(saved_teacher, data):
    new = data[0].assign(label=np.where(data[0]["label"] == "pos", "pos", "meh"))
    cfg = lab.TrainConfig(**BASE, init_from=str(saved_teacher), replay=0.5, max_steps=2)
    trainer = lab.Trainer(cfg).fit(new, progress=False, replay_data=data[0])
    assert trainer.labels_ == ["meh", "neg", "pos"]
    assert trainer.total_steps_ == 2 and trainer._per_epoch == 24  # 256 + 128 rows
    assert set(trainer.evaluate(data[1]).table.index) >= {"neg", "pos"}


def test_grow_head_copies_the_old_rows(teacher):
    import copy

    model = copy.deepcopy(teacher.model_)
    before = model.classifier.weight.detach().clone()
    continual.grow_head(model, ["neg", "pos"], ["meh", "neg", "pos"])
    assert model.classifier.out_features == 3
    assert torch.equal(model.classifier.weight[1:], before)
    assert model.config.id2label == {0: "meh", 1: "neg", 2: "pos"}


def test_init_from_checks_task_and_replay_data(saved_teacher, data, tmp_path):
    ner = lab.TrainConfig(**{**BASE, "task": "token-classification",
                             "init_from": str(saved_teacher)})
    frame = pd.DataFrame({"tokens": [["a", "b"]] * 4, "tags": [["B-X", "O"], ["O", "O"]] * 2})
    with pytest.raises(ConfigError, match=r"init_from.*token-classification"):
        lab.Trainer(ner).fit(frame, progress=False)
    with pytest.raises(ConfigError, match="replay_data"):
        lab.Trainer(lab.TrainConfig(**BASE, replay=0.3)).fit(data[0], progress=False)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="adapter"):
        lab.Trainer(lab.TrainConfig(**BASE, init_from=str(tmp_path / "adapter"))) \
            .fit(data[0], progress=False)


def test_extend_vocab_learns_chinese_characters_for_text_classification(tiny_model):
    rng = np.random.default_rng(0)
    good, bad, filler = "好赞美", "差坏烂", "的了是在我有这个们中"
    rows = []
    for _ in range(128):
        y = int(rng.integers(2))
        chars = [*rng.choice(list(filler), 6), str(rng.choice(list(good if y else bad)))]
        rng.shuffle(chars)
        rows.append(("".join(chars), "pos" if y else "neg"))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    trainer = lab.Trainer(lab.TrainConfig(**{**BASE, "epochs": 6}, extend_vocab=50))
    trainer.fit(frame, progress=False)
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_model)
    unknown = {c for c in f"{good}{bad}{filler}"
               if plain.unk_token_id in plain(c, add_special_tokens=False)["input_ids"]}
    assert len(unknown) >= 10 and set(trainer.added_tokens_) == unknown
    ids = trainer.tokenizer_("好差", add_special_tokens=False)["input_ids"]
    assert trainer.tokenizer_.unk_token_id not in ids
    assert trainer.evaluate(frame).accuracy >= 0.9
