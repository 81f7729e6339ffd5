import pytest

from fovea.synth.chessboard import render_calibration_views


@pytest.fixture(scope="session")
def calib_renders():
    """20 rendered 640x480 views of a 9x6 board (25 mm) with known camera (about 4 s)."""
    return render_calibration_views(20, seed=0)
