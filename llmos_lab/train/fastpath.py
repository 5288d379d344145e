"""Exact shortcuts for models whose head reads one token.

A BERT sequence classifier reads only the first token of the last layer (its pooler takes
``[CLS]``), yet the layer computes every token: queries, attention output and the feed-forward
block for all positions. :func:`first_token_only` makes that layer compute them for the first
token only (keys and values still come from every token), which gives the same logits and
gradients with about a seventh fewer FLOPs for a 6-layer model.
"""

from __future__ import annotations

import types

import torch


def first_token_only(model: torch.nn.Module) -> bool:
    """Patch the last layer of a ``BertForSequenceClassification`` in place (its weights and
    state-dict keys are unchanged); returns False and changes nothing for any other model."""
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
