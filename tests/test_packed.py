"""Packed-token inference gives the padded forward's logits, with adapters, int8 and pruned
layers too, and stands aside for every model it does not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from llmos_lab import inference, int8, packed, structure

TEXTS = ["a short one", "a much longer text with many more words in it than the first one is",
         "mid sized text here", "x", "another text of some middling length, with commas"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def _model(tiny_model, attn: str = "sdpa", labels: int = 3):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=labels, attn_implementation=attn)
    return model.eval()


@torch.inference_mode()
def _both(model, tokenizer, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own padded forward and the packed path, on the same ids (the packed one
    under inference mode, as the kernel runs it, unless ``grad``)."""
    ids = tokenizer(TEXTS)["input_ids"]
    padded = model(**inference.collate(ids, tokenizer.pad_token_id, torch.device("cpu")))
    fast = packed.classifier(model)
    assert fast is not None
    with torch.inference_mode(not grad):
        return padded.logits, packed.logits(fast, ids).clone()


def test_with_autograd_on_no_bias_moves_or_in_place_sums(tiny_model, tokenizer):
    model = _model(tiny_model)
    padded, fast = _both(model, tokenizer, grad=True)
    torch.testing.assert_close(fast, padded, rtol=1e-5, atol=1e-6)
    fast.sum().backward()  # an in-place sum would have broken the graph
    assert model.bert.encoder.layer[0].attention.self.key.weight.grad is not None


def test_hooks_on_a_layer_still_run(tiny_model, tokenizer):
    model, calls = _model(tiny_model), []
    for layer in model.bert.encoder.layer:  # silence the second half of each head set
        gate = torch.ones(layer.attention.output.dense.in_features)
        gate[gate.numel() // 2:] = 0
        layer.attention.output.dense.register_forward_pre_hook(
            lambda _m, a, g=gate: calls.append("pre") or (a[0] * g,))
    model.bert.encoder.layer[0].attention.self.value.register_forward_hook(
        lambda _m, _a, y: calls.append("post") or y * 2)
    padded, fast = _both(model, tokenizer)
    torch.testing.assert_close(fast, padded, rtol=1e-5, atol=1e-6)
    layers = len(model.bert.encoder.layer)
    assert calls.count("pre") == 2 * layers and calls.count("post") == 2  # padded, then packed


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_the_padded_forward(tiny_model, tokenizer, attn):
    padded, fast = _both(_model(tiny_model, attn), tokenizer)
    torch.testing.assert_close(fast, padded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_adapters_take_the_packed_path_and_change_its_answer(tiny_model, tokenizer, kind):
    import peft

    base_logits = _both(_model(tiny_model), tokenizer)[0]
    if kind == "lora":
        config = peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value",
                                                                           "dense"])
    else:
        config = peft.IA3Config(task_type="SEQ_CLS", target_modules=["key", "value", "dense"],
                                feedforward_modules=["dense"])
    model = peft.get_peft_model(_model(tiny_model), config).eval()
    for name, p in model.named_parameters():  # fresh adapters are no-ops: make them count
        if "lora_B" in name or "ia3_l" in name:
            torch.nn.init.normal_(p, mean=1.0 if "ia3" in name else 0.0, std=0.5)
    padded, fast = _both(model, tokenizer)
    torch.testing.assert_close(fast, padded, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(padded, base_logits, atol=1e-3)


@pytest.mark.parametrize("quantizer", ["onednn", "torch.ao"])
def test_int8_layers_take_the_packed_path(tiny_model, tokenizer, quantizer):
    """Dynamic int8 scales activations per call, and the packed call holds no padding rows, so
    the two agree to int8 rounding rather than bitwise (the oneDNN layers also fuse GELU and
    the residuals into their epilogue here)."""
    if quantizer == "onednn":
        if not int8.available():
            pytest.skip("this torch has no oneDNN int8 linear")
        model = int8.quantize(_model(tiny_model))
    else:
        model = torch.ao.quantization.quantize_dynamic(_model(tiny_model), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    padded, fast = _both(model, tokenizer)
    torch.testing.assert_close(fast, padded, rtol=0, atol=0.05)


def test_pruned_layers_with_their_own_head_counts(tiny_model, tokenizer):
    model = _model(tiny_model)
    layers = structure.layers(model)
    structure.keep_heads(layers[0], [0])
    structure.keep_neurons(layers[-1], list(range(0, structure.neurons(layers[-1]), 3)))
    padded, fast = _both(model, tokenizer)
    torch.testing.assert_close(fast, padded, rtol=1e-5, atol=1e-6)


def test_class_probabilities_use_it_and_keep_input_order(tiny_model, tokenizer, monkeypatch):
    model = _model(tiny_model)
    calls = []
    real = packed.logits
    monkeypatch.setattr(packed, "logits", lambda m, ids: calls.append(len(ids)) or real(m, ids))
    probs = inference.class_probabilities(model, tokenizer, TEXTS, max_length=32, batch_size=2,
                                          device=torch.device("cpu"))
    assert calls == [2, 2, 1]
    padded = _both(model, tokenizer)[0]
    np.testing.assert_allclose(probs, torch.softmax(padded, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_other_models_and_modes_go_through_their_own_forward(tiny_model):
    import peft

    assert packed.classifier(_model(tiny_model).train()) is None  # dropout: not the same
    assert packed.classifier(AutoModelForTokenClassification.from_pretrained(
        tiny_model, num_labels=3)) is None
    prompt = peft.get_peft_model(_model(tiny_model), peft.PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=4))
    assert packed.classifier(prompt.eval()) is None  # virtual tokens change the sequence
    relative = _model(tiny_model)
    relative.config.position_embedding_type = "relative_key"
    assert packed.classifier(relative) is None


def test_under_bf16_autocast_too(tiny_model, tokenizer):
    model = _model(tiny_model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded, fast = _both(model, tokenizer)
    torch.testing.assert_close(fast.float(), padded.float(), rtol=0, atol=0.05)
