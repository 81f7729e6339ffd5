import pytest

from fovea.synth.chessboard import render_calibration_views


@pytest.fixture(scope="session")
def calib_renders():
    """20 rendered 640x480 views of a 9x6 board (25 mm) with known camera (about 4 s)."""
    return render_calibration_views(20, seed=0)


@pytest.fixture(scope="session")
def stereo_renders():
    """12 rendered pairs of a 9x6 board (25 mm) seen by a known rig (80 mm baseline; about 6 s)."""
    from fovea.synth.stereo_rig import render_stereo_calibration_pairs

    return render_stereo_calibration_pairs(12, seed=0)
