"""The lens model (`fovea.geometry.lens`) against OpenCV's independent implementation."""

import cv2
import numpy as np
import pytest

from fovea.geometry.lens import pixels_to_normalized, project_points, rotation_matrix, undistort_normalized

# a strongly distorted lens with tangential terms (all five coefficients exercised); zero skew, as
# OpenCV's projectPoints/undistortPoints ignore K[0, 1]
K = np.array([[700.0, 0.0, 330.0], [0, 690.0, 250.0], [0, 0, 1]])
DIST = np.array([-0.31, 0.12, 0.0015, -0.0011, -0.02])


def test_projection_matches_cv2_projectpoints_with_pose():
    rng = np.random.default_rng(1)
    pts = rng.uniform([-200, -150, 400], [200, 150, 900], (300, 3))
    rvec, tvec = np.array([0.1, -0.2, 0.05]), np.array([5.0, -3.0, 20.0])
    R, _ = cv2.Rodrigues(rvec)
    ours = project_points(pts @ R.T + tvec, K, DIST)
    ref, _ = cv2.projectPoints(pts, rvec, tvec, K, DIST)
    assert np.abs(ours - ref.reshape(-1, 2)).max() < 1e-8


def test_unprojection_matches_cv2_undistortpoints():
    rng = np.random.default_rng(2)
    uv = rng.uniform([20, 20], [620, 460], (200, 2))
    ours = pixels_to_normalized(uv, K, DIST)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    ref = cv2.undistortPoints(uv.reshape(-1, 1, 2), K, DIST, criteria=crit).reshape(-1, 2)
    assert np.abs(ours - ref).max() < 1e-7
    # and ours is an exact inverse of the forward model (to ~1e-12 in normalised units)
    again = project_points(np.c_[ours, np.ones(len(ours))], K, DIST)
    assert np.abs(again - uv).max() < 1e-8


def test_undistort_without_distortion_is_identity():
    xy = np.random.default_rng(3).uniform(-0.5, 0.5, (10, 2))
    assert np.array_equal(undistort_normalized(xy, np.zeros(5)), xy)


@pytest.mark.parametrize("angles", [(0.3, 0.0, 0.0), (0.0, -0.4, 0.0), (0.0, 0.0, 1.1), (0.2, -0.1, 0.4)])
def test_rotation_matrix_is_rz_ry_rx(angles):
    rx, ry, rz = angles
    ref = (cv2.Rodrigues(np.array([0, 0, rz]))[0] @ cv2.Rodrigues(np.array([0, ry, 0]))[0]
           @ cv2.Rodrigues(np.array([rx, 0, 0]))[0])
    assert np.allclose(rotation_matrix(rx, ry, rz), ref, atol=1e-12)
