"""runtime="onnxruntime": the same answers as torch behind the same calls, measured bytes,
eviction to the exported graph and a fault-in from it, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmos_lab as lab
from llmos_lab.errors import AdapterError, ConfigError

TEXTS = ["what a great day", "this is awful", "meh", "the service was fine I guess",
         "never again", "love it love it love it", "ok", "a long rambling text " * 5]


def _load(kernel, name: str, **kw):
    torch.manual_seed(0)  # the same new head for every load
    kernel.load("tiny-bert", name=name, task="sequence-classification", labels=["neg", "pos"],
                **kw)


@pytest.fixture
def kernel(tiny_model, tmp_path):
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32",
                        swap_dir=tmp_path / "swap")
    _load(k, "torch")
    _load(k, "ort", runtime="onnxruntime")
    return k


def test_onnxruntime_answers_as_torch_does(kernel):
    a, b = kernel.infer("torch", TEXTS, batch_size=3), kernel.infer("ort", TEXTS, batch_size=3)
    assert list(a.label) == list(b.label)
    np.testing.assert_allclose(b[["p_neg", "p_pos"]], a[["p_neg", "p_pos"]], atol=1e-5)
    table = kernel.ps().set_index("name")
    assert table.loc["ort", "runtime"] == "onnxruntime" and table.loc["torch", "runtime"] == "torch"
    graph = kernel.record("ort").model.graph
    assert table.loc["ort", "bytes"] == graph.stat().st_size
    assert 0.9 < table.loc["ort", "bytes"] / table.loc["torch", "bytes"] < 1.2  # the weights


def test_int8_through_onnxruntime_is_smaller_and_close(kernel):
    _load(kernel, "ort8", runtime="onnxruntime", quantize="int8")
    a, c = kernel.infer("torch", TEXTS), kernel.infer("ort8", TEXTS)
    np.testing.assert_allclose(c[["p_neg", "p_pos"]], a[["p_neg", "p_pos"]], atol=0.05)
    table = kernel.ps().set_index("name")
    assert table.loc["ort8", "bytes"] < 0.5 * table.loc["ort", "bytes"]
    assert table.loc["ort8", "quantize"] == "int8"


def test_eviction_drops_the_session_and_the_graph_faults_back_in(kernel):
    before = kernel.infer("ort", TEXTS)
    graph = kernel.record("ort").runtime_image
    kernel.evict("ort")
    assert kernel.record("ort").model is None
    assert kernel.ps().set_index("name").loc["ort", "state"] == "disk"
    after = kernel.infer("ort", TEXTS)
    assert kernel.record("ort").runtime_image == graph  # opened again, not exported again
    assert kernel.ps().set_index("name").loc["ort", "faults"] == 1
    np.testing.assert_array_equal(after[["p_neg", "p_pos"]], before[["p_neg", "p_pos"]])
    kernel.unload("ort")
    assert not graph.exists()


def test_what_onnxruntime_does_not_run_is_refused_by_name(kernel):
    with pytest.raises(AdapterError, match="'ort' is run by onnxruntime"):
        kernel.add_adapter("ort", "a")
    with pytest.raises(ConfigError, match="runtime"):
        kernel.load("tiny-bert", name="tok", task="token-classification", num_labels=3,
                    runtime="onnxruntime")
    with pytest.raises(ConfigError, match="runtime"):
        kernel.load("tiny-bert", name="bf", task="sequence-classification", num_labels=2,
                    dtype="bf16", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="onnxruntime"):  # the error lists the options
        kernel.load("tiny-bert", name="x", task="sequence-classification", runtime="tvm")
    assert set(kernel.ps()["name"]) == {"torch", "ort"}
