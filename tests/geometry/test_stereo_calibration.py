"""Stereo rig calibration against rendered pairs of a rig with KNOWN intrinsics, R and T."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fovea.errors import CalibrationError, ConfigError, DataError
from fovea.geometry.calibration import board_object_points, detect_chessboard
from fovea.geometry.stereo import StereoRig, rectify
from fovea.synth.chessboard import BoardSpec
from fovea.geometry.stereo_calibration import (
    align_corner_order, calibrate_stereo, calibrate_stereo_images, detect_pairs, epipolar_errors, pair_by_stem,
)
from fovea.geometry.lens import project_points
from fovea.synth.stereo_rig import TrueRig, random_stereo_board_pose, render_stereo_calibration_pairs


@pytest.fixture(scope="module")
def detected(stereo_renders):
    """(indices found in both images, left corners, right corners in the left's order, log)."""
    names = [f"pair_{i:03d}" for i in range(len(stereo_renders.left_images))]
    return detect_pairs(stereo_renders.left_images, stereo_renders.right_images, names, (9, 6))


@pytest.fixture(scope="module")
def calibrated(detected):
    found, lefts, rights, log = detected
    obj = [board_object_points(9, 6, 25.0)] * len(found)
    return calibrate_stereo(obj, lefts, rights, log["image_size"], [f"pair_{i:03d}" for i in found], n_boot=10), log


@pytest.fixture(scope="module")
def held_out():
    """4 pairs the calibration never saw (another seed)."""
    return render_stereo_calibration_pairs(4, seed=100)


def _angle_deg(R):
    return float(np.rad2deg(np.linalg.norm(cv2.Rodrigues(np.asarray(R, np.float64))[0])))


def _opencv_rectified_y(points_px, K, dist, R_rect, P_rect):
    """Rectified rows from OpenCV's own undistortPoints (independent of fovea's lens inversion)."""
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    p = cv2.undistortPoints(np.asarray(points_px, np.float64).reshape(-1, 1, 2), K, dist, R=R_rect, P=P_rect,
                            criteria=crit)
    return p.reshape(-1, 2)[:, 1]


def _mean_epipolar_px(rig, rect, lefts, rights):
    e = [np.abs(_opencv_rectified_y(a, rig.K1, rig.dist1, rect.R1, rect.P1)
                - _opencv_rectified_y(b, rig.K2, rig.dist2, rect.R2, rect.P2)) for a, b in zip(lefts, rights)]
    return float(np.concatenate(e).mean()), float(np.concatenate(e).max())


def test_baseline_rotation_and_intrinsics_match_the_rendered_rig(stereo_renders, calibrated):
    res, log = calibrated
    truth = stereo_renders.rig
    assert log["missed"] == [] and len(res.pair_names) == 12 and res.rejected == {}
    assert res.baseline_mm == pytest.approx(truth.baseline_mm, rel=0.005)  # the brief's bar: 0.5 %
    assert _angle_deg(res.rig.R @ truth.R.T) < 0.2
    # T's direction (unit vectors), not only its length
    assert np.degrees(np.arccos(res.rig.T.ravel() @ truth.T / (res.baseline_mm * truth.baseline_mm))) < 0.5
    for K, true_K in ((res.rig.K1, truth.left.K), (res.rig.K2, truth.right.K)):
        assert K[0, 0] == pytest.approx(true_K[0, 0], rel=0.005) and K[1, 1] == pytest.approx(true_K[1, 1], rel=0.005)
    assert res.rig.meta["baseline_mm"] == pytest.approx(np.linalg.norm(res.rig.T))


def test_rectified_epipolar_error_below_half_a_pixel(detected, calibrated, held_out):
    res, _ = calibrated
    rig, rect = res.rig, res.rectification
    # calibration pairs: detected corners, rectified with OpenCV's undistortPoints (not fovea's code)
    _, lefts, rights, _ = detected
    mean_px, _ = _mean_epipolar_px(rig, rect, lefts, rights)
    assert mean_px < 0.5
    assert res.rig.meta["quality"]["epipolar_error_px"]["mean"] == pytest.approx(mean_px, abs=1e-4)
    # pairs the calibration never saw: detected corners and the exact rendered corners
    hl = [detect_chessboard(im, (9, 6)) for im in held_out.left_images]
    hr = [align_corner_order(a, detect_chessboard(im, (9, 6))) for a, im in zip(hl, held_out.right_images)]
    assert _mean_epipolar_px(rig, rect, hl, hr)[0] < 0.5
    exact_mean, exact_max = _mean_epipolar_px(rig, rect, held_out.true_corners_left_px,
                                              held_out.true_corners_right_px)
    assert exact_mean < 0.1 and exact_max < 0.5


def test_rms_matches_opencv_and_the_bootstrap_is_an_honest_spread(stereo_renders, calibrated):
    res, _ = calibrated
    # fovea recomputes residuals with its own lens model; OpenCV's returned RMS is the same definition
    assert res.rms_px == pytest.approx(res.opencv_rms_px, rel=1e-3)
    assert 0 < res.rms_px < 0.3
    q = res.rig.meta["quality"]
    std = q["baseline_uncertainty_mm"]["std_mm"]
    assert 0 < std < 0.005 * stereo_renders.rig.baseline_mm
    assert q["baseline_uncertainty_mm"]["p05_mm"] <= res.baseline_mm + 3 * std
    assert len(q["per_pair"]) == 12 and all(p["epipolar_mean_px"] < 0.5 for p in q["per_pair"])


def test_a_pair_with_a_displaced_corner_is_rejected(stereo_renders, detected):
    _, lefts, rights, _ = detected
    rights = list(rights)
    rights[5] = rights[5].copy()
    rights[5][17] += (3.0, -3.0)  # one right corner off by 4.2 px
    obj = [board_object_points(9, 6, 25.0)] * 12
    names = [f"p{i}" for i in range(12)]
    bad = calibrate_stereo(obj, lefts, rights, (640, 480), names, n_boot=0)
    assert list(bad.rejected) == ["p5"] and "p5" not in bad.pair_names
    assert bad.baseline_mm == pytest.approx(stereo_renders.rig.baseline_mm, rel=0.005)


def test_corner_order_is_aligned_between_the_two_images(stereo_renders):
    a = stereo_renders.true_corners_left_px[0]
    b = stereo_renders.true_corners_right_px[0]
    assert np.array_equal(align_corner_order(a, b[::-1]), b)
    assert align_corner_order(a, b) is b


def test_pairs_match_by_stem_and_duplicates_are_refused():
    listing = pair_by_stem([Path("l/a.png"), Path("l/b.png"), Path("l/c.jpg")], [Path("r/c.png"), Path("r/a.png"),
                                                                                   Path("r/d.png")])
    assert [s for s, _, _ in listing.pairs] == ["a", "c"]
    assert listing.left_only == [Path("l/b.png")] and listing.right_only == [Path("r/d.png")]
    with pytest.raises(DataError, match=r"l/a.png and l/a.jpg share the stem 'a'.*Fix"):
        pair_by_stem([Path("l/a.png"), Path("l/a.jpg")], [Path("r/a.png")])


def test_too_few_pairs_and_mismatched_lists():
    obj = [board_object_points(9, 6, 25.0)] * 3
    pts = [o[:, :2] for o in obj]
    with pytest.raises(CalibrationError, match="only 3 usable pairs"):
        calibrate_stereo(obj, pts, pts, (640, 480))
    with pytest.raises(CalibrationError, match="pair up"):
        calibrate_stereo(obj, pts, pts[:2], (640, 480))


def test_rig_file_round_trip_and_old_files(calibrated, tmp_path):
    res, _ = calibrated
    path = res.rig.save(tmp_path / "rig.json")
    d = json.loads(path.read_text())
    assert d["format"] == "fovea.stereo_rig" and d["units"] == "mm"
    assert set(d["rectification"]) >= {"R1", "R2", "P1", "P2", "Q", "alpha"}
    back = StereoRig.load(path)
    for k in ("K1", "dist1", "K2", "dist2", "R", "T"):
        assert np.allclose(getattr(back, k), getattr(res.rig, k), rtol=0, atol=1e-12)
    assert back.image_size == (640, 480) and back.meta["quality"]["pairs_used"] == 12
    assert np.allclose(rectify(back).P2, res.rectification.P2)
    # the rectification alpha travels with the file (alpha 1 keeps every pixel: a shorter focal length)
    d["rectification"]["alpha"] = 1.0
    (tmp_path / "wide.json").write_text(json.dumps(d))
    wide = rectify(StereoRig.load(tmp_path / "wide.json"))
    direct = cv2.stereoRectify(back.K1, back.dist1, back.K2, back.dist2, (640, 480), back.R, back.T, alpha=1.0,
                               flags=cv2.CALIB_ZERO_DISPARITY)
    assert wide.alpha == 1.0 and np.allclose(wide.P1, direct[2]) and wide.focal_px < res.rectification.focal_px
    # a file as the earlier StereoRig.save wrote it (no format/meta, T as a (3, 1) list) still loads
    old = {k: d[k] for k in ("K1", "dist1", "K2", "dist2", "R", "image_size")}
    old["T"] = [[v] for v in d["T"]]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert StereoRig.load(tmp_path / "old.json").T.shape == (3, 1)


@pytest.mark.parametrize("edit, pattern", [
    (lambda d: d.pop("R"), r"bad\.json lacks R .*Fix: .*stereo-calibrate"),
    (lambda d: d.update(K1=[[1, 2], [3, 4]]), r"bad\.json: K1 = \[\[1, 2\], \[3, 4\]\] is not 3x3 numbers.*Fix"),
    (lambda d: d.update(T=[1.0, "x", 2.0]), r"bad\.json: T = \[1\.0, 'x', 2\.0\].*Fix"),
    (lambda d: d.update(image_size=[640]), r"bad\.json: image_size \[640\] is not \[width, height\].*Fix"),
])
def test_bad_rig_files_name_the_file_the_value_and_the_fix(calibrated, tmp_path, edit, pattern):
    res, _ = calibrated
    d = res.rig.to_dict()
    edit(d)
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(CalibrationError, match=pattern):
        StereoRig.load(tmp_path / "bad.json")


def test_missing_and_non_json_rig_files(tmp_path):
    with pytest.raises(CalibrationError, match=r"nope\.json does not exist.*Fix: .*stereo-calibrate"):
        StereoRig.load(tmp_path / "nope.json")
    (tmp_path / "text.json").write_text("K1: not json")
    with pytest.raises(CalibrationError, match=r"text\.json is not valid JSON.*Fix"):
        StereoRig.load(tmp_path / "text.json")


def test_pairs_of_another_size_name_the_pair_and_side(stereo_renders):
    small = cv2.resize(stereo_renders.right_images[1], (320, 240))
    with pytest.raises(CalibrationError, match=r"right image of pair b is 320x240 px .* 640x480; Fix"):
        detect_pairs(stereo_renders.left_images[:2], [stereo_renders.right_images[0], small], ["a", "b"], (9, 6))


def test_square_boards_are_refused_for_stereo(stereo_renders):
    with pytest.raises(ConfigError, match=r"board 7x7 is square.*Fix: .*9x6"):
        calibrate_stereo_images(stereo_renders.left_images, stereo_renders.right_images, (7, 7), 25.0)


def test_vertical_rig_rectifies_to_columns_and_keeps_its_baseline():
    truth = TrueRig.default()
    truth.T = np.array([1.2, -79.5, 0.8])  # the second camera 80 mm below the first
    rig = StereoRig(truth.left.K, truth.left.dist, truth.right.K, truth.right.dist, truth.R, truth.T, (640, 480))
    rect = rectify(rig)
    assert rect.vertical and rect.baseline == pytest.approx(np.linalg.norm(truth.T), rel=1e-9)
    rng = np.random.default_rng(0)
    obj = board_object_points(9, 6, 25.0).astype(np.float64)
    lefts, rights = [], []
    for _ in range(3):
        R, t = random_stereo_board_pose(truth, BoardSpec(), rng)
        lefts.append(project_points(obj @ R.T + t, truth.left.K, truth.left.dist))
        rights.append(project_points((obj @ R.T + t) @ truth.R.T + truth.T, truth.right.K, truth.right.dist))
    e = np.concatenate(epipolar_errors(rig, rect, lefts, rights))
    assert e.max() < 1e-6  # exact corners of the true rig share a column after rectification
    rows = [np.abs(cv2.undistortPoints(a.reshape(-1, 1, 2), rig.K1, rig.dist1, R=rect.R1, P=rect.P1)[:, 0, 1]
                   - cv2.undistortPoints(b.reshape(-1, 1, 2), rig.K2, rig.dist2, R=rect.R2, P=rect.P2)[:, 0, 1])
            for a, b in zip(lefts, rights)]
    assert np.concatenate(rows).mean() > 20  # ... and differ by the (vertical) disparity along the rows
