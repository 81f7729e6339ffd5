"""Scene lifting: metric depth + intrinsics + named instance masks -> per-object 3D geometry.

Per object (all in the canonical frame of `fovea.spatial.frame`):
1. the mask's pixels (eroded by `erode_px` so mixed depth at the silhouette is left out) are
   back-projected; pixels on a depth discontinuity (flying pixels) are dropped;
2. outliers: points past an empty stretch (> max(2 cm, 4 sigma, 3 pixels)) on any axis (`gap_trim`);
3. flags: `border` (the mask touches the image border), `occluded` (another object is nearer
   the camera right at the mask's edge) and `coverage` (< 80 % of the eroded mask has valid,
   smooth depth, e.g. stereo's unmatched left band): the object's extents are then lower bounds,
   so size and distance questions about it are skipped (counted);
4. the hidden back: a single view sees the front and the top. The back is completed by a 180 deg
   rotation of the visible points about the vertical axis through the footprint centre (x: the
   middle of the silhouette's x range; z: the middle of the top band's z range, the top band being
   the points within 5 % of the object's height of its top). Exact for upright boxes of any yaw,
   cylinders and spheres; an assumption (documented, not hidden) for other shapes;
5. the bottom snaps to what the object stands on (`snap_to_supports`): the highest of the support
   surface (y = 0) and the tops of other objects whose footprint holds this object's footprint
   centre that is not above its lowest visible point (+ 2 cm), when that lowest point is within
   max(1.5 cm, 55 % of the object's height above that level) of it: an apple's underside is never
   visible, and seen steeply from close by its lowest visible point is up to ~r above the table
   (measured: 0.48 of its height); an object floating below 55 % of its own height is snapped wrongly;
6. uncertainty `sigma_m`: the depth noise model evaluated at the object's median depth.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from scipy import ndimage

from fovea.errors import DataError, MaskMismatchError
from fovea.spatial.frame import SupportFrame, find_support_frame


MIN_COVERAGE = 0.8


@dataclass
class ObjectGeometry:
    """One object in the canonical frame (metres). lo, hi (3,): its upright bounding box; footprint
    (K, 2): convex (x, z) polygon of its projection on the support; rect_sides (2,): sides of the
    footprint's minimum-area rectangle; points (M, 3): surface samples (for closest-surface gaps);
    sigma_m: position uncertainty; border / occluded: extents are lower bounds."""

    id: int
    name: str
    lo: np.ndarray
    hi: np.ndarray
    footprint: np.ndarray
    rect_sides: np.ndarray
    points: np.ndarray
    sigma_m: float = 0.0
    border: bool = False
    occluded: bool = False
    resting: bool = True
    n_points: int = 0
    pixel_box: tuple = (0, 0, 0, 0)  # x0, y0, x1, y1 of the mask (for pictures)
    support_id: int | None = None  # what it rests on (0 = the support surface)
    coverage: float = 1.0  # fraction of the (eroded) mask with valid depth

    @property
    def centre(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def size(self) -> np.ndarray:
        """(width along x, height along y, depth along z)."""
        return self.hi - self.lo

    @property
    def reliable(self) -> bool:
        """Extents are not lower bounds: inside the image, not occluded, >= 80 % of the mask has depth."""
        return not (self.border or self.occluded) and self.coverage >= MIN_COVERAGE

    @property
    def footprint_area(self) -> float:
        return float(cv2.contourArea(self.footprint.astype(np.float32)))

    @property
    def box_volume(self) -> float:
        """Volume of the upright box on the minimum-area footprint rectangle (the 'bigger' definition)."""
        return float(self.rect_sides[0] * self.rect_sides[1] * self.size[1])


@dataclass
class LiftResult:
    """objects: the lifted objects; frame: the canonical frame; skipped: reason -> count (masks not lifted)."""

    objects: list[ObjectGeometry]
    frame: SupportFrame
    skipped: Counter = field(default_factory=Counter)
    image_size: tuple[int, int] = (0, 0)


def rendered_sigma(z_m: np.ndarray) -> np.ndarray:
    """Depth noise of an exact render: float32 rounding only (about 1 mm at most)."""
    return np.full_like(np.asarray(z_m, np.float64), 0.001)


def stereo_sigma(focal_px: float, baseline_m: float, disparity_sigma_px: float = 0.25) -> Callable:
    """sigma_Z = Z^2 / (f B) * sigma_d: the first-order depth error of a stereo pair."""
    return lambda z: np.asarray(z, np.float64) ** 2 / (focal_px * baseline_m) * disparity_sigma_px


def check_inputs(depth: np.ndarray, labels: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None,
                 source: str = "input") -> None:
    """Raise a clear error for size mismatches, non-float depth and impossible intrinsics."""
    if depth.ndim != 2:
        raise DataError(f"{source}: depth must be (H, W), got shape {depth.shape}. Fix: pass one depth channel.")
    if labels.shape != depth.shape:
        raise MaskMismatchError(f"{source}: masks are {labels.shape[1]}x{labels.shape[0]} px but the depth is "
                                f"{depth.shape[1]}x{depth.shape[0]} px. Fix: resize the masks (nearest) or the depth "
                                "to one size.")
    if rgb is not None and rgb.shape[:2] != depth.shape:
        raise MaskMismatchError(f"{source}: the image is {rgb.shape[1]}x{rgb.shape[0]} px but the depth is "
                                f"{depth.shape[1]}x{depth.shape[0]} px. Fix: register the depth to the image.")
    if not np.issubdtype(depth.dtype, np.floating):
        raise DataError(f"{source}: depth has dtype {depth.dtype}; integer depth is usually millimetres or a "
                        "normalised map. Fix: convert to float metres (e.g. depth_mm / 1000.0).")
    h, w = depth.shape
    if not (0 < K[0, 2] < w and 0 < K[1, 2] < h and K[0, 0] > 0 and K[1, 1] > 0):
        raise DataError(f"{source}: intrinsics fx={K[0, 0]:.1f} cx={K[0, 2]:.1f} cy={K[1, 2]:.1f} do not fit a "
                        f"{w}x{h} image. Fix: pass the K of this image size (scale K when resizing).")


def backproject_pixels(rows: np.ndarray, cols: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N,) rows/cols with depth z (N,) -> (N, 3) OpenCV camera-frame points."""
    return np.stack([(cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], 1)


def occlusion_flags(depth: np.ndarray, labels: np.ndarray, sigma: Callable) -> set[int]:
    """Labels with a neighbouring pixel of ANOTHER object that is nearer by > max(2 cm, 3 sigma)."""
    occluded: set[int] = set()
    for a, b, da, db in ((labels[:, :-1], labels[:, 1:], depth[:, :-1], depth[:, 1:]),
                         (labels[:-1], labels[1:], depth[:-1], depth[1:])):
        diff = (a != b) & (a > 0) & (b > 0)
        if not diff.any():
            continue
        la, lb, za, zb = a[diff], b[diff], da[diff], db[diff]
        with np.errstate(invalid="ignore"):
            thr = np.maximum(0.02, 3 * sigma(np.fmin(za, zb)))
            occluded.update(np.unique(la[zb < za - thr]).tolist())
            occluded.update(np.unique(lb[za < zb - thr]).tolist())
    return occluded


def gap_trim(p: np.ndarray, gap_m: float) -> np.ndarray:
    """(N,) keep-mask of (N, 3) points: on each axis, walking out from the median, everything past the
    first empty stretch longer than gap_m is an outlier. Unlike percentile fences this keeps thin but
    continuous tails (the corner of a yawed box) and drops separated ones (flying pixels)."""
    keep = np.ones(len(p), bool)
    for ax in range(p.shape[1]):
        s = np.sort(p[:, ax])
        mid = len(s) // 2
        big = np.nonzero(np.diff(s) > gap_m)[0]
        lo_i = big[big < mid]
        hi_i = big[big >= mid]
        lo = s[lo_i[-1] + 1] if len(lo_i) else s[0]
        hi = s[hi_i[0]] if len(hi_i) else s[-1]
        keep &= (p[:, ax] >= lo) & (p[:, ax] <= hi)
    return keep


def noise_trim_pct(sigma_m: float) -> float:
    """Percent trimmed at each end of the z (depth) range: 0 for clean depth (sigma < 3 mm: a yawed box's
    corner is a thin but real tail), 1 % for noisy depth (the min / max of thousands of noisy depths
    sits several sigma beyond the surface). x is never trimmed: depth noise only scales it."""
    return 0.0 if sigma_m < 0.003 else 1.0


def complete_points(q: np.ndarray, sigma_m: float) -> tuple[np.ndarray, float]:
    """(N, 3) visible canonical points -> (2N, 3) with the back completed by the 180 deg rotation about
    the vertical axis through the footprint centre (module doc, step 4); also returns the top y."""
    y_top = float(np.percentile(q[:, 1], 99.5))
    y_bot = float(q[:, 1].min())
    band = q[q[:, 1] >= y_top - max(0.05 * (y_top - y_bot), 2.5 * sigma_m, 0.003)]
    if len(band) < 5:
        band = q
    t = noise_trim_pct(sigma_m)
    zc = float(np.mean(np.percentile(band[:, 2], [t, 100 - t])))
    xc = float(q[:, 0].min() + q[:, 0].max()) / 2
    mirrored = np.stack([2 * xc - q[:, 0], q[:, 1], 2 * zc - q[:, 2]], 1)
    return np.concatenate([q, mirrored]), y_top


def lift_object(q: np.ndarray, oid: int, name: str, sigma_m: float, max_points: int = 3000,
                seed: int = 0) -> ObjectGeometry:
    """Cleaned visible canonical points (N, 3) of one object -> its ObjectGeometry (module doc 4-5)."""
    full, y_top = complete_points(q, sigma_m)
    t = noise_trim_pct(sigma_m)
    lo, hi = full.min(0), full.max(0)
    lo[2], hi[2] = np.percentile(full[:, 2], [t, 100 - t])  # depth noise acts along the rays: mostly z
    if t > 0:
        full = full[(full[:, 2] >= lo[2]) & (full[:, 2] <= hi[2])]
    rng = np.random.default_rng(seed + oid)
    if len(full) > max_points:
        full = full[rng.choice(len(full), max_points, replace=False)]
    hi[1] = y_top
    xz = full[:, [0, 2]].astype(np.float32)
    hull = cv2.convexHull(xz)[:, 0, :].astype(np.float64)
    _, sides, _ = cv2.minAreaRect(xz)
    return ObjectGeometry(oid, name, lo, hi, hull, np.array(sides, np.float64), full, sigma_m, resting=False,
                          n_points=len(q))


def lift_scene(depth: np.ndarray, K: np.ndarray, labels: np.ndarray, names: dict[int, str],
               sigma: Callable = rendered_sigma, gravity_cam: np.ndarray | None = None, erode_px: int = 1,
               min_points: int = 30, source: str = "input", seed: int = 0, depth_is_metric: bool = True,
               max_pixels: int = 6000) -> LiftResult:
    """Metric depth (H, W) float metres, K (3, 3), instance labels (H, W) int (0 = background, k = object k
    named names[k]) -> LiftResult. Masks that cannot be lifted are counted in `skipped` by reason.
    Objects covering more than max_pixels valid pixels are lifted from a regular sub-grid of them.
    depth_is_metric=False (relative / normalised depth, e.g. VGGT, MiDaS) is refused: no constant
    factor makes it metric (VQASynth's hard-coded x10 is the bug this avoids)."""
    if not depth_is_metric:
        raise DataError(f"{source}: the depth is marked non-metric (relative or normalised). Spatial answers need "
                        "metres. Fix: use stereo, an RGB-D sensor or a metric depth model, or scale the depth with a "
                        "known metric anchor first.")
    depth = np.asarray(depth)
    labels = np.asarray(labels)
    K = np.asarray(K, np.float64)
    check_inputs(depth, labels, K, source=source)
    depth = depth.astype(np.float64)
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    bg_r, bg_c = np.nonzero((labels == 0) & valid)
    if len(bg_r) > 30000:  # a random subset is plenty for a plane
        pick = np.random.default_rng(seed).choice(len(bg_r), 30000, replace=False)
        bg_r, bg_c = bg_r[pick], bg_c[pick]
    frame = find_support_frame(backproject_pixels(bg_r, bg_c, depth[bg_r, bg_c], K), gravity_cam, seed=seed,
                               what=source)
    med = cv2.medianBlur(np.where(valid, depth, 0).astype(np.float32), 3)
    smooth = valid & (np.abs(depth - med) <= np.maximum(0.02, 0.03 * depth))
    occluded = occlusion_flags(np.where(valid, depth, np.nan), labels, sigma)
    skipped: Counter = Counter()
    objects = []
    slices = ndimage.find_objects(labels.astype(np.int32))
    for oid, name in sorted(names.items()):
        sl = slices[oid - 1] if 0 < oid <= len(slices) else None
        if sl is None:
            skipped["empty mask"] += 1
            continue
        r0, c0 = max(sl[0].start - 1, 0), max(sl[1].start - 1, 0)
        r1, c1 = min(sl[0].stop + 1, h), min(sl[1].stop + 1, w)
        m = (labels[r0:r1, c0:c1] == oid).astype(np.uint8)
        if erode_px > 0:
            me = cv2.erode(m, np.ones((2 * erode_px + 1,) * 2, np.uint8))
            m = me if me.sum() >= min_points else m
        n_mask = int(m.sum())
        rr, cc = np.nonzero(m.astype(bool) & smooth[r0:r1, c0:c1])
        coverage = len(rr) / max(n_mask, 1)
        stride = int(np.ceil(np.sqrt(len(rr) / max_pixels)))
        if stride > 1:  # a regular pixel grid keeps the silhouette's extremes to within a stride
            keep = (rr % stride == 0) & (cc % stride == 0)
            keep[[np.argmin(cc), np.argmax(cc), np.argmin(rr), np.argmax(rr)]] = True
            rr, cc = rr[keep], cc[keep]
        if len(rr) < min_points:
            skipped["too few valid depth pixels"] += 1
            continue
        rr, cc = rr + r0, cc + c0
        z = depth[rr, cc]
        q = frame.to_canonical(backproject_pixels(rr, cc, z, K))
        z_med = float(np.median(z))
        sig = float(sigma(z_med))
        q = q[gap_trim(q, max(0.02, 4 * sig, 3 * z_med / K[0, 0]))]
        g = lift_object(q, oid, name, sig, seed=seed)
        rim = (erode_px + 0.5) * z_med / K[0, 0]  # the eroded / filtered silhouette rim, given back
        g.lo[0] -= rim
        g.hi[0] += rim
        # on the floor direction z the same rim is stretched by 1 / sin(elevation of the view ray)
        cam = frame.camera_canonical
        elev = np.arctan2(cam[1] - g.hi[1], max(float(np.hypot(g.centre[0], g.centre[2])), 1e-6))
        rim_z = min(rim / max(np.sin(elev), 0.2), 0.05 * g.size[2])
        g.lo[2] -= rim_z
        g.hi[2] += rim_z
        g.border = bool(sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w)
        g.occluded = oid in occluded
        g.pixel_box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        g.coverage = coverage
        objects.append(g)
    snap_to_supports(objects)
    return LiftResult(objects, frame, skipped, (w, h))


def snap_to_supports(objects: list[ObjectGeometry]) -> None:
    """Set lo[1], resting and support_id of every object in place (module doc, step 5)."""
    bottoms = {g.id: float(g.lo[1]) for g in objects}
    for g in objects:
        low = bottoms[g.id]
        c = (float(g.centre[0]), float(g.centre[2]))
        level, sid = 0.0, 0
        for h in objects:
            if h is g or h.hi[1] > low + max(0.02, 2 * g.sigma_m) or h.hi[1] <= level:
                continue
            if cv2.pointPolygonTest(h.footprint.astype(np.float32), c, False) >= 0:
                level, sid = float(h.hi[1]), h.id
        if low - level < max(0.015, 0.55 * (g.hi[1] - level), 2 * g.sigma_m):
            g.lo[1], g.support_id, g.resting = level, sid, sid == 0
