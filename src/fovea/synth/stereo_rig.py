"""Exact renders of chessboard views seen by a stereo rig of two known cameras.

Builds on `fovea.synth.chessboard`: the same ray-cast renderer (true lens model, supersampling,
blur, lighting, noise, 8-bit), run once per camera for the same board pose. The rig follows
OpenCV's convention: a point X_l in the left-camera frame is X_r = R @ X_l + T in the right one
(so a right camera 80 mm to the right of the left one has T ~ (-80, 0, 0) mm). The ground truth
(both cameras, R, T, board poses, true corner pixels in both images) travels with the images so
a stereo calibration can be checked against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fovea.errors import ConfigError
from fovea.geometry.lens import project_points, rotation_matrix
from fovea.synth.chessboard import (
    BoardSpec, TrueCamera, chessboard_texture, finish_image, pixel_rays, random_board_pose, render_plane,
)


@dataclass
class TrueRig:
    """Ground-truth stereo rig: two cameras and the left -> right transform (R (3, 3), T (3,) mm)."""

    left: TrueCamera
    right: TrueCamera
    R: np.ndarray
    T: np.ndarray

    @classmethod
    def default(cls) -> "TrueRig":
        """Two 640x480 cameras, 80 mm apart, toed in by 2 deg with a small pitch and roll; the right
        camera has its own (slightly different) intrinsics and distortion, as real pairs do."""
        left = TrueCamera.default()
        K2 = np.array([[626.0, 0, 317.9], [0, 629.5, 241.3], [0, 0, 1]])
        right = TrueCamera(K2, np.array([-0.25, 0.085, -0.0005, 0.0007, -0.01]), left.image_size)
        R = rotation_matrix(np.deg2rad(0.4), np.deg2rad(-2.0), np.deg2rad(0.3))
        T = np.array([-79.8, 0.9, 1.6])
        return cls(left, right, R, T)

    @property
    def baseline_mm(self) -> float:
        """|T|: the distance between the two optical centres."""
        return float(np.linalg.norm(self.T))

    def to_dict(self) -> dict:
        return {"left": self.left.to_dict(), "right": self.right.to_dict(), "R": np.asarray(self.R).tolist(),
                "T_mm": np.asarray(self.T, float).ravel().tolist(), "baseline_mm": self.baseline_mm}


@dataclass
class StereoRenders:
    """Rendered pairs plus their ground truth. Images: (H, W, 3) uint8; corners: (N, 2) px each.

    rotations[i], translations[i]: board -> LEFT camera (X_l = R @ [u, v, 0] + t, mm).
    """

    left_images: list[np.ndarray]
    right_images: list[np.ndarray]
    rig: TrueRig
    board: BoardSpec
    rotations: list[np.ndarray] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    true_corners_left_px: list[np.ndarray] = field(default_factory=list)
    true_corners_right_px: list[np.ndarray] = field(default_factory=list)


def _board_inside(camera: TrueCamera, board: BoardSpec, R: np.ndarray, t: np.ndarray, border_px: float) -> bool:
    """True when the whole white board (with margin) lies in front of `camera` and inside its image."""
    u0, v0, u1, v1 = board.extent_mm()
    outline = np.array([[u0, v0, 0], [u1, v0, 0], [u1, v1, 0], [u0, v1, 0]])
    pts = outline @ R.T + t
    if np.any(pts[:, 2] < 50):
        return False
    w, h = camera.image_size
    uv = project_points(pts, camera.K, camera.dist)
    return bool(np.all((uv[:, 0] > border_px) & (uv[:, 0] < w - 1 - border_px)
                       & (uv[:, 1] > border_px) & (uv[:, 1] < h - 1 - border_px)))


def random_stereo_board_pose(rig: TrueRig, board: BoardSpec, rng: np.random.Generator,
                             depth_range_mm=(330.0, 650.0), max_tilt_deg: float = 40.0, border_px: float = 6.0,
                             tries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A random board pose (board -> left camera) whose whole board is seen by BOTH cameras."""
    for _ in range(tries):
        R, t = random_board_pose(rig.left, board, rng, depth_range_mm, max_tilt_deg, border_px)
        R_r, t_r = rig.R @ R, rig.R @ t + np.asarray(rig.T, float).ravel()
        if R_r[2, 2] > 0.2 and _board_inside(rig.right, board, R_r, t_r, border_px):
            return R, t
    raise ConfigError(f"no board pose is seen whole by both cameras after {tries} tries (baseline "
                      f"{rig.baseline_mm:.0f} mm, depths {depth_range_mm} mm). Fix: use a smaller board or "
                      "move the depth range further away.")


def render_stereo_calibration_pairs(
    n_pairs: int = 16, seed: int = 0, rig: TrueRig | None = None, board: BoardSpec | None = None,
    supersample: int = 2, blur_sigma_px: float = 0.7, noise_sigma: float = 2.0, lighting: bool = True,
    depth_range_mm=(330.0, 650.0),
) -> StereoRenders:
    """Render `n_pairs` left/right views of one board pose each; deterministic for a seed."""
    rig = rig or TrueRig.default()
    board = board or BoardSpec()
    if rig.left.image_size != rig.right.image_size:
        raise ConfigError(f"rig cameras differ in size ({rig.left.image_size} vs {rig.right.image_size}). "
                          "Fix: render both cameras at one resolution.")
    rng = np.random.default_rng(seed)
    rays_l, rays_r = pixel_rays(rig.left, supersample), pixel_rays(rig.right, supersample)
    tex = chessboard_texture(board)
    obj = board.object_points().astype(np.float64)
    T = np.asarray(rig.T, float).ravel()
    out = StereoRenders([], [], rig, board)
    for _ in range(n_pairs):
        R, t = random_stereo_board_pose(rig, board, rng, depth_range_mm)
        R_r, t_r = rig.R @ R, rig.R @ t + T
        out.left_images.append(finish_image(render_plane(rays_l, R, t, tex, supersample), rng,
                                            blur_sigma_px, noise_sigma, lighting))
        out.right_images.append(finish_image(render_plane(rays_r, R_r, t_r, tex, supersample), rng,
                                             blur_sigma_px, noise_sigma, lighting))
        out.rotations.append(R)
        out.translations.append(t)
        out.true_corners_left_px.append(project_points(obj @ R.T + t, rig.left.K, rig.left.dist))
        out.true_corners_right_px.append(project_points(obj @ R_r.T + t_r, rig.right.K, rig.right.dist))
    return out


def save_stereo_renders(renders: StereoRenders, out_dir: str | Path) -> Path:
    """Write left/pair_XXX.png, right/pair_XXX.png (same stem = same pair) and truth.json."""
    out = Path(out_dir)
    for side, images in (("left", renders.left_images), ("right", renders.right_images)):
        (out / side).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            cv2.imwrite(str(out / side / f"pair_{i:03d}.png"), img[..., ::-1])
    b = renders.board
    truth = {
        "rig": renders.rig.to_dict(),
        "board": {"cols": b.cols, "rows": b.rows, "square_mm": b.square_mm},
        "rotations": [r.tolist() for r in renders.rotations],
        "translations_mm": [t.tolist() for t in renders.translations],
        "true_corners_left_px": [c.tolist() for c in renders.true_corners_left_px],
        "true_corners_right_px": [c.tolist() for c in renders.true_corners_right_px],
    }
    (out / "truth.json").write_text(json.dumps(truth))
    return out
