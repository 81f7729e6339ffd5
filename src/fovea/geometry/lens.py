"""Pinhole + Brown-Conrady lens model in plain numpy (OpenCV's 5-coefficient convention).

Lives in `geometry` (a bottom layer): `fovea.geometry.camera` projects with it and the `synth`
renderers cast exact rays through it (synth may import geometry, never the reverse); tests check
it against `cv2.projectPoints`.
Conventions: pixel centres at integer coordinates (OpenCV), dist = (k1, k2, p1, p2, k3).
"""

from __future__ import annotations

import numpy as np


def _dist5(dist) -> np.ndarray:
    d = np.zeros(5, np.float64)
    v = np.asarray(dist, np.float64).ravel()[:5]
    d[: len(v)] = v
    return d


def distort_normalized(xy: np.ndarray, dist) -> np.ndarray:
    """Apply radial/tangential distortion to ideal normalised coordinates. xy: (..., 2)."""
    k1, k2, p1, p2, k3 = _dist5(dist)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], -1)


def undistort_normalized(xy_d: np.ndarray, dist, iterations: int = 20) -> np.ndarray:
    """Invert `distort_normalized` by Newton's method (converges to ~1e-15 for real lenses).

    xy_d: (..., 2) distorted normalised coordinates -> (..., 2) ideal ones.
    """
    k1, k2, p1, p2, k3 = _dist5(dist)
    xy_d = np.asarray(xy_d, np.float64)
    x = xy_d[..., 0].copy()
    y = xy_d[..., 1].copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xy_d[..., 0]
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - xy_d[..., 1]
        a = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        b = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        c = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        e = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = a * e - b * c
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        dx = (e * fx - b * fy) / det
        dy = (a * fy - c * fx) / det
        x -= dx
        y -= dy
        if max(float(np.max(np.abs(dx), initial=0)), float(np.max(np.abs(dy), initial=0))) < 1e-15:
            break
    return np.stack([x, y], -1)


def project_points(points_cam: np.ndarray, K: np.ndarray, dist) -> np.ndarray:
    """Camera-frame points (..., 3) -> distorted pixel coordinates (..., 2)."""
    p = np.asarray(points_cam, np.float64)
    xy = p[..., :2] / p[..., 2:3]
    xd = distort_normalized(xy, dist)
    K = np.asarray(K, np.float64)
    u = K[0, 0] * xd[..., 0] + K[0, 1] * xd[..., 1] + K[0, 2]
    v = K[1, 1] * xd[..., 1] + K[1, 2]
    return np.stack([u, v], -1)


def pixels_to_normalized(uv: np.ndarray, K: np.ndarray, dist) -> np.ndarray:
    """Distorted pixel coordinates (..., 2) -> ideal normalised ray coordinates (..., 2) (z = 1)."""
    K = np.asarray(K, np.float64)
    uv = np.asarray(uv, np.float64)
    yd = (uv[..., 1] - K[1, 2]) / K[1, 1]
    xd = (uv[..., 0] - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    return undistort_normalized(np.stack([xd, yd], -1), dist)


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx
