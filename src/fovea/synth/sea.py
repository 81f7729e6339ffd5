"""Synthetic nadir drone views of an oil spill at sea, with exact ground truth.

The spill is a continuous field on the sea surface (metres): anisotropic plumes modulated by
random-Fourier noise give a "strength" s(X, Y); thresholds on s give the classes water, sheen,
rainbow and true-colour oil, and each class gets a film thickness inside its Bonn Agreement band
(interior margins, so a band-based volume range must contain the truth). A camera at
`altitude_m` looking straight down (image x, y = ground X, Y; optional lens distortion) renders
2x2-supersampled RGB; the mask is the class at each pixel centre. Truth areas and volume are
integrated on a ground grid 4x finer than the ground sampling distance, over the exact footprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fovea.errors import ConfigError
from fovea.geometry.lens import pixels_to_normalized, project_points

CLASS_NAMES = ("water", "sheen", "rainbow", "true_colour")
# thickness (um) drawn inside these sub-bands of the Bonn codes 1, 2 and 4 (see apps/oilspill/rules.yaml)
TRUE_THICKNESS_UM = {1: (0.06, 0.25), 2: (0.5, 4.0), 3: (60.0, 180.0)}
S_THRESHOLDS = (0.14, 0.36, 0.66)  # s -> sheen, rainbow, true colour


@dataclass
class DroneCamera:
    """Nadir camera: K (3, 3), dist (5,), image_size (w, h)."""

    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]

    @classmethod
    def default(cls, width: int = 320, height: int = 240, distorted: bool = True) -> "DroneCamera":
        f = 0.9 * width
        K = np.array([[f, 0, width / 2 - 0.5 + 1.3], [0, f * 1.002, height / 2 - 0.5 - 0.8], [0, 0, 1]])
        dist = np.array([-0.12, 0.03, 0.0, 0.0, 0.0]) if distorted else np.zeros(5)
        return cls(K, dist, (width, height))

    def to_dict(self) -> dict:
        """Same layout as fovea.geometry.camera.CameraModel JSON."""
        return {"model": "opencv5", "image_size": list(self.image_size), "K": self.K.tolist(),
                "dist": list(map(float, self.dist)), "rms_px": float("nan"), "meta": {"source": "fovea.synth.sea"}}


@dataclass
class SpillField:
    """Procedural spill on the sea surface; evaluate with `strength(X, Y)` (metres)."""

    plumes: list[tuple[float, float, float, float, float, float]]  # x0, y0, sigma_along, sigma_across, angle, peak
    waves: np.ndarray  # (K, 4): kx, ky, phase, amplitude

    @classmethod
    def random(cls, rng: np.random.Generator, extent_m: float, n_plumes: int = 2, spread: float = 1.0) -> "SpillField":
        plumes = []
        for _ in range(n_plumes):
            plumes.append((rng.uniform(-0.3, 0.3) * extent_m, rng.uniform(-0.2, 0.2) * extent_m,
                           rng.uniform(0.3, 0.45) * extent_m * spread, rng.uniform(0.15, 0.22) * extent_m * spread,
                           rng.uniform(0, np.pi), rng.uniform(1.0, 1.3) / spread))
        k = 8
        lam = rng.uniform(0.15, 0.5, k) * extent_m
        th = rng.uniform(0, 2 * np.pi, k)
        waves = np.stack([2 * np.pi / lam * np.cos(th), 2 * np.pi / lam * np.sin(th),
                          rng.uniform(0, 2 * np.pi, k), np.full(k, 1 / np.sqrt(k))], 1)
        return cls(plumes, waves)

    def strength(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        s = np.zeros_like(X, dtype=np.float64)
        for x0, y0, sa, sb, ang, peak in self.plumes:
            c, si = np.cos(ang), np.sin(ang)
            a = (X - x0) * c + (Y - y0) * si
            b = -(X - x0) * si + (Y - y0) * c
            s = np.maximum(s, peak * np.exp(-0.5 * ((a / sa) ** 2 + (b / sb) ** 2)))
        noise = np.zeros_like(s)
        for kx, ky, ph, amp in self.waves:
            noise += amp * np.sin(kx * X + ky * Y + ph)
        return s * (1 + 0.3 * noise)


def classes_and_thickness(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strength -> (class index (int), thickness in um (0 for water))."""
    t0, t1, t2 = S_THRESHOLDS
    cls = np.digitize(s, [t0, t1, t2]).astype(np.int64)
    thick = np.zeros_like(s)
    for c, (lo_s, hi_s) in {1: (t0, t1), 2: (t1, t2), 3: (t2, 1.3)}.items():
        lo, hi = TRUE_THICKNESS_UM[c]
        f = np.clip((s - lo_s) / (hi_s - lo_s), 0, 1)
        thick = np.where(cls == c, np.exp(np.log(lo) + f * (np.log(hi) - np.log(lo))), thick)
    return cls, thick


def _hsv_to_rgb(h, s, v):
    i = np.floor(h * 6) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(i.astype(int), [v, q, p, p, t, v])
    g = np.choose(i.astype(int), [t, v, v, q, p, p])
    b = np.choose(i.astype(int), [p, p, t, v, v, q])
    return np.stack([r, g, b], -1)


def shade(X, Y, cls, thick, rng_waves: np.ndarray) -> np.ndarray:
    """Colour (..., 3) in [0, 1] of the sea surface at ground points."""
    kx, ky, ph = rng_waves
    ripple = 0.5 + 0.5 * np.sin(kx * X + ky * Y + ph) * np.sin(0.37 * kx * Y - 0.8 * ky * X)
    water = np.stack([0.04 + 0.03 * ripple, 0.17 + 0.05 * ripple, 0.27 + 0.06 * ripple], -1)
    sheen = 0.55 * water + 0.45 * np.array([0.62, 0.64, 0.66])
    hue = (np.log(np.maximum(thick, 1e-3)) * 0.45 + 0.1 * ripple) % 1.0
    rainbow = 0.3 * water + 0.7 * _hsv_to_rgb(hue, np.full_like(hue, 0.6), np.full_like(hue, 0.75))
    true = np.stack([0.16 + 0.04 * ripple, 0.10 + 0.03 * ripple, 0.05 + 0.02 * ripple], -1)
    c = cls[..., None]
    return np.where(c == 0, water, np.where(c == 1, sheen, np.where(c == 2, rainbow, true)))


@dataclass
class SeaView:
    """One rendered view: image (H, W, 3) uint8 RGB, mask (H, W) uint8 class index, truth dict."""

    image: np.ndarray
    mask: np.ndarray
    truth: dict = field(default_factory=dict)


def _ground(camera: DroneCamera, altitude_m: float, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xy = pixels_to_normalized(uv, camera.K, camera.dist)
    return xy[..., 0] * altitude_m, xy[..., 1] * altitude_m


def render_view(spill: SpillField, camera: DroneCamera, altitude_m: float, rng: np.random.Generator,
                centre_m=(0.0, 0.0), noise_sigma: float = 2.0, truth_oversample: int = 3) -> SeaView:
    """Render the spill seen from `altitude_m` above ground point `centre_m`, with exact truth."""
    if not altitude_m or altitude_m <= 0:
        raise ConfigError(f"altitude_m={altitude_m}: the drone altitude must be > 0 metres.")
    w, h = camera.image_size
    waves = rng.uniform([0.5, 0.5, 0], [1.5, 1.5, 6.28])
    s = 2
    offs = (np.arange(s) + 0.5) / s - 0.5
    us = (np.arange(w)[:, None] + offs).ravel()
    vs = (np.arange(h)[:, None] + offs).ravel()
    uu, vv = np.meshgrid(us, vs)
    X, Y = _ground(camera, altitude_m, np.stack([uu, vv], -1))
    X, Y = X + centre_m[0], Y + centre_m[1]
    cls, thick = classes_and_thickness(spill.strength(X, Y))
    rgb = shade(X, Y, cls, thick, waves).reshape(h, s, w, s, 3).mean(axis=(1, 3))
    gain = 1 + 0.08 * (np.linspace(-1, 1, w)[None, :] * rng.uniform(-1, 1))
    img = rgb * gain[..., None] * 255 + rng.normal(0, noise_sigma, rgb.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    Xc, Yc = _ground(camera, altitude_m, np.stack([uu, vv], -1))
    mask, _ = classes_and_thickness(spill.strength(Xc + centre_m[0], Yc + centre_m[1]))
    return SeaView(img, mask.astype(np.uint8), _truth(spill, camera, altitude_m, centre_m, truth_oversample))


def _truth(spill, camera, altitude_m, centre_m, oversample) -> dict:
    """Areas (m^2) per class and oil volume (m^3) over the exact image footprint on the sea."""
    w, h = camera.image_size
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    edges = np.concatenate([np.linspace(corners[i], corners[(i + 1) % 4], 200) for i in range(4)])
    gx, gy = _ground(camera, altitude_m, edges)
    step = altitude_m / camera.K[0, 0] / oversample
    xs = np.arange(gx.min(), gx.max(), step) + step / 2
    ys = np.arange(gy.min(), gy.max(), step) + step / 2
    X, Y = np.meshgrid(xs, ys)
    pts = np.stack([X / altitude_m, Y / altitude_m, np.ones_like(X)], -1)
    uv = project_points(pts, camera.K, camera.dist)
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] < w - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < h - 0.5)
    cls, thick = classes_and_thickness(spill.strength(X + centre_m[0], Y + centre_m[1]))
    cell = step * step
    areas = {name: float(np.count_nonzero(inside & (cls == k)) * cell) for k, name in enumerate(CLASS_NAMES)}
    vols = {name: float(thick[inside & (cls == k)].sum() * 1e-6 * cell) for k, name in enumerate(CLASS_NAMES) if k}
    return {"altitude_m": altitude_m, "area_m2": areas, "volume_m3": vols, "total_volume_m3": float(sum(vols.values())),
            "footprint_m2": float(inside.sum() * cell), "centre_m": list(centre_m)}


def render_survey(n_images: int = 4, seed: int = 0, altitude_m: float = 120.0, camera: DroneCamera | None = None,
                  spread: float = 1.0, spill_seed: int | None = None) -> list[SeaView]:
    """`n_images` non-overlapping views tiling one spill (a survey). `spread` > 1 = the same
    spill later: larger and thinner (use the same `spill_seed` for before/after)."""
    camera = camera or DroneCamera.default()
    rng = np.random.default_rng(seed)
    fw = camera.image_size[0] * altitude_m / camera.K[0, 0]
    fh = camera.image_size[1] * altitude_m / camera.K[1, 1]
    spill = SpillField.random(np.random.default_rng(seed if spill_seed is None else spill_seed), fw, spread=spread)
    cols = int(np.ceil(np.sqrt(n_images)))
    views = []
    for i in range(n_images):
        r, c = divmod(i, cols)
        centre = ((c - (cols - 1) / 2) * fw * 1.05, (r - (int(np.ceil(n_images / cols)) - 1) / 2) * fh * 1.05)
        views.append(render_view(spill, camera, altitude_m, rng, centre))
    return views


def save_survey(views: list[SeaView], camera: DroneCamera, out_dir) -> Path:
    """images/*.png, masks/*.png (class index), cam.json, truth.json."""
    import cv2

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(views):
        cv2.imwrite(str(out / "images" / f"sea_{i:03d}.png"), v.image[..., ::-1])
        cv2.imwrite(str(out / "masks" / f"sea_{i:03d}.png"), v.mask)
    (out / "cam.json").write_text(json.dumps(camera.to_dict(), indent=2))
    (out / "truth.json").write_text(json.dumps({"class_names": CLASS_NAMES, "views": [v.truth for v in views]}, indent=2))
    return out
