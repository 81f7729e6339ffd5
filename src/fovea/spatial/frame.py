"""The canonical (gravity-aligned) frame of spatial questions, found from metric depth.

Canonical frame (every quantity in `fovea.spatial` is expressed in it):
- y UP (the support surface's normal, or minus a given gravity vector), y = 0 on the support surface,
  so a point's y is its height above the floor or table top;
- x RIGHT: the camera's x axis projected on the support surface;
- z AWAY from the camera along the support surface (perpendicular to x and y, on the side the camera
  looks at), so "behind" = larger z = farther from the camera;
- origin: the camera centre's foot point on the support surface (the camera is at (0, h, 0)).
The frame is left-handed (OpenCV's camera frame, x right / y down / z forward, with y flipped): this
keeps the three axes' everyday meanings, which is what the questions need.

"Up" comes from a RANSAC plane fit on the pixels outside every object mask (`ransac_plane`, all
hypotheses scored at once on a 2,000-point subsample, then a least-squares refit on every inlier): the largest
plane within `max_tilt_deg` of the camera's image-up direction; a vertical wall is rejected and the
next plane is tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.errors import DataError


class SupportSurfaceError(DataError):
    """No horizontal support surface (floor, table top) could be found in the depth."""


@dataclass
class SupportFrame:
    """Camera -> canonical transform. axes (3, 3): rows = canonical x, y, z in camera coordinates;
    foot (3,): the origin in camera coordinates; camera_height_m; inlier_fraction of the fit;
    source: "ransac" | "gravity"."""

    axes: np.ndarray
    foot: np.ndarray
    camera_height_m: float
    inlier_fraction: float
    source: str

    def to_canonical(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) OpenCV camera-frame points -> (N, 3) canonical points."""
        return (np.asarray(points_cam, np.float64) - self.foot) @ self.axes.T

    def to_camera(self, points_can: np.ndarray) -> np.ndarray:
        """(N, 3) canonical points -> (N, 3) camera-frame points."""
        return np.asarray(points_can, np.float64) @ self.axes + self.foot

    @property
    def camera_canonical(self) -> np.ndarray:
        """The camera centre in canonical coordinates, (0, h, 0)."""
        return self.to_canonical(np.zeros((1, 3)))[0]


def frame_from_up(up_cam: np.ndarray, offset_m: float, inlier_fraction: float = float("nan"),
                  source: str = "gravity") -> SupportFrame:
    """Frame for the support plane {p : up . p = offset_m} (camera coordinates, up (3,) toward the camera side)."""
    up = np.asarray(up_cam, np.float64)
    up = up / np.linalg.norm(up)
    height = -offset_m  # camera (origin) height above the plane: up . 0 - offset
    if height <= 0:
        raise SupportSurfaceError(f"the support plane passes above the camera (camera height {height:.3f} m). "
                                  "Fix: check the gravity vector's sign (it points DOWN) or the depth map.")
    x = np.array([1.0, 0.0, 0.0]) - up[0] * up
    if np.linalg.norm(x) < 1e-6:
        raise SupportSurfaceError("the camera's x axis is vertical (camera rolled 90 deg); the canonical x axis "
                                  "is undefined. Fix: rotate the image upright first.")
    x /= np.linalg.norm(x)
    z = np.cross(x, up)  # camera frame is right-handed: x cross up is horizontal
    if z[2] < 0:
        z = -z
    foot = offset_m * up  # projection of the camera centre (origin) onto the plane
    return SupportFrame(np.stack([x, up, z]), foot, float(height), float(inlier_fraction), source)


def ransac_plane(points: np.ndarray, threshold_m: float, iterations: int = 256,
                 seed: int = 0) -> tuple[np.ndarray, float, np.ndarray]:
    """Vectorised RANSAC over 3-point samples (all hypotheses scored at once on (N, 3) points, N of a few
    thousand): (normal (3,), d, inliers (N,) bool) of the plane n . p + d = 0 with the most inliers."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(points), (iterations, 3))
    a, b, c = points[idx[:, 0]], points[idx[:, 1]], points[idx[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12
    if not ok.any():
        raise SupportSurfaceError("every RANSAC sample was degenerate (collinear points). Fix: check the depth map.")
    n, a = n[ok] / norm[ok, None], a[ok]
    d = -(n * a).sum(1)
    counts = (np.abs(points @ n.T + d) < threshold_m).sum(0)
    k = int(np.argmax(counts))
    return n[k], float(d[k]), np.abs(points @ n[k] + d[k]) < threshold_m


def _check_metric(points: np.ndarray, what: str) -> None:
    z = np.median(points[:, 2])
    if not (0.05 <= z <= 200.0):
        raise DataError(f"{what}: median depth {z:.4g} is outside 0.05-200, so the depth is not in metres "
                        "(a normalised or relative depth map, or millimetres). Fix: pass metric depth in metres "
                        "(stereo, an RGB-D sensor, a render or a metric model; divide millimetres by 1000).")


def find_support_frame(points_cam: np.ndarray, gravity_cam: np.ndarray | None = None, threshold_m: float | None = None,
                       max_tilt_deg: float = 75.0, min_inlier_fraction: float = 0.15, sample: int = 2000,
                       seed: int = 0, what: str = "depth") -> SupportFrame:
    """Canonical frame from background points (N, 3) in camera coordinates (outside all object masks).

    gravity_cam: the DOWN direction in camera coordinates if known (e.g. an IMU); then only the
    plane's height is searched (the most populated 1 cm level below the camera).
    threshold_m: RANSAC inlier distance (default 1 % of the median depth, at least 1 cm).
    """
    p = np.asarray(points_cam, np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    if len(p) < 50:
        raise SupportSurfaceError(f"{what}: only {len(p)} valid pixels outside the object masks; no support surface "
                                  "can be fitted. Fix: pass a gravity vector, or masks that leave the floor visible.")
    _check_metric(p, what)
    thr = threshold_m or max(0.01, 0.01 * float(np.median(p[:, 2])))
    rng = np.random.default_rng(seed)
    sub = p[rng.choice(len(p), min(sample, len(p)), replace=False)]
    if gravity_cam is not None:
        up = -np.asarray(gravity_cam, np.float64) / np.linalg.norm(gravity_cam)
        h = sub @ up
        bins = np.arange(h.min(), h.max() + 0.02, 0.01)
        counts, edges = np.histogram(h, bins=bins)
        level = edges[int(np.argmax(counts))] + 0.005
        near = np.abs(p @ up - level) < thr
        return frame_from_up(up, float(np.median(p[near] @ up)), float(near.mean()), "gravity")
    image_up = np.array([0.0, -1.0, 0.0])
    remaining = sub
    for _ in range(3):
        if len(remaining) < 50:
            break
        n, d, inliers = ransac_plane(remaining, thr, seed=seed)
        if d < 0:  # orient toward the camera: the camera (origin) has n . 0 + d > 0 on the up side
            n, d = -n, -d
        tilt = np.degrees(np.arccos(np.clip(n @ image_up, -1, 1)))
        frac = inliers.sum() / len(sub)
        if tilt <= max_tilt_deg and frac >= min_inlier_fraction:
            inl = np.abs(p @ n + d) < thr  # least-squares refit on every background point near the plane
            c = p[inl].mean(0)
            q = p[inl] - c
            n2 = np.linalg.eigh(q.T @ q)[1][:, 0]
            n2 = n2 if n2 @ n > 0 else -n2
            return frame_from_up(n2, float(n2 @ c), float(inl.mean()), "ransac")
        remaining = remaining[~inliers]
    raise SupportSurfaceError(
        f"{what}: no horizontal support surface found (no plane within {max_tilt_deg:.0f} deg of the image's up "
        f"direction holding >= {min_inlier_fraction:.0%} of the background pixels). Fix: pass gravity (the down "
        "vector in camera coordinates) or check that the floor / table top is visible and the depth is metric.")
