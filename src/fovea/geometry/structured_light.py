"""Structured-light depth: Gray-code plus phase-shift column coding, decoding and triangulation.

A projector (pinhole K_p, `width_px` x `height_px`) and a camera (pinhole K_c) form a calibrated
pair: a point X_c in camera coordinates is X_p = R @ X_c + T in projector coordinates (OpenCV
convention, as `fovea.geometry.stereo.StereoRig`). The projector shows
1. `n_bits` Gray-code column patterns and their inverses (a bit is 1 where the pattern is brighter
   than its inverse: robust to albedo and ambient light without a threshold), coding half-period
   stripes (width P / 2), so the coarse column x_g = (j + 1/2) P / 2 is within P / 4 of the truth
   even where a bit flips at a stripe border;
2. `n_steps` sinusoidal phase-shift patterns of period P = `period_px` (I_i = 1/2 + 1/2
   cos(2 pi x / P - 2 pi i / n)), whose wrapped phase phi gives the sub-period position.
Column = P (k + phi / 2 pi) with the period index k = round((x_g - P phi / 2 pi) / P): the phase
fixes the fine position, the Gray code only which period (no off-by-one at period borders). Each decoded camera
pixel then defines a ray, each projector column a plane through the projector centre; their
intersection is the 3D point. Pixels are invalid where the modulation (pattern contrast) is low
(shadows of the projector, dark surfaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.errors import ConfigError, DataError


@dataclass
class ProjectorCameraPair:
    """K_cam, K_proj (3, 3); R (3, 3), T (3,) camera -> projector (metres); projector size (w, h) px."""

    K_cam: np.ndarray
    K_proj: np.ndarray
    R: np.ndarray
    T: np.ndarray
    proj_size: tuple[int, int]

    @classmethod
    def side_by_side(cls, K_cam: np.ndarray, baseline_m: float, proj_size=(1024, 768),
                     proj_focal_px: float | None = None) -> "ProjectorCameraPair":
        """A projector `baseline_m` to the right of the camera, same orientation (T = (-b, 0, 0))."""
        w, h = proj_size
        f = proj_focal_px or float(K_cam[0, 0]) * w / (2 * float(K_cam[0, 2]))
        Kp = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
        return cls(np.asarray(K_cam, float), Kp, np.eye(3), np.array([-baseline_m, 0.0, 0.0]), (w, h))


def gray_code(n: np.ndarray) -> np.ndarray:
    """Binary-reflected Gray code of non-negative integers."""
    return n ^ (n >> 1)


def gray_decode(g: np.ndarray) -> np.ndarray:
    """Inverse of `gray_code` (prefix XOR of the bits)."""
    n = g.copy()
    shift = 1
    while shift < 64:
        n ^= n >> shift
        shift *= 2
    return n


def n_stripes(width_px: int, period_px: int) -> int:
    return int(np.ceil(width_px / period_px))


def column_patterns(width_px: int, height_px: int, period_px: int = 16, n_steps: int = 4) -> dict[str, np.ndarray]:
    """Projector images in [0, 1]: "gray" (n_bits, H, W), "gray_inv" (n_bits, H, W), "phase" (n_steps, H, W)."""
    if period_px < 4 or period_px % 2 or n_steps < 3:
        raise ConfigError(f"period_px={period_px}, n_steps={n_steps}: need an even period >= 4 px and >= 3 "
                          "phase steps.")
    x = np.arange(width_px)
    stripes = n_stripes(width_px, period_px // 2)
    n_bits = max(1, int(np.ceil(np.log2(stripes))))
    code = gray_code(x // (period_px // 2))
    bits = ((code[None, :] >> np.arange(n_bits - 1, -1, -1)[:, None]) & 1).astype(np.float64)  # MSB first
    gray = np.repeat(bits[:, None, :], height_px, axis=1)
    shifts = 2 * np.pi * np.arange(n_steps) / n_steps
    ph = 0.5 + 0.5 * np.cos(2 * np.pi * x[None, :] / period_px - shifts[:, None])
    phase = np.repeat(ph[:, None, :], height_px, axis=1)
    return {"gray": gray, "gray_inv": 1.0 - gray, "phase": phase}


@dataclass
class Decoded:
    """column_px (H, W) float projector column (nan = invalid); modulation (H, W); valid (H, W) bool."""

    column_px: np.ndarray
    modulation: np.ndarray
    valid: np.ndarray


def decode_columns(gray: np.ndarray, gray_inv: np.ndarray, phase: np.ndarray, period_px: int,
                   min_modulation: float = 0.02) -> Decoded:
    """Captured images -> projector column per camera pixel.

    gray, gray_inv: (n_bits, H, W) captures of the Gray patterns and their inverses (MSB first);
    phase: (n_steps, H, W) captures of the shifted sinusoids; any linear camera response.
    """
    gray, gray_inv, phase = (np.asarray(a, np.float64) for a in (gray, gray_inv, phase))
    if gray.shape != gray_inv.shape or gray.shape[1:] != phase.shape[1:]:
        raise DataError(f"pattern captures differ in shape: gray {gray.shape}, inverse {gray_inv.shape}, "
                        f"phase {phase.shape}. Fix: capture every pattern at one resolution.")
    bits = (gray > gray_inv).astype(np.int64)
    code = np.zeros(bits.shape[1:], np.int64)
    for b in bits:
        code = (code << 1) | b
    k_gray = gray_decode(code)
    n = phase.shape[0]
    shifts = 2 * np.pi * np.arange(n) / n
    s = np.tensordot(np.sin(shifts), phase, 1)
    c = np.tensordot(np.cos(shifts), phase, 1)
    phi = np.mod(np.arctan2(s, c), 2 * np.pi)  # I_i = a + b cos(phi - shift_i) -> phi
    modulation = 2 * np.hypot(s, c) / n
    frac = phi / (2 * np.pi)
    gray_contrast = np.abs(gray - gray_inv).min(0)
    x_g = (k_gray + 0.5) * (period_px / 2)          # coarse column, within P / 4
    k = np.round((x_g - frac * period_px) / period_px)
    col = period_px * (k + frac)
    valid = (modulation >= min_modulation) & (gray_contrast >= min_modulation)
    return Decoded(np.where(valid, col, np.nan), modulation, valid)


def triangulate_columns(column_px: np.ndarray, pair: ProjectorCameraPair) -> np.ndarray:
    """(H, W) projector columns seen at each camera pixel -> (H, W) depth z in camera coordinates (metres).

    The projector column u_p is the plane x_p - (u_p - cx_p) / fx_p * z_p = 0 in projector coordinates,
    i.e. n . (R X_c + T) = 0 with n = (1, 0, -(u_p - cx_p) / fx_p); the camera ray X_c = z (x, y, 1).
    """
    h, w = column_px.shape
    Kc, Kp = pair.K_cam, pair.K_proj
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(u - Kc[0, 2]) / Kc[0, 0], (v - Kc[1, 2]) / Kc[1, 1], np.ones_like(u)], -1)
    a = (column_px - Kp[0, 2]) / Kp[0, 0]
    n = np.stack([np.ones_like(a), np.zeros_like(a), -a], -1)        # (H, W, 3) plane normals, projector frame
    nR = n @ pair.R                                                   # R^T n, as rows
    denom = (nR * ray).sum(-1)
    num = -(n @ np.asarray(pair.T, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / denom
    return np.where(np.isfinite(z) & (z > 0), z, np.nan)
