"""A BERT sequence classifier's inference on packed tokens: the exact fast path.

``model(**padded_batch)`` computes every position of a padded batch in every layer, although a
classifier reads one token and padding is thrown away. Here the batch's tokens are packed into
one ``(tokens, hidden)`` matrix, so the projections and feed-forward blocks (nine twelfths of
the FLOPs) skip the padding; only attention sees the batch padded. The last layer computes
queries, attention output and feed-forward for ``[CLS]`` alone (keys and values still come from
every token), as :func:`first_token_only` makes the model's own last layer do for training and
for export. The logits equal the padded forward's within float rounding (tested) and the work
is a sixth less for MiniLM.

The layers are called as modules, so LoRA / IA3 adapters (PEFT wraps those modules) and the
kernel's int8 layers (``torch.ao`` dynamic quantization) take this path unchanged; anything
else (another architecture, training mode, relative positions, prompt-learning adapters) goes
through the model's own forward.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import int8

_ADAPTER_TYPES = {"LORA", "IA3"}  # PEFT types that only wrap modules (no virtual tokens)


def classifier(model: torch.nn.Module) -> torch.nn.Module | None:
    """The ``BertForSequenceClassification`` whose forward :func:`logits` may replace, or
    None when this path does not apply (then the caller runs ``model(**batch)``)."""
    if not isinstance(model, torch.nn.Module) or model.training:
        return None
    inner = model
    if hasattr(model, "peft_config"):  # a PeftModel: only adapters that wrap modules
        kinds = {str(getattr(c.peft_type, "value", c.peft_type)).upper()
                 for c in model.peft_config.values()}
        if not kinds <= _ADAPTER_TYPES:
            return None
        inner = model.get_base_model()
    if type(inner).__name__ != "BertForSequenceClassification":
        return None
    bert, config = inner.bert, inner.config
    if bert.pooler is None or config.is_decoder or \
            getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if not all(type(layer).__name__ == "BertLayer" for layer in bert.encoder.layer):
        return None
    return inner


def logits(model: torch.nn.Module, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Class logits of ``model`` (as returned by :func:`classifier`) for a batch of token-id
    lists, unpadded; one row per list, in order."""
    bert = model.bert
    device = bert.embeddings.word_embeddings.weight.device
    lengths = torch.tensor([len(row) for row in ids])
    width = int(lengths.max())
    valid = torch.arange(width)[None, :] < lengths[:, None]
    batch = _Batch(len(ids), width,
                   index=valid.reshape(-1).nonzero().squeeze(1).to(device),
                   first=(torch.cumsum(lengths, 0) - lengths).to(device),
                   mask=valid[:, None, None, :].to(device))
    flat = torch.tensor([t for row in ids for t in row], device=device)
    positions = torch.cat([torch.arange(n) for n in lengths.tolist()]).to(device)
    x = _embed(bert.embeddings, flat, positions)
    layers = bert.encoder.layer
    for i, layer in enumerate(layers):
        x = _layer(layer, x, batch, last=i == len(layers) - 1)
    return model.classifier(bert.pooler.activation(bert.pooler.dense(x)))


class _Batch:
    """Where each packed row sits in the padded ``(rows, width)`` batch, and the key mask."""

    def __init__(self, rows: int, width: int, *, index: torch.Tensor, first: torch.Tensor,
                 mask: torch.Tensor) -> None:
        self.rows, self.width, self.index, self.first, self.mask = rows, width, index, first, mask

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Packed ``(tokens, d)`` to padded ``(rows * width, d)`` (padding rows zero)."""
        return x.new_zeros(self.rows * self.width, x.shape[1]).index_copy_(0, self.index, x)


def _embed(emb, flat: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    x = emb.word_embeddings(flat) + emb.token_type_embeddings(torch.zeros_like(flat))
    return emb.LayerNorm(x + emb.position_embeddings(positions))


def _heads(x: torch.Tensor, rows: int, size: int) -> torch.Tensor:
    return x.view(rows, -1, x.shape[-1] // size, size).transpose(1, 2)


def _layer(layer, x: torch.Tensor, batch: _Batch, last: bool) -> torch.Tensor:
    """One encoder layer on packed rows; the last keeps only each sequence's first row."""
    attn, out = layer.attention.self, layer.attention.output
    size, rows = attn.attention_head_size, batch.rows
    padded = batch.pad(x)
    fold = _plain(attn.key, attn.value, out.dense)
    if fold:  # no key bias (softmax ignores a per-query constant); the value bias moves on
        key, value = F.linear(padded, attn.key.weight), F.linear(padded, attn.value.weight)
        out_bias = out.dense.bias + out.dense.weight @ attn.value.bias  # rows of p sum to 1
    else:
        key, value, out_bias = attn.key(padded), attn.value(padded), None
    key, value = _heads(key, rows, size), _heads(value, rows, size)
    if last:
        x = x[batch.first]
        query = _heads(attn.query(x), rows, size)
    else:
        query = _heads(attn.query(padded), rows, size)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=batch.mask,
                                             scale=attn.scaling)
    context = context.transpose(1, 2).reshape(-1, context.shape[1] * size)
    if not last:
        context = context[batch.index]
    hidden = out.LayerNorm(_dense(out.dense, context, residual=x, bias=out_bias))
    return _feed_forward(layer, hidden)


def _feed_forward(layer, hidden: torch.Tensor) -> torch.Tensor:
    dense, act = layer.intermediate.dense, layer.intermediate.intermediate_act_fn
    exact_gelu = getattr(act, "act", None) is F.gelu  # transformers' exact-erf GELUActivation
    if exact_gelu and isinstance(dense, int8.Int8Linear):
        inner = dense(hidden, post_op="gelu")
    else:  # GELU in place on the fresh tensor: one pass fewer
        inner = dense(hidden)
        inner = torch.ops.aten.gelu_(inner) if exact_gelu else act(inner)
    out = layer.output
    return out.LayerNorm(_dense(out.dense, inner, residual=hidden))


def _plain(*linears: torch.nn.Module) -> bool:
    """Plain ``nn.Linear`` layers with biases (no adapter, no int8, no hooks a user or a
    library registered), outside autograd and autocast: the layer's biases may be moved and
    its residuals summed in place without calling the module."""
    return not torch.is_grad_enabled() and all(
        type(m) is torch.nn.Linear and m.bias is not None
        and not (m._forward_pre_hooks or m._forward_hooks)
        and not torch.is_autocast_enabled(m.weight.device.type) for m in linears)


def _dense(linear: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """``linear(x) + residual`` (with ``bias`` for the layer's own when given). ``residual``
    is a fresh tensor of the caller's, consumed: a plain layer accumulates into it in place
    (no bias copy, no extra pass), an int8 layer adds it in its epilogue."""
    if isinstance(linear, int8.Int8Linear):
        return linear(x, residual=residual)
    if _plain(linear):
        return residual.add_(linear.bias if bias is None else bias).addmm_(x, linear.weight.T)
    return linear(x) + residual


def first_token_only(model: torch.nn.Module) -> bool:
    """Patch the last layer of a ``BertForSequenceClassification`` in place so that its own
    forward computes queries, attention output and feed-forward for the first token only: the
    same logits and gradients with a seventh fewer FLOPs (the trainer's models, and the graphs
    the kernel exports to ONNX Runtime). Weights and state-dict keys are unchanged; returns
    False and changes nothing for any other model."""
    if type(model).__name__ != "BertForSequenceClassification":
        return False
    encoder = getattr(model.bert, "encoder", None)
    layer = encoder.layer[-1] if encoder is not None and len(encoder.layer) else None
    if layer is None or type(layer).__name__ != "BertLayer" or layer.is_decoder or \
            model.bert.pooler is None:
        return False
    layer.forward = types.MethodType(_first_token_forward, layer)
    return True


def _first_token_forward(layer, hidden_states: torch.Tensor,
                         attention_mask: torch.Tensor | None = None, *args, **kwargs):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attn = layer.attention.self
    batch, length = hidden_states.shape[:2]
    size = attn.attention_head_size
    first = hidden_states[:, :1]
    query = attn.query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = attn.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    value = attn.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[:, :, :1, :]  # the first query's row
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation,
                                                      eager_attention_forward)
    context, _ = interface(attn, query, key, value, attention_mask,
                           dropout=attn.dropout.p if attn.training else 0.0,
                           scaling=attn.scaling)
    hidden = layer.attention.output(context.reshape(batch, 1, -1), first)
    return layer.output(layer.intermediate(hidden), hidden)
