"""oneDNN int8 Linear layers: close to the float layer, every input shape, exact zeros, the
7-bit weights of CPUs without VNNI, and the torch.ao fallback."""

from __future__ import annotations

import pytest
import torch

from llmos_lab import int8, loading
from llmos_lab.errors import ModelStateError

pytestmark = pytest.mark.skipif(not int8.available(), reason="no oneDNN int8 linear")


def _linear(seed: int = 0, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(96, 40, bias=bias).eval()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("levels", [int8.weight_levels(), 63])  # 127 would saturate w/o VNNI
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_float_layer_to_int8_rounding(levels, bias):
    linear = _linear(bias=bias)
    layer = int8.Int8Linear(linear, levels)
    x = torch.randn(2, 7, 96)
    with torch.no_grad():
        want, got = linear(x), layer(x)
    assert got.shape == want.shape == (2, 7, 40)
    assert _relative_error(got, want) < (0.02 if levels == 127 else 0.04)
    assert _relative_error(got, want) > 0  # really quantized, not the float layer


def test_fused_gelu_and_residual_equal_the_separate_ops():
    layer = int8.Int8Linear(_linear())
    x, residual = torch.randn(5, 96), torch.randn(5, 40)
    torch.testing.assert_close(layer(x, post_op="gelu"), torch.nn.functional.gelu(layer(x)))
    torch.testing.assert_close(layer(x, residual=residual), layer(x) + residual)


def test_zeros_stay_exact_and_empty_batches_pass():
    linear = _linear()
    layer = int8.Int8Linear(linear)
    torch.testing.assert_close(layer(torch.zeros(3, 96)), linear.bias.detach().expand(3, 40))
    assert layer(torch.zeros(0, 96)).shape == (0, 40)
    q, scale, zero = int8.quantize_activations(torch.tensor([[-1.0, 0.0, 3.0]]))
    assert q.dtype == torch.uint8 and int(q[0, 1]) == zero  # 0.0 is a level
    assert (q.float() - zero).mul(scale).sub(torch.tensor([[-1.0, 0.0, 3.0]])).abs().max() \
        <= scale / 2 + 1e-7


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_named_not_rounded(bad):
    with pytest.raises(ModelStateError, match="nan" if bad != bad else "inf"):
        int8.quantize_activations(torch.tensor([[1.0, bad, -2.0]]))


def test_quantize_replaces_linears_and_counts_their_int8_bytes():
    model = torch.nn.Sequential(_linear(0), torch.nn.ReLU(), torch.nn.Linear(40, 3))
    x = torch.randn(4, 96)
    with torch.no_grad():
        want = model(x)
        int8.quantize(model)
        got = model(x)
    assert [type(m).__name__ for m in model] == ["Int8Linear", "ReLU", "Int8Linear"]
    weights, channels = 96 * 40 + 40 * 3, 40 + 3
    # int8 weights; per channel a float bias and scale and an int64 zero point
    assert loading.module_bytes(model) == weights + channels * (4 + 4 + 8)
    assert _relative_error(got, want) < 0.03


def test_without_onednn_the_torch_ao_layers_are_used(monkeypatch):
    monkeypatch.setattr(int8, "available", lambda: False)
    model = loading.quantize_int8(torch.nn.Sequential(_linear()))
    assert type(model[0]).__module__.startswith("torch.ao.nn.quantized")
