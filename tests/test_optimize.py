"""Pruning: structured (heads, feed-forward neurons: the model really shrinks, and computes
what the unpruned model computes with those units gated off) and unstructured magnitude."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import llmos_lab as lab
from llmos_lab import inference, optimize, structure
from llmos_lab.errors import ConfigError

from .train.test_trainer import keyword_frame

BASE = dict(model="tiny-bert", epochs=3, lr=1e-2, batch_size=16, warmup=0.0, device="cpu")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return keyword_frame(256, 0), keyword_frame(60, 1)


@pytest.fixture(scope="module")
def fitted(tiny_model, data):
    return lab.Trainer(lab.TrainConfig(**BASE)).fit(data[0], progress=False)


def probabilities(model, tokenizer, texts):
    return inference.class_probabilities(model, tokenizer, texts, max_length=64,
                                         batch_size=16, device=CPU)


def gated(fitted, texts, heads_kept, neurons_kept):
    """The unpruned model with the removed heads' and neurons' outputs multiplied by 0."""
    model = optimize._plain_forward(copy.deepcopy(fitted.model_)).eval()
    hooks = []
    for layer, kh, kn in zip(structure.layers(model), heads_kept, neurons_kept, strict=True):
        size = structure.head_size(layer)
        gh = torch.zeros(structure.heads(layer))
        gh[kh] = 1
        gh = gh.repeat_interleave(size)
        gn = torch.zeros(structure.neurons(layer))
        gn[kn] = 1
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(
            lambda _m, a, g=gh: (a[0] * g,)))
        hooks.append(layer.output.dense.register_forward_pre_hook(
            lambda _m, a, g=gn: (a[0] * g,)))
    return probabilities(model, fitted.tokenizer_, texts)


@pytest.mark.parametrize("with_data", [False, True])
def test_structured_pruning_shrinks_and_equals_the_gated_model(fitted, data, with_data):
    texts = list(data[1]["text"])
    model = optimize._plain_forward(copy.deepcopy(fitted.model_)).eval()
    scores = optimize.importance(model, fitted.tokenizer_, data[0] if with_data else None,
                                 "text", "label", 64, 32)
    keep_h, keep_n = optimize._keep(scores[0], 0.5), optimize._keep(scores[1], 0.5)
    pruned = optimize.prune(fitted, heads=0.5, ffn=0.5, data=data[0] if with_data else None)
    assert pruned.summary["heads"] == 2 and pruned.summary["neurons"] == 32
    assert pruned.summary["parameters"] < pruned.summary["parameters_before"]
    np.testing.assert_allclose(probabilities(pruned.model, pruned.tokenizer, texts),
                               gated(fitted, texts, keep_h, keep_n), atol=1e-5)
    assert structure.heads(structure.layers(fitted.model_)[0]) == 2  # the source is untouched


def test_units_to_remove_are_the_least_important_and_each_layer_keeps_one():
    scores = [np.array([0.9, 0.1, 0.5]), np.array([0.05, 0.02])]
    assert optimize._keep(scores, 0.4) == [[0, 2], [0]]
    assert optimize._keep(scores, 0.99) == [[0], [0]]
    assert optimize._keep(scores, 0.0) == [[0, 1, 2], [0, 1]]


def test_a_saved_pruned_model_loads_in_the_kernel_and_recovers(fitted, data, tmp_path):
    pruned = optimize.prune(fitted, heads=0.5, ffn=0.3)
    folder = pruned.save(tmp_path / "pruned")
    kernel = lab.ModelKernel(device="cpu", precision="fp32")
    kernel.load(folder, "p")
    texts = list(data[1]["text"])
    np.testing.assert_allclose(kernel.infer("p", texts)[["p_neg", "p_pos"]].to_numpy(),
                               probabilities(pruned.model, pruned.tokenizer, texts), atol=1e-5)
    assert kernel.ps().loc[0, "bytes"] == pruned.summary["bytes"] < \
        lab.loading.module_bytes(fitted.model_)
    recovered = pruned.recover(data[0], max_steps=4, lr=1e-3, device="cpu")
    assert structure.heads(structure.layers(recovered.model_)[0]) == 1
    assert recovered.evaluate(data[1]).accuracy >= 0.9


def test_magnitude_pruning_zeroes_weights_without_shrinking(fitted):
    pruned = optimize.prune(fitted, magnitude=0.5)
    assert pruned.summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert pruned.summary["parameters"] == pruned.summary["parameters_before"]


@pytest.mark.parametrize(("kw", "name"), [({"heads": 1.0}, "heads"), ({"ffn": -0.1}, "ffn"),
                                          ({"magnitude": 2}, "magnitude")])
def test_amounts_outside_zero_to_one_are_refused(fitted, kw, name):
    with pytest.raises(ConfigError, match=f"invalid {name}="):
        optimize.prune(fitted, **kw)


def test_unsupported_sources_are_named(tmp_path, data):
    from llmos_lab import assets

    with pytest.raises(ConfigError, match="BERT-family"):
        optimize.prune(str(assets.tiny_causal_lm_path()), heads=0.5)
    with pytest.raises(ConfigError, match="source"):
        optimize.prune(tmp_path, heads=0.5)
    lora = lab.Trainer(lab.TrainConfig(**BASE, method="lora", max_steps=1)).fit(
        data[0], progress=False)
    with pytest.raises(ConfigError, match="full fine-tune"):
        optimize.prune(lora, heads=0.5)
