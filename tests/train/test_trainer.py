"""Trainer: configuration checks, the step generator, learning, evaluation, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.errors import (
    ColumnError,
    ColumnTypeError,
    ConfigError,
    EmptyDataError,
    NotFittedError,
    UnknownNameError,
    UnseenLabelError,
)

POS = ["great", "wonderful", "excellent", "happy", "love"]
NEG = ["awful", "terrible", "horrible", "sad", "hate"]
FILL = ["the", "movie", "was", "really", "a", "day", "i", "this", "so", "film", "today"]


def keyword_frame(n: int, seed: int) -> pd.DataFrame:
    """Two classes decided by one sentiment word among fillers: learnable by a tiny model."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        y = int(rng.integers(2))
        words = list(rng.choice(FILL, 5))
        words.insert(int(rng.integers(6)), str(rng.choice(POS if y else NEG)))
        rows.append((" ".join(words), "pos" if y else "neg"))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture(scope="module")
def train_df():
    return keyword_frame(256, 0)


@pytest.fixture(scope="module")
def test_df():
    return keyword_frame(100, 1)


def tiny_config(**kw) -> lab.TrainConfig:
    base = dict(model="tiny-bert", epochs=5, lr=1e-2, batch_size=16, warmup=0.0, device="cpu")
    base.update(kw)
    return lab.TrainConfig(**base)


@pytest.fixture(scope="module")
def fitted(tiny_model, train_df, test_df):
    return lab.Trainer(tiny_config()).fit(train_df, test_df)


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("field,value", [
    ("epochs", 0), ("epochs", float("nan")), ("batch_size", 0), ("batch_size", 2.5),
    ("batch_size", True), ("max_length", 0), ("max_length", -3), ("lr", -1.0),
    ("warmup", 1.0), ("task", "summarization"), ("method", "magic"), ("device", "tpu"),
    ("max_steps", 0), ("eval_every", -1), ("max_grad_norm", 0.0), ("weight_decay", -0.1),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        lab.TrainConfig(**{field: value})
    assert err.value.parameter == field
    assert field in str(err.value)


def test_config_from_dict_names_unknown_keys_and_fields():
    cfg = lab.TrainConfig.from_dict({"model": "tiny-bert", "epochs": 2})
    assert (cfg.model, cfg.epochs) == ("tiny-bert", 2)
    with pytest.raises(ConfigError, match="n_layers") as err:
        lab.TrainConfig.from_dict({"n_layers": 3})
    assert "batch_size" in str(err.value)


def test_config_help_covers_every_field():
    table = lab.TrainConfig.help()
    assert "max_length" in table.index
    assert (table["help"].str.len() > 0).all()


# ------------------------------------------------------------------------------ training


def test_fit_returns_self_and_learns_the_task(fitted, test_df):
    h = fitted.history_
    assert list(h["step"]) == list(range(1, len(h) + 1))
    assert len(h) == 5 * math.ceil(256 / 16)
    assert h["loss"].iloc[-5:].mean() < 0.5 * h["loss"].iloc[:5].mean()
    report = fitted.evaluate(test_df)
    assert report.accuracy >= 0.9
    assert fitted.labels_ == ["neg", "pos"]
    assert fitted.model_.config.id2label == {0: "neg", 1: "pos"}


def test_history_has_eval_metrics_once_per_epoch(fitted):
    h = fitted.history_
    evaluated = h.dropna(subset=["eval_accuracy"])
    assert list(evaluated["step"]) == [16, 32, 48, 64, 80]
    assert {"lr", "samples_per_s", "seconds", "epoch", "eval_macro_f1"} <= set(h.columns)
    assert h["seconds"].is_monotonic_increasing
    assert h["lr"].iloc[-1] < h["lr"].iloc[0]  # linear decay


def test_steps_yields_one_optimizer_step_per_next(tiny_model, train_df):
    trainer = lab.Trainer(tiny_config(max_steps=3))
    gen = trainer.steps(train_df)
    before = {n: p.detach().clone() for n, p in trainer.model_.named_parameters()}
    first = next(gen)
    assert first["step"] == 1
    changed = [n for n, p in trainer.model_.named_parameters()
               if not torch.equal(p.detach(), before[n])]
    assert changed, "one next() should have taken one optimizer step"
    assert [r["step"] for r in gen] == [2, 3]
    assert len(trainer.history_) == 3


def test_same_seed_gives_identical_weights(tiny_model, train_df):
    a = lab.Trainer(tiny_config(max_steps=6, seed=3)).fit(train_df)
    b = lab.Trainer(tiny_config(max_steps=6, seed=3)).fit(train_df)
    c = lab.Trainer(tiny_config(max_steps=6, seed=4)).fit(train_df)
    wa, wb, wc = (t.model_.classifier.weight for t in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_eval_every_and_group_by_length_off(tiny_model, train_df, test_df):
    trainer = lab.Trainer(tiny_config(max_steps=6, eval_every=2, group_by_length=False))
    h = trainer.fit(train_df, test_df).history_
    assert list(h.dropna(subset=["eval_accuracy"])["step"]) == [2, 4, 6]


def test_predict_keeps_input_order(fitted, test_df):
    full = fitted.predict(test_df)
    reversed_ = fitted.predict(list(test_df["text"][::-1]))
    assert list(full["label"]) == list(reversed_["label"][::-1])
    probs = full[["p_neg", "p_pos"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(full["score"], probs.max(axis=1))
    assert len(fitted.predict([])) == 0


def test_training_publishes_events(tiny_model, train_df):
    seen = []
    unsubscribe = events.subscribe("train.*", lambda e: seen.append(e.topic))
    try:
        lab.Trainer(tiny_config(max_steps=4)).fit(train_df)
    finally:
        unsubscribe()
    assert seen == ["train.start"] + ["train.step"] * 4 + ["train.end"]


def test_plot_draws_loss_and_eval_curves(fitted):
    display = fitted.plot()
    ax = display.ax_
    assert display.figure_ is ax.figure
    assert len(ax.lines) == 2
    assert any(line.get_label() == "eval_accuracy" for other in ax.figure.axes
               for line in other.lines)


# ------------------------------------------------------------------------------ bad input


def test_missing_columns_are_named(tiny_model, train_df):
    with pytest.raises(ColumnError, match="'sentence'") as err:
        lab.Trainer(tiny_config(text_column="sentence")).fit(train_df)
    assert "text" in str(err.value)  # lists the columns that exist
    with pytest.raises(ColumnError, match="'sentiment'"):
        lab.Trainer(tiny_config(label_column="sentiment")).fit(train_df)


def test_empty_training_set(tiny_model, train_df):
    with pytest.raises(EmptyDataError, match="training"):
        lab.Trainer(tiny_config()).fit(train_df.iloc[:0])


def test_labels_unseen_in_training_are_named_with_rows(fitted, test_df):
    bad = test_df.copy()
    bad.loc[7, "label"] = "mixed"
    with pytest.raises(UnseenLabelError, match="mixed") as err:
        fitted.evaluate(bad)
    assert err.value.rows == [7]
    assert "neg" in str(err.value) and "pos" in str(err.value)


def test_unseen_eval_labels_fail_before_training(tiny_model, train_df, test_df):
    bad = test_df.assign(label="neutral")
    trainer = lab.Trainer(tiny_config())
    with pytest.raises(UnseenLabelError, match="neutral"):
        trainer.steps(train_df, bad)
    assert not hasattr(trainer, "model_")


def test_non_string_texts_are_rejected(tiny_model, train_df):
    bad = train_df.copy()
    bad["text"] = bad["text"].astype(object)
    bad.loc[3, "text"] = 42
    with pytest.raises(ColumnTypeError, match=r"rows \[3\]"):
        lab.Trainer(tiny_config()).fit(bad)


def test_not_fitted_and_unknown_model(train_df):
    with pytest.raises(NotFittedError):
        lab.Trainer().evaluate(train_df)
    with pytest.raises(NotFittedError):
        _ = lab.Trainer().history_
    with pytest.raises(UnknownNameError, match="minilm"):
        lab.Trainer(tiny_config(model="no-such-model")).fit(train_df)


# ------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_minilm_beats_majority_baseline_on_real_tweets(tweets):
    train = lab.datasets.split(tweets, "train").sample(400, random_state=0)
    test = lab.datasets.split(tweets, "test").sample(300, random_state=0)
    trainer = lab.Trainer(lab.TrainConfig(model="minilm", epochs=1, lr=1e-4, max_length=48,
                                          device="cpu")).fit(train)
    report = trainer.evaluate(test)
    baseline = lab.metrics.majority_baseline(train["label"], test["label"])
    assert report.accuracy > baseline + 0.08, (report.accuracy, baseline)
    assert set(report.table.index) >= {"negative", "neutral", "positive", "macro avg"}


# ------------------------------------------------------------------------------ micro-batches


def fit_without_dropout(trainer: lab.Trainer, df: pd.DataFrame) -> lab.Trainer:
    gen = trainer.steps(df)
    for module in trainer.model_.modules():  # dropout draws differ per micro-batch
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    list(gen)
    return trainer


def test_micro_batches_accumulate_to_the_same_step(tiny_model, train_df):
    whole = fit_without_dropout(lab.Trainer(tiny_config(max_steps=3, seed=5)), train_df)
    parts = fit_without_dropout(
        lab.Trainer(tiny_config(max_steps=3, seed=5, micro_batch_size=4)), train_df)
    assert parts.micro_batch_size_ == 4 and set(parts.history_["micro_batch"]) == {4}
    for (name, a), (_, b) in zip(whole.model_.named_parameters(),
                                 parts.model_.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose(whole.history_["loss"], parts.history_["loss"], rtol=1e-4)


def test_a_memory_grant_sets_the_micro_batch(tiny_model, train_df):
    from llmos_lab.train.trainer import micro_batch_for

    trainer = lab.Trainer(tiny_config(max_steps=1, batch_size=16))
    gen = trainer.steps(train_df, memory="1GiB")
    assert trainer.micro_batch_size_ == 16  # plenty: the whole batch at once
    next(gen)
    small = micro_batch_for(trainer.model_, 64, 9 * 2**20, 16)
    tight = lab.Trainer(tiny_config(max_steps=2, batch_size=16))
    tight_steps = tight.steps(train_df, memory=9 * 2**20)
    assert tight.micro_batch_size_ == small < 16
    assert [r["micro_batch"] for r in tight_steps] == [small, small]
    assert micro_batch_for(trainer.model_, 64, 1, 16) == 1  # never below one example


def test_out_of_memory_halves_the_micro_batch_and_retries(tiny_model, train_df, monkeypatch):
    trainer = lab.Trainer(tiny_config(max_steps=2, batch_size=16))
    gen = trainer.steps(train_df)
    forward = trainer.model_.forward

    def limited(*args, **kw):
        if kw["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("pretend: CUDA out of memory")
        return forward(*args, **kw)

    monkeypatch.setattr(trainer.model_, "forward", limited)
    seen = []
    unsubscribe = events.subscribe("train.oom", lambda e: seen.append(e.payload["micro_batch"]))
    try:
        rows = list(gen)
    finally:
        unsubscribe()
    assert seen == [8, 4]
    assert [r["micro_batch"] for r in rows] == [4, 4]
    assert all(np.isfinite(r["loss"]) for r in rows)


# ------------------------------------------------------------------------------ LoRA


def test_lora_trains_a_small_fraction_and_serves_from_the_kernel(tiny_model, train_df, test_df,
                                                                   tmp_path):
    trainer = lab.Trainer(tiny_config(method="lora", lora_r=4, lr=3e-2, epochs=16)).fit(train_df)
    trainable, total = trainer.trainable_parameters_
    assert 0 < trainable < 0.05 * total  # adapters and the head; the tiny model is embeddings
    loss = trainer.history_["loss"]
    assert loss.iloc[-16:].mean() < 0.9 * loss.iloc[:16].mean()
    assert trainer.evaluate(test_df).accuracy >= 0.65  # frozen random embeddings limit it
    first = trainer.save_adapter(tmp_path / "adapter")
    assert (first / "adapter_config.json").exists()
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    assert size < 0.2 * sum(f.stat().st_size for f in Path(tiny_model).rglob("*.safetensors"))
    trainer.save_adapter(tmp_path / "adapter")  # overwriting leaves one complete folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]

    kernel = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    kernel.load("tiny-bert", name="base", task="sequence-classification",
                labels=trainer.labels_)
    kernel.add_adapter("base", "tuned", tmp_path / "adapter")
    served = kernel.infer("base", list(test_df["text"]), adapter="tuned")
    expected = trainer.predict(test_df)
    assert list(served["label"]) == list(expected["label"])
    np.testing.assert_allclose(served["score"], expected["score"], rtol=1e-4)


def test_ia3_scales_activations_and_serves_from_the_kernel(tiny_model, train_df, test_df,
                                                           tmp_path):
    ia3 = lab.Trainer(tiny_config(method="ia3", lr=3e-2, epochs=4)).fit(train_df, progress=False)
    lora = lab.Trainer(tiny_config(method="lora", lora_r=4, max_steps=1)).fit(
        train_df, progress=False)
    head = sum(p.numel() for n, p in ia3.model_.named_parameters()
               if p.requires_grad and "classifier" in n)
    assert 0 < ia3.trainable_parameters_[0] - head < lora.trainable_parameters_[0] - head
    names = [n for n, p in ia3.model_.named_parameters() if p.requires_grad]
    assert any("ia3_l" in n for n in names) and not any("lora" in n for n in names)
    loss = ia3.history_["loss"]
    assert loss.iloc[-8:].mean() < loss.iloc[:8].mean()
    ia3.save_adapter(tmp_path / "ia3")
    kernel = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    kernel.load("tiny-bert", name="base", task="sequence-classification", labels=ia3.labels_)
    kernel.add_adapter("base", "ia3", tmp_path / "ia3")
    served = kernel.infer("base", list(test_df["text"]), adapter="ia3")
    expected = ia3.predict(test_df)
    assert list(served["label"]) == list(expected["label"])
    np.testing.assert_allclose(served["score"], expected["score"], rtol=1e-4)


def test_bf16_autocast_trains_on_cpu_and_fp16_needs_cuda(tiny_model, train_df, test_df):
    trainer = lab.Trainer(tiny_config(precision="bf16", epochs=3))
    gen = trainer.steps(train_df)
    dtypes = set()
    layer = trainer.model_.bert.encoder.layer[0].attention.self.query
    handle = layer.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    rows = list(gen)
    handle.remove()
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model_.parameters())  # fp32 master
    assert np.mean([r["loss"] for r in rows[-8:]]) < np.mean([r["loss"] for r in rows[:8]])
    assert trainer.evaluate(test_df).accuracy > 0.6
    with pytest.raises(ConfigError, match=r"precision.*CUDA"):
        lab.Trainer(tiny_config(precision="fp16")).steps(train_df)
    with pytest.raises(ConfigError, match="precision"):
        lab.TrainConfig(precision="fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_trains(tiny_model, train_df, test_df, precision):
    trainer = lab.Trainer(tiny_config(precision=precision, device="cuda", epochs=3))
    trainer.fit(train_df, progress=False)
    assert trainer.device_.type == "cuda"
    assert trainer.evaluate(test_df).accuracy > 0.6


def test_saving_an_adapter_needs_lora(fitted, tmp_path):
    with pytest.raises(ConfigError, match="'lora'"):
        fitted.save_adapter(tmp_path / "x")
    with pytest.raises(ConfigError, match="lora_r"):
        lab.TrainConfig(method="lora", lora_r=0)


def test_fit_shows_a_progress_bar_unless_asked_not_to(tiny_model, train_df, capsys):
    lab.Trainer(tiny_config(max_steps=3)).fit(train_df)
    assert "tiny-bert (full):" in capsys.readouterr().err  # "0/3 ... 1/3" as steps go
    lab.Trainer(tiny_config(max_steps=3)).fit(train_df, progress=False)
    assert "tiny-bert (full):" not in capsys.readouterr().err


def test_early_stopping_after_patience_evaluations(tiny_model, train_df, test_df):
    seen = []
    unsubscribe = events.subscribe("train.early_stop", lambda e: seen.append(e.payload))
    try:
        trainer = lab.Trainer(tiny_config(epochs=20, eval_every=4, early_stopping="eval_accuracy",
                                          patience=2)).fit(train_df, test_df, progress=False)
    finally:
        unsubscribe()
    h = trainer.history_.dropna(subset=["eval_accuracy"])
    assert len(trainer.history_) < 20 * 16  # stopped early
    best = h["eval_accuracy"].max()
    assert trainer.best_score_ == best
    after_best = h[h["step"] > trainer.best_step_]
    assert len(after_best) == 2 and (after_best["eval_accuracy"] <= best).all()
    assert seen and seen[0]["step"] == trainer.history_["step"].iloc[-1]
    with pytest.raises(ConfigError, match="eval_accuracy"):
        lab.Trainer(tiny_config(max_steps=4, eval_every=2, early_stopping="eval_f2")).fit(
            train_df, test_df, progress=False)
    with pytest.raises(ConfigError, match="early_stopping"):
        lab.TrainConfig(early_stopping="accuracy")


def test_stop_from_another_thread_ends_after_the_current_step(tiny_model, train_df):
    import threading

    trainer = lab.Trainer(tiny_config(epochs=50))
    seen: list[int] = []
    stopped = threading.Event()

    def on_step(event):
        seen.append(event.payload["step"])
        if event.payload["step"] == 3:
            threading.Thread(target=lambda: (trainer.stop(), stopped.set())).start()
            assert stopped.wait(120)

    off = [lab.events.subscribe("train.step", on_step),
           lab.events.subscribe("train.stopped", on_step)]
    try:
        trainer.fit(train_df, progress=False)
    finally:
        for unsubscribe in off:
            unsubscribe()
    assert trainer.history_["step"].max() == 3 < trainer.total_steps_
    assert seen == [1, 2, 3, 3]  # three steps, then train.stopped at step 3


def test_save_writes_a_model_the_kernel_loads(fitted, test_df, tmp_path):
    folder = fitted.save(tmp_path / "model")
    assert (folder / "history.csv").exists() and (folder / "tokenizer.json").exists()
    kernel = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    kernel.load(folder, name="tuned")
    served = kernel.infer("tuned", list(test_df["text"]))
    expected = fitted.predict(test_df)
    assert list(served["label"]) == list(expected["label"])
    np.testing.assert_allclose(served["score"], expected["score"], rtol=1e-4)
