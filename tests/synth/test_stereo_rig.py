"""The stereo renderer against OpenCV: detected corners, triangulation with the true rig."""

import cv2
import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.synth.chessboard import BoardSpec
from fovea.synth.stereo_rig import TrueRig, render_stereo_calibration_pairs, save_stereo_renders


@pytest.fixture(scope="module")
def pairs():
    return render_stereo_calibration_pairs(2, seed=5)


def test_corners_are_where_the_truth_says_in_both_images(pairs):
    for images, truths in ((pairs.left_images, pairs.true_corners_left_px),
                           (pairs.right_images, pairs.true_corners_right_px)):
        for img, truth in zip(images, truths):
            gray = img[..., 0]
            ok, c = cv2.findChessboardCorners(gray, (9, 6))
            assert ok
            c = cv2.cornerSubPix(gray, np.asarray(c, np.float32).reshape(-1, 1, 2), (5, 5), (-1, -1),
                                 (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)).reshape(-1, 2)
            err = min(np.linalg.norm(c - truth, axis=1).mean(), np.linalg.norm(c[::-1] - truth, axis=1).mean())
            assert err < 0.25


def test_true_corners_triangulate_to_the_board_with_opencv(pairs):
    """X_r = R X_l + T: OpenCV triangulation of the true (undistorted) corners gives the board back."""
    rig = pairs.rig
    P1 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P2 = np.hstack([rig.R, rig.T.reshape(3, 1)])
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
    obj = pairs.board.object_points().astype(np.float64)
    for R, t, a, b in zip(pairs.rotations, pairs.translations, pairs.true_corners_left_px,
                          pairs.true_corners_right_px):
        na = cv2.undistortPoints(a.reshape(-1, 1, 2), rig.left.K, rig.left.dist, criteria=crit).reshape(-1, 2)
        nb = cv2.undistortPoints(b.reshape(-1, 1, 2), rig.right.K, rig.right.dist, criteria=crit).reshape(-1, 2)
        X = cv2.triangulatePoints(P1, P2, na.T, nb.T)
        X = (X[:3] / X[3]).T
        assert np.abs(X - (obj @ R.T + t)).max() < 1e-3  # mm


def test_deterministic_files_and_impossible_rigs(pairs, tmp_path):
    again = render_stereo_calibration_pairs(2, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(pairs.right_images, again.right_images))
    out = save_stereo_renders(pairs, tmp_path)
    assert sorted(p.name for p in (out / "left").iterdir()) == ["pair_000.png", "pair_001.png"]
    assert sorted(p.name for p in (out / "right").iterdir()) == ["pair_000.png", "pair_001.png"]
    assert (out / "truth.json").is_file()
    far = TrueRig.default()
    far.T = np.array([-2000.0, 0.0, 0.0])  # 2 m apart: no board pose is seen whole by both cameras
    with pytest.raises(ConfigError, match=r"both cameras .*baseline 2000 mm.*Fix"):
        render_stereo_calibration_pairs(1, seed=0, rig=far, board=BoardSpec())
