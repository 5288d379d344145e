"""benchmarks/bench_kernel.py and `llmos-lab bench`: each benchmark prints one JSON line with
its figures, its peer's figures and its configuration. Speed targets are never asserted here:
only that the lines are well formed and the measurements are real (positive, in range)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_lab import cli

ROOT = Path(__file__).resolve().parents[1]

COMMON = {"benchmark", "ratio", "ratio_of", "threads", "torch", "transformers", "quick",
          "seconds", "others_cpu_share"}
PEERS = ("pipeline_default", "pipeline_b32")
ORT = {"fp32": ("onnxruntime_fp32_b32", "onnxruntime_fp32_b64"),
       "int8": ("onnxruntime_int8_b32", "onnxruntime_int8_b64")}


def _infer_keys(ort: tuple[str, ...], runtime: bool = True) -> set[str]:
    names = ("kernel", *(("kernel_onnxruntime",) if runtime else ()), *PEERS, *ort)
    return ({f"{n}_texts_per_s" for n in names} | {f"{n}_fraction_of_matmul" for n in names}
            | {f"agreement_{n}" for n in names[1:]}
            | ({"ratio_runtime_onnxruntime"} if runtime else set())
            | {"n", "kernel_batch_size", "max_length", "precision", "best_peer", "matmul_tflops",
               "onnxruntime"})


FP32_REF = {"kernel_agreement_with_fp32", "best_peer_agreement_with_fp32"}
EXPECTED = {
    "infer_fp32": _infer_keys(ORT["fp32"]),
    "infer_bf16": _infer_keys(ORT["fp32"], runtime=False) | FP32_REF,
    "infer_int8": _infer_keys(ORT["int8"]) | FP32_REF,
    "adapter_switch": {"kernel_s_per_switch", "peer_s_per_switch", "kernel_resident_bytes",
                       "kernel_adapter_bytes", "model_bytes", "resident_ratio", "agreement",
                       "adapters", "switches", "batch_size"},
    "fault_in": {"minilm_disk_fault_in_s", "minilm_warm_infer_s", "peer_minilm_load_s",
                 "minilm_host_fault_in_s", "host_fault_in_reason", "smollm2_first_load_s",
                 "smollm2_disk_fault_in_s", "reps"},
    "int8_quality": {"int8_bytes", "fp32_bytes", "bytes_saved", "int8_latency_ms_per_text",
                     "fp32_latency_ms_per_text", "int8_accuracy", "fp32_accuracy",
                     "accuracy_change", "agreement_with_fp32", "n", "train_rows"},
}


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_kernel",
                                                  ROOT / "benchmarks" / "bench_kernel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_kernel"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_lines(tmp_path_factory) -> dict[str, dict]:
    """The whole quick suite, once, through the command (which streams the module's lines)."""
    cwd = tmp_path_factory.mktemp("bench")  # the command must not depend on the cwd
    # one thread: two OpenMP threads on a busy 2-core machine can run 5x slower (spin-waits)
    proc = subprocess.run([sys.executable, "-m", "llmos_lab", "bench", "kernel", "--quick",
                           "--threads", "1"],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON
    return {line["benchmark"]: line for line in lines}


@pytest.mark.slow
def test_quick_suite_prints_one_line_per_benchmark(quick_lines):
    assert list(quick_lines) == list(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_line_has_its_figures_and_config(quick_lines, name):
    line = quick_lines[name]
    assert "error" not in line, line.get("error")
    assert COMMON | EXPECTED[name] <= set(line), sorted(COMMON | EXPECTED[name] - set(line))
    assert line["quick"] is True
    assert line["threads"] == 1  # passed through the command
    assert math.isfinite(line["ratio"]) and line["ratio"] > 0
    for key, value in line.items():
        if key.startswith(("agreement", "kernel_agreement", "pipeline_agreement")):
            assert 0 <= value <= 1, (key, value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["infer_fp32", "infer_bf16", "infer_int8"])
def test_inference_throughputs_are_positive_and_the_ratio_is_to_the_best_peer(quick_lines,
                                                                              name):
    line = quick_lines[name]
    rates = {k.removesuffix("_texts_per_s"): v for k, v in line.items()
             if k.endswith("_texts_per_s")}
    assert all(v > 0 for v in rates.values()) and len(rates) == (5 if "bf16" in name else 6)
    assert all(line[f"{k}_fraction_of_matmul"] > 0 for k in rates)
    peers = [k for k in rates if not k.startswith("kernel")
             and not (name == "infer_bf16" and "onnx" in k)]
    assert line["best_peer"] == max(peers, key=rates.get)  # onnxruntime has no CPU bf16
    assert line["ratio"] == pytest.approx(rates["kernel"] / rates[line["best_peer"]], rel=1e-2)
    assert line["n"] == 64


@pytest.mark.slow
def test_onnxruntime_computes_the_kernels_labels_in_fp32(quick_lines):
    """The same weights exported: a peer that computed something else would not be a peer."""
    line = quick_lines["infer_fp32"]
    assert line["agreement_onnxruntime_fp32_b32"] >= 0.95
    assert line["agreement_kernel_onnxruntime"] >= 0.95  # the kernel's own onnxruntime runtime
    assert line["agreement_pipeline_b32"] >= 0.95


@pytest.mark.slow
def test_adapter_switch_measures_both_sides(quick_lines):
    line = quick_lines["adapter_switch"]
    assert line["kernel_s_per_switch"] > 0 and line["peer_s_per_switch"] > 0
    assert line["kernel_adapter_bytes"] > 0
    assert line["kernel_resident_bytes"] == line["kernel_base_bytes"] + \
        line["kernel_adapter_bytes"]
    assert line["agreement"] == 1.0  # the peer's merged models compute the same function


@pytest.mark.slow
def test_fault_in_reports_host_as_not_applicable_on_cpu(quick_lines):
    line = quick_lines["fault_in"]
    assert line["minilm_host_fault_in_s"] is None and "host" in line["host_fault_in_reason"]
    assert line["minilm_warm_infer_s"] > 0 and len(line["minilm_faults_s"]) == line["reps"]


@pytest.mark.slow
def test_int8_quality_saves_bytes(quick_lines):
    line = quick_lines["int8_quality"]
    assert 0 < line["int8_bytes"] < line["fp32_bytes"]
    assert line["bytes_saved"] == line["fp32_bytes"] - line["int8_bytes"]
    assert line["int8_latency_ms_per_text"] > 0 and line["fp32_latency_ms_per_text"] > 0
    assert 0 <= line["int8_accuracy"] <= 1 and 0 <= line["fp32_accuracy"] <= 1


def test_unknown_benchmark_name_lists_the_known_ones(capsys):
    assert cli.main(["bench", "no-such-bench"]) == 2
    err = capsys.readouterr().err
    assert "no-such-bench" in err and "kernel" in err


def test_bench_module_rejects_an_unknown_only_name(capsys):
    module = _bench_module()
    with pytest.raises(SystemExit) as info:
        module.main(["--quick", "--only", "nope"])
    assert info.value.code == 2
    assert "infer_fp32" in capsys.readouterr().err


def test_private_home_is_removed_and_the_old_value_restored(monkeypatch):
    module = _bench_module()
    monkeypatch.setenv("LLMOS_LAB_HOME", "/somewhere/else")
    with module.private_home() as home:
        assert Path(home).is_dir()
        assert os.environ["LLMOS_LAB_HOME"] == str(home)
    assert not Path(home).exists()
    assert os.environ["LLMOS_LAB_HOME"] == "/somewhere/else"
