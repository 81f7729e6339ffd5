"""Model tests: use fovea.nn's scan kernels, or the slow reference until they exist."""

import pytest
import torch

import _models_reference as _reference


@pytest.fixture(autouse=True, scope="session")
def scan_kernels():
    """Returns "fovea" when fovea.nn's kernels are used, "reference" otherwise."""
    from fovea.nn import ss2d

    try:
        ss2d._kernels()
        yield "fovea"
    except ImportError:
        ss2d._IMPL.update(
            selective_scan=lambda *a, backend="auto", **k: _reference.selective_scan_loop(*a, **k),
            cross_scan=_reference.cross_scan_ref,
            cross_merge=_reference.cross_merge_ref,
        )
        yield "reference"
        ss2d._IMPL.clear()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread; two threads on a loaded 2-core box spin for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
