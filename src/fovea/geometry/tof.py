"""Continuous-wave time-of-flight depth: four-bucket phase decoding, wrap-around, dual-frequency
unwrapping, and the two standard clean-up filters (amplitude threshold, flying-pixel filter).

Model (per pixel, modulation frequency f, light speed c): the return is a phasor a e^{i phi} with
phi = 4 pi f d / c (d = RADIAL distance along the ray), so d is known only modulo the unambiguous
range c / (2 f) (7.49 m at 20 MHz). The sensor samples the correlation at four shifts,
A_k = B + a cos(phi + k pi / 2), k = 0..3 (B: ambient + offset); then phi = atan2(A_3 - A_1,
A_0 - A_2) and a = sqrt((A_3 - A_1)^2 + (A_0 - A_2)^2) / 2. A pixel that sees two surfaces (an
object edge) sums their phasors, giving a depth in between: a "flying pixel".
Radial distance -> camera z: z = d / |(x, y, 1)| for the pixel's normalised ray (x, y, 1).
"""

from __future__ import annotations

import cv2
import numpy as np

from fovea.errors import ConfigError

LIGHT_SPEED_M_S = 299_792_458.0


def unambiguous_range_m(freq_hz: float) -> float:
    """c / (2 f): the distance at which the phase wraps."""
    if freq_hz <= 0:
        raise ConfigError(f"modulation frequency {freq_hz} Hz must be > 0.")
    return LIGHT_SPEED_M_S / (2 * freq_hz)


def phase_of_distance(d_m: np.ndarray, freq_hz: float) -> np.ndarray:
    """Wrapped phase in [0, 2 pi) of radial distances."""
    return np.mod(4 * np.pi * freq_hz * np.asarray(d_m, np.float64) / LIGHT_SPEED_M_S, 2 * np.pi)


def four_bucket(buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, H, W) correlation samples A_0..A_3 -> (phase (H, W) in [0, 2 pi), amplitude (H, W))."""
    A0, A1, A2, A3 = np.asarray(buckets, np.float64)
    phi = np.mod(np.arctan2(A3 - A1, A0 - A2), 2 * np.pi)
    return phi, 0.5 * np.hypot(A3 - A1, A0 - A2)


def phase_to_distance(phi: np.ndarray, freq_hz: float) -> np.ndarray:
    """Wrapped phase -> radial distance in [0, c / 2f)."""
    return phi * LIGHT_SPEED_M_S / (4 * np.pi * freq_hz)


def unwrap_dual(d1: np.ndarray, d2: np.ndarray, f1_hz: float, f2_hz: float, max_range_m: float) -> np.ndarray:
    """Two wrapped distances at f1, f2 -> one distance in [0, max_range_m): the (n1, n2) wrap counts whose
    candidates d1 + n1 r1 and d2 + n2 r2 agree best; their weighted mean (weights f^2, the phase-noise
    variance ratio). max_range_m must be below the pair's joint range c / (2 gcd(f1, f2)): beyond it
    every distance has an exact alias."""
    joint = unambiguous_range_m(float(np.gcd(int(round(f1_hz)), int(round(f2_hz)))))
    if max_range_m >= joint:
        raise ConfigError(f"max_range_m={max_range_m} reaches the joint unambiguous range {joint:.2f} m of "
                          f"{f1_hz / 1e6:g} and {f2_hz / 1e6:g} MHz (c / 2 gcd). Fix: lower max_range_m or pick "
                          "frequencies with a smaller common divisor.")
    r1, r2 = unambiguous_range_m(f1_hz), unambiguous_range_m(f2_hz)
    n1 = np.arange(int(np.ceil(max_range_m / r1)))
    n2 = np.arange(int(np.ceil(max_range_m / r2)))
    c1 = d1[..., None, None] + n1[:, None] * r1
    c2 = d2[..., None, None] + n2[None, :] * r2
    err = np.abs(c1 - c2)
    flat = err.reshape(*err.shape[:-2], -1)
    best = np.argmin(np.where(np.isfinite(flat), flat, np.inf), -1)
    i1, i2 = np.unravel_index(best, (len(n1), len(n2)))
    a = d1 + n1[i1] * r1
    b = d2 + n2[i2] * r2
    w1, w2 = f1_hz**2, f2_hz**2
    return (w1 * a + w2 * b) / (w1 + w2)


def radial_to_z(d_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) radial distance -> camera z, for a pinhole K."""
    h, w = d_m.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return d_m / np.sqrt(x * x + y * y + 1)


def amplitude_filter(depth: np.ndarray, amplitude: np.ndarray, min_amplitude: float) -> np.ndarray:
    """nan where the return is too weak (noise dominates the phase: dark, far or grazing surfaces)."""
    return np.where(amplitude >= min_amplitude, depth, np.nan)


def flying_pixel_filter(depth: np.ndarray, rel_tol: float = 0.02, abs_tol_m: float = 0.02,
                        min_support: int = 3) -> np.ndarray:
    """nan where fewer than `min_support` of the 8 neighbours lie within max(abs_tol, rel_tol z) of the
    pixel's depth: a mixed pixel between two surfaces agrees with neither side, while a genuine edge
    pixel keeps at least three neighbours on its own surface."""
    z = np.asarray(depth, np.float64)
    pad = np.pad(z, 1, constant_values=np.nan)
    h, w = z.shape
    tol = np.maximum(abs_tol_m, rel_tol * z)
    support = np.zeros((h, w), np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            with np.errstate(invalid="ignore"):
                support += (np.abs(nb - z) <= tol).astype(np.int32)
    return np.where(support >= min_support, z, np.nan)


def median_denoise(depth: np.ndarray, ksize: int = 3) -> np.ndarray:
    """Median of the valid pixels (invalid stay invalid): reduces the per-pixel phase noise."""
    z = np.asarray(depth, np.float32)
    ok = np.isfinite(z)
    med = cv2.medianBlur(np.where(ok, z, 0).astype(np.float32), ksize)
    cnt = cv2.blur(ok.astype(np.float32), (ksize, ksize))
    return np.where(ok & (cnt > 0.99), med, z).astype(np.float32)
