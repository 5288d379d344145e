"""ModelKernel: models as processes, device memory as RAM, host memory and disk as swap.

The kernel keeps a process table of loaded models. Each model's bytes are measured (parameters,
buffers, packed int8 weights; on CUDA also the allocator's delta), and the resident set stays
within ``memory_budget``: a load or fault-in that does not fit evicts the least recently used
unpinned, idle model, device -> host (CUDA) -> disk. Like an OS, the kernel drops *clean* models
(every weight still equals its source files) without writing anything, and writes *dirty* ones
(new classification heads, GGUF dequantised weights, adapters) once, as safetensors, to a swap
folder. Using an evicted model faults it back in transparently.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import assets, events, inference, loading
from ..constraints import Interval, Options, Real, check, table
from ..devices import resolve_device
from ..errors import AdapterError, ConfigError, ModelStateError, TaskError
from ..model_task import ModelTask
from ..units import format_bytes, parse_bytes
from . import adapters, ensemble, runtimes, scoring
from .decode import DecodeBatch
from .residency import Residency, release_memory
from .swap import ModelRecord, SwapSpace

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# what each option accepts: checked by constraints.check, shown by ModelKernel.help()
PARAMETERS = {
    "precision": (Options(*PRECISIONS),),
    "quantize": (None, Options("int8")),
    "runtime": (Options(*runtimes.RUNTIMES),),
    "to": (None, Options("host", "disk")),
    "temperature": (Interval(Real, 0, None),),
}


class ModelKernel(Residency):
    """Which models are resident where, within a measured memory budget.

    ``precision="auto"`` picks bf16 autocast on CUDA and on CPUs with native bf16
    (avx512_bf16 / AMX), fp32 elsewhere.
    """

    def __init__(self, device: str = "auto", memory_budget: int | str = "2GiB",
                 host_budget: int | str | None = None, precision: str = "auto",
                 swap_dir: str | os.PathLike | None = None):
        self.device = resolve_device(device)
        self.memory_budget = parse_bytes(memory_budget, "memory_budget")
        if self.memory_budget <= 0:
            raise ConfigError("memory_budget", memory_budget, "more than 0 bytes")
        self.host_budget = None if host_budget is None else parse_bytes(host_budget,
                                                                        "host_budget")
        precision = check("precision", precision, PARAMETERS["precision"])
        if precision == "auto":
            fast = self.device.type == "cuda" or inference.cpu_has_fast_bf16()
            precision = "bf16" if fast else "fp32"
        self.precision = precision
        self.swap = SwapSpace(Path(swap_dir) if swap_dir else assets.cache_dir() / "swap")
        self._models: dict[str, ModelRecord] = {}
        self.ensembles: dict[str, ensemble.Ensemble] = {}
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)  # notified when a call finishes
        self._clock = itertools.count(1)

    @staticmethod
    def help() -> pd.DataFrame:
        """What each option accepts (the declaration the checks use)."""
        return table(PARAMETERS)

    # ------------------------------------------------------------------ process table

    def load(self, name_or_path: str | os.PathLike, name: str | None = None, *,
             task: str | None = None, num_labels: int | None = None,
             labels: Sequence[str] | None = None, dtype: str | torch.dtype | None = None,
             quantize: str | None = None, pin: bool = False, runtime: str = "torch"
             ) -> ModelHandle:
        """Load a model (shipped name, local folder, GGUF file, hub id) under ``name``;
        ``runtime="onnxruntime"`` runs a sequence classifier's forward in ONNX Runtime."""
        name = name or Path(os.fspath(name_or_path)).name
        check("quantize", quantize, PARAMETERS["quantize"])
        check("runtime", runtime, PARAMETERS["runtime"])
        if (quantize or runtime != "torch") and self.device.type != "cpu":
            raise ConfigError("quantize" if quantize else "runtime", quantize or runtime,
                              "None / 'torch' on a GPU (dynamic int8 and onnxruntime run on "
                              "the CPU here)")
        with self._lock:
            if name in self._models:
                raise ModelStateError(f"a model named {name!r} is already loaded (loaded: "
                                      f"{', '.join(self._models)}); unload it first or pass "
                                      f"another name=")
        source = loading.Source.resolve(name_or_path)
        config = loading.read_config(source)
        task = loading.infer_task(name, config, source, task)
        head = loading.head_kwargs(task, config, num_labels, labels)
        dt = loading.parse_dtype(dtype)
        if runtime != "torch" and (task is not ModelTask.SEQUENCE_CLASSIFICATION or dt):
            raise ConfigError("runtime", runtime, f"'torch' for model {name!r}: onnxruntime "
                              f"runs sequence classifiers in their own dtype (this is a "
                              f"{task}{f' in {dt}' if dt else ''})")
        estimate = loading.estimate_bytes(config, task, head, dt)
        with self._lock:
            self._make_room(estimate, name)
            started = time.perf_counter()
            with loading.source_errors(f"model {name!r} from {source.folder!r}"):
                model, tokenizer, image = loading.load(source, task, head, dt)
            rec = ModelRecord(name, source, task, head, dt, quantize, model, tokenizer,
                              _labels(model, task), image=image, runtime=runtime,
                              max_positions=getattr(config, "max_position_embeddings", None))
            if runtime != "torch":
                rec.model = runtimes.session_model(rec, self.swap, model)
            elif quantize:
                if rec.image is None:  # keep a float copy: int8 is rebuilt from it
                    self.swap.write_base(rec)
                rec.model = loading.quantize_int8(model)
            self._place(rec)
            rec.load_seconds = time.perf_counter() - started
            rec.pinned = pin
            self._models[name] = rec
            self._touch(rec)
            self._make_room(0, name)
        events.publish("kernel.load", kernel=self, model=name, bytes=rec.total_bytes,
                       seconds=rec.load_seconds)
        return ModelHandle(self, name)

    def unload(self, name: str) -> None:
        with self._lock:
            if self.ensembles.pop(name, None) is not None:
                return
            rec = self._get(name)
            self._wait_idle(rec, "unload")
            with rec.lock:
                del self._models[name]
                rec.model = None
                self.swap.drop(rec)
        release_memory()
        events.publish("kernel.unload", kernel=self, model=name)

    def pin(self, name: str) -> None:
        """Keep a model resident: it is faulted in now and never evicted until unpinned."""
        with self._use(name) as rec:
            rec.pinned = True
        events.publish("kernel.pin", kernel=self, model=name, pinned=True)

    def unpin(self, name: str) -> None:
        with self._lock:
            self._get(name).pinned = False
        events.publish("kernel.pin", kernel=self, model=name, pinned=False)

    def evict(self, name: str, to: str | None = None) -> None:
        """Move a model out of device memory: ``to="host"`` (GPU only) or ``"disk"``."""
        check("to", to, PARAMETERS["to"])
        if to == "host" and self.device.type == "cpu":
            raise ConfigError("to", to, "'disk': on the CPU, host memory is device memory")
        with self._lock:
            rec = self._get(name)
            if rec.pinned:
                raise ModelStateError(f"model {name!r} is pinned; unpin it before evicting")
            self._wait_idle(rec, "evict")
            self._evict(rec, to)

    def ps(self) -> pd.DataFrame:
        """The process table: one row per model."""
        with self._lock:
            rows = [{
                "name": r.name, "kind": str(r.task), "state": r.state,
                "device": str(self.device) if r.state == "resident" else
                ("cpu" if r.state == "host" else "disk"),
                "bytes": r.bytes, "adapter_bytes": sum(r.adapters.values()),
                "cuda_bytes": r.cuda_bytes, "pinned": r.pinned, "adapters": list(r.adapters),
                "quantize": r.quantize, "runtime": r.runtime,
                "last_used": pd.Timestamp(r.last_used, unit="s"),
                "hits": r.hits, "faults": r.faults, "load_seconds": r.load_seconds,
            } for r in self._models.values()]
        columns = ["name", "kind", "state", "device", "bytes", "adapter_bytes", "cuda_bytes",
                   "pinned", "adapters", "quantize", "runtime", "last_used", "hits", "faults",
                   "load_seconds"]
        return pd.DataFrame(rows, columns=columns)

    def record(self, name: str) -> ModelRecord:
        """The process-table entry of ``name``: its model and tokenizer objects, state, bytes,
        adapters. For inspection (tests, benchmarks, saving what the kernel holds); running a
        model goes through ``infer``/``generate``, which fault it in and keep it accounted.
        An evicted model's ``model`` is None until it is used."""
        with self._lock:
            return self._get(name)

    def memory(self) -> dict[str, Any]:
        """Device bytes used against the budget, host and disk use, process RSS."""
        import psutil

        with self._lock:
            used = self._used("resident")
            out = {"budget": self.memory_budget, "used": used, "free": self.memory_budget - used,
                   "host": self._used("host"),
                   "on_disk": sum(r.state == "disk" for r in self._models.values()),
                   "models": len(self._models),
                   "rss": psutil.Process().memory_info().rss}
        if self.device.type == "cuda":
            out["cuda_allocated"] = torch.cuda.memory_allocated(self.device)
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __repr__(self) -> str:
        m = self.memory()
        return (f"ModelKernel(device={self.device}, {len(self._models)} models, "
                f"{format_bytes(m['used'])} / {format_bytes(self.memory_budget)})")

    # ------------------------------------------------------------------ system calls

    def infer(self, model: str, texts: Sequence[str] | str, batch_size: int | None = None, *,
              adapter: str | None = None, max_length: int = 128,
              column: str | None = None) -> pd.DataFrame:
        """Classify texts (label, score, per-class probabilities) or tag their words, in input
        order. Token-classification models split each text on whitespace into words. A
        string is one text; a DataFrame needs ``column=`` naming its text column."""
        texts = inference.as_texts(texts, column=column)
        batch_size = inference.positive_int("batch_size", batch_size, default=64)
        if model in self.ensembles:
            if adapter is not None:
                raise ConfigError("adapter", adapter, f"None for ensemble {model!r} (its "
                                  f"members name their adapters)")
            return self.ensembles[model].infer(self, texts, batch_size=batch_size,
                                               max_length=max_length)
        with self._lock:
            rec = self._get(model)
            task = rec.task
            inference.check_max_length(max_length, rec.tokenizer, rec.max_positions, model)
        if task is ModelTask.CAUSAL_LM:
            raise TaskError(f"model {model!r} is a causal-lm: use generate(), not infer()")
        started = time.perf_counter()
        with self._use(model) as rec, rec.lock, self._adapter(rec, adapter):
            kw = dict(max_length=max_length, batch_size=batch_size, device=self.device,
                      precision=self._precision(rec))
            if task is ModelTask.SEQUENCE_CLASSIFICATION:
                probs = inference.class_probabilities(rec.model, rec.tokenizer, texts, **kw)
                out = inference.probabilities_frame(probs, rec.labels)
            else:
                words = [t.split() for t in texts]
                tags = inference.word_tags(rec.model, rec.tokenizer, words, **kw)
                out = pd.DataFrame({"tokens": words, "tags": tags})
        events.publish("kernel.infer", kernel=self, model=model, adapter=adapter, n=len(texts),
                       seconds=time.perf_counter() - started)
        return out

    def generate(self, model: str, prompts: Sequence[str] | str, max_new_tokens: int = 32,
                 temperature: float = 0.0, *, batch_size: int | None = None,
                 adapter: str | None = None, seed: int = 0) -> pd.DataFrame:
        """Batched generation (greedy when temperature is 0): prompt, completion, new_tokens."""
        prompts = inference.as_texts(prompts, "prompts")
        max_new_tokens = inference.positive_int("max_new_tokens", max_new_tokens)
        batch_size = inference.positive_int("batch_size", batch_size, default=16)
        temperature = check("temperature", temperature, PARAMETERS["temperature"])
        with self._lock:
            task = self._get(model).task
        if task is not ModelTask.CAUSAL_LM:
            raise TaskError(f"model {model!r} is a {task} model and cannot generate; "
                            f"load a causal-lm (e.g. 'smollm2') for generate()")
        started = time.perf_counter()
        with self._use(model) as rec, rec.lock, self._adapter(rec, adapter):
            out = inference.generate_texts(
                rec.model, rec.tokenizer, prompts, max_new_tokens=max_new_tokens,
                temperature=float(temperature), batch_size=batch_size,
                device=self.device, precision=self._precision(rec), seed=seed)
        events.publish("kernel.generate", kernel=self, model=model, n=len(prompts),
                       seconds=time.perf_counter() - started)
        return out

    def loglikelihood(self, model: str, contexts: Sequence[str] | str,
                      continuations: Sequence[str], *, prefix: str = "",
                      batch_size: int | None = None) -> np.ndarray:
        """Summed log-probability a causal LM gives each continuation after ``prefix +
        context``: an array (contexts, continuations). The prefix runs once and its cache is
        shared (see scoring.py); the basis of zero- and few-shot classification."""
        contexts = inference.as_texts(contexts, "contexts")
        continuations = inference.as_texts(continuations, "continuations")
        batch_size = inference.positive_int("batch_size", batch_size, default=16)
        with self._lock:
            task = self._get(model).task
        if task is not ModelTask.CAUSAL_LM:
            raise TaskError(f"model {model!r} is a {task} model; scoring continuations needs "
                            f"a causal-lm (e.g. 'smollm2')")
        with self._use(model) as rec, rec.lock, self._adapter(rec, None), \
                inference.autocast(self.device, self._precision(rec)):
            return scoring.loglikelihood(rec.model, rec.tokenizer, prefix, contexts,
                                         continuations, batch_size=batch_size,
                                         device=self.device)

    def ensemble(self, name: str, members: Sequence[str], how: str = "mean"
                 ) -> ModelHandle:
        """Register ``name`` as an ensemble of loaded classifiers or adapters of one base
        (``"base:adapter"``) that ``infer`` answers by averaging probabilities (``mean``) or
        counting labels (``vote``); see ensemble.py."""
        with self._lock:
            if name in self._models or name in self.ensembles:
                raise ConfigError("name", name, "a name not yet loaded or ensembled")
            self.ensembles[name] = ensemble.build(self, name, members, how)
        return ModelHandle(self, name)

    def decoder(self, model: str, max_batch: int = 16) -> DecodeBatch:
        """A continuous decode batch over a loaded causal LM: sequences join at the next
        token step and leave when done (the serving engine's mechanism; see decode.py)."""
        max_batch = inference.positive_int("max_batch", max_batch)
        with self._lock:
            task = self._get(model).task
        if task is not ModelTask.CAUSAL_LM:
            raise TaskError(f"model {model!r} is a {task} model and cannot generate; "
                            f"load a causal-lm (e.g. 'smollm2') for decoding")
        return DecodeBatch(self, model, max_batch)

    def add_adapter(self, model: str, adapter_name: str,
                    path_or_config: str | os.PathLike | Any | None = None) -> None:
        """Attach a PEFT adapter to a loaded base: a saved adapter folder, a PEFT config, a
        dict of LoRA options, or None for a fresh LoRA (r=8) with PEFT's default targets."""
        if not isinstance(adapter_name, str) or not adapter_name:
            raise ConfigError("adapter_name", adapter_name, "a non-empty string")
        with self._use(model) as rec, rec.lock:
            if rec.quantize or rec.runtime != "torch":
                what = "int8-quantized" if rec.quantize else f"run by {rec.runtime}"
                raise AdapterError(f"model {model!r} is {what} and cannot take an adapter; "
                                   f"load it without quantize= / runtime= to add adapters")
            if adapter_name in rec.adapters:
                raise AdapterError(f"model {model!r} already has an adapter {adapter_name!r}")
            if rec.image is None:  # the base must stay rebuildable without its adapters
                self.swap.write_base(rec)
            adapters.attach(rec, adapter_name, adapters.normalise(path_or_config, rec, model))
            rec.model.to(self.device).eval()
            rec.model._llmos_adapter_layers = None  # new adapter layers: find them again
            rec.adapters[adapter_name] = adapters.adapter_bytes(rec.model, adapter_name)
            rec.adapter_image = None  # adapters changed: the swap copy is stale
        with self._lock:
            self._make_room(0, model)
        events.publish("kernel.adapter", kernel=self, model=model, adapter=adapter_name,
                       bytes=rec.adapters[adapter_name])

    def _precision(self, rec: ModelRecord) -> str:
        """int8 models keep float32 between their int8 layers, as ONNX Runtime does: bf16
        autocast would only round what the layers quantize again."""
        return "fp32" if rec.quantize or rec.runtime != "torch" else self.precision

    # ------------------------------------------------------------------ residency

    @contextlib.contextmanager
    def _adapter(self, rec: ModelRecord, adapter: str | None):
        if adapter is None:
            disable = getattr(rec.model, "disable_adapter", None) if rec.adapters else None
            with disable() if disable else contextlib.nullcontext():
                yield
            return
        if adapter not in rec.adapters:
            raise AdapterError(f"model {rec.name!r} has no adapter {adapter!r}; its adapters: "
                               f"{', '.join(rec.adapters) or '(none)'}")
        adapters.switch(rec.model, adapter)
        yield


class ModelHandle:
    """What ``load`` returns: the model's name plus shortcuts to the kernel's calls."""

    def __init__(self, kernel: ModelKernel, name: str):
        self.kernel, self.name = kernel, name

    def infer(self, texts, **kw) -> pd.DataFrame:
        return self.kernel.infer(self.name, texts, **kw)

    def generate(self, prompts, **kw) -> pd.DataFrame:
        return self.kernel.generate(self.name, prompts, **kw)

    def add_adapter(self, adapter_name: str, path_or_config=None) -> None:
        self.kernel.add_adapter(self.name, adapter_name, path_or_config)

    def __repr__(self) -> str:
        group = self.kernel.ensembles.get(self.name)
        if group is not None:
            return (f"<ensemble {self.name!r}: {group.how} of "
                    f"{', '.join(map(str, group.members))}>")
        row = self.kernel.ps().set_index("name").loc[self.name]
        return f"<model {self.name!r}: {row['kind']}, {row['state']}, {format_bytes(row['bytes'])}>"


def _labels(model: torch.nn.Module, task: str) -> list[str]:
    if task is ModelTask.CAUSAL_LM:
        return []
    return [model.config.id2label[i] for i in range(model.config.num_labels)]
