"""The Llama-architecture fast path of the decode batch (Llama, SmolLM2, Mistral, Qwen2):
per-sequence KV caches preallocated for a sequence's whole length, a prefill of one prompt,
and one decode step for many sequences with batched linear layers and per-sequence attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAST_ARCHITECTURES = ("llama", "mistral", "qwen2")


class KVCache:
    """One sequence's keys and values for every layer, preallocated for its whole length."""

    def __init__(self, layers: int, heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (layers, heads, capacity, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def _fast_path_ok(rec) -> bool:
    config = getattr(rec.model, "config", None)
    return (not rec.quantize and getattr(config, "model_type", None) in FAST_ARCHITECTURES
            and hasattr(rec.model, "get_base_model") is False)


def prepare_layout(model: torch.nn.Module) -> None:
    """Store each Linear weight transposed in memory ([in, out] contiguous; the parameter
    keeps its [out, in] shape as a strided view). ``x @ W.T`` then reads the weight row by
    row: faster on CPUs for the few-row products of decoding, and batch-size invariant under
    MKL for two rows and more. Same bytes, same values; ``save_pretrained`` makes copies
    contiguous again. Done once per resident copy of the weights."""
    if getattr(model, "_llmos_decode_layout", False):
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous() \
                    and module.weight.dim() == 2 and module.weight.shape[0] > 1:
                module.weight.data = module.weight.data.t().contiguous().t()
    model._llmos_decode_layout = True


def _new_cache(model, capacity: int) -> KVCache:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    w = model.lm_head.weight
    return KVCache(c.num_hidden_layers, heads, capacity, head_dim, w.dtype, w.device)


def _project(attn, x: torch.Tensor, rows: int, length: int, cos, sin):
    """q, k, v of ``rows`` sequences of ``length`` tokens, RoPE applied: [rows, heads, T, d]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    d = attn.head_dim
    q = attn.q_proj(x).view(rows, length, -1, d).transpose(1, 2)
    k = attn.k_proj(x).view(rows, length, -1, d).transpose(1, 2)
    v = attn.v_proj(x).view(rows, length, -1, d).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def _mlp(layer, h: torch.Tensor) -> torch.Tensor:
    x = _norm(layer.post_attention_layernorm, h)
    mlp = layer.mlp
    return h + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


@torch.inference_mode()
def _llama_prefill(model, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The prompt of one sequence, causal attention; fills its cache; last token's logits."""
    base, length = model.model, ids.shape[1]
    h = base.embed_tokens(ids)
    pos = torch.arange(length, device=ids.device)[None]
    cos, sin = base.rotary_emb(h, pos)
    for i, layer in enumerate(base.layers):
        attn = layer.self_attn
        q, k, v = _project(attn, _norm(layer.input_layernorm, h), 1, length, cos, sin)
        cache.k[i, :, :length] = k[0]
        cache.v[i, :, :length] = v[0]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling,
                                           enable_gqa=True)
        h = h + attn.o_proj(o.transpose(1, 2).reshape(1, length, -1))
        h = _mlp(layer, h)
    cache.length = length
    return model.lm_head(_norm(base.norm, h[:, -1]))[0]


@torch.inference_mode()
def _llama_decode(model, seqs: list, device: torch.device) -> torch.Tensor:
    """One token for each sequence: batched linear layers, per-sequence attention."""
    base, n = model.model, len(seqs)
    rows = max(n, 2)  # one row would take BLAS's single-row path and change the numbers
    last = [s.tokens[-1] for s in seqs] + [seqs[0].tokens[-1]] * (rows - n)
    positions = [s.cache.length for s in seqs] + [seqs[0].cache.length] * (rows - n)
    h = base.embed_tokens(torch.tensor(last, device=device))[:, None]  # [rows, 1, hidden]
    cos, sin = base.rotary_emb(h, torch.tensor(positions, device=device)[:, None])
    # per sequence, this step's slot in every layer, and every layer's keys so far
    slot_k = [s.cache.k[:, :, p] for s, p in zip(seqs, positions, strict=False)]
    slot_v = [s.cache.v[:, :, p] for s, p in zip(seqs, positions, strict=False)]
    seen_k = [s.cache.k[:, None, :, :p + 1] for s, p in zip(seqs, positions, strict=False)]
    seen_v = [s.cache.v[:, None, :, :p + 1] for s, p in zip(seqs, positions, strict=False)]
    for i, layer in enumerate(base.layers):
        attn = layer.self_attn
        q, k, v = _project(attn, _norm(layer.input_layernorm, h), rows, 1, cos, sin)
        torch._foreach_copy_([x[i] for x in slot_k] + [x[i] for x in slot_v],
                             list(k[:n, :, 0]) + list(v[:n, :, 0]))
        outs = [F.scaled_dot_product_attention(q[j:j + 1], seen_k[j][i], seen_v[j][i],
                                               scale=attn.scaling, enable_gqa=True)
                for j in range(n)]
        outs += outs[:1] * (rows - n)
        o = torch.cat(outs).transpose(1, 2).reshape(rows, 1, -1)
        h = _mlp(layer, h + attn.o_proj(o))
    for s in seqs:
        s.cache.length += 1
    return model.lm_head(_norm(base.norm, h[:n, 0]))


def _norm(module, x: torch.Tensor) -> torch.Tensor:
    """Llama's RMSNorm as one fused op (bitwise the module's own result, checked in tests)."""
    return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)


def decode_flops(model, rows: int, context: int = 0) -> float:
    """Multiply-adds x 2 of one decode step at ``rows`` sequences (linear layers, attention
    over ``context`` cached tokens): the work a FLOP bound is measured against."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    c = model.config
    attention = 4 * c.num_hidden_layers * c.hidden_size * context
    return 2.0 * rows * linear + rows * attention
