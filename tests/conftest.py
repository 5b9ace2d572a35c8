"""Shared test set-up: offline hubs, a quiet matplotlib backend, real face photos available offline."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """skimage's astronaut photo (512x512 RGB, one real face)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(astronaut_rgb).save(path)
    return path


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """matplotlib's grace_hopper.jpg (a real portrait photo)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
