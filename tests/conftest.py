"""Shared fixtures: a private cache folder, the tiny model, small real data frames."""

from __future__ import annotations

import os
import tempfile

import matplotlib
import pytest

matplotlib.use("Agg")

# Built models and evicted weights go to a throwaway folder, never the user's cache.
os.environ.setdefault("LLMOS_LAB_HOME", tempfile.mkdtemp(prefix="llmos-lab-tests-"))


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from llmos_lab import assets

    return str(assets.tiny_model_path())


@pytest.fixture(scope="session")
def tweets():
    from llmos_lab import datasets

    return datasets.load("tweets-sentiment")
