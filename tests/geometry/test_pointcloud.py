"""Point-cloud tools against synthetic planes and boxes with known answers."""

import numpy as np
import pytest

from fovea.errors import DataError
from fovea.geometry.pointcloud import (
    backproject, fit_plane_ransac, gravity_frame, oriented_box, oriented_boxes, transform,
)
from fovea.geometry.lens import rotation_matrix


def test_backproject_matches_pinhole_closed_form():
    K = np.array([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]])
    depth = np.full((480, 640), np.nan)
    depth[100, 400] = 2.0
    depth[300, 50] = 3.5
    pts = backproject(depth, K)
    expect = np.array([[(400 - 320) / 500 * 2.0, (100 - 240) / 510 * 2.0, 2.0],
                       [(50 - 320) / 500 * 3.5, (300 - 240) / 510 * 3.5, 3.5]])
    assert np.allclose(pts, expect)


def _box_surface(rng, size, yaw, centre_xy, n=3000):
    """Points on the 5 visible faces (no bottom) of a box standing on z = 0."""
    L, W, H = size
    pts = []
    for _ in range(n):
        f = rng.integers(5)
        a, b = rng.uniform(-0.5, 0.5, 2)
        if f == 0:
            p = [a * L, b * W, H]
        elif f in (1, 2):
            p = [a * L, (0.5 if f == 1 else -0.5) * W, (b + 0.5) * H]
        else:
            p = [(0.5 if f == 3 else -0.5) * L, a * W, (b + 0.5) * H]
        pts.append(p)
    p = np.array(pts)
    c, s = np.cos(yaw), np.sin(yaw)
    return p @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + [*centre_xy, 0]


def test_ransac_floor_gravity_frame_and_boxes():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(-3, 3, (6000, 2)), rng.normal(0, 0.003, 6000)]
    box_a = _box_surface(rng, (0.8, 0.45, 1.2), 0.4, (0.5, 2.0))
    box_b = _box_surface(rng, (0.5, 0.4, 0.4), -0.2, (-1.2, 2.5))
    flying = rng.uniform([-0.3, 1.5, 0], [1.3, 2.5, 3.0], (60, 3))  # outliers near box A
    world = np.concatenate([floor, box_a, flying, box_b])
    labels = np.r_[np.full(6000, -1), np.zeros(len(box_a) + 60, int), np.ones(len(box_b), int)]
    # a camera 1.5 m above the floor, pitched down 30 deg, rolled 5 deg: world -> camera
    R_wc = rotation_matrix(np.deg2rad(-90 - 30), 0, 0) @ rotation_matrix(0, np.deg2rad(5), 0)
    R = R_wc.T
    cam_pos = np.array([0.0, 0.0, 1.5])
    cam = (world - cam_pos) @ R.T
    plane = fit_plane_ransac(cam, threshold=0.01, iterations=300, seed=0)
    n_true = R @ np.array([0, 0, 1.0])
    assert abs(abs(plane.normal @ n_true) - 1) < 1e-4
    assert plane.inliers[:6000].mean() > 0.99 and plane.inliers[6000:].mean() < 0.05
    T = gravity_frame(plane)
    g = transform(cam, T)
    assert np.abs(g[:6000, 2]).max() < 0.02  # floor at height 0
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9) and np.linalg.det(T[:3, :3]) > 0
    assert g[6000:6000 + len(box_a), 2].max() == pytest.approx(1.2, abs=0.02)  # heights from z up
    # camera looks along +y of the gravity frame: points in front have y > 0
    assert np.median(transform(cam[6000:], T)[:, 1]) > 0
    boxes = oriented_boxes(g, labels, floor_contact=True)
    a, b = boxes[0], boxes[1]
    assert a.size == pytest.approx([0.8, 0.45, 1.2], abs=0.03)  # the 60 flying pixels are filtered
    assert b.size == pytest.approx([0.5, 0.4, 0.4], abs=0.02)
    raw = np.ptp(g[labels == 0], axis=0)
    assert raw.max() > 1.4  # without filtering, the outliers would inflate the box
    assert a.n_kept < a.n_points


def test_errors():
    with pytest.raises(DataError):
        fit_plane_ransac(np.zeros((2, 3)), 0.01)
    with pytest.raises(DataError, match="ground plane"):
        rng = np.random.default_rng(0)
        fit_plane_ransac(rng.normal(size=(500, 3)), 0.01, iterations=50, min_inlier_fraction=0.3)
    with pytest.raises(DataError):
        oriented_box(np.zeros((3, 3)))
