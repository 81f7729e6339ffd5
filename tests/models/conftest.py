"""Model tests run fovea's own kernels (fovea.nn); nothing is swapped in."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread; two threads on a loaded 2-core box spin for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
