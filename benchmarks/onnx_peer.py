"""ONNX Runtime as ``bench_kernel``'s inference peer, set up the way a user who wants fast CPU
inference would: the same weights exported with ``torch.onnx.export`` (dynamic batch and
length), every graph optimisation on, as many intra-op threads as torch, and for int8
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized per batch,
as the kernel's ``quantize="int8"``). It tokenizes with the same tokenizer and runs the same
length-sorted batches, padded to each batch's longest row, as the kernel does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llmos_lab import inference
from llmos_lab.kernel import runtimes


def export(model, tokenizer, folder: Path, quantize: str | None = None) -> Path:
    """The plain graph a user exports (no first-token shortcut), with the kernel's own export
    code: the TorchScript exporter, which onnxruntime runs fastest (side by side on MiniLM: 322
    texts/s vs 281 for the dynamo exporter's graph, 293 / 279 after onnxruntime's BERT fusion
    optimizer, which only slowed it)."""
    return runtimes.export(model, tokenizer, folder, quantize, first_token_only=False)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def labels(
    sess, tokenizer, texts: Sequence[str], id2label: dict, *, batch_size: int, max_length: int
) -> list:
    """Argmax labels in input order, tokenization included (as in ``kernel.infer``)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    logits = np.zeros((len(ids), len(id2label)), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    for idx in inference.length_batches(ids, batch_size):
        batch = inference.collate([ids[i] for i in idx], pad, torch.device("cpu"))
        logits[idx] = sess.run(None, {k: v.numpy() for k, v in batch.items()})[0]
    return [id2label[int(i)] for i in logits.argmax(axis=1)]


def version() -> str:
    import onnxruntime

    return onnxruntime.__version__
