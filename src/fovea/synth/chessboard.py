"""Exact renders of planar targets (chessboards, objects on a table) under a known camera.

Every pixel is cast as a ray through the true lens model (distortion inverted by Newton's
method), intersected with the target plane and shaded by a texture function in millimetres, with
s x s supersampling, optical blur, uneven lighting, sensor noise and 8-bit quantisation. The
ground truth (K, distortion, poses, true corner pixels) travels with the images so calibration
and measurement can be checked against the truth, not against themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fovea.errors import ConfigError
from fovea.geometry.lens import pixels_to_normalized, project_points, rotation_matrix

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u_mm, v_mm) -> intensity in [0, 1]


@dataclass
class TrueCamera:
    """Ground-truth camera: K (3, 3), dist (k1, k2, p1, p2, k3), image_size (width, height)."""

    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]

    @classmethod
    def default(cls) -> "TrueCamera":
        """A 640x480 camera with a moderately wide, barrel-distorted lens."""
        K = np.array([[620.0, 0, 322.5], [0, 624.0, 236.8], [0, 0, 1]])
        return cls(K, np.array([-0.26, 0.09, 0.0008, -0.0006, -0.012]), (640, 480))

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "dist": list(map(float, self.dist)), "image_size": list(self.image_size)}


@dataclass
class BoardSpec:
    """A chessboard with `cols` x `rows` INNER corners, squares of `square_mm`, white margin."""

    cols: int = 9
    rows: int = 6
    square_mm: float = 25.0
    margin_mm: float | None = None  # white border beyond the outer squares; default one square

    def object_points(self) -> np.ndarray:
        """(cols*rows, 3) float32 corner positions on the board plane (z = 0), row-major in mm."""
        j, i = np.mgrid[0 : self.rows, 0 : self.cols]
        pts = np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], 1) * self.square_mm
        return pts.astype(np.float32)

    def extent_mm(self) -> tuple[float, float, float, float]:
        """(u0, v0, u1, v1) of the white board including its margin."""
        m = self.square_mm if self.margin_mm is None else self.margin_mm
        s = self.square_mm
        return (-s - m, -s - m, self.cols * s + m, self.rows * s + m)


def chessboard_texture(board: BoardSpec, background: float = 0.45) -> Texture:
    """Texture of `board` in its own mm frame; outside the white margin: `background`."""
    s = board.square_mm
    u0, v0, u1, v1 = board.extent_mm()

    def tex(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = np.floor(u / s).astype(np.int64)
        b = np.floor(v / s).astype(np.int64)
        in_squares = (a >= -1) & (a <= board.cols - 1) & (b >= -1) & (b <= board.rows - 1)
        dark = in_squares & ((a + b) % 2 == 0)
        on_board = (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        out = np.where(on_board, np.where(dark, 0.08, 0.92), background)
        return out.astype(np.float64)

    return tex


def image_texture(picture: np.ndarray, mm_per_px: float, origin_mm=(0.0, 0.0), background: float = 0.45) -> Texture:
    """A printed picture ((H, W) uint8, e.g. a ChArUco board) lying on the plane; pixel (0, 0)'s
    top-left corner at `origin_mm`; nearest-neighbour lookup (supersampling anti-aliases)."""
    pic = picture.astype(np.float64) / 255.0
    h, w = pic.shape[:2]

    def tex(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        i = np.floor((v - origin_mm[1]) / mm_per_px).astype(np.int64)
        j = np.floor((u - origin_mm[0]) / mm_per_px).astype(np.int64)
        inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
        return np.where(inside, pic[np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)], background)

    return tex


def pixel_rays(camera: TrueCamera, supersample: int = 2) -> np.ndarray:
    """(H*s, W*s, 2) ideal normalised ray coordinates of each sub-pixel sample centre."""
    w, h = camera.image_size
    s = supersample
    offs = (np.arange(s) + 0.5) / s - 0.5
    us = (np.arange(w)[:, None] + offs[None, :]).ravel()
    vs = (np.arange(h)[:, None] + offs[None, :]).ravel()
    uu, vv = np.meshgrid(us, vs)
    return pixels_to_normalized(np.stack([uu, vv], -1), camera.K, camera.dist)


def render_plane(
    rays: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    texture: Texture,
    supersample: int,
    background: float = 0.45,
) -> np.ndarray:
    """Shade a plane (its frame: X_cam = R @ [u, v, 0] + t, mm) seen along `rays` -> (H, W) float."""
    d = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], -1)
    n = R[:, 2]
    denom = d @ n
    s = float(n @ t) / np.where(np.abs(denom) < 1e-12, 1e-12, denom)
    p = d * s[..., None] - t  # (Hs, Ws, 3) ray-plane hits minus t
    uv = p @ R  # R^T (X - t) row-wise
    img = texture(uv[..., 0], uv[..., 1])
    img = np.where(s > 0, img, background)
    hs, ws = img.shape
    k = supersample
    return img.reshape(hs // k, k, ws // k, k).mean(axis=(1, 3))


def finish_image(
    img: np.ndarray, rng: np.random.Generator, blur_sigma_px: float, noise_sigma: float, lighting: bool
) -> np.ndarray:
    """Blur, lighting gradient + vignetting, Gaussian noise (gray levels), 8-bit -> (H, W, 3) uint8."""
    h, w = img.shape
    if blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma_px)
    if lighting:
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        gx, gy = rng.uniform(-0.25, 0.25, 2)
        r2 = ((xx - 0.5 * w / max(h, w)) ** 2 + (yy - 0.5 * h / max(h, w)) ** 2) / 0.5
        gain = (1 + gx * (xx - 0.5) + gy * (yy - 0.5)) * (1 - 0.25 * r2) * rng.uniform(0.75, 1.1)
        img = img * gain + rng.uniform(0.0, 0.05)
    img = img * 255 + rng.normal(0, noise_sigma, img.shape)
    g = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def random_board_pose(
    camera: TrueCamera, board: BoardSpec, rng: np.random.Generator, depth_range_mm=(330.0, 650.0),
    max_tilt_deg: float = 40.0, border_px: float = 6.0, tries: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """A random (R, t) that keeps the whole white board inside the image and facing the camera."""
    w, h = camera.image_size
    u0, v0, u1, v1 = board.extent_mm()
    outline = np.array([[u0, v0, 0], [u1, v0, 0], [u1, v1, 0], [u0, v1, 0]])
    centre = np.array([(u0 + u1) / 2, (v0 + v1) / 2, 0])
    for _ in range(tries):
        tilt = np.deg2rad(max_tilt_deg)
        R = rotation_matrix(rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt), rng.uniform(-0.5, 0.5))
        z = rng.uniform(*depth_range_mm)
        px = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
        ray = pixels_to_normalized(px, camera.K, camera.dist)
        t = np.array([ray[0] * z, ray[1] * z, z]) - R @ centre
        pts = outline @ R.T + t
        if np.any(pts[:, 2] < 50) or R[2, 2] < 0.2:
            continue
        uv = project_points(pts, camera.K, camera.dist)
        if np.all((uv[:, 0] > border_px) & (uv[:, 0] < w - 1 - border_px) & (uv[:, 1] > border_px)
                  & (uv[:, 1] < h - 1 - border_px)):
            return R, t
    raise ConfigError(f"no board pose fits the {w}x{h} image after {tries} tries; "
                      "Fix: use a smaller board (--square-mm) or a larger depth range.")


@dataclass
class CalibrationRenders:
    """Rendered views plus their ground truth. images: list of (H, W, 3) uint8."""

    images: list[np.ndarray]
    camera: TrueCamera
    board: BoardSpec
    rotations: list[np.ndarray]
    translations: list[np.ndarray]
    true_corners_px: list[np.ndarray] = field(default_factory=list)  # each (N, 2)


def render_calibration_views(
    n_views: int = 20, seed: int = 0, camera: TrueCamera | None = None, board: BoardSpec | None = None,
    supersample: int = 2, blur_sigma_px: float = 0.7, noise_sigma: float = 2.0, lighting: bool = True,
    depth_range_mm=(330.0, 650.0),
) -> CalibrationRenders:
    """Render `n_views` chessboard views with random poses; deterministic for a seed."""
    camera = camera or TrueCamera.default()
    board = board or BoardSpec()
    rng = np.random.default_rng(seed)
    rays = pixel_rays(camera, supersample)
    tex = chessboard_texture(board)
    out = CalibrationRenders([], camera, board, [], [])
    obj = board.object_points().astype(np.float64)
    for _ in range(n_views):
        R, t = random_board_pose(camera, board, rng, depth_range_mm)
        img = render_plane(rays, R, t, tex, supersample)
        out.images.append(finish_image(img, rng, blur_sigma_px, noise_sigma, lighting))
        out.rotations.append(R)
        out.translations.append(t)
        out.true_corners_px.append(project_points(obj @ R.T + t, camera.K, camera.dist))
    return out


def save_renders(renders: CalibrationRenders, out_dir: str | Path) -> Path:
    """Write view_XXX.png and truth.json (camera, board, poses, true corners)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(renders.images):
        cv2.imwrite(str(out / f"view_{i:03d}.png"), img[..., ::-1])
    b = renders.board
    truth = {
        "camera": renders.camera.to_dict(),
        "board": {"cols": b.cols, "rows": b.rows, "square_mm": b.square_mm},
        "rotations": [r.tolist() for r in renders.rotations],
        "translations_mm": [t.tolist() for t in renders.translations],
        "true_corners_px": [c.tolist() for c in renders.true_corners_px],
    }
    (out / "truth.json").write_text(json.dumps(truth))
    return out
