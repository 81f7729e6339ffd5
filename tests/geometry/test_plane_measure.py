"""Plane measurement on rendered scenes: a reference board, then objects of known size."""

import numpy as np
import pytest

from fovea.errors import CalibrationError
from fovea.geometry.calibration import bootstrap_uncertainty, calibrate_images
from fovea.geometry.camera import CameraModel
from fovea.geometry.measure import PlaneMeasurer, undistort_image, undistort_points
from fovea.synth.chessboard import BoardSpec, TrueCamera, chessboard_texture, finish_image, pixel_rays, render_plane
from fovea.geometry.lens import project_points, rotation_matrix

RECT = dict(cx=60.0, cy=60.0, L=110.0, W=45.0, ang=np.deg2rad(25))
DISC = dict(cx=190.0, cy=70.0, r=35.0)


def objects_texture(u, v):
    du, dv = u - RECT["cx"], v - RECT["cy"]
    c, s = np.cos(RECT["ang"]), np.sin(RECT["ang"])
    a, b = c * du + s * dv, -s * du + c * dv
    in_rect = (np.abs(a) <= RECT["L"] / 2) & (np.abs(b) <= RECT["W"] / 2)
    in_disc = (u - DISC["cx"]) ** 2 + (v - DISC["cy"]) ** 2 <= DISC["r"] ** 2
    return np.where(in_rect | in_disc, 0.1, 0.85)


@pytest.fixture(scope="module")
def scene(calib_renders):
    cam = TrueCamera.default()
    rays = pixel_rays(cam, 2)
    R = rotation_matrix(-0.45, 0.1, 0.05)  # the table tilted ~26 deg to the camera
    t = np.array([-130.0, -60.0, 480.0])
    rng = np.random.default_rng(3)
    ref = finish_image(render_plane(rays, R, t, chessboard_texture(BoardSpec()), 2, 0.85), rng, 0.7, 2.0, False)
    obj = finish_image(render_plane(rays, R, t, objects_texture, 2, 0.85), rng, 0.7, 2.0, False)
    res, _ = calibrate_images(calib_renders.images, (9, 6), 25.0)
    boot = bootstrap_uncertainty(res, n_boot=6, seed=1)
    return dict(cam=cam, R=R, t=t, ref=ref, obj=obj, model=res.model, boot=boot["models"])


def test_known_object_sizes_within_1_percent(scene):
    pm = PlaneMeasurer.from_reference_board(scene["ref"], scene["model"], (9, 6), 25.0, scene["boot"])
    mask = scene["obj"][..., 0] < 120
    sizes = sorted(pm.object_sizes(mask), key=lambda o: o.centre_mm[0])
    assert len(sizes) == 2
    rect, disc = sizes if sizes[0].width_mm.value < 60 else sizes[::-1]
    assert rect.length_mm.value == pytest.approx(RECT["L"], rel=0.01)
    assert rect.width_mm.value == pytest.approx(RECT["W"], rel=0.01)
    assert rect.area_mm2.value == pytest.approx(RECT["L"] * RECT["W"], rel=0.01)
    assert disc.length_mm.value == pytest.approx(2 * DISC["r"], rel=0.01)
    assert disc.area_mm2.value == pytest.approx(np.pi * DISC["r"] ** 2, rel=0.01)
    assert 0 < rect.length_mm.std < 1.0  # an error bar exists and is small
    total = pm.mask_area_mm2(mask)
    assert total.value == pytest.approx(RECT["L"] * RECT["W"] + np.pi * DISC["r"] ** 2, rel=0.01)
    # a length between two projected plane points (board frame: board corner 0 is the origin)
    pts = np.array([[0.0, 0, 0], [200.0, 125.0, 0]])
    uv = project_points(pts @ scene["R"].T + scene["t"], scene["cam"].K, scene["cam"].dist)
    assert pm.length_mm(uv[0], uv[1]).value == pytest.approx(np.hypot(200, 125), rel=0.005)


def test_undistort_points_and_image(scene):
    cam = scene["cam"]
    truth = CameraModel(cam.K, cam.dist, cam.image_size)
    P = np.array([[-60.0, 40, 400], [80, -50, 500]])
    ideal = P[:, :2] / P[:, 2:] * [cam.K[0, 0], cam.K[1, 1]] + cam.K[:2, 2]
    got = undistort_points(project_points(P, cam.K, cam.dist), truth)
    assert np.abs(got - ideal).max() < 1e-6
    und, K2 = undistort_image(scene["ref"], truth, keep_K=True)
    assert und.shape == scene["ref"].shape and np.allclose(K2, cam.K)


def test_reference_without_board_and_size_mismatch(scene):
    with pytest.raises(CalibrationError, match="no 9x6 board"):
        PlaneMeasurer.from_reference_board(scene["obj"], scene["model"], (9, 6), 25.0)
    with pytest.raises(CalibrationError, match="calibrated"):
        PlaneMeasurer.from_reference_board(scene["ref"][:400], scene["model"], (9, 6), 25.0)
