"""Shared fixtures: paths to ../shared data (skipped cleanly when absent), RNG seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; skips the test when it is absent (a user's fresh clone)."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present (only in the project's CI and developer machines)")
    return data


@pytest.fixture(autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
    yield
