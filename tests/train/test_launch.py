"""Data-parallel training through Accelerate: two CPU processes (gloo) stand in for two GPUs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import llmos_lab as lab
from llmos_lab.errors import ConfigError
from tests.train.test_trainer import keyword_frame, tiny_config


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model, tmp_path_factory):
    """tiny-bert without dropout, so one process and two must take the very same steps."""
    folder = tmp_path_factory.mktemp("nodrop")
    config = AutoConfig.from_pretrained(tiny_model)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    AutoModelForSequenceClassification.from_pretrained(tiny_model, config=config) \
        .save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


@pytest.mark.timeout(300)
def test_two_processes_take_the_same_steps_as_one(no_dropout_model, tmp_path):
    train = keyword_frame(96, 0)  # six batches of 16: eight examples per process and step
    cfg = tiny_config(model=no_dropout_model, max_steps=6, micro_batch_size=4)
    out = lab.distributed.launch(cfg, train, num_processes=2, output_dir=tmp_path / "run")
    history = pd.read_csv(out / "history.csv")
    assert list(history["step"]) == [1, 2, 3, 4, 5, 6]
    two = AutoModelForSequenceClassification.from_pretrained(out)
    one = lab.Trainer(cfg).fit(train, progress=False)
    for (name, a), (_, b) in zip(one.model_.named_parameters(), two.named_parameters(),
                                 strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    pd.testing.assert_series_equal(history["loss"], one.history_["loss"], rtol=1e-4)


def test_launch_checks_the_process_count(tmp_path):
    with pytest.raises(ConfigError, match="num_processes"):
        lab.distributed.launch(tiny_config(), keyword_frame(8, 0), num_processes=0,
                               output_dir=tmp_path)
