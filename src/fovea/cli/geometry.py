"""`fovea geometry calibrate|stereo-calibrate|stereo|measure`: metric geometry from the command line.

The old top-level names (`fovea calibrate`, `fovea stereo`, `fovea measure`) still work as hidden
aliases: the module attributes `calibrate`, `stereo` and `measure` are those aliases.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import click
import numpy as np

from fovea.cli.progress import progress_bar
from fovea.errors import ConfigError, DataError, ImageReadError

SKIP_BAD_HELP = ("Skip unreadable images (and, for stereo pairs, files without a partner) instead of stopping; "
                 "each is counted and listed.")


# ---- reading ------------------------------------------------------------------------------------
def _list(sources, skip_bad: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from files, folders or globs (fovea.io.list_images); (paths, skipped (path, reason))."""
    from fovea.io import list_images

    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for s in sources:
        found = list_images(s, skip_bad=skip_bad)
        paths += list(found)
        skipped += found.skipped
    return paths, skipped


def _read(path: Path) -> np.ndarray:
    from fovea.io import read_image

    return read_image(path)


def _read_all(paths, skip_bad: bool, progress, stage: str = "read") -> tuple[list, list, list[tuple[Path, str]]]:
    """Decode every path -> (kept paths, images, skipped (path, reason)); unreadable files raise
    ImageReadError unless skip_bad."""
    kept, images, skipped = [], [], []
    for i, p in enumerate(paths):
        try:
            images.append(_read(p))
            kept.append(p)
        except ImageReadError as exc:
            if not skip_bad:
                raise
            skipped.append((Path(p), exc.reason))
        progress(stage, i + 1, len(paths))
    return kept, images, skipped


def _echo_skipped(skipped, what: str = "unreadable file(s)") -> None:
    if skipped:
        click.echo(f"skipped {len(skipped)} {what}:")
        for path, reason in skipped:
            click.echo(f"  {path}: {reason}")


def _skip_bad_option(f):
    return click.option("--skip-bad", is_flag=True, help=SKIP_BAD_HELP)(f)


# ---- calibrate ----------------------------------------------------------------------------------
@click.command("calibrate")
@click.argument("images", nargs=-1, required=True)
@click.option("--board", default="9x6", show_default=True, help="INNER corners COLSxROWS")
@click.option("--square-mm", default=25.0, show_default=True, type=float)
@click.option("--detector", default="sb", type=click.Choice(["sb", "classic"]), show_default=True)
@click.option("--out", default="cam.json", show_default=True, help=".json or .yaml (OpenCV FileStorage)")
@click.option("--report-dir", default=None, help="coverage/uncertainty PNG + report.json (default: beside --out)")
@click.option("--bootstrap", default=20, show_default=True, help="bootstrap refits for the uncertainty map (0: off)")
@_skip_bad_option
def calibrate_command(images, board, square_mm, detector, out, report_dir, bootstrap, skip_bad):
    """Calibrate a camera from chessboard IMAGES (files, folders or quoted globs)."""
    from fovea.geometry.calibration import (bootstrap_uncertainty, calibrate_images, cross_validation_difference,
                                            parse_board, quality_report, save_coverage_png)

    pattern = parse_board(board)
    paths, skipped = _list(images, skip_bad)
    with progress_bar() as progress:
        paths, imgs, bad = _read_all(paths, skip_bad, progress)
        res, log = calibrate_images(imgs, pattern, square_mm, [p.name for p in paths], detector, progress=progress)
        unc = bootstrap_uncertainty(res, n_boot=bootstrap, progress=progress) if bootstrap else None
    skipped += bad
    rdir = Path(report_dir) if report_dir else Path(out).parent
    rdir.mkdir(parents=True, exist_ok=True)
    cv = cross_validation_difference(res) if len(res.kept) >= 8 else None
    rep = quality_report(res, unc, cv)
    rep["images_without_board"] = log["missed"]
    rep["images_skipped"] = [{"path": str(p), "reason": r} for p, r in skipped]
    res.model.meta["report"] = {k: v for k, v in rep.items() if k not in ("per_view_rms_px",)}
    res.model.save(out)
    save_coverage_png(rdir / "calibration_coverage.png", res.image_points, res.model.image_size, uncertainty=unc)
    (rdir / "calibration_report.json").write_text(json.dumps(rep, indent=2, default=float))
    _echo_skipped(skipped)
    click.echo(f"views: {len(res.kept)} used, {len(res.rejected)} rejected {sorted(res.rejected)}, "
               f"{len(log['missed'])} without a board {log['missed'][:5]}")
    click.echo(f"fx {rep['fx']:.2f}  fy {rep['fy']:.2f}  cx {rep['cx']:.2f}  cy {rep['cy']:.2f}  "
               f"RMS {rep['rms_px']:.3f} px (sqrt of mean squared corner residual)")
    if unc is not None:
        u = rep["projection_uncertainty_px"]
        click.echo(f"projection uncertainty (bootstrap): mean {u['mean_px']:.2f} px, max {u['max_px']:.2f} px")
    click.echo(f"coverage {rep['coverage_fraction']:.0%} of image cells; wrote {out} and {rdir}/calibration_*")


# ---- stereo-calibrate ---------------------------------------------------------------------------
def _pairs(left_dir, right_dir, skip_bad: bool):
    """Match the two folders by file stem; unmatched files stop the run unless skip_bad."""
    from fovea.geometry.stereo_calibration import pair_by_stem

    left, skipped_l = _list([left_dir], skip_bad)
    right, skipped_r = _list([right_dir], skip_bad)
    listing = pair_by_stem(left, right)
    unmatched = listing.left_only + listing.right_only
    if unmatched and not skip_bad:
        names = ", ".join(str(p) for p in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise DataError(f"{len(listing.left_only)} image(s) in {left_dir} and {len(listing.right_only)} in {right_dir} "
                        f"have no partner with the same file stem in the other folder: {names}. Fix: give each "
                        "left image a right image with the same stem, remove the extra files, or pass --skip-bad "
                        "to calibrate without them (they are listed).")
    if not listing.pairs:
        raise DataError(f"no file stem appears in both {left_dir} and {right_dir}. Fix: name each pair alike, "
                        "e.g. left/pair_001.png and right/pair_001.png.")
    return listing, skipped_l + skipped_r


def _save_rectified_preview(path: Path, rect, left: np.ndarray, right: np.ndarray) -> Path:
    """Side-by-side rectified pair with horizontal lines every 32 px (corresponding points share a row)."""
    import cv2

    a, b = rect.apply(left, right)
    img = np.ascontiguousarray(np.concatenate([a, b], axis=1))
    for y in range(16, img.shape[0], 32):
        cv2.line(img, (0, y), (img.shape[1] - 1, y), (0, 255, 0), 1)
    cv2.imwrite(str(path), img[..., ::-1])
    return path


@click.command("stereo-calibrate")
@click.argument("left_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("right_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--board", default="9x6", show_default=True, help="INNER corners COLSxROWS")
@click.option("--square-mm", default=25.0, show_default=True, type=float, help="square size; sets the rig's units")
@click.option("--detector", default="sb", type=click.Choice(["sb", "classic"]), show_default=True)
@click.option("--out", default="rig.json", show_default=True, help="stereo rig JSON (read by `stereo --rig`)")
@click.option("--fix-intrinsics", is_flag=True,
              help="keep each camera's single-camera intrinsics (default: refine both jointly with R, T)")
@click.option("--bootstrap", default=20, show_default=True, help="refits for the baseline uncertainty (0: off)")
@click.option("--alpha", default=0.0, show_default=True, type=float,
              help="rectification: 0 keeps valid pixels only, 1 keeps every source pixel")
@_skip_bad_option
def stereo_calibrate_command(left_dir, right_dir, board, square_mm, detector, out, fix_intrinsics, bootstrap,
                             alpha, skip_bad):
    """Calibrate a stereo rig from chessboard pairs: LEFT_DIR/x.png pairs with RIGHT_DIR/x.png."""
    from fovea.geometry.calibration import parse_board
    from fovea.geometry.stereo_calibration import calibrate_stereo_images

    pattern = parse_board(board)
    listing, skipped = _pairs(left_dir, right_dir, skip_bad)
    with progress_bar() as progress:
        names, lefts, rights = [], [], []
        for i, (stem, lp, rp) in enumerate(listing.pairs):
            try:
                pair = (_read(lp), _read(rp))
            except ImageReadError as exc:
                if not skip_bad:
                    raise
                skipped.append((Path(exc.path), exc.reason))
            else:
                names.append(stem)
                lefts.append(pair[0])
                rights.append(pair[1])
            progress("read", i + 1, len(listing.pairs))
        res, log = calibrate_stereo_images(lefts, rights, pattern, square_mm, names, detector, progress,
                                           refine_intrinsics=not fix_intrinsics, n_boot=bootstrap, alpha=alpha)
    res.rig.meta["detection"] = {
        "pairs_matched": len(listing.pairs), "pairs_used": len(res.pair_names), "pairs_found": log["found"],
        "pairs_without_board": log["missed"], "pairs_rejected": sorted(res.rejected),
        "left_without_partner": [str(p) for p in listing.left_only],
        "right_without_partner": [str(p) for p in listing.right_only],
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
    }
    rig_path = res.rig.save(out)
    first = names.index(res.pair_names[0])
    preview = _save_rectified_preview(rig_path.parent / f"{rig_path.stem}_rectified.png", res.rectification,
                                      lefts[first], rights[first])
    _echo_skipped(skipped)
    _echo_skipped([(p, "no partner in the other folder") for p in listing.left_only + listing.right_only],
                  "file(s) without a partner")
    missed = [f"{m['name']} ({m['missing_in']})" for m in log["missed"]]
    click.echo(f"pairs: {len(listing.pairs)} matched, {len(res.pair_names)} used, {len(res.rejected)} rejected "
               f"{sorted(res.rejected)}, {len(missed)} without a board in both images {missed[:5]}")
    q = res.rig.meta["quality"]
    line = f"baseline {res.baseline_mm:.3f} mm"
    if "baseline_uncertainty_mm" in q:
        line += (f" +- {q['baseline_uncertainty_mm']['std_mm']:.3f} mm (bootstrap std), rotation +- "
                 f"{q['rotation_uncertainty_deg']:.3f} deg")
    click.echo(line)
    e = q["epipolar_error_px"]
    click.echo(f"RMS {q['rms_px']:.3f} px; rectified epipolar error |y_l - y_r|: mean {e['mean']:.3f} px, "
               f"max {e['max']:.3f} px")
    click.echo(f"wrote {rig_path} and {preview}")


# ---- stereo -------------------------------------------------------------------------------------
@click.command("stereo")
@click.argument("left", type=click.Path(exists=True, dir_okay=False))
@click.argument("right", type=click.Path(exists=True, dir_okay=False))
@click.option("--rig", default=None, type=click.Path(exists=True, dir_okay=False),
              help="stereo rig JSON from `fovea geometry stereo-calibrate`; omit for already rectified images")
@click.option("--num-disparities", default=64, show_default=True)
@click.option("--block-size", default=3, show_default=True)
@click.option("--focal-px", default=None, type=float, help="rectified focal length (no --rig)")
@click.option("--baseline", default=None, type=float, help="baseline in output units (no --rig)")
@click.option("--out", default="stereo_out", show_default=True)
def stereo_command(left, right, rig, num_disparities, block_size, focal_px, baseline, out):
    """Disparity (PNG + .npy), depth and a PLY point cloud from a stereo pair."""
    import cv2

    from fovea.geometry.stereo import (SGMConfig, StereoRig, compute_disparity, disparity_to_depth,
                                       disparity_to_points, rectify, save_ply)

    L, R = _read(Path(left)), _read(Path(right))
    Q = None
    units = "the units of --baseline"
    if rig:
        stereo_rig = StereoRig.load(rig)
        stereo_rig.check_image_size((L.shape[1], L.shape[0]), str(left))
        stereo_rig.check_image_size((R.shape[1], R.shape[0]), str(right))
        r = rectify(stereo_rig)
        if r.vertical:
            raise ConfigError(f"stereo rig {rig} has its cameras one above the other (T = "
                              f"{np.round(stereo_rig.T.ravel(), 2).tolist()}), but the matcher needs a side-by-side "
                              "pair. Fix: rotate the images of both cameras by 90 degrees (the same way), then "
                              "calibrate and match the rotated images.")
        L, R = r.apply(L, R)
        focal_px, baseline, Q = r.focal_px, r.baseline, r.Q
        units = stereo_rig.meta.get("units", "the units of the rig's T")
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
        msg += f", depth.npy, cloud.ply (in {units})"
    click.echo(msg)


# ---- measure ------------------------------------------------------------------------------------
@click.command("measure")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--calib", required=True, type=click.Path(exists=True),
              help="camera model from `fovea geometry calibrate`")
@click.option("--reference", required=True, type=click.Path(exists=True), help="image of the board lying on the plane")
@click.option("--board", default="9x6", show_default=True)
@click.option("--square-mm", default=25.0, show_default=True, type=float)
@click.option("--mask", default=None, type=click.Path(exists=True), help="object mask PNG (default: dark objects)")
@click.option("--threshold", default=None, type=int, help="gray threshold for dark objects when no --mask")
def measure_command(image, calib, reference, board, square_mm, mask, threshold):
    """Sizes in mm / mm^2 of the objects in IMAGE lying on the plane of the reference board."""
    import cv2

    from fovea.geometry.calibration import parse_board
    from fovea.geometry.camera import CameraModel
    from fovea.geometry.measure import PlaneMeasurer
    from fovea.io import read_mask

    model = CameraModel.load(calib)
    pm = PlaneMeasurer.from_reference_board(_read(Path(reference)), model, parse_board(board), square_mm,
                                            source=str(reference))
    img = _read(Path(image))
    if mask:
        m = read_mask(mask)
    else:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        t = threshold if threshold is not None else cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]
        m = gray < t
    if m.shape != img.shape[:2]:
        raise ConfigError(f"mask {mask} is {m.shape[1]}x{m.shape[0]} but {image} is {img.shape[1]}x{img.shape[0]}. "
                          "Fix: pass a mask drawn on this image (same width and height).")
    sizes = pm.object_sizes(m)
    for i, s in enumerate(sizes):
        flag = "  (touches the image border: size is a lower bound)" if s.touches_border else ""
        click.echo(f"object {i}: {s.length_mm} x {s.width_mm}, area {s.area_mm2}{flag}")
    if not sizes:
        click.echo("no objects found; pass --mask or --threshold")


# ---- the group and the old top-level names --------------------------------------------------------
@click.group("geometry")
def geometry() -> None:
    """Metric geometry: camera and stereo-rig calibration, plane measurement, stereo depth."""


for _cmd in (calibrate_command, stereo_calibrate_command, stereo_command, measure_command):
    geometry.add_command(_cmd)


def _hidden_alias(cmd: click.Command) -> click.Command:
    """The same command under its old top-level name, left out of `fovea --help`."""
    alias = copy.copy(cmd)
    alias.hidden = True
    alias.help = f"Alias of `fovea geometry {cmd.name}`. " + (cmd.help or "")
    return alias


calibrate = _hidden_alias(calibrate_command)
stereo = _hidden_alias(stereo_command)
measure = _hidden_alias(measure_command)
