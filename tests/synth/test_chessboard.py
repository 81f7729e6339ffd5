"""The renderer's geometry is checked against OpenCV's own projection, not against itself."""

import cv2
import numpy as np

from fovea.synth.chessboard import BoardSpec, TrueCamera, render_calibration_views
from fovea.geometry.lens import distort_normalized, pixels_to_normalized, project_points


def test_lens_matches_opencv_projectpoints_and_inverts():
    cam = TrueCamera.default()
    rng = np.random.default_rng(0)
    pts = rng.uniform([-250, -180, 300], [250, 180, 800], (200, 3))
    ours = project_points(pts, cam.K, cam.dist)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), cam.K, cam.dist)
    assert np.abs(ours - ref.reshape(-1, 2)).max() < 1e-9
    # inverse: unproject the projected pixels and compare with the true normalised coordinates
    back = pixels_to_normalized(ours, cam.K, cam.dist)
    assert np.abs(back - pts[:, :2] / pts[:, 2:]).max() < 1e-12
    xy = rng.uniform(-0.6, 0.6, (50, 2))
    assert np.allclose(pixels_to_normalized(project_points(np.c_[xy, np.ones(50)], cam.K, cam.dist),
                                            cam.K, cam.dist), xy, atol=1e-12)
    assert distort_normalized(xy, np.zeros(5)).tolist() == xy.tolist()


def test_rendered_corners_are_where_the_truth_says():
    board = BoardSpec(9, 6, 25.0)
    r = render_calibration_views(3, seed=5, board=board)
    assert len(r.images) == 3 and r.images[0].shape == (480, 640, 3) and r.images[0].dtype == np.uint8
    r2 = render_calibration_views(3, seed=5, board=board)
    assert all(np.array_equal(a, b) for a, b in zip(r.images, r2.images))  # deterministic per seed
    for img, truth in zip(r.images, r.true_corners_px):
        gray = img[..., 0]
        ok, c = cv2.findChessboardCorners(gray, (9, 6))
        assert ok
        c = cv2.cornerSubPix(gray, np.asarray(c, np.float32).reshape(-1, 1, 2), (5, 5), (-1, -1),
                             (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)).reshape(-1, 2)
        err = min(np.linalg.norm(c - truth, axis=1).mean(), np.linalg.norm(c[::-1] - truth, axis=1).mean())
        assert err < 0.25  # OpenCV finds the corners where the ground truth puts them
