"""The bad-input corpus: every case a probe of the public API and the CLI found, and more.

Each case calls the public API (or the ``llmos-lab`` command) with one bad input and asserts
the typed error, the culprit named in the message, and that nothing under the case's folder
was deleted, overwritten or left half-written. Cases are cheap: the tiny models, tiny frames.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab import errors as E
from tests.train.test_trainer import keyword_frame

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    call: Callable[[Context], Any]
    error: type[BaseException]
    match: str  # a regex the message must contain: the culprit


@dataclass
class Context:
    root: Path
    trainer: Any
    kernel: Any

    def notebook(self, name: str = "nb.ipynb", params: str = "n = 1\nrate = 0.5") -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, nbformat.v4.new_code_cell("import llmos_lab as lab\n"
                                                    "lab.record('n', n)")]
        path = self.root / name
        nbformat.write(nb, path)
        return path

    def file(self, name: str, content: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_lab", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def cli_error(*args: str) -> Callable[[Context], Any]:
    """A CLI call that must print one error line (no traceback) and exit 2."""
    def call(ctx: Context) -> None:
        argv = [a.replace("{root}", str(ctx.root)) for a in args]
        if "{nb}" in " ".join(args):
            nb = ctx.notebook()
            argv = [a.replace("{nb}", str(nb)) for a in argv]
        proc = cli(*argv, cwd=ctx.root)
        if proc.returncode == 2 and "Traceback" not in proc.stderr:
            raise E.LlmosError(proc.stderr.strip())
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    return call


def frame(**columns: Any) -> pd.DataFrame:
    return pd.DataFrame(columns)


def train(df: pd.DataFrame, **cfg: Any) -> Callable[[Context], Any]:
    base = dict(model="tiny-bert", max_steps=1, device="cpu")
    return lambda ctx: lab.Trainer(lab.TrainConfig(**{**base, **cfg})).steps(df)


def ner_frame(tags: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame({"tokens": [["w"] * len(t) for t in tags], "tags": tags})


def tiny_trace(**changes: Any) -> pd.DataFrame:
    df = pd.DataFrame({"id": ["a", "b"], "arrival": [0.0, 0.0], "steps": [2, 3]})
    for column, values in changes.items():
        df[column] = values
    return df


def adapter_folder(ctx: Context, config: bytes | None, weights: bytes | None) -> Path:
    folder = ctx.folder("adapter")
    if config is not None:
        ctx.file("adapter/adapter_config.json", config)
    if weights is not None:
        ctx.file("adapter/adapter_model.safetensors", weights)
    return folder


def read_only(ctx: Context) -> Path:
    folder = ctx.folder("locked")
    if os.geteuid() != 0:
        folder.chmod(0o500)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    return folder


CASES: dict[str, Case] = {
    # ----------------------------------------------------------------- datasets
    "datasets.load a list": Case(lambda c: lab.datasets.load(["tweets-sentiment"]),
                                 E.ConfigError, r"name=\['tweets-sentiment'\]"),
    "datasets.load None": Case(lambda c: lab.datasets.load(None), E.ConfigError, "name=None"),
    "datasets.load unknown": Case(lambda c: lab.datasets.load("tweets"), E.UnknownNameError,
                                  "'tweets'.*tweets-sentiment"),
    "datasets.load misspelt": Case(lambda c: lab.datasets.load("wnut-16"), E.UnknownNameError,
                                   "did you mean 'wnut16'"),
    "datasets.load seed -1": Case(lambda c: lab.datasets.load("wnut16", seed=-1),
                                  E.ConfigError, "seed=-1"),
    "datasets.load fractions": Case(lambda c: lab.datasets.load("wnut16", fractions=(0.5, 0.4)),
                                    E.DataError, "fractions"),
    "datasets.load fraction text": Case(
        lambda c: lab.datasets.load("wnut16", fractions=("a", 0.5, 0.5)), E.DataError,
        "fractions"),
    "read_conll missing tag": Case(
        lambda c: lab.datasets.read_conll(c.file("bad.conll", b"EU B-ORG\nrejects\n")),
        E.DataError, r"bad\.conll.*2"),
    # ----------------------------------------------------------------- trainer config
    "TrainConfig misspelt": Case(lambda c: lab.TrainConfig(epoch=2), E.UnknownArgumentError,
                                 "'epoch'.*did you mean 'epochs'"),
    "TrainConfig.from_dict misspelt": Case(lambda c: lab.TrainConfig.from_dict({"lr_": 1e-3}),
                                           E.ConfigError, "lr_.*did you mean 'lr'"),
    "TrainConfig lr negative": Case(lambda c: lab.TrainConfig(lr=-1), E.ConfigError, "lr=-1"),
    "TrainConfig method": Case(lambda c: lab.TrainConfig(method="prefix"), E.ConfigError,
                               "method='prefix'"),
    "TrainConfig keep 0": Case(lambda c: lab.TrainConfig(keep_checkpoints=0), E.ConfigError,
                               "keep_checkpoints=0"),
    "max_length 1": Case(train(keyword_frame(8, 0), max_length=1), E.ConfigError,
                         r"max_length=1.*at least 3"),
    "max_length over the model": Case(train(keyword_frame(8, 0), max_length=100_000),
                                      E.ConfigError, r"max_length=100000.*at most 512"),
    "model an empty folder": Case(lambda c: train(keyword_frame(8, 0), model=str(
        c.folder("empty")))(c), E.ModelSourceError, r"empty.*no config\.json"),
    "model a random file": Case(lambda c: train(keyword_frame(8, 0), model=str(
        c.file("weights.bin", os.urandom(64))))(c), E.ModelSourceError, r"weights\.bin"),
    "model a garbage config": Case(lambda c: (c.file("m/config.json", b"{not json"),
                                              train(keyword_frame(8, 0), model=str(
                                                  c.root / "m"))(c)),
                                   E.ModelSourceError, "m"),
    "model None": Case(train(keyword_frame(8, 0), model=None), E.ConfigError, "model=None"),
    # ----------------------------------------------------------------- training data
    "labels NaN": Case(train(frame(text=["a", "b", "c"], label=["x", np.nan, np.nan])),
                       E.DataError, r"missing labels.*rows \[1, 2\]"),
    "labels None": Case(train(frame(text=["a", "b"], label=["x", None])), E.DataError,
                        r"missing labels.*\[1\]"),
    "labels 1 and '1'": Case(train(frame(text=["a", "b", "c"], label=[1, "1", 2])),
                             E.DataError, r"1 \(int\) and '1' \(str\)"),
    "one class": Case(train(frame(text=["a", "b"], label=["pos", "pos"])), E.DataError,
                      "one class only.*'pos'"),
    "texts not strings": Case(train(frame(text=["a", 3], label=["x", "y"])),
                              E.ColumnTypeError, r"rows \[1\]"),
    "no label column": Case(train(frame(text=["a", "b"], y=["x", "z"])), E.ColumnError,
                            "'label'"),
    "train data a list": Case(train(["a", "b"]), E.ColumnTypeError, "DataFrame"),
    "empty training set": Case(train(frame(text=[], label=[])), E.EmptyDataError, "training"),
    "NER tags not IOB2": Case(train(ner_frame([["B-PER", "X-PER"], ["O", "O"]]),
                                    task="token-classification"),
                              E.DataError, r"row 0.*'X-PER'.*IOB2"),
    "NER tags miscounted": Case(train(pd.DataFrame({"tokens": [["a", "b"]],
                                                    "tags": [["O"]]}),
                                      task="token-classification"),
                                E.DataError, "2 tokens but 1 tags"),
    "NER tokens a string": Case(train(pd.DataFrame({"tokens": ["a b"], "tags": [["O", "O"]]}),
                                      task="token-classification"),
                                E.ColumnTypeError, "list of strings"),
    "evaluate unseen label": Case(lambda c: c.trainer.evaluate(frame(text=["a"], label=["meh"])),
                                  E.UnseenLabelError, "'meh'"),
    "predict None": Case(lambda c: c.trainer.predict(None), E.ColumnTypeError, "NoneType"),
    "predict numbers": Case(lambda c: c.trainer.predict(["ok", 7]), E.ColumnTypeError,
                            r"items \[1\]"),
    "resume a data folder": Case(lambda c: lab.Trainer.resume(
        c.file("d/train.csv", b"text,label\n").parent, keyword_frame(8, 0)),
        E.CheckpointError, "not a checkpoint folder"),
    "resume nothing": Case(lambda c: lab.Trainer.resume(c.root / "nope", keyword_frame(8, 0)),
                           E.CheckpointError, "does not exist"),
    "save_adapter of a full fine-tune": Case(lambda c: c.trainer.save_adapter(c.root / "a"),
                                             E.ConfigError, "method='full'"),
    "save into a file": Case(lambda c: c.trainer.save(c.file("model.txt", b"mine")),
                             E.OutputError, r"model\.txt.*is a file"),
    "save into someone's folder": Case(
        lambda c: c.trainer.save(c.file("results/notes.txt", b"mine").parent),
        E.OutputError, r"notes\.txt"),
    "checkpoint_dir with data": Case(
        lambda c: train(keyword_frame(8, 0), checkpoint_every=1, checkpoint_dir=str(
            c.file("data/train.csv", b"text,label\n").parent))(c),
        E.OutputError, r"train\.csv"),
    # ----------------------------------------------------------------- kernel
    "ModelKernel budget 1e400": Case(lambda c: lab.ModelKernel(memory_budget="1e400"),
                                     E.ConfigError, "memory_budget='1e400'"),
    "ModelKernel budget 0": Case(lambda c: lab.ModelKernel(memory_budget=0), E.ConfigError,
                                 "memory_budget"),
    "ModelKernel precision": Case(lambda c: lab.ModelKernel(precision="int4"), E.ConfigError,
                                  "precision='int4'"),
    "kernel.load an empty folder": Case(lambda c: c.kernel.load(str(c.folder("empty"))),
                                        E.ModelSourceError, "no config.json"),
    "kernel.load a random file": Case(lambda c: c.kernel.load(str(c.file("x.bin", b"\0" * 9))),
                                      E.ModelSourceError, r"x\.bin"),
    "kernel.load garbage config": Case(
        lambda c: c.kernel.load(str(c.file("m/config.json", b"[1, 2").parent)),
        E.ModelSourceError, "config"),
    "kernel.load unknown": Case(lambda c: c.kernel.load("minilmm"), E.UnknownNameError,
                                "did you mean 'minilm'"),
    "kernel.load labels a string": Case(
        lambda c: c.kernel.load("tiny-bert", name="s2", task="sequence-classification",
                                labels="abc"), E.ConfigError, "labels='abc'"),
    "kernel.load labels empty": Case(
        lambda c: c.kernel.load("tiny-bert", name="s2", task="sequence-classification",
                                labels=[]), E.ConfigError, r"labels=\[\]"),
    "infer None": Case(lambda c: c.kernel.infer("sent", None), E.ColumnTypeError, "NoneType"),
    "infer a DataFrame": Case(lambda c: c.kernel.infer("sent", frame(text=["a"], x=[1])),
                              E.ConfigError, "column="),
    "infer a DataFrame, wrong column": Case(
        lambda c: c.kernel.infer("sent", frame(text=["a"]), column="txt"), E.ColumnError,
        "'txt'"),
    "infer batch_size -1": Case(lambda c: c.kernel.infer("sent", ["a"], batch_size=-1),
                                E.ConfigError, "batch_size=-1"),
    "infer batch_size 0": Case(lambda c: c.kernel.infer("sent", ["a"], batch_size=0),
                               E.ConfigError, "batch_size=0"),
    "infer max_length 0": Case(lambda c: c.kernel.infer("sent", ["a"], max_length=0),
                               E.ConfigError, "max_length=0"),
    "infer max_length over the model": Case(
        lambda c: c.kernel.infer("sent", ["a " * 100_000], max_length=20_002), E.ConfigError,
        r"max_length=20002.*at most 512"),
    "infer unknown model": Case(lambda c: c.kernel.infer("snet", ["a"]), E.UnknownNameError,
                                "did you mean 'sent'"),
    "infer unknown adapter": Case(lambda c: c.kernel.infer("sent", ["a"], adapter="z"),
                                  E.AdapterError, "'z'"),
    "generate None": Case(lambda c: c.kernel.generate("lm", None), E.ColumnTypeError,
                          "NoneType"),
    "generate temperature NaN": Case(lambda c: c.kernel.generate("lm", "hi",
                                                                 temperature=math.nan),
                                     E.ConfigError, "temperature=nan"),
    "generate max_new_tokens 0": Case(lambda c: c.kernel.generate("lm", "hi", max_new_tokens=0),
                                      E.ConfigError, "max_new_tokens=0"),
    "generate on an encoder": Case(lambda c: c.kernel.generate("sent", "hi"), E.TaskError,
                                   "'sent'"),
    "evict unknown to": Case(lambda c: c.kernel.evict("sent", to="swap"), E.ConfigError,
                             "to='swap'"),
    "add_adapter misspelt option": Case(lambda c: c.kernel.add_adapter("sent", "a",
                                                                       {"rank": 8}),
                                        E.AdapterError, "'rank'.*did you mean 'r'"),
    "add_adapter unknown option": Case(lambda c: c.kernel.add_adapter("sent", "a",
                                                                      {"lora_alpah": 8}),
                                       E.UnknownArgumentError, "did you mean 'lora_alpha'"),
    "add_adapter garbage config": Case(
        lambda c: c.kernel.add_adapter("sent", "a", adapter_folder(c, b"{oops", b"")),
        E.AdapterError, r"adapter_config\.json"),
    "add_adapter no weights": Case(
        lambda c: c.kernel.add_adapter("sent", "a", adapter_folder(
            c, b'{"peft_type": "LORA", "r": 8, "target_modules": ["query"]}', None)),
        E.AdapterError, "no adapter weights"),
    "add_adapter random weights": Case(
        lambda c: c.kernel.add_adapter("sent", "a", adapter_folder(
            c, b'{"peft_type": "LORA", "r": 8, "target_modules": ["query"]}',
            os.urandom(256))), E.AdapterError, "cannot be read"),
    # ----------------------------------------------------------------- allocator
    "allocate a list of Resources": Case(
        lambda c: lab.allocate("drf", lab.Resources(memory="1GiB", compute=1),
                               [lab.Resources(memory=1)]), E.ConfigError, "no task id"),
    "allocate None": Case(lambda c: lab.allocate("drf", {"compute": 1}, None), E.ConfigError,
                          "demands=None"),
    "allocate dict without id": Case(lambda c: lab.allocate("drf", {"compute": 1},
                                                            [{"want": {"compute": 1}}]),
                                     E.ConfigError, "'id' key"),
    "allocate misspelt demand key": Case(
        lambda c: lab.allocate("drf", {"compute": 1}, [{"id": "a", "wnat": {}}]),
        E.ConfigError, "did you mean 'want'"),
    "allocate misspelt resource": Case(
        lambda c: lab.allocate("drf", {"compute": 1}, {"a": {"memroy": 1}}), E.ConfigError,
        "did you mean 'memory'"),
    "allocate unknown policy": Case(lambda c: lab.allocate("drff", {"compute": 1}, {}),
                                    E.UnknownNameError, "did you mean 'drf'"),
    "allocate duplicate ids": Case(lambda c: lab.allocate("drf", {"compute": 1},
                                                          [{"id": "a"}, {"id": "a"}]),
                                   E.ConfigError, "'a'"),
    "Resources 1e400": Case(lambda c: lab.Resources(memory="1e400"), E.ConfigError,
                            "memory='1e400'"),
    "Resources compute -1": Case(lambda c: lab.Resources(compute=-1), E.ConfigError,
                                 "compute=-1"),
    "Resources memory text": Case(lambda c: lab.Resources(memory="lots"), E.ConfigError,
                                  "memory='lots'"),
    "Allocator.set misspelt": Case(lambda c: lab.Allocator({"compute": 1}).set("a", prio=3),
                                   E.UnknownArgumentError, "did you mean 'priority'"),
    "Allocator.set unknown task": Case(lambda c: lab.Allocator({"compute": 1}).set(
        "a", priority=3), E.UnknownNameError, "'a'"),
    # ----------------------------------------------------------------- scheduler
    "Task id None": Case(lambda c: lab.Task(None, iter(())), E.ConfigError, "id=None"),
    "Task steps a number": Case(lambda c: lab.Task("t", 5), E.ConfigError, "t.steps=5"),
    "Task weight 0": Case(lambda c: lab.Task("t", iter(()), weight=0), E.ConfigError,
                          "t.weight=0"),
    "Scheduler quantum 0": Case(lambda c: lab.Scheduler(policy="rr", quantum=0),
                                E.ConfigError, "quantum=0"),
    "Scheduler unknown policy": Case(lambda c: lab.Scheduler(policy="lottery"),
                                     E.UnknownNameError, "'lottery'"),
    "submit not a Task": Case(lambda c: lab.Scheduler().submit(lambda: None), E.ConfigError,
                              "task="),
    "inference_task batch_size 0": Case(lambda c: lab.tasks.inference_task(
        c.kernel, "sent", ["a", "b"], batch_size=0), E.ConfigError, "batch_size=0"),
    "inference_task texts None": Case(lambda c: lab.tasks.inference_task(c.kernel, "sent",
                                                                         None),
                                      E.ColumnTypeError, "NoneType"),
    "evaluation_task batch_size -2": Case(lambda c: lab.tasks.evaluation_task(
        c.trainer, keyword_frame(8, 0), batch_size=-2), E.ConfigError, "batch_size=-2"),
    "set_priority unknown task": Case(lambda c: lab.Scheduler().set_priority("t", 2),
                                      E.UnknownNameError, "'t'"),
    # ----------------------------------------------------------------- simulation
    "simulate quantum 0": Case(lambda c: lab.simulate(tiny_trace(), "rr", quantum=0),
                               E.ConfigError, "quantum=0"),
    "simulate quantum -1": Case(lambda c: lab.simulate(tiny_trace(), "rr", quantum=-1),
                                E.ConfigError, "quantum=-1"),
    "simulate quantum '2'": Case(lambda c: lab.simulate(tiny_trace(), "rr", quantum="2"),
                                 E.ConfigError, "quantum='2'"),
    "simulate compute 0": Case(lambda c: lab.simulate(tiny_trace(), "drf", compute=0),
                               E.ConfigError, "compute=0"),
    "simulate policy None": Case(lambda c: lab.simulate(tiny_trace(), None), E.ConfigError,
                                 "policy=None"),
    "simulate steps 1.5": Case(lambda c: lab.simulate(tiny_trace(steps=[2, 1.5]), "rr"),
                               E.DataError, r"row 1 \(id 'b'\), column 'steps': 1\.5"),
    "simulate steps 0.4": Case(lambda c: lab.simulate(tiny_trace(steps=[0.4, 2]), "rr"),
                               E.DataError, r"row 0 \(id 'a'\), column 'steps': 0\.4"),
    "simulate row 1 named": Case(lambda c: lab.simulate(tiny_trace(arrival=[0, -1]), "rr"),
                                 E.DataError, r"row 1 \(id 'b'\), column 'arrival'"),
    "simulate not a DataFrame": Case(lambda c: lab.simulate([{"arrival": 0}], "rr"),
                                     E.DataError, "DataFrame"),
    "simulate memory over capacity": Case(
        lambda c: lab.simulate(tiny_trace(memory=["1GiB", "3GiB"]), "fifo", memory="2GiB"),
        E.DataError, "'b'.*exceeds"),
    # ----------------------------------------------------------------- pipelines
    "run a garbage notebook": Case(lambda c: lab.pipelines.run(
        c.file("g.ipynb", b"\x00not json"), {}, c.root / "out"), E.NotebookError, r"g\.ipynb"),
    "run an empty notebook": Case(lambda c: lab.pipelines.run(c.file("e.ipynb", b""), {},
                                                              c.root / "out"),
                                  E.NotebookError, r"e\.ipynb"),
    "run a JSON list notebook": Case(lambda c: lab.pipelines.run(c.file("l.ipynb", b"[]"), {},
                                                                 c.root / "out"),
                                     E.NotebookError, r"l\.ipynb"),
    "run params a list": Case(lambda c: lab.pipelines.run(c.notebook(), [("n", 2)],
                                                          c.root / "out"),
                              E.ParameterError, "params must be a dict"),
    "run output folder a file": Case(lambda c: lab.pipelines.run(
        c.notebook(), {}, c.file("out", b"a file")), E.OutputError, "out' is a file"),
    "run output folder read-only": Case(lambda c: lab.pipelines.run(c.notebook(), {},
                                                                    read_only(c)),
                                        E.OutputError, "locked"),
    "run float for int": Case(lambda c: lab.pipelines.run(c.notebook(), {"n": 3.7},
                                                          c.root / "out"),
                              E.ParameterError, "'n' is declared int; 3.7"),
    "run str for float": Case(lambda c: lab.pipelines.run(c.notebook(), {"rate": "fast"},
                                                          c.root / "out"),
                              E.ParameterError, "'rate' is declared float"),
    "run timeout -1": Case(lambda c: lab.pipelines.run(c.notebook(), {}, c.root / "out",
                                                       timeout=-1),
                           E.ParameterError, "timeout.*-1"),
    "run notebook None": Case(lambda c: lab.pipelines.run(None), E.ParameterError,
                              "NoneType"),
    "run over its source": Case(lambda c: lab.pipelines.run(c.notebook(), {}, c.root),
                                E.OutputError, "replace its source"),
    "run output_name outside": Case(lambda c: lab.pipelines.run(
        c.notebook(), {}, c.root / "out", output_name="../x.ipynb"), E.ParameterError,
        "output_name"),
    "record a list": Case(lambda c: lab.record("values", [1, 2]), E.ParameterError, "list"),
    # ----------------------------------------------------------------- widgets
    "AllocationView None": Case(lambda c: _widget("AllocationView")(None),
                                E.ArgumentTypeError, "allocator=None"),
    "KernelMonitor 42": Case(lambda c: _widget("KernelMonitor")(42), E.ArgumentTypeError,
                             "kernel=42"),
    "KernelMonitor history 0": Case(lambda c: _widget("KernelMonitor")(c.kernel, history=0),
                                    E.ConfigError, "history=0"),
    "TrainingDashboard None": Case(lambda c: _widget("TrainingDashboard")(None),
                                   E.ArgumentTypeError, "trainer=None"),
    "ReportView None": Case(lambda c: _widget("ReportView")(None), E.ArgumentTypeError,
                            "report=None"),
    "SchedulerView a number": Case(lambda c: _widget("SchedulerView")(1), E.ArgumentTypeError,
                                   "source=1"),
    # ----------------------------------------------------------------- CLI
    "cli run a garbage notebook": Case(cli_error("run", "{root}/g.ipynb"), E.LlmosError,
                                       r"g\.ipynb"),
    "cli run undeclared parameter": Case(cli_error("run", "{nb}", "-p", "epochs", "3"),
                                         E.LlmosError, "'epochs'"),
    "cli run bad value": Case(cli_error("run", "{nb}", "-p", "n", "many"), E.LlmosError,
                              "'n' is declared int"),
    "cli run over its source": Case(cli_error("run", "{nb}", "-o", "{root}"), E.LlmosError,
                                    "replace its source"),
    "cli run timeout 0": Case(cli_error("run", "{nb}", "--timeout", "0"), E.LlmosError,
                              "timeout"),
    "cli bench unknown": Case(cli_error("bench", "trainr"), E.LlmosError,
                              "did you mean 'trainer'"),
    "cli assets unknown": Case(cli_error("assets", "check", "minilmm"), E.LlmosError,
                               "'minilmm'"),
}


def _widget(name: str):
    import llmos_lab.widgets as w

    return getattr(w, name)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def shared(tiny_model, tmp_path_factory):
    trainer = lab.Trainer(lab.TrainConfig(model="tiny-bert", max_steps=2, device="cpu")).fit(
        keyword_frame(32, 0), progress=False)
    kernel = lab.ModelKernel(device="cpu", memory_budget="256MiB",
                             swap_dir=tmp_path_factory.mktemp("swap"))
    kernel.load("tiny-bert", name="sent", task="sequence-classification",
                labels=["neg", "pos"])
    kernel.load("tiny-llama", name="lm")
    return trainer, kernel


def test_the_corpus_is_large():
    assert len(CASES) >= 100


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_named_and_loses_nothing(name, shared, tmp_path):
    case = CASES[name]
    ctx = Context(tmp_path / "case", *shared)
    ctx.root.mkdir()
    try:
        with pytest.raises(case.error, match=case.match) as info:
            # files the case itself sets up are part of "before": capture after set-up by
            # snapshotting inside the call's own folder once it has raised
            case.call(ctx)
        assert isinstance(info.value, E.LlmosError), type(info.value).__mro__
        after = snapshot(ctx.root)
        leftovers = [p for p in after if ".tmp-" in p or ".partial" in p]
        assert not leftovers, leftovers
        for path, content in after.items():  # what the case wrote is still intact
            if path.endswith(("notes.txt", "train.csv", "model.txt")):
                assert content in (b"mine", b"text,label\n"), path
        out = ctx.root / "out"
        assert not out.is_dir() or not any(out.iterdir())  # no executed notebook written
    finally:
        subprocess.run(["chattr", "-R", "-i", str(ctx.root)], capture_output=True)


def test_predict_takes_a_string_as_one_text(shared):
    trainer, kernel = shared
    assert len(trainer.predict("hello world")) == 1
    assert len(kernel.infer("sent", "hello world")) == 1
    df = pd.DataFrame({"text": ["a b", "c"], "other": [1, 2]})
    assert len(kernel.infer("sent", df, column="text")) == 2
    assert len(trainer.predict(df)) == 2


def test_a_refused_submit_changes_nothing():
    alloc = lab.Allocator(lab.Resources(memory="1GiB", compute=1.0))
    sched = lab.Scheduler(policy="fifo", allocator=alloc)
    with pytest.raises(E.ConfigError, match="minimum"):
        sched.submit(lab.Task("t", iter(range(2)), demand={"memory": "1GiB"},
                              minimum={"memory": "2GiB"}))
    assert "t" not in alloc.demands and sched.timeline().empty
    sched.submit(lab.Task("t", iter(range(2)), demand={"memory": "1GiB"}))  # the retry
    sched.run()
    assert sched.metrics().set_index("task").loc["t", "steps"] == 2


def test_allocate_accepts_a_mapping_of_task_to_demand():
    cap = lab.Resources(memory="2GiB", compute=1.0)
    grants = lab.allocate("drf", cap, {"a": lab.Resources(memory="1GiB", compute=1.0),
                                       "b": {"memory": "1GiB", "compute": 1.0}}).grants
    assert grants["a"].compute == pytest.approx(0.5) and grants["b"].memory == 2**29
