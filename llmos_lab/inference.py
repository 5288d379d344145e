"""Batched forward passes shared by the trainer and the model kernel.

Inputs are tokenized once, sorted by length and padded only to each batch's longest row; results
go back to input order. Everything runs under ``torch.inference_mode`` and, when asked, bf16
autocast (on CPUs with avx512_bf16 / AMX this is 1.5-2x faster than fp32).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import packed
from .constraints import COUNT, check
from .errors import ColumnError, ColumnTypeError, ConfigError


def as_texts(data: object, what: str = "texts", column: str | None = None) -> list[str]:
    """One string is one text; a DataFrame gives the column named by ``column``; otherwise
    a sequence of strings. Anything else is an error, never a guess (a DataFrame iterated
    would give its column names, a string its characters)."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, pd.DataFrame):
        if column is None:
            raise ConfigError(what, "a DataFrame", f"a string, a list of strings, or a "
                              f"DataFrame with column= naming its text column (its columns: "
                              f"{', '.join(map(str, data.columns))})")
        if column not in data.columns:
            raise ColumnError(column, "text", data.columns)
        data = data[column]
    if data is None or isinstance(data, (bytes, dict)) or not isinstance(data, Iterable):
        raise ColumnTypeError(f"{what} must be a string or a sequence of strings, got "
                              f"{type(data).__name__}")
    return check_texts(list(data), what)


def positive_int(name: str, value: object, default: int | None = None) -> int:
    """An integer >= 1 (``None`` takes ``default`` when there is one)."""
    if value is None and default is not None:
        return default
    return check(name, value, (COUNT, None) if default else (COUNT,))


def prompt_ids(tokenizer, prompt: str | None = None,
               messages: Sequence[dict] | None = None) -> list[int]:
    """Token ids of a prompt, without a trailing end-of-text (a prompt is not finished), or of
    chat ``messages`` through the tokenizer's chat template (a plain ``role: content``
    transcript for a model that has none). The server and the agents' Generate share it."""
    if messages is not None:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                 tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt or "")["input_ids"]
    return ids[:-1] if len(ids) > 1 and ids[-1] == tokenizer.eos_token_id else ids


def check_max_length(max_length: object, tokenizer, limit: int | None, model: str) -> int:
    """Room for the special tokens plus one, and no more than the model's positions: a
    longer input would fail deep inside torch, a shorter limit turns truncation off."""
    max_length = positive_int("max_length", max_length)
    floor = tokenizer.num_special_tokens_to_add() + 1
    if max_length < floor:
        raise ConfigError("max_length", max_length, f"at least {floor} for model {model!r} "
                          f"({floor - 1} special tokens and one of text)")
    if isinstance(limit, int) and max_length > limit:
        raise ConfigError("max_length", max_length, f"at most {limit}, the number of positions "
                          f"of model {model!r}")
    return max_length


def check_texts(texts: Sequence[object], what: str = "texts") -> list[str]:
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ColumnTypeError(f"{what} must be strings; items {bad[:5]} are not "
                              f"(e.g. {texts[bad[0]]!r} of type {type(texts[bad[0]]).__name__})")
    return texts


def collate(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device,
            left: bool = False) -> dict[str, torch.Tensor]:
    """Pad a batch of token-id lists to its own longest row (left-padded for generation)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, span] = torch.as_tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matrix multiplies run natively on this CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, precision: str):
    """A context for the chosen precision: ``fp32`` (none), ``bf16`` or ``fp16`` autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Indices of ``ids`` sorted by length, cut into batches (little padding in each)."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def class_probabilities(model, tokenizer, texts: Sequence[str], *, max_length: int,
                        batch_size: int, device: torch.device, precision: str = "fp32"
                        ) -> np.ndarray:
    """Softmax over a sequence classifier's classes, one row per text in input order."""
    n_labels = model.config.num_labels
    if not texts:
        return np.zeros((0, n_labels), dtype=np.float32)
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    probs = np.zeros((len(ids), n_labels), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    fast = packed.classifier(model)
    with autocast(device, precision):
        for idx in length_batches(ids, batch_size):
            rows = [ids[i] for i in idx]
            logits = packed.logits(fast, rows) if fast is not None else \
                model(**collate(rows, pad, device)).logits
            probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return probs


def probabilities_frame(probs: np.ndarray, labels: Sequence[object]) -> pd.DataFrame:
    """label, score and one ``p_<label>`` column per class."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    out = pd.DataFrame({"label": [labels[i] for i in best],
                        "score": probs[np.arange(len(probs)), best]})
    for i, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, i]
    return out


@torch.inference_mode()
def word_tags(model, tokenizer, words: Sequence[Sequence[str]], *, max_length: int,
              batch_size: int, device: torch.device, precision: str = "fp32"
              ) -> list[list[str]]:
    """Word-level tags from a token classifier: each word takes its first sub-token's tag.

    Words cut off by ``max_length`` get "O", so every output has one tag per input word.
    """
    id2label = model.config.id2label
    if not words:
        return []
    enc = tokenizer([list(w) for w in words], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    ids = enc["input_ids"]
    out: list[list[str]] = [["O"] * len(w) for w in words]
    pad = tokenizer.pad_token_id or 0
    with autocast(device, precision):
        for idx in length_batches(ids, batch_size):
            logits = model(**collate([ids[i] for i in idx], pad, device)).logits
            pred = logits.argmax(-1).cpu().numpy()
            for row, i in enumerate(idx):
                seen = set()
                for pos, word in enumerate(enc.word_ids(int(i))):
                    if word is not None and word not in seen:
                        seen.add(word)
                        out[i][word] = id2label[int(pred[row, pos])]
    return out


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                   temperature: float, batch_size: int, device: torch.device,
                   precision: str = "fp32", seed: int = 0) -> pd.DataFrame:
    """Batched generation, left-padded, greedy when ``temperature == 0``."""
    rows = [None] * len(prompts)
    if not prompts:
        return pd.DataFrame(columns=["prompt", "completion", "new_tokens"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    ids = [row[:-1] if len(row) > 1 and row[-1] == eos else row  # a prompt is not finished
           for row in tokenizer(list(prompts))["input_ids"]]
    sample = temperature > 0
    generator_kwargs = {"do_sample": sample, "max_new_tokens": max_new_tokens,
                        "pad_token_id": pad}
    if sample:
        generator_kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        torch.manual_seed(seed)
    else:  # greedy: make sure no sampling knob from generation_config leaks in
        generator_kwargs.update(temperature=None, top_k=None, top_p=None)
    with autocast(device, precision):
        for idx in length_batches(ids, batch_size):
            batch = collate([ids[i] for i in idx], pad, device, left=True)
            out = model.generate(**batch, **generator_kwargs)
            new = out[:, batch["input_ids"].shape[1]:].cpu()
            for row, i in enumerate(idx):
                tokens = new[row]
                stop = (tokens == eos).nonzero() if eos is not None else []
                n = int(stop[0]) if len(stop) else len(tokens)
                rows[i] = (prompts[i], tokenizer.decode(tokens[:n], skip_special_tokens=True), n)
    return pd.DataFrame(rows, columns=["prompt", "completion", "new_tokens"])
