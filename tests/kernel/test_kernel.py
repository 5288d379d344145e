"""ModelKernel: accounting, LRU eviction and fault-in, pinning, adapters, syscalls, threads."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

import llmos_lab as lab
from llmos_lab import events
from llmos_lab.errors import (
    AdapterError,
    ColumnTypeError,
    ConfigError,
    MemoryBudgetError,
    ModelStateError,
    TaskError,
    UnknownNameError,
)

TEXTS = ["what a great day", "this is awful", "meh", "the service was fine I guess",
         "never again", "love it love it love it", "ok", "a long rambling text " * 5]


def kernel(budget="1GiB", **kw) -> lab.ModelKernel:
    return lab.ModelKernel(device="cpu", memory_budget=budget, precision="fp32", **kw)


def param_bytes(module: torch.nn.Module) -> int:
    """Independent count: unique storages of parameters and buffers."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


@pytest.fixture
def tiny_kernel(tiny_model, tmp_path):
    k = kernel(swap_dir=tmp_path / "swap")
    k.load("tiny-bert", name="a", task="sequence-classification", labels=["neg", "pos"])
    return k


@pytest.fixture(scope="module")
def tiny_bytes(tiny_model):
    k = kernel()
    k.load("tiny-bert", name="x", task="sequence-classification", num_labels=2)
    return int(k.ps().loc[0, "bytes"])


# ------------------------------------------------------------------------------ accounting


def test_bytes_are_measured_from_the_model(tiny_kernel):
    row = tiny_kernel.ps().set_index("name").loc["a"]
    assert row["bytes"] == param_bytes(tiny_kernel.record("a").model)
    assert row["state"] == "resident" and row["kind"] == "sequence-classification"
    mem = tiny_kernel.memory()
    assert mem["used"] == row["bytes"]
    assert mem["free"] == tiny_kernel.memory_budget - row["bytes"]


@pytest.mark.parametrize("budget", ["0", -5, "lots", float("nan"), True])
def test_bad_budgets_are_config_errors(budget):
    with pytest.raises(ConfigError, match="memory_budget"):
        kernel(budget)


def test_budget_smaller_than_one_model(tiny_model, tiny_bytes):
    k = kernel(tiny_bytes // 2)
    with pytest.raises(MemoryBudgetError, match=r"'a' needs .* more than the whole"):
        k.load("tiny-bert", name="a", task="sequence-classification", num_labels=2)
    assert k.ps().empty


# ------------------------------------------------------------------------------ eviction


def test_lru_model_is_evicted_and_faults_back_in_transparently(tiny_model, tiny_bytes, tmp_path):
    k = kernel(int(tiny_bytes * 2.5), swap_dir=tmp_path)
    seen = []
    unsubscribe = events.subscribe("kernel.*", lambda e: seen.append(
        (e.topic, e.payload.get("model"))))
    try:
        for name in "ab":
            k.load("tiny-bert", name=name, task="sequence-classification", num_labels=2)
        before = {name: k.infer(name, TEXTS) for name in "ab"}
        k.infer("a", TEXTS[:1])  # a is now the most recently used
        k.load("tiny-bert", name="c", task="sequence-classification", num_labels=2)
        states = k.ps().set_index("name")["state"].to_dict()
        assert states == {"a": "resident", "b": "disk", "c": "resident"}
        after = k.infer("b", TEXTS)  # faults b in, evicting a (now LRU)
        pd.testing.assert_frame_equal(after, before["b"])
        table = k.ps().set_index("name")
        assert table.loc["b", "faults"] == 1 and table.loc["b", "state"] == "resident"
        assert table.loc["a", "state"] == "disk"
        assert k.memory()["used"] <= k.memory_budget
    finally:
        unsubscribe()
    assert ("kernel.evict", "b") in seen and ("kernel.fault", "b") in seen
    assert ("kernel.load", "c") in seen and ("kernel.infer", "a") in seen


def test_pinned_models_never_move_and_the_error_names_them(tiny_model, tiny_bytes):
    k = kernel(int(tiny_bytes * 2.5))
    for name in "ab":
        k.load("tiny-bert", name=name, task="sequence-classification", num_labels=2)
        k.pin(name)
    with pytest.raises(MemoryBudgetError, match=r"pinned: a \(.*\), b \(") as err:
        k.load("tiny-bert", name="c", task="sequence-classification", num_labels=2)
    assert "missing" in str(err.value)
    assert list(k.ps()["name"]) == ["a", "b"]
    assert set(k.ps()["state"]) == {"resident"}
    with pytest.raises(ModelStateError, match="pinned"):
        k.evict("a")
    k.unpin("b")
    k.load("tiny-bert", name="c", task="sequence-classification", num_labels=2)
    assert k.ps().set_index("name")["state"].to_dict() == {
        "a": "resident", "b": "disk", "c": "resident"}


def test_clean_models_are_dropped_dirty_ones_written_once(tiny_model, tmp_path):
    saved = tmp_path / "classifier"
    k = kernel(swap_dir=tmp_path / "swap")
    k.load("tiny-bert", name="dirty", task="sequence-classification", num_labels=2)
    k.record("dirty").model.save_pretrained(saved)
    k.record("dirty").tokenizer.save_pretrained(saved)
    k.load(str(saved), name="clean", task="sequence-classification")
    k.evict("clean")
    assert not (tmp_path / "swap").exists() or not list((tmp_path / "swap").iterdir())
    k.evict("dirty")
    written = list((tmp_path / "swap").iterdir())
    assert len(written) == 1
    k.infer("dirty", TEXTS)
    k.evict("dirty")
    assert list((tmp_path / "swap").iterdir()) == written  # unchanged image: nothing rewritten
    k.unload("dirty")
    assert not list((tmp_path / "swap").iterdir())


def test_evicting_and_unloading_give_memory_back(tmp_path):
    """Process RSS returns to within 5% of its baseline (a MiniLM is ~87 MiB)."""
    k = kernel(swap_dir=tmp_path)
    k.load("minilm", name="warm", task="sequence-classification", num_labels=3)
    k.infer("warm", TEXTS)  # first use warms allocator pools and tokenizer caches
    k.evict("warm")
    k.infer("warm", TEXTS)
    k.unload("warm")
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    k.load("minilm", name="m", task="sequence-classification", num_labels=3)
    k.infer("m", TEXTS)
    loaded = psutil.Process().memory_info().rss
    assert loaded - baseline > 30 * 2**20  # the measurement does see the model
    k.evict("m")
    evicted = psutil.Process().memory_info().rss
    assert evicted <= baseline * 1.05, (baseline, loaded, evicted)
    k.infer("m", TEXTS)
    k.unload("m")
    rss = psutil.Process().memory_info().rss
    assert rss <= baseline * 1.05, (baseline, loaded, rss)


# ------------------------------------------------------------------------------ adapters


def perturb(k: lab.ModelKernel, model: str, adapter: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, p in k.record(model).model.named_parameters():
        if f".{adapter}." in name and "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.5


def test_adapters_switch_without_reloading_and_are_accounted(tiny_kernel):
    base = tiny_kernel.infer("a", TEXTS)
    base_bytes = tiny_kernel.ps().loc[0, "bytes"]
    tiny_kernel.add_adapter("a", "x", {"r": 4})
    tiny_kernel.add_adapter("a", "y", {"r": 8})
    perturb(tiny_kernel, "a", "x", 1)
    perturb(tiny_kernel, "a", "y", 2)
    row = tiny_kernel.ps().loc[0]
    assert row["adapters"] == ["x", "y"]
    assert row["bytes"] == base_bytes
    model = tiny_kernel.record("a").model
    expected = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                   if ".x." in n or ".y." in n)
    assert row["adapter_bytes"] == expected > 0
    x = tiny_kernel.infer("a", TEXTS, adapter="x")
    y = tiny_kernel.infer("a", TEXTS, adapter="y")
    again = tiny_kernel.infer("a", TEXTS)
    assert not np.allclose(x["p_pos"], base["p_pos"])
    assert not np.allclose(x["p_pos"], y["p_pos"])
    np.testing.assert_allclose(again["p_pos"], base["p_pos"], rtol=1e-6)
    tiny_kernel.evict("a")  # adapters survive a trip to disk
    np.testing.assert_allclose(tiny_kernel.infer("a", TEXTS, adapter="y")["p_pos"],
                               y["p_pos"], rtol=1e-6)
    np.testing.assert_allclose(tiny_kernel.infer("a", TEXTS)["p_pos"], base["p_pos"],
                               rtol=1e-6)


def test_adapter_from_a_saved_folder(tiny_kernel, tmp_path):
    tiny_kernel.add_adapter("a", "src", {"r": 4})
    perturb(tiny_kernel, "a", "src", 3)
    expected = tiny_kernel.infer("a", TEXTS, adapter="src")
    tiny_kernel.record("a").model.save_pretrained(tmp_path / "saved", selected_adapters=["src"])
    other = kernel()
    other.load("tiny-bert", name="b", task="sequence-classification", labels=["neg", "pos"])
    with torch.no_grad():  # same head as "a", so only the adapter differs
        other.record("b").model.load_state_dict(tiny_kernel.record("a").model
                                                 .get_base_model().state_dict(), strict=False)
    other.add_adapter("b", "copy", tmp_path / "saved" / "src")
    got = other.infer("b", TEXTS, adapter="copy")
    np.testing.assert_allclose(got["p_pos"], expected["p_pos"], rtol=1e-5)


def test_adapter_errors_name_model_and_adapters(tiny_kernel, tmp_path):
    tiny_kernel.add_adapter("a", "x")
    with pytest.raises(AdapterError, match="already has an adapter 'x'"):
        tiny_kernel.add_adapter("a", "x")
    with pytest.raises(AdapterError, match="no adapter 'z'; its adapters: x"):
        tiny_kernel.infer("a", TEXTS, adapter="z")
    with pytest.raises(AdapterError, match="not a saved adapter"):
        tiny_kernel.add_adapter("a", "w", tmp_path)
    with pytest.raises(AdapterError, match="cannot add adapter 'v' to 'a'"):
        tiny_kernel.add_adapter("a", "v", {"target_modules": ["no_such_layer"]})
    with pytest.raises(AdapterError, match="expected a path, a PEFT config or a dict"):
        tiny_kernel.add_adapter("a", "u", 42)
    assert tiny_kernel.ps().set_index("name").loc["a", "adapters"] == ["x"]
    assert len(tiny_kernel.infer("a", TEXTS, adapter="x")) == len(TEXTS)
    tiny_kernel.load("tiny-bert", name="q", task="sequence-classification", num_labels=2,
                     quantize="int8")
    with pytest.raises(AdapterError, match="'q' is int8-quantized"):
        tiny_kernel.add_adapter("q", "x")


# ------------------------------------------------------------------------------ syscalls


def test_infer_returns_input_order_and_probabilities(tiny_kernel):
    out = tiny_kernel.infer("a", TEXTS, batch_size=3)
    assert list(out.columns) == ["label", "score", "p_neg", "p_pos"]
    np.testing.assert_allclose(out[["p_neg", "p_pos"]].sum(axis=1), 1.0, rtol=1e-5)
    reversed_ = tiny_kernel.infer("a", TEXTS[::-1], batch_size=5)
    np.testing.assert_allclose(reversed_["p_pos"].to_numpy()[::-1], out["p_pos"], rtol=1e-5)
    assert tiny_kernel.infer("a", []).empty
    assert list(tiny_kernel.infer("a", []).columns) == list(out.columns)


def test_token_classification_returns_one_tag_per_word(tiny_kernel):
    tiny_kernel.load("tiny-bert", name="ner", task="token-classification",
                     labels=["O", "B-PER", "I-PER"])
    out = tiny_kernel.infer("ner", ["Ada Lovelace wrote programs", "hi", "unbelievably long"])
    assert [len(t) for t in out["tags"]] == [4, 1, 2]
    assert {t for tags in out["tags"] for t in tags} <= {"O", "B-PER", "I-PER"}


def test_generate_is_greedy_and_batching_does_not_change_it(tiny_model):
    k = kernel()
    k.load("tiny-llama", name="lm")
    prompts = ["hello world", "the quick brown fox jumps over", "a"]
    batched = k.generate("lm", prompts, max_new_tokens=6)
    single = [k.generate("lm", p, max_new_tokens=6).loc[0, "completion"] for p in prompts]
    assert list(batched["completion"]) == single
    assert list(batched["prompt"]) == prompts
    assert (batched["new_tokens"] <= 6).all() and batched["completion"].str.len().gt(0).all()


def test_tasks_a_model_cannot_do(tiny_kernel):
    tiny_kernel.load("tiny-llama", name="lm")
    with pytest.raises(TaskError, match="'lm' is a causal-lm: use generate"):
        tiny_kernel.infer("lm", TEXTS)
    with pytest.raises(TaskError, match="'a' is a sequence-classification model"):
        tiny_kernel.generate("a", ["hi"])
    with pytest.raises(TaskError, match="cannot do causal-lm"):
        tiny_kernel.load("tiny-bert", name="enc", task="causal-lm")
    with pytest.raises(TaskError, match="base model: pass task="):
        tiny_kernel.load("tiny-bert", name="enc")
    with pytest.raises(TaskError, match="unknown task 'translation'"):
        tiny_kernel.load("tiny-bert", name="enc", task="translation")


def test_bad_input_is_named(tiny_kernel):
    with pytest.raises(ColumnTypeError, match=r"items \[1\]"):
        tiny_kernel.infer("a", ["fine", 3])
    with pytest.raises(ModelStateError, match="named 'a' is already loaded"):
        tiny_kernel.load("tiny-bert", name="a", task="sequence-classification", num_labels=2)
    with pytest.raises(ConfigError, match="quantize"):
        tiny_kernel.load("tiny-bert", name="b", task="sequence-classification", quantize="int4")
    with pytest.raises(UnknownNameError, match="minilm"):
        tiny_kernel.load("no-such-model", name="b")
    assert tiny_kernel.record("a").name == "a" and tiny_kernel.record("a").model is not None
    with pytest.raises(UnknownNameError, match="unknown loaded model 'b'"):
        tiny_kernel.record("b")
    with pytest.raises(UnknownNameError, match=r"unknown loaded model 'zz'; .*: a"):
        tiny_kernel.pin("zz")
    with pytest.raises(UnknownNameError):
        tiny_kernel.evict("zz")
    with pytest.raises(ConfigError, match="'disk'"):
        tiny_kernel.evict("a", to="host")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        tiny_kernel.generate("a", ["x"], max_new_tokens=0)


def test_int8_quantization_shrinks_linear_layers(tiny_kernel):
    tiny_kernel.load("minilm", name="f32", task="sequence-classification", num_labels=3)
    tiny_kernel.load("minilm", name="i8", task="sequence-classification", num_labels=3,
                     quantize="int8")
    table = tiny_kernel.ps().set_index("name")
    linear = sum(m.weight.numel() * 4 for m in tiny_kernel.record("f32").model.modules()
                 if isinstance(m, torch.nn.Linear))
    saved = table.loc["f32", "bytes"] - table.loc["i8", "bytes"]
    assert 0.7 * linear < saved < linear  # int8 weights: a quarter of the float32 bytes
    assert table.loc["i8", "quantize"] == "int8"
    out = tiny_kernel.infer("i8", TEXTS)
    assert len(out) == len(TEXTS)
    tiny_kernel.evict("i8")  # rebuilt from its float image and quantized again
    pd.testing.assert_frame_equal(tiny_kernel.infer("i8", TEXTS), out)


# ------------------------------------------------------------------------------ threads


def test_concurrent_calls_match_serial_ones_under_eviction(tiny_model, tiny_bytes):
    k = kernel(int(tiny_bytes * 1.5))  # room for one model: every switch evicts
    for name in "ab":
        k.load("tiny-bert", name=name, task="sequence-classification", num_labels=2)
    jobs = [(name, TEXTS[i:] + TEXTS[:i]) for i in range(6) for name in "ab"]
    serial = [k.infer(name, texts) for name, texts in jobs]
    results: list[pd.DataFrame | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = k.infer(*jobs[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for got, want in zip(results, serial, strict=True):
        pd.testing.assert_frame_equal(got, want)
    assert k.ps()["faults"].sum() > 0


# ------------------------------------------------------------------------------ real decoder


@pytest.mark.slow
def test_smollm2_generates_from_the_shipped_gguf():
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB")
    k.load("smollm2", name="lm")
    out = k.generate("lm", ["The capital of France is"], max_new_tokens=8)
    assert "Paris" in out.loc[0, "completion"]
    assert k.ps().loc[0, "bytes"] > 400 * 2**20  # 135M parameters, dequantised


def test_evict_waits_for_a_call_in_flight_on_that_model(tiny_kernel, monkeypatch):
    """The window the probe hit: a call holds the model (active) but has not started
    computing; a public evict then pulled the weights from under it."""
    import contextlib

    from tests.test_widgets import wait_until

    k = tiny_kernel
    expected = k.infer("a", TEXTS)
    real_use = lab.ModelKernel._use
    inside, gate = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def held(self, name):
        with real_use(self, name) as rec:
            if threading.current_thread().name == "infer":
                inside.set()
                assert gate.wait(120)
            yield rec

    monkeypatch.setattr(lab.ModelKernel, "_use", held)
    out: dict[str, pd.DataFrame] = {}
    call = threading.Thread(target=lambda: out.update(df=k.infer("a", TEXTS)), name="infer")
    call.start()
    assert inside.wait(120)
    evict = threading.Thread(target=lambda: k.evict("a"))
    evict.start()
    assert wait_until(lambda: len(k._idle._waiters) > 0)  # the evict waits for the call
    assert k.ps().set_index("name").loc["a", "state"] == "resident"
    gate.set()
    call.join(120)
    evict.join(120)
    pd.testing.assert_frame_equal(out["df"], expected)
    assert k.ps().set_index("name").loc["a", "state"] == "disk"
