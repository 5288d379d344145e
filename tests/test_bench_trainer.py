"""benchmarks/bench_trainer.py through `llmos-lab bench trainer --quick`: well-formed lines with
real measurements. Speeds are never asserted here (they live in the benchmark's own lines)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

COMMON = {"benchmark", "ratio", "ratio_of", "threads", "torch", "transformers", "quick",
          "seconds", "others_cpu_share", "model", "train_rows", "max_length", "batch_size",
          "precision", "max_grad_norm"}
RUNS = ("ours", "hf_default", "hf_grouped")


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "llmos_lab", "bench", "trainer", "--quick",
                           "--threads", "1"], cwd=tmp_path_factory.mktemp("bench"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    return {line["benchmark"]: line for line in out}


@pytest.mark.slow
def test_every_benchmark_prints_one_line_with_its_figures(lines):
    assert sorted(lines) == ["bf16", "lora_vs_full", "speed"]
    for line in lines.values():
        assert set(line) >= COMMON, COMMON - set(line)
        assert line["quick"] is True and "error" not in line
    for name in ("speed", "bf16"):
        line = lines[name]
        for run in RUNS:
            assert line[f"{run}_samples_per_s"] > 0
            assert 0 <= line[f"{run}_accuracy"] <= 1
            assert line[f"{run}_fraction_of_matmul"] > 0
        best = max(line["hf_default_samples_per_s"], line["hf_grouped_samples_per_s"])
        assert line["ratio"] == pytest.approx(line["ours_samples_per_s"] / best, rel=1e-2)
    lora = lines["lora_vs_full"]
    assert 0 < lora["lora_trainable_parameters"] < 0.1 * lora["full_trainable_parameters"]
    assert lora["full_peak_rss_mib"] > 0 and lora["lora_peak_rss_mib"] > 0


def test_model_flops_count_six_per_parameter_per_token_plus_attention(tiny_model):
    from transformers import AutoModelForSequenceClassification

    from benchmarks.bench_trainer import matmul_rate, model_flops

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    c = model.config
    dense = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    attention = 12 * c.num_hidden_layers * c.hidden_size
    assert model_flops(model, [10]) == 6 * dense * 10 + attention * 100
    assert model_flops(model, [10, 5]) == model_flops(model, [10]) + model_flops(model, [5])
    assert matmul_rate(64, torch.float32, repeats=2) > 1e6
