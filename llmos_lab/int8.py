"""Dynamic int8 Linear layers on oneDNN: the kernel's ``quantize="int8"``.

``torch.ao``'s dynamic quantization (fbgemm) is deprecated in torch 2.13 and, on a CPU with
VNNI or AMX, ran only 1.5x fp32 here; ONNX Runtime's int8 ran 1.2x faster than it on the same
graph. The same scheme on oneDNN's int8 kernels (the ones inductor's x86 quantizer uses) runs
each projection 2.5-3.5x faster than fp32:

* weights: int8, symmetric, one scale per output channel (7 bits on a CPU without VNNI, where
  the u8 x s8 products are summed in saturating 16-bit pairs);
* activations: uint8, asymmetric, one scale per call from the tensor's range (as ONNX
  Runtime's dynamic quantization does);
* the bias, and optionally GELU, applied by the matrix multiply's epilogue in float32.

Where oneDNN's int8 ops are absent (a torch built without it, or not x86), ``torch.ao``'s
dynamic quantization is used instead, as before.
"""

from __future__ import annotations

import math
import warnings

import torch

from .errors import ModelStateError

_ONEDNN = hasattr(torch.ops, "onednn") and hasattr(torch.ops.onednn, "qlinear_pointwise")


def available() -> bool:
    """Whether this torch has oneDNN's int8 linear (else ``torch.ao`` is used)."""
    return _ONEDNN and torch.backends.mkldnn.is_available()


def weight_levels() -> int:
    """The largest weight magnitude: 127, or 63 where 16-bit pair sums could saturate."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    return 127 if vnni else 63


class Int8Linear(torch.nn.Module):
    """A ``Linear`` whose weights are int8 and whose input is quantized on every call."""

    def __init__(self, linear: torch.nn.Linear, levels: int | None = None) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        levels = levels or weight_levels()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / levels
        quantized = torch.round(weight / scale[:, None]).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", torch.zeros_like(scale, dtype=torch.long))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = torch.ops.onednn.qlinear_prepack(quantized, None)
        self.runtime_bytes = quantized.numel()  # oneDNN's packed int8 weight (not a buffer)

    def forward(self, x: torch.Tensor, post_op: str = "none",
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """``linear(x)``, then ``post_op`` ("gelu": exact GELU) or ``+ residual`` (oneDNN
        takes one of the two), in the multiply's epilogue: the packed path fuses a BERT
        layer's GELU and residuals this way."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float().contiguous()
        qx, scale, zero = quantize_activations(flat)
        weights = (self._packed, self.weight_scale, self.weight_zero_point)
        if residual is None:
            out = torch.ops.onednn.qlinear_pointwise(
                qx, scale, zero, *weights, self.bias, 1.0, 0, torch.float32, post_op, [],
                "none")
        else:
            out = torch.ops.onednn.qlinear_pointwise.binary(
                qx, scale, zero, *weights, residual.reshape(flat.shape[0], -1), self.bias,
                1.0, 0, torch.float32, 1.0, 0, "add", 1.0, post_op, [], "none")
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """``x`` as uint8 with one scale and zero point spanning its range (and 0, exactly)."""
    if x.numel() == 0:
        return x.to(torch.uint8), 1.0, 0
    low, high = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(low) and math.isfinite(high)):  # no scale can stand for them
        raise ModelStateError(f"an int8 layer's input holds {'nan' if low != low else 'inf'}"
                              f" (range {low}..{high}): the model's weights or inputs are not "
                              "finite")
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    zero = min(255, max(0, round(-low / scale)))
    with warnings.catch_warnings():  # quantized tensors are deprecated; the fused pass is not
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(x, scale, zero, torch.quint8).int_repr(), scale, zero


def quantize(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`Int8Linear`."""
    levels = weight_levels()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(module, child_name, Int8Linear(child, levels))
    return model
