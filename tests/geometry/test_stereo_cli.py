"""`fovea geometry stereo-calibrate` writes the rig file that `fovea geometry stereo --rig` reads,
end to end on rendered pairs of a rig with a known baseline, and depth comes out in mm."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest

from fovea.cli.main import main
from fovea.geometry.lens import rotation_matrix
from fovea.synth.chessboard import finish_image, image_texture, pixel_rays, render_plane
from fovea.synth.stereo_rig import save_stereo_renders

PLANE_R = rotation_matrix(0.25, -0.15, 0.0)  # a textured plane ~600 mm away, tilted ~17 deg
PLANE_T = np.array([0.0, 0.0, 600.0])


@pytest.fixture(scope="module")
def folders(stereo_renders, tmp_path_factory):
    """left/ and right/ with 12 board pairs, one pair without a board and one left image without a partner."""
    root = save_stereo_renders(stereo_renders, tmp_path_factory.mktemp("rig"))
    gray = np.full((480, 640, 3), 128, np.uint8)
    cv2.imwrite(str(root / "left" / "blank.png"), gray)
    cv2.imwrite(str(root / "right" / "blank.png"), gray)
    cv2.imwrite(str(root / "left" / "extra_999.png"), stereo_renders.left_images[0][..., ::-1])
    return root


@pytest.fixture(scope="module")
def textured_pair(stereo_renders, tmp_path_factory):
    """A random-texture plane seen by the TRUE rig (what the calibrated rig must measure)."""
    rig = stereo_renders.rig
    rng = np.random.default_rng(7)
    tex_img = cv2.GaussianBlur((rng.random((260, 320)) * 255).astype(np.uint8), (0, 0), 1.0)
    tex = image_texture(cv2.normalize(tex_img, None, 0, 255, cv2.NORM_MINMAX), 2.5, origin_mm=(-400, -325))
    d = tmp_path_factory.mktemp("scene")
    poses = {"left": (rig.left, PLANE_R, PLANE_T),
             "right": (rig.right, rig.R @ PLANE_R, rig.R @ PLANE_T + rig.T)}
    for side, (cam, R, t) in poses.items():
        img = finish_image(render_plane(pixel_rays(cam, 2), R, t, tex, 2), rng, 0.5, 1.0, False)
        cv2.imwrite(str(d / f"{side}.png"), img[..., ::-1])
    return d


@pytest.fixture(scope="module")
def calibrated(folders, tmp_path_factory):
    """Run `fovea geometry stereo-calibrate --skip-bad` once: (rig path, rc, stdout, stderr)."""
    rig_path = tmp_path_factory.mktemp("out") / "rig.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["geometry", "stereo-calibrate", str(folders / "left"), str(folders / "right"), "--board", "9x6",
                   "--square-mm", "25", "--out", str(rig_path), "--bootstrap", "4", "--skip-bad"])
    return rig_path, rc, out.getvalue(), err.getvalue()


def test_unmatched_files_stop_the_run_with_the_fix(folders, tmp_path, capsys):
    rc = main(["geometry", "stereo-calibrate", str(folders / "left"), str(folders / "right"),
               "--out", str(tmp_path / "rig.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "extra_999.png" in err and "Fix" in err and "--skip-bad" in err
    assert not (tmp_path / "rig.json").exists()


def test_stereo_calibrate_writes_the_rig_that_stereo_reads(stereo_renders, calibrated, textured_pair, tmp_path,
                                                           capsys):
    rig_path, rc, out_text, err_text = calibrated
    assert rc == 0, err_text
    assert err_text == ""  # progress is silent when stderr is not a terminal
    assert "13 matched, 12 used" in out_text and "blank (both)" in out_text and "extra_999.png" in out_text
    rig = json.loads(rig_path.read_text())
    true_b = stereo_renders.rig.baseline_mm
    assert rig["baseline_mm"] == pytest.approx(true_b, rel=0.005)
    assert np.linalg.norm(rig["T"]) == pytest.approx(rig["baseline_mm"])
    assert rig["quality"]["epipolar_error_px"]["mean"] < 0.5
    assert rig["quality"]["baseline_uncertainty_mm"]["std_mm"] > 0
    det = rig["detection"]
    assert det["pairs_without_board"] == [{"name": "blank", "missing_in": "both"}]
    assert [p.rsplit("/", 1)[-1] for p in det["left_without_partner"]] == ["extra_999.png"]
    assert (rig_path.parent / "rig_rectified.png").is_file()

    # the rig file drives `fovea geometry stereo`; the plane's depth comes out in mm
    out = tmp_path / "depth"
    assert main(["geometry", "stereo", str(textured_pair / "left.png"), str(textured_pair / "right.png"),
                 "--rig", str(rig_path), "--num-disparities", "128", "--out", str(out)]) == 0
    assert "in mm" in capsys.readouterr().out
    depth = np.load(out / "depth.npy")
    # truth: each rectified pixel's ray (rig's rectification) intersected with the true plane
    R1, P1 = np.array(rig["rectification"]["R1"]), np.array(rig["rectification"]["P1"])
    h, w = depth.shape
    vv, uu = np.mgrid[0:h, 0:w]
    rays_rect = np.stack([uu, vv, np.ones_like(uu)], -1).reshape(-1, 3) @ np.linalg.inv(P1[:, :3]).T
    n = PLANE_R[:, 2]
    s = (n @ PLANE_T) / ((rays_rect @ R1) @ n)  # rays in the left-camera frame: R1^T d
    z_true = (s * rays_rect[:, 2]).reshape(h, w)
    ok = np.isfinite(depth)
    ok[:, :140] = False  # the left strip has no match in the right image
    assert ok.mean() > 0.5
    rel = np.abs(depth[ok] - z_true[ok]) / z_true[ok]
    assert np.median(rel) < 0.005 and np.percentile(rel, 90) < 0.02


def test_stereo_refuses_images_of_another_size(calibrated, textured_pair, tmp_path, capsys):
    rig_path = calibrated[0]
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(textured_pair / "left.png")), (320, 240)))
    capsys.readouterr()
    assert main(["stereo", str(small), str(textured_pair / "right.png"), "--rig", str(rig_path)]) == 2
    err = capsys.readouterr().err
    assert "small.png is 320x240 px" in err and "640x480" in err and "rig.json" in err and "Fix" in err


def test_stereo_refuses_a_vertical_rig(stereo_renders, textured_pair, tmp_path, capsys):
    from fovea.geometry.stereo import StereoRig

    t = stereo_renders.rig
    StereoRig(t.left.K, t.left.dist, t.right.K, t.right.dist, t.R, np.array([1.0, -80.0, 0.5]),
              (640, 480)).save(tmp_path / "vertical.json")
    assert main(["geometry", "stereo", str(textured_pair / "left.png"), str(textured_pair / "right.png"), "--rig",
                 str(tmp_path / "vertical.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "vertical.json" in err and "one above the other" in err and "-80.0" in err and "Fix" in err
