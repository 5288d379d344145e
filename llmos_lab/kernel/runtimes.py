"""Where a sequence classifier's forward runs: torch (the default) or ONNX Runtime.

``kernel.load(..., runtime="onnxruntime")`` exports the loaded model once to an ONNX graph in
the swap folder (its last layer computing ``[CLS]`` alone, as ``packed.first_token_only``
makes it; with ``quantize="int8"``, ONNX Runtime's dynamic int8 of that graph) and runs it in a
session. The session sits behind the module API the kernel and ``inference`` use, so residency
is unchanged: eviction drops the session (the graph stays on disk), a fault-in opens it again,
and its bytes are the graph's weights. Chosen by the figures: on a 2-core Xeon ONNX Runtime's
int8 ran MiniLM 1.14x faster than torch's dynamic int8, while in fp32 the kernel's own packed
path is faster than ONNX Runtime (``llmos-lab bench kernel``).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import packed

RUNTIMES = ("torch", "onnxruntime")


class OnnxClassifier(torch.nn.Module):
    """An ONNX Runtime session with a sequence classifier's call signature:
    ``model(input_ids=, attention_mask=).logits``; ``config`` is the source model's."""

    def __init__(self, graph: Path, config, threads: int) -> None:
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), options,
                                            providers=["CPUExecutionProvider"])
        self.config = config  # labels and sizes, read by inference as a torch model's
        self.graph = graph
        # what the session holds: the graph's weights (its file is almost nothing else)
        self.runtime_bytes = graph.stat().st_size
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_):
        logits = self.session.run(None, {"input_ids": input_ids.cpu().numpy(),
                                         "attention_mask": attention_mask.cpu().numpy()})[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))


def graph_name(quantize: str | None) -> str:
    return "model.int8.onnx" if quantize == "int8" else "model.onnx"


def session_model(rec, swap, model: torch.nn.Module | None = None) -> OnnxClassifier:
    """The record's model in an ONNX Runtime session: exported from ``model`` into the swap
    folder the first time, opened from that graph (and its saved config) after."""
    from transformers import AutoConfig

    if rec.runtime_image is None:
        rec.runtime_image = swap.write(
            lambda folder: export(model, rec.tokenizer, folder, rec.quantize), f"{rec.name}-onnx")
    config = model.config if model is not None else AutoConfig.from_pretrained(
        rec.runtime_image)
    return OnnxClassifier(rec.runtime_image / graph_name(rec.quantize), config,
                          torch.get_num_threads())


def export(model: torch.nn.Module, tokenizer, folder: str | Path, quantize: str | None,
           first_token_only: bool = True) -> Path:
    """Write ``model.onnx`` (and ``model.int8.onnx``) into ``folder`` and return the one to
    run: a copy of ``model`` (with the first-token-only last layer unless told otherwise),
    dynamic batch and length. The TorchScript exporter is used: ONNX Runtime ran its graph 15%
    faster than the dynamo exporter's."""
    folder = Path(folder)
    twin = copy.deepcopy(model).eval()
    if first_token_only:
        packed.first_token_only(twin)
    enc = tokenizer(["an example", "a somewhat longer example"], padding=True,
                    return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "logits": {0: "batch"}}
    path = folder / "model.onnx"
    twin.config.save_pretrained(folder)  # labels and sizes, for a fault-in without weights
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (enc["input_ids"], enc["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level, _ = root.level, root.setLevel(logging.ERROR)  # its "pre-process first" advice
        try:
            quantize_dynamic(str(path), str(folder / graph_name("int8")),
                             weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
    return folder / graph_name(quantize)
