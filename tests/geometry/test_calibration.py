"""Calibration against the synthetic ground truth (renders with known K, distortion, poses)."""

import json

import cv2
import numpy as np
import pytest

from fovea.errors import CalibrationError
from fovea.geometry.calibration import (
    board_object_points, bootstrap_uncertainty, calibrate_camera, calibrate_images, charuco_object_points,
    cross_validation_difference, detect_charuco, make_charuco_board, quality_report, save_coverage_png,
)
from fovea.geometry.camera import CameraModel, projection_difference
from fovea.synth.chessboard import TrueCamera, image_texture, pixel_rays, render_plane, finish_image
from fovea.geometry.lens import project_points, rotation_matrix


@pytest.fixture(scope="module")
def calibrated(calib_renders):
    res, log = calibrate_images(calib_renders.images, (9, 6), 25.0)
    return res, log


def _truth(r):
    return CameraModel(r.camera.K, r.camera.dist, r.camera.image_size)


def test_20_views_recover_intrinsics(calib_renders, calibrated):
    res, log = calibrated
    assert log["missed"] == [] and res.rejected == {}
    truth = _truth(calib_renders)
    m = res.model
    assert abs(m.fx / truth.fx - 1) < 0.002 and abs(m.fy / truth.fy - 1) < 0.002
    assert abs(m.principal_point[0] - truth.principal_point[0]) < 2.0
    assert abs(m.principal_point[1] - truth.principal_point[1]) < 2.0
    rep = quality_report(res, truth=truth)
    tpe = rep["true_projection_error_px"]
    assert 0 < tpe["mean_px"] < 2.0 and tpe["max_px"] >= tpe["p95_px"] >= tpe["median_px"]
    assert rep["rms_px"] < 0.2


def test_rms_is_a_true_rms_recomputed_independently(calibrated):
    res, _ = calibrated
    # slow loop with our own numpy projection (not cv2.projectPoints)
    sq, count, tutorial = 0.0, 0, []
    for obj, img, rv, tv in zip(res.object_points, res.image_points, res.rvecs, res.tvecs):
        R, _ = cv2.Rodrigues(rv)
        proj = project_points(obj.astype(np.float64) @ R.T + tv.ravel(), res.model.K, res.model.dist)
        for p, q in zip(proj, img):
            sq += float(((p - q) ** 2).sum())
            count += 1
        tutorial.append(np.linalg.norm(proj - img) / len(img))  # OpenCV tutorial's "error"
    true_rms = np.sqrt(sq / count)
    assert res.rms_px == pytest.approx(true_rms, rel=1e-5)
    assert res.opencv_rms_px == pytest.approx(true_rms, rel=1e-4)
    assert np.mean(tutorial) < true_rms / 4  # the tutorial's number under-reports


def test_corrupted_corner_view_is_detected_and_dropped(calib_renders, calibrated):
    res, _ = calibrated
    img_pts = [p.copy() for p in res.image_points]
    img_pts[7][20] += (3.5, -2.5)  # one corner off by ~4.3 px
    obj = [board_object_points(9, 6, 25.0)] * len(img_pts)
    bad = calibrate_camera(obj, img_pts, (640, 480))
    assert list(bad.rejected) == [7] and 7 not in bad.kept
    truth = _truth(calib_renders)
    assert abs(bad.model.fx / truth.fx - 1) < 0.002
    assert bad.history[0]["rms_px"] > bad.rms_px


def test_rejection_never_leaves_the_kept_views_out_of_step_with_the_fit(calibrated):
    res, _ = calibrated
    img_pts = [p.copy() for p in res.image_points]
    img_pts[7][20] += (3.5, -2.5)
    obj = [board_object_points(9, 6, 25.0)] * len(img_pts)
    once = calibrate_camera(obj, img_pts, (640, 480), max_rounds=0)  # one fit, no refit: nothing may be dropped
    assert once.rejected == {} and len(once.kept) == len(once.per_view_rms_px) == len(once.rvecs) == 20
    refit = calibrate_camera(obj, img_pts, (640, 480), max_rounds=1)
    assert list(refit.rejected) == [7] and len(refit.kept) == len(refit.per_view_rms_px) == len(refit.rvecs) == 19


def test_uncertainty_and_coverage(calibrated, tmp_path):
    res, _ = calibrated
    u = bootstrap_uncertainty(res, n_boot=8, seed=0)
    std = u["std_px"].reshape(u["grid_shape"])
    h, w = std.shape
    centre = std[h // 3: 2 * h // 3, w // 3: 2 * w // 3].mean()
    corners = np.mean([std[0, 0], std[0, -1], std[-1, 0], std[-1, -1]])
    assert np.isfinite(std).all() and corners > centre  # less trust where no corners fell
    cv = cross_validation_difference(res)
    assert cv["max_px"] > cv["median_px"] > 0
    png = save_coverage_png(tmp_path / "cov.png", res.image_points, res.model.image_size, uncertainty=u)
    assert cv2.imread(str(png)) is not None


def test_save_load_json_and_opencv_yaml(calibrated, tmp_path):
    m = calibrated[0].model
    for name in ("cam.json", "cam.yaml"):
        p = m.save(tmp_path / name)
        back = CameraModel.load(p)
        assert np.allclose(back.K, m.K) and np.allclose(back.dist, m.dist) and back.image_size == m.image_size
    fs = cv2.FileStorage(str(tmp_path / "cam.yaml"), cv2.FILE_STORAGE_READ)  # readable by plain OpenCV
    assert np.allclose(fs.getNode("camera_matrix").mat(), m.K)
    json.loads((tmp_path / "cam.json").read_text())
    with pytest.raises(CalibrationError, match="does not exist"):
        CameraModel.load(tmp_path / "nope.json")
    with pytest.raises(CalibrationError, match="640x480"):
        m.check_image_size((800, 600), "x.png")
    assert projection_difference(m, m)["max_px"] < 1e-9


def test_too_few_views_is_a_clear_error():
    obj = [board_object_points(9, 6, 25.0)] * 2
    with pytest.raises(CalibrationError, match="at least"):
        calibrate_camera(obj, [o[:, :2] for o in obj], (640, 480))


def test_charuco_detection_on_rendered_board():
    board = make_charuco_board(7, 5, 30.0, 22.0, "DICT_4X4_50")
    px_per_mm = 4
    margin = 40
    pic = board.generateImage((7 * 30 * px_per_mm + 2 * margin, 5 * 30 * px_per_mm + 2 * margin),
                              marginSize=margin)
    cam = TrueCamera.default()
    rays = pixel_rays(cam, 2)
    tex = image_texture(pic, 1 / px_per_mm, origin_mm=(-margin / px_per_mm, -margin / px_per_mm))
    R = rotation_matrix(0.25, -0.2, 0.1)
    t = np.array([-100.0, -70.0, 420.0])
    img = finish_image(render_plane(rays, R, t, tex, 2), np.random.default_rng(0), 0.6, 2.0, True)
    found = detect_charuco(img, board)
    assert found is not None
    corners, ids = found
    assert len(ids) >= 20
    obj = charuco_object_points(board)[ids].astype(np.float64)
    truth = project_points(obj @ R.T + t, cam.K, cam.dist)
    assert np.sqrt(np.mean(np.sum((corners - truth) ** 2, 1))) < 0.3
