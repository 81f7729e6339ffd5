"""Simulated depth cameras on `scenes3d` scenes: a structured-light projector-camera pair and a
continuous-wave time-of-flight sensor, both from the exact ray caster (so the truth is the render).

Structured light: every camera pixel's surface point is projected into the projector; it is lit when
the projector sees it (a z-buffer from the projector's centre: projector shadows stay dark), and
its intensity is albedo x (ambient + pattern value at its projector column) + noise, 8-bit.
Time of flight: each pixel sums the phasors a e^{i phi} of `supersample`^2 sub-rays (a = reflectance /
d^2, phi = 4 pi f d / c) - mixed pixels at depth edges become flying pixels, as in real sensors -
and the four correlation buckets get shot-like noise sigma0 sqrt(B + |a|).
"""

from __future__ import annotations

import numpy as np

from fovea.errors import ConfigError
from fovea.geometry.structured_light import ProjectorCameraPair
from fovea.geometry.tof import LIGHT_SPEED_M_S
from fovea.synth.scenes3d import Scene, cast, pixel_rays


def _albedo(scene: Scene) -> np.ndarray:
    return scene.rgb.astype(np.float64).mean(-1) / 255.0


def render_structured_light(scene: Scene, pair: ProjectorCameraPair, patterns: dict[str, np.ndarray],
                            ambient: float = 0.08, noise_sigma: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """Camera captures (same keys and counts as `patterns`, each (n, H, W) float in [0, 1]) of the scene
    lit by the projector. The projector must share the camera's orientation (pair.R = I)."""
    if not np.allclose(pair.R, np.eye(3)):
        raise ConfigError("the simulator needs a projector with the camera's orientation (R = I); "
                          "rectify the pair or extend the simulator.")
    rng = np.random.default_rng(seed)
    h, w = scene.depth.shape
    Kc, Kp = pair.K_cam, pair.K_proj
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = np.where(np.isfinite(scene.depth), scene.depth, np.nan).astype(np.float64)
    Xc = np.stack([(u - Kc[0, 2]) / Kc[0, 0] * z, (v - Kc[1, 2]) / Kc[1, 1] * z, z], -1)
    Xp = Xc @ pair.R.T + pair.T
    up = Kp[0, 0] * Xp[..., 0] / Xp[..., 2] + Kp[0, 2]
    vp = Kp[1, 1] * Xp[..., 1] / Xp[..., 2] + Kp[1, 2]
    pw, ph = pair.proj_size
    centre = scene.camera_centre + scene.cam_to_world @ (-pair.R.T @ pair.T)
    zbuf = cast(scene, pixel_rays(Kp, (pw, ph), 1), centre, scene.meta.get("texture_cell_m", 0.01))[0]
    inside = np.isfinite(up) & (up >= 0) & (up <= pw - 1) & (vp >= 0) & (vp <= ph - 1)
    ui = np.clip(np.round(np.nan_to_num(up)), 0, pw - 1).astype(int)
    vi = np.clip(np.round(np.nan_to_num(vp)), 0, ph - 1).astype(int)
    with np.errstate(invalid="ignore"):
        lit = inside & (Xp[..., 2] <= zbuf[vi, ui] * 1.002 + 0.003)
    albedo = _albedo(scene)
    out = {}
    for key, pats in patterns.items():
        caps = []
        for pat in pats:
            val = np.interp(np.nan_to_num(up), np.arange(pw), pat[0])
            img = albedo * (ambient + np.where(lit, val, 0.0)) + rng.normal(0, noise_sigma, (h, w))
            caps.append(np.round(np.clip(img, 0, 1) * 255) / 255)
        out[key] = np.stack(caps)
    return out


def render_tof(scene: Scene, freqs_hz: tuple[float, ...], supersample: int = 2, power: float = 1.0,
               ambient: float = 0.05, noise_sigma: float = 0.004, seed: int = 0) -> dict[float, np.ndarray]:
    """freq -> (4, H, W) correlation buckets A_k = B + Re(P e^{i k pi / 2}) of a CW-ToF pixel array,
    P = mean over the pixel's sub-rays of power * reflectance / d^2 * e^{i 4 pi f d / c} (one ray cast
    serves every frequency)."""
    rng = np.random.default_rng(seed)
    h, w = scene.depth.shape
    s = supersample
    rays = pixel_rays(scene.K, (w, h), s)
    t, _, rgb = cast(scene, rays, scene.camera_centre, scene.meta.get("texture_cell_m", 0.01))
    d = t * np.linalg.norm(rays, axis=-1)
    refl = np.clip(rgb.mean(-1), 0, None) * 1.5
    hit = np.isfinite(d)
    amp = np.where(hit, power * refl / np.where(hit, d, 1.0) ** 2, 0.0)
    d0 = np.where(hit, d, 0.0)
    out = {}
    for f in freqs_hz:
        P = (amp * np.exp(1j * 4 * np.pi * f * d0 / LIGHT_SPEED_M_S)).reshape(h, s, w, s).mean((1, 3))
        B = ambient + np.abs(P)
        buckets = np.stack([B + np.real(P * np.exp(1j * k * np.pi / 2)) for k in range(4)])
        out[f] = buckets + rng.normal(0, 1, buckets.shape) * noise_sigma * np.sqrt(B)[None]
    return out
