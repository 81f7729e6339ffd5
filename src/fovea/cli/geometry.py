"""`fovea calibrate`, `fovea stereo`, `fovea measure`: metric geometry from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from fovea.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _expand(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    if not out:
        raise DataError(f"no images found in {[str(p) for p in paths]}. Fix: pass image files or a folder of them.")
    return out


def _read(path: Path) -> np.ndarray:
    from fovea.io.image import read_image

    return read_image(path)


@click.command("calibrate")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--board", default="9x6", show_default=True, help="INNER corners COLSxROWS")
@click.option("--square-mm", default=25.0, show_default=True, type=float)
@click.option("--detector", default="sb", type=click.Choice(["sb", "classic"]), show_default=True)
@click.option("--out", default="cam.json", show_default=True, help=".json or .yaml (OpenCV FileStorage)")
@click.option("--report-dir", default=None, help="coverage/uncertainty PNG + report.json (default: beside --out)")
@click.option("--bootstrap", default=20, show_default=True, help="bootstrap refits for the uncertainty map (0: off)")
def calibrate(images, board, square_mm, detector, out, report_dir, bootstrap):
    """Calibrate a camera from chessboard IMAGES (files or folders)."""
    from fovea.geometry.calibration import (bootstrap_uncertainty, calibrate_images, cross_validation_difference,
                                            parse_board, quality_report, save_coverage_png)

    pattern = parse_board(board)
    paths = _expand(images)
    res, log = calibrate_images([_read(p) for p in paths], pattern, square_mm, [p.name for p in paths], detector)
    rdir = Path(report_dir) if report_dir else Path(out).parent
    rdir.mkdir(parents=True, exist_ok=True)
    unc = bootstrap_uncertainty(res, n_boot=bootstrap) if bootstrap else None
    cv = cross_validation_difference(res) if len(res.kept) >= 8 else None
    rep = quality_report(res, unc, cv)
    rep["images_without_board"] = log["missed"]
    res.model.meta["report"] = {k: v for k, v in rep.items() if k not in ("per_view_rms_px",)}
    res.model.save(out)
    save_coverage_png(rdir / "calibration_coverage.png", res.image_points, res.model.image_size, uncertainty=unc)
    (rdir / "calibration_report.json").write_text(json.dumps(rep, indent=2, default=float))
    click.echo(f"views: {len(res.kept)} used, {len(res.rejected)} rejected {sorted(res.rejected)}, "
               f"{len(log['missed'])} without a board {log['missed'][:5]}")
    click.echo(f"fx {rep['fx']:.2f}  fy {rep['fy']:.2f}  cx {rep['cx']:.2f}  cy {rep['cy']:.2f}  "
               f"RMS {rep['rms_px']:.3f} px (sqrt of mean squared corner residual)")
    if unc is not None:
        u = rep["projection_uncertainty_px"]
        click.echo(f"projection uncertainty (bootstrap): mean {u['mean_px']:.2f} px, max {u['max_px']:.2f} px")
    click.echo(f"coverage {rep['coverage_fraction']:.0%} of image cells; wrote {out} and {rdir}/calibration_*")


@click.command("stereo")
@click.argument("left", type=click.Path(exists=True, dir_okay=False))
@click.argument("right", type=click.Path(exists=True, dir_okay=False))
@click.option("--rig", default=None, help="stereo rig JSON (StereoRig.save); omit for already rectified images")
@click.option("--num-disparities", default=64, show_default=True)
@click.option("--block-size", default=3, show_default=True)
@click.option("--focal-px", default=None, type=float, help="rectified focal length (no --rig)")
@click.option("--baseline", default=None, type=float, help="baseline in output units (no --rig)")
@click.option("--out", default="stereo_out", show_default=True)
def stereo(left, right, rig, num_disparities, block_size, focal_px, baseline, out):
    """Disparity (PNG + .npy), depth and a PLY point cloud from a stereo pair."""
    import cv2

    from fovea.geometry.stereo import (SGMConfig, StereoRig, compute_disparity, disparity_to_depth,
                                       disparity_to_points, rectify, save_ply)

    L, R = _read(Path(left)), _read(Path(right))
    Q = None
    if rig:
        r = rectify(StereoRig.load(rig))
        L, R = r.apply(L, R)
        focal_px, baseline, Q = r.focal_px, r.baseline, r.Q
    disp, valid = compute_disparity(L, R, SGMConfig(num_disparities=num_disparities, block_size=block_size))
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    np.save(o / "disparity.npy", disp)
    vis = cv2.applyColorMap(cv2.normalize(np.nan_to_num(disp), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8),
                            cv2.COLORMAP_TURBO)
    cv2.imwrite(str(o / "disparity.png"), vis)
    msg = f"disparity: {valid.mean():.1%} passed the left-right check; wrote {o}/disparity.(npy|png)"
    if focal_px and baseline:
        depth = disparity_to_depth(disp, focal_px, baseline)
        np.save(o / "depth.npy", depth)
        if Q is None:
            h, w = disp.shape
            Q = np.array([[1, 0, 0, -w / 2], [0, 1, 0, -h / 2], [0, 0, 0, focal_px], [0, 0, 1 / baseline, 0]], float)
        pts = disparity_to_points(disp, Q)
        save_ply(o / "cloud.ply", pts[::2, ::2].reshape(-1, 3), L[::2, ::2].reshape(-1, 3))
        msg += ", depth.npy, cloud.ply"
    click.echo(msg)


@click.command("measure")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--calib", required=True, type=click.Path(exists=True), help="camera model from `fovea calibrate`")
@click.option("--reference", required=True, type=click.Path(exists=True), help="image of the board lying on the plane")
@click.option("--board", default="9x6", show_default=True)
@click.option("--square-mm", default=25.0, show_default=True, type=float)
@click.option("--mask", default=None, type=click.Path(exists=True), help="object mask PNG (default: dark objects)")
@click.option("--threshold", default=None, type=int, help="gray threshold for dark objects when no --mask")
def measure(image, calib, reference, board, square_mm, mask, threshold):
    """Sizes in mm / mm^2 of the objects in IMAGE lying on the plane of the reference board."""
    import cv2

    from fovea.geometry.calibration import parse_board
    from fovea.geometry.camera import CameraModel
    from fovea.geometry.measure import PlaneMeasurer

    model = CameraModel.load(calib)
    pm = PlaneMeasurer.from_reference_board(_read(Path(reference)), model, parse_board(board), square_mm,
                                            source=str(reference))
    img = _read(Path(image))
    if mask:
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0
    else:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        t = threshold if threshold is not None else cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]
        m = gray < t
    if m.shape != img.shape[:2]:
        raise ConfigError(f"mask {mask} is {m.shape[1]}x{m.shape[0]} but {image} is {img.shape[1]}x{img.shape[0]}.")
    sizes = pm.object_sizes(m)
    for i, s in enumerate(sizes):
        flag = "  (touches the image border: size is a lower bound)" if s.touches_border else ""
        click.echo(f"object {i}: {s.length_mm} x {s.width_mm}, area {s.area_mm2}{flag}")
    if not sizes:
        click.echo("no objects found; pass --mask or --threshold")
