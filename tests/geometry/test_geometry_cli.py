"""The geometry commands end to end on rendered images."""

import json
from pathlib import Path

import cv2
import numpy as np

from fovea.cli.main import main


def test_calibrate_and_measure_commands(calib_renders, tmp_path, capsys):
    d = tmp_path / "views"
    d.mkdir()
    for i, img in enumerate(calib_renders.images[:12]):
        cv2.imwrite(str(d / f"v{i:02d}.png"), img[..., ::-1])
    cv2.imwrite(str(d / "blank.png"), np.full((480, 640, 3), 128, np.uint8))  # no board: listed, not fatal
    (d / "broken.png").write_bytes(b"not a png")  # unreadable: stops the run unless --skip-bad
    out = tmp_path / "cam.json"
    args = ["geometry", "calibrate", str(d), "--board", "9x6", "--square-mm", "25", "--out", str(out),
            "--bootstrap", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad" in err
    assert main(args + ["--skip-bad"]) == 0
    cap = capsys.readouterr()
    assert cap.err == ""  # progress bars stay silent when stderr is not a terminal
    assert "1 without a board" in cap.out and "RMS" in cap.out and "skipped 1 unreadable" in cap.out
    cam = json.loads(out.read_text())
    assert abs(cam["K"][0][0] / calib_renders.camera.K[0, 0] - 1) < 0.005
    assert (tmp_path / "calibration_coverage.png").is_file()
    rep = json.loads((tmp_path / "calibration_report.json").read_text())
    assert rep["images_without_board"] == ["blank.png"]
    assert [Path(s["path"]).name for s in rep["images_skipped"]] == ["broken.png"]
    # measure: the reference is a board view; the "object" is the same image thresholded
    ref = d / "v00.png"
    assert main(["geometry", "measure", str(ref), "--calib", str(out), "--reference", str(ref)]) == 0
    by_threshold = capsys.readouterr().out
    assert "mm" in by_threshold
    # the same objects given as a mask file measure the same
    gray = cv2.cvtColor(cv2.imread(str(ref)), cv2.COLOR_BGR2GRAY)
    t = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]
    cv2.imwrite(str(tmp_path / "mask.png"), ((gray < t) * 255).astype(np.uint8))
    measure = ["geometry", "measure", str(ref), "--calib", str(out), "--reference", str(ref)]
    assert main(measure + ["--mask", str(tmp_path / "mask.png")]) == 0
    assert capsys.readouterr().out == by_threshold
    cv2.imwrite(str(tmp_path / "small_mask.png"), np.zeros((10, 20), np.uint8))
    assert main(measure + ["--mask", str(tmp_path / "small_mask.png")]) == 2
    err = capsys.readouterr().err
    assert "small_mask.png is 20x10" in err and "640x480" in err and "Fix" in err
    assert main(["geometry", "calibrate", str(d), "--board", "9", "--out", str(out)]) == 2
    assert "COLSxROWS" in capsys.readouterr().err


def test_old_top_level_names_are_hidden_aliases(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "geometry" in text
    for old in ("calibrate", "stereo", "measure"):
        assert f"\n  {old} " not in text
    assert main(["geometry", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {c} " in text for c in ("calibrate", "stereo-calibrate", "stereo", "measure"))
    assert main(["calibrate", "--help"]) == 0 and "Alias of `fovea geometry calibrate`" in capsys.readouterr().out


def test_stereo_command(tmp_path, capsys):
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    cv2.imwrite(str(tmp_path / "l.png"), left[..., ::-1])
    cv2.imwrite(str(tmp_path / "r.png"), right[..., ::-1])
    assert main(["stereo", str(tmp_path / "l.png"), str(tmp_path / "r.png"), "--focal-px", "1000",
                 "--baseline", "0.2", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "cloud.ply").is_file() and np.load(tmp_path / "o" / "disparity.npy").shape == (500, 741)
