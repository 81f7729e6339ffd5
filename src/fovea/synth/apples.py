"""Procedurally rendered apples, good and damaged, for classification and segmentation.

An apple is a shaded, slightly irregular sphere with a varied skin (red, green, yellow or a
blush blend with streaks and lenticels), a stem or calyx and a specular highlight, lying on a
belt or tray under varied light. Damage is a bruise (soft darker brown region), spots (small dark
scab dots) or a cut (thin line of exposed flesh with dark rims). Per-pixel labels use
`CLASS_NAMES`. Everything is deterministic by seed: same seed -> identical PNG bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from fovea.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("background", "good", "bruise", "spot", "cut")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (60, 180, 75), (145, 90, 40), (230, 25, 75), (255, 225, 25))
DAMAGE_TYPES: tuple[str, ...] = ("bruise", "spot", "cut")
DAMAGE_CLASS: dict[str, int] = {"bruise": 2, "spot": 3, "cut": 4}
VARIETIES: tuple[str, ...] = ("red", "green", "yellow", "blend")


# ----------------------------------------------------------------------------------- light
@dataclass
class Light:
    """Scene lighting: unit direction towards the light (x right, y down, z to the viewer)."""

    direction: tuple[float, float, float] = (-0.4, -0.5, 0.77)
    ambient: float = 0.35
    intensity: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    specular: float = 0.45
    shininess: float = 20.0


def random_light(rng: np.random.Generator) -> Light:
    """A random light: direction from the upper half-space, warm or cool tint, dim to bright."""
    az = rng.uniform(0, 2 * np.pi)
    elev = rng.uniform(np.deg2rad(35), np.deg2rad(80))
    d = (np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev))
    temp = rng.uniform(-1, 1)  # -1 cool (bluish) .. 1 warm (yellowish)
    tint = (1.0 + 0.08 * temp, 1.0 + 0.02 * temp, 1.0 - 0.10 * temp)
    return Light(direction=tuple(float(v) for v in d), ambient=float(rng.uniform(0.25, 0.45)),
                 intensity=float(rng.uniform(0.7, 1.25)), tint=tuple(float(v) for v in tint),
                 specular=float(rng.uniform(0.15, 0.6)), shininess=float(rng.uniform(8, 40)))


# ------------------------------------------------------------------------------ apple spec
@dataclass
class AppleSpec:
    """Everything random about one apple, in units of its radius, so it can be redrawn anywhere."""

    variety: str
    ground: np.ndarray            # (3,) ground skin colour, RGB in [0, 1]
    blush: np.ndarray             # (3,) blush colour
    blush_cover: float            # bias of the blush field; high = mostly blush
    blush_grid: np.ndarray        # (7, 7) low-frequency noise for the blush field
    streak_k: int                 # number of radial streaks
    streak_phase: float
    streak_strength: float
    harmonics: np.ndarray         # (3, 2) amplitude, phase of the outline's 1st..3rd harmonics
    lenticels: np.ndarray         # (N, 3) u, v, radius (radius units) of small light dots
    view: str                     # "stem" | "calyx" | "side"
    feature_uv: tuple[float, float]
    stem_angle: float
    stem_length: float
    gloss: float
    damages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def damage_types(self) -> list[str]:
        return [d["type"] for d in self.damages]


def _jitter(rng, rgb, amount):
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 1).astype(np.float32)


def sample_apple(rng: np.random.Generator, damaged: bool = False,
                 damage_types: Sequence[str] = DAMAGE_TYPES, variety: str | None = None) -> AppleSpec:
    """Draw one apple's appearance (and its damage when `damaged`) from `rng`."""
    for t in damage_types:
        if t not in DAMAGE_TYPES:
            raise ConfigError(f"unknown damage type {t!r}; choose from {DAMAGE_TYPES}")
    if damaged and not damage_types:
        raise ConfigError("damaged=True needs at least one damage type")
    variety = variety or str(rng.choice(VARIETIES, p=[0.35, 0.2, 0.15, 0.3]))
    if variety not in VARIETIES:
        raise ConfigError(f"unknown apple variety {variety!r}; choose from {VARIETIES}")
    greenish = _jitter(rng, (0.55, 0.72, 0.22), 0.08)
    yellowish = _jitter(rng, (0.90, 0.78, 0.28), 0.07)
    red = _jitter(rng, (0.62, 0.08, 0.09), 0.10) * rng.uniform(0.65, 1.05)
    cover = {"red": rng.uniform(0.6, 1.2), "green": rng.uniform(-1.4, -0.9),
             "yellow": rng.uniform(-1.4, -0.9), "blend": rng.uniform(-0.3, 0.4)}[variety]
    ground = {"red": yellowish if rng.random() < 0.5 else greenish, "green": greenish,
              "yellow": yellowish, "blend": greenish if rng.random() < 0.5 else yellowish}[variety]
    blush = red if variety != "green" else _jitter(rng, (0.70, 0.45, 0.12), 0.05)
    n_lent = int(rng.integers(15, 60))
    lu = rng.uniform(-1, 1, (n_lent * 2, 2))
    lu = lu[(lu ** 2).sum(1) < 0.85][:n_lent]
    lenticels = np.concatenate([lu, rng.uniform(0.012, 0.025, (len(lu), 1))], 1).astype(np.float32)
    view = str(rng.choice(["stem", "calyx", "side"]))
    feature_uv = (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25)))
    if view == "side":
        feature_uv = (float(rng.uniform(-0.15, 0.15)), -0.93)
    spec = AppleSpec(
        variety=variety, ground=ground.astype(np.float32), blush=np.asarray(blush, np.float32),
        blush_cover=float(cover), blush_grid=rng.standard_normal((7, 7)).astype(np.float32),
        streak_k=int(rng.integers(14, 30)), streak_phase=float(rng.uniform(0, 2 * np.pi)),
        streak_strength=float(rng.uniform(0.0, 0.35)),
        harmonics=np.stack([rng.uniform(0, [0.03, 0.04, 0.02]), rng.uniform(0, 2 * np.pi, 3)], 1)
        .astype(np.float32),
        lenticels=lenticels, view=view, feature_uv=feature_uv,
        stem_angle=float(rng.uniform(-np.pi, np.pi) if view == "stem" else rng.uniform(-0.4, 0.4)),
        stem_length=float(rng.uniform(0.2, 0.4)), gloss=float(rng.uniform(0.4, 1.0)))
    if damaged:
        n_types = 1 if (rng.random() < 0.7 or len(damage_types) == 1) else 2
        chosen = {str(t) for t in rng.choice(list(damage_types), size=n_types, replace=False)}
        for t in DAMAGE_TYPES:  # fixed order: soft bruises below, sharp spots and cuts on top
            if t in chosen:
                spec.damages.append(_sample_damage(rng, t))
    return spec


def _sample_damage(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    """Geometry and colour of one damage, in radius units, kept well inside the silhouette."""
    ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55)
    u, v = rad * np.cos(ang), rad * np.sin(ang)
    if kind == "bruise":
        return {"type": kind, "uv": (float(u), float(v)), "axes": tuple(rng.uniform(0.18, 0.36, 2).tolist()),
                "angle": float(rng.uniform(0, np.pi)), "strength": float(rng.uniform(0.75, 0.95)),
                "color": _jitter(rng, (0.34, 0.20, 0.08), 0.06).tolist(), "grid": rng.standard_normal((5, 5))
                .astype(np.float32)}
    if kind == "spot":
        n = int(rng.integers(3, 11))
        spread = rng.uniform(0.12, 0.35)
        pts = np.array([u, v]) + rng.normal(0, spread, (n, 2))
        pts = pts[(pts ** 2).sum(1) < 0.72 ** 2]
        if len(pts) == 0:
            pts = np.array([[u, v]])
        radii = rng.uniform(0.06, 0.11, len(pts))
        return {"type": kind, "spots": np.concatenate([pts, radii[:, None]], 1).astype(np.float32),
                "phases": rng.uniform(0, 2 * np.pi, len(pts)).astype(np.float32),
                "color": _jitter(rng, (0.13, 0.11, 0.06), 0.04).tolist()}
    # cut: quadratic Bezier through the apple; flesh colour, dark rims
    length = rng.uniform(0.45, 0.9)
    theta = rng.uniform(0, np.pi)
    d = np.array([np.cos(theta), np.sin(theta)]) * length / 2
    mid = np.array([u, v]) * 0.6
    bend = rng.normal(0, 0.15, 2)
    ctrl = np.stack([mid - d, mid + bend, mid + d]).astype(np.float32)
    return {"type": kind, "ctrl": ctrl, "width": float(rng.uniform(0.05, 0.09)),
            "flesh": _jitter(rng, (0.93, 0.87, 0.62), 0.05).tolist(), "bright": bool(rng.random() < 0.6)}


# -------------------------------------------------------------------------------- drawing
@dataclass
class ApplePatch:
    """Where a drawn apple landed: label (h, w) uint8 (`CLASS_NAMES` indices, 0 = not apple) at x0, y0."""

    label: np.ndarray
    x0: int
    y0: int
    spec: AppleSpec | None = None

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: pixels of this apple visible at draw time."""
        return self.label > 0

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.label)
        if len(xs) == 0:
            return (self.x0, self.y0, self.x0, self.y0)
        return (self.x0 + int(xs.min()), self.y0 + int(ys.min()), self.x0 + int(xs.max()) + 1,
                self.y0 + int(ys.max()) + 1)

    def paste_into(self, label_map: np.ndarray) -> None:
        """Write this apple's labels into a full-size (H, W) label map (apple pixels only)."""
        h, w = self.label.shape
        region = label_map[self.y0:self.y0 + h, self.x0:self.x0 + w]
        region[self.mask] = self.label[self.mask]


def _resize_field(grid: np.ndarray, n: int) -> np.ndarray:
    return cv2.resize(grid, (n, n), interpolation=cv2.INTER_CUBIC)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _dist_to_polyline(px: np.ndarray, py: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Distance from each pixel (px, py arrays) to a polyline pts (K, 2), in the same units."""
    a, b = pts[:-1], pts[1:]
    ab = b - a
    p = np.stack([px.ravel(), py.ravel()], 1)[:, None, :]            # (P, 1, 2)
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.sqrt(((p - closest) ** 2).sum(-1)).min(1).reshape(px.shape)


def paint_apple(canvas: np.ndarray, center_xy: tuple[float, float], radius: float, spec: AppleSpec,
                light: Light | None = None, shadow: bool = True) -> ApplePatch:
    """Render `spec` into canvas (H, W, 3) uint8 RGB in place; returns its label patch.

    The apple is computed on an unclipped local grid, so the same spec looks identical wherever it
    is drawn (apples entering the frame are simply cut off at the border).
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ConfigError(f"canvas must be (H, W, 3) uint8, got {canvas.shape} {canvas.dtype}")
    if radius < 3:
        raise ConfigError(f"apple radius {radius} px is too small to draw; use >= 3")
    light = light or Light()
    H, W = canvas.shape[:2]
    cx, cy = float(center_xy[0]), float(center_xy[1])
    pad = int(np.ceil(radius * 1.5)) + 2
    icx, icy = int(round(cx)), int(round(cy))
    n = 2 * pad + 1
    ks = np.arange(-pad, pad + 1, dtype=np.float32)
    dx = (icx + ks - cx)[None, :].repeat(n, 0)
    dy = (icy + ks - cy)[:, None].repeat(n, 1)
    u, v = dx / radius, dy / radius
    r = np.sqrt(u * u + v * v)
    th = np.arctan2(v, u)

    # outline: radius modulated by a few harmonics; alpha anti-aliased over ~1 px
    rim = 1.0 + sum(a * np.cos((k + 1) * th - p) for k, (a, p) in enumerate(spec.harmonics))
    rho = r / rim
    alpha = np.clip((rim - r) * radius + 0.5, 0, 1)

    # skin albedo: ground + blush (noise field + radial streaks) + lenticels
    blush_field = _resize_field(spec.blush_grid, n) * 0.9 + spec.blush_cover
    blush_field += spec.streak_strength * np.sin(spec.streak_k * th + spec.streak_phase
                                                 + 1.5 * _resize_field(spec.blush_grid.T, n))
    b = _smoothstep(blush_field * 0.45 + 0.5)[..., None]
    albedo = spec.ground * (1 - b) + spec.blush * b
    for lu, lv, lr in spec.lenticels:
        d = np.sqrt((u - lu) ** 2 + (v - lv) ** 2)
        albedo += (0.12 * np.clip(1 - d / lr, 0, 1))[..., None]

    # stem / calyx
    fu, fv = spec.feature_uv
    dfeat = np.sqrt((u - fu) ** 2 + (v - fv) ** 2)
    cavity = np.clip(1 - dfeat / 0.22, 0, 1) ** 1.5
    albedo *= (1 - 0.3 * cavity)[..., None]
    if spec.view == "calyx":
        star = 0.07 * (1 + 0.5 * np.cos(5 * np.arctan2(v - fv, u - fu)))
        calyx = _smoothstep((star - dfeat) * radius + 0.5)[..., None]
        albedo = albedo * (1 - calyx) + np.array([0.25, 0.22, 0.1], np.float32) * calyx
    stem_alpha = np.zeros_like(u)
    if spec.view in ("stem", "side"):
        ang = spec.stem_angle - (np.pi / 2 if spec.view == "side" else 0.0)
        end = np.array([fu + spec.stem_length * np.cos(ang), fv + spec.stem_length * np.sin(ang)])
        dstem = _dist_to_polyline(u, v, np.array([[fu, fv], end], np.float32))
        stem_alpha = _smoothstep((0.035 - dstem) * radius + 0.5)
        stem_col = np.array([0.35, 0.24, 0.12], np.float32)
        albedo = albedo * (1 - stem_alpha[..., None]) + stem_col * stem_alpha[..., None]

    # damage -> albedo change, matte factor and labels
    label_local = np.zeros(u.shape, np.uint8)
    matte = np.zeros_like(u)
    for dmg in spec.damages:
        m, lab = _damage_mask(dmg, u, v, radius)
        col = np.asarray(dmg.get("color", dmg.get("flesh")), np.float32)
        if dmg["type"] == "bruise":
            a = (m * dmg["strength"])[..., None]
            albedo = albedo * (1 - a) + col * a * (0.85 + 0.3 * albedo.mean(-1, keepdims=True))
        elif dmg["type"] == "spot":
            albedo = albedo * (1 - m[..., None]) + col * m[..., None]
        else:
            core, rims = m
            rim_col = np.array([0.16, 0.09, 0.05], np.float32)
            albedo = albedo * (1 - rims[..., None]) + rim_col * rims[..., None]
            albedo = albedo * (1 - core[..., None]) + col * core[..., None]
            m = np.maximum(core, rims)
        matte = np.maximum(matte, m)
        label_local[lab] = DAMAGE_CLASS[dmg["type"]]

    # shading: sphere normals, Lambert + ambient, Blinn-Phong highlight
    rr = np.clip(rho, 0, 0.999)
    nz = np.sqrt(1 - rr * rr)
    nx, ny = u / rim, v / rim
    L = np.asarray(light.direction, np.float32)
    lam = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0, 1)
    shade = light.ambient + (1 - light.ambient) * lam
    hv = L + np.array([0, 0, 1], np.float32)
    hv /= np.linalg.norm(hv)
    ndh = np.clip(nx * hv[0] + ny * hv[1] + nz * hv[2], 0, 1)
    spec_hl = light.specular * spec.gloss * ndh ** light.shininess * (1 - 0.8 * matte) * (1 - stem_alpha)
    tint = np.asarray(light.tint, np.float32) * light.intensity
    rgb = albedo * shade[..., None] * tint + spec_hl[..., None] * tint

    # stem pixels outside the body (side view) count as apple
    alpha = np.maximum(alpha, stem_alpha)
    label_local[(alpha >= 0.5) & (label_local == 0)] = 1
    label_local[alpha < 0.5] = 0

    # clip the local grid to the canvas and composite (shadow first, on what lies beneath)
    gx0, gy0 = icx - pad, icy - pad
    x0, y0, x1, y1 = max(gx0, 0), max(gy0, 0), min(gx0 + n, W), min(gy0 + n, H)
    if x0 >= x1 or y0 >= y1:
        return ApplePatch(np.zeros((0, 0), np.uint8), max(0, min(x0, W)), max(0, min(y0, H)), spec)
    sl = (slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0))
    region = canvas[y0:y1, x0:x1].astype(np.float32) / 255.0
    if shadow:
        ou, ov = -L[0] / max(L[2], 0.3) * 0.18, -L[1] / max(L[2], 0.3) * 0.18
        ds = np.sqrt((u - ou) ** 2 + (v - ov) ** 2)
        sh = 0.55 * _smoothstep((1.12 - ds) / 0.3)
        region *= (1 - sh[sl])[..., None]
    a = alpha[sl][..., None]
    region = region * (1 - a) + np.clip(rgb[sl], 0, 1) * a
    canvas[y0:y1, x0:x1] = np.clip(region * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return ApplePatch(label_local[sl].copy(), x0, y0, spec)


def _damage_mask(dmg: dict[str, Any], u: np.ndarray, v: np.ndarray, radius: float):
    """Soft coverage in [0, 1] and the boolean label of one damage on the local grid."""
    if dmg["type"] == "bruise":
        cu, cv_ = dmg["uv"]
        a, b = dmg["axes"]
        ca, sa = np.cos(dmg["angle"]), np.sin(dmg["angle"])
        x, y = (u - cu) * ca + (v - cv_) * sa, -(u - cu) * sa + (v - cv_) * ca
        e = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        e = e + 0.15 * _resize_field(dmg["grid"], u.shape[0])
        m = _smoothstep((1.25 - e) / 0.5)
        return m, m >= 0.5
    if dmg["type"] == "spot":
        m = np.zeros_like(u)
        for (su, sv, sr), ph in zip(dmg["spots"], dmg["phases"]):
            d = np.sqrt((u - su) ** 2 + (v - sv) ** 2)
            reff = sr * (1 + 0.12 * np.sin(3 * np.arctan2(v - sv, u - su) + ph))
            m = np.maximum(m, _smoothstep((reff - d) * radius + 0.5))
        return m, m >= 0.5
    c = dmg["ctrl"]
    t = np.linspace(0, 1, 24, dtype=np.float32)[:, None]
    pts = (1 - t) ** 2 * c[0] + 2 * (1 - t) * t * c[1] + t ** 2 * c[2]
    d_px = _dist_to_polyline(u, v, pts) * radius
    half = dmg["width"] * radius / 2
    core = _smoothstep(half - d_px + 0.5)
    rims = _smoothstep(half + 1.3 - d_px + 0.5) * (1 - core) * (0.85 if dmg["bright"] else 1.0)
    return (core, rims), np.maximum(core, rims) >= 0.5


def draw_apple(canvas: np.ndarray, center_xy: tuple[float, float], radius: float, rng: np.random.Generator,
               damaged: bool = False, damage_types: Sequence[str] = DAMAGE_TYPES, light: Light | None = None,
               variety: str | None = None, shadow: bool = True) -> ApplePatch:
    """Draw one random apple onto canvas (H, W, 3) uint8 in place; returns its label patch.

    For a sorting line, call `sample_apple` once and `paint_apple` every frame instead, so the
    same apple keeps its looks while it moves.
    """
    spec = sample_apple(rng, damaged=damaged, damage_types=damage_types, variety=variety)
    return paint_apple(canvas, center_xy, radius, spec, light=light, shadow=shadow)


# ----------------------------------------------------------------------------- background
def draw_background(rng: np.random.Generator, height: int, width: int, light: Light | None = None,
                    kind: str | None = None) -> tuple[np.ndarray, str]:
    """A conveyor belt, pulp tray or plastic crate floor, lit by `light`: ((H, W, 3) uint8, kind)."""
    light = light or Light()
    kind = kind or str(rng.choice(["belt", "tray", "plastic"]))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    s = max(height, width)
    low = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (width, height),
                     interpolation=cv2.INTER_CUBIC)
    if kind == "belt":
        base = np.array([[0.2, 0.2, 0.2], [0.12, 0.2, 0.13], [0.12, 0.16, 0.26], [0.3, 0.28, 0.26]])[
            int(rng.integers(4))] * rng.uniform(0.8, 1.3)
        period = rng.uniform(3, 7)
        tex = 0.025 * np.sin(2 * np.pi * yy / period) + 0.02 * low
        tex += 0.015 * rng.standard_normal((height, width)).astype(np.float32)
    elif kind == "tray":
        base = np.array([[0.62, 0.52, 0.38], [0.55, 0.57, 0.5], [0.5, 0.42, 0.3]])[int(rng.integers(3))]
        tex = 0.05 * low + 0.03 * rng.standard_normal((height, width)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), 0.7)
        step = rng.uniform(0.35, 0.6) * s
        ox, oy = rng.uniform(0, step, 2)
        cup = np.cos(2 * np.pi * (xx - ox) / step) * np.cos(2 * np.pi * (yy - oy) / step)
        tex += 0.06 * cup
    elif kind == "plastic":
        base = np.array([[0.85, 0.85, 0.83], [0.55, 0.7, 0.85], [0.25, 0.45, 0.3]])[int(rng.integers(3))]
        tex = 0.02 * low + 0.01 * rng.standard_normal((height, width)).astype(np.float32)
    else:
        raise ConfigError(f"unknown background kind {kind!r}; choose belt, tray or plastic")
    L = np.asarray(light.direction, np.float32)
    grad = 1 + 0.25 * (L[0] * (xx / s - 0.5) + L[1] * (yy / s - 0.5)) * 2
    vign = 1 - 0.15 * (((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / (s / 2) ** 2)
    lit = (np.asarray(base, np.float32) + tex[..., None]) * (grad * vign)[..., None]
    lit = lit * (light.ambient + (1 - light.ambient) * L[2]) * light.intensity * np.asarray(light.tint, np.float32)
    return np.clip(lit * 255 + 0.5, 0, 255).astype(np.uint8), kind


def finish_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera look: slight optical blur and sensor noise. (H, W, 3) uint8 -> same."""
    f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.4, 0.8)))
    f += rng.normal(0, rng.uniform(1.0, 4.0), f.shape).astype(np.float32)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ renderers
def render_apple(rng: np.random.Generator, size: int = 128, damaged: bool | None = None,
                 damage_types: Sequence[str] = DAMAGE_TYPES) -> tuple[np.ndarray, np.ndarray, dict]:
    """One apple crop: ((size, size, 3) uint8 RGB, (size, size) int64 labels, meta).

    damaged=None draws it with probability 0.5. Labels: 0 background, 1 good skin, 2 bruise,
    3 spot, 4 cut; a damaged crop always shows at least one damage pixel, a good one none.
    """
    if size < 16:
        raise ConfigError(f"apple crop size {size} px is too small; use >= 16")
    if damaged is None:
        damaged = bool(rng.random() < 0.5)
    light = random_light(rng)
    img, bg = draw_background(rng, size, size, light)
    radius = size * rng.uniform(0.33, 0.42)
    c = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    patch = draw_apple(img, (c[0], c[1]), radius, rng, damaged=damaged, damage_types=damage_types, light=light)
    labels = np.zeros((size, size), np.int64)
    patch.paste_into(labels)
    img = finish_image(img, rng)
    meta = {"damaged": damaged, "damage_types": patch.spec.damage_types, "variety": patch.spec.variety,
            "view": patch.spec.view, "center": [float(c[0]), float(c[1])], "radius": float(radius),
            "background": bg, "light": asdict(light)}
    return img, labels, meta


def render_scene(rng: np.random.Generator, size: int = 256, n_apples: tuple[int, int] = (1, 4),
                 p_damaged: float = 0.5, damage_types: Sequence[str] = DAMAGE_TYPES,
                 radius_frac: tuple[float, float] = (0.14, 0.24)) -> tuple[np.ndarray, np.ndarray, dict]:
    """Several apples on a belt or tray: ((size, size, 3) uint8, (size, size) int64 labels, meta).

    radius_frac: range of apple radii as fractions of `size` (larger = closer camera).
    """
    light = random_light(rng)
    img, bg = draw_background(rng, size, size, light)
    labels = np.zeros((size, size), np.int64)
    placed: list[tuple[float, float, float]] = []
    apples = []
    for _ in range(int(rng.integers(n_apples[0], n_apples[1] + 1))):
        for _try in range(30):
            r = size * rng.uniform(*radius_frac)
            x, y = rng.uniform(0.15 * size, 0.85 * size, 2)
            if all(np.hypot(x - px, y - py) > 0.9 * (r + pr) for px, py, pr in placed):
                break
        else:
            continue
        placed.append((x, y, r))
        patch = draw_apple(img, (x, y), r, rng, damaged=bool(rng.random() < p_damaged),
                           damage_types=damage_types, light=light)
        patch.paste_into(labels)
        apples.append({"center": [float(x), float(y)], "radius": float(r), "damaged": bool(patch.spec.damages),
                       "damage_types": patch.spec.damage_types, "variety": patch.spec.variety})
    img = finish_image(img, rng)
    return img, labels, {"apples": apples, "background": bg, "light": asdict(light)}


def _item_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in key]])


def _write_png(path: Path, arr: np.ndarray) -> None:
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def generate_apple_crops(out_dir: str | Path, n_per_class: int = 100, size: int = 128, seed: int = 0,
                         split: tuple[float, float, float] = (0.7, 0.15, 0.15),
                         damage_types: Sequence[str] = DAMAGE_TYPES) -> Path:
    """Write `out/{train,val,test}/{good,damaged}/*.png` (+ meta.jsonl); n_per_class over all splits."""
    if n_per_class < 1 or len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"need n_per_class >= 1 and three split fractions summing to 1, got {n_per_class}, "
                          f"{split}")
    out = Path(out_dir)
    n_train = int(round(n_per_class * split[0]))
    n_val = int(round(n_per_class * split[1]))
    records = []
    for ci, cls in enumerate(("good", "damaged")):
        for i in range(n_per_class):
            part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            rng = _item_rng(seed, ci, i)
            img, _, meta = render_apple(rng, size, damaged=(cls == "damaged"), damage_types=damage_types)
            d = out / part / cls
            d.mkdir(parents=True, exist_ok=True)
            name = f"{cls}_{i:05d}.png"
            _write_png(d / name, img)
            records.append({"file": f"{part}/{cls}/{name}", **{k: meta[k] for k in
                            ("damaged", "damage_types", "variety", "view", "background")}})
    with open(out / "meta.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return out


def generate_apple_scenes(out_dir: str | Path, n: int = 100, size: int = 256, seed: int = 0,
                          n_apples: tuple[int, int] = (1, 4), p_damaged: float = 0.5,
                          radius_frac: tuple[float, float] = (0.14, 0.24)) -> Path:
    """Write `out/images/*.png`, `out/masks/*.png` (class index per pixel) and `out/classes.json`."""
    if n < 1 or size < 32:
        raise ConfigError(f"need n >= 1 and size >= 32, got n={n}, size={size}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, labels, _ = render_scene(_item_rng(seed, 7, i), size, n_apples=n_apples, p_damaged=p_damaged,
                                      radius_frac=radius_frac)
        _write_png(out / "images" / f"{i:05d}.png", img)
        _write_png(out / "masks" / f"{i:05d}.png", labels.astype(np.uint8))
    (out / "classes.json").write_text(json.dumps(
        {"classes": list(CLASS_NAMES), "colors": [list(c) for c in CLASS_COLORS]}, indent=1))
    return out
