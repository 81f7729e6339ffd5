"""Bricks: the embedded default inspection data set (MVTec AD layout).

Modelled on a real station: four rectangular parts (bricks, with 2x4 studs) lie at the corners
of a gridded tray. In category `one_up` .. `four_up` the first k bricks (top-left, top-right,
bottom-right, bottom-left) are turned 90 degrees; that is the correct configuration and a
normal image shows it. An anomalous image shows one brick turned only 30, 45 or 60 degrees
relative to its expected orientation (defect types `rot30`, `rot45`, `rot60`); its mask is the
wrong brick's footprint in final image coordinates.

Nuisances a real camera adds: small placement error of each brick (~1 px, ~1.5 deg), camera
pose jitter (shift, rotation, scale of the whole scene), global gain, a light gradient, vignette,
white balance, brick shading and shadows, sensor noise. Rendering is numpy/OpenCV with
anti-aliased polygons; any image size; deterministic by seed (same seed -> identical PNG bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fovea.errors import ConfigError

CATEGORIES: tuple[str, ...] = ("one_up", "two_up", "three_up", "four_up")
DEFECTS: tuple[str, ...] = ("rot30", "rot45", "rot60")
DEFECT_ANGLE_DEG: dict[str, float] = {"rot30": 30.0, "rot45": 45.0, "rot60": 60.0}

# scene geometry as fractions of s = min(H, W), around the image centre
TRAY_HALF = 0.43
BRICK_OFFSET = 0.215  # brick centre = centre +- offset in x and y
BRICK_LENGTH, BRICK_WIDTH = 0.27, 0.12
BRICK_ORDER = ((-1, -1), (1, -1), (1, 1), (-1, 1))  # top-left, top-right, bottom-right, bottom-left


@dataclass(frozen=True)
class Jitter:
    """Nuisance ranges (uniform +-) in fractions of s, degrees and relative gains."""

    place_shift: float = 0.006
    place_rot_deg: float = 1.5
    cam_shift: float = 0.025
    cam_rot_deg: float = 2.0
    cam_scale: float = 0.03
    gain: float = 0.12
    gradient: float = 0.12
    noise_sigma: float = 0.01


DEFAULT_JITTER = Jitter()
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def _category_index(category: str) -> int:
    if category not in CATEGORIES:
        raise ConfigError(f"unknown bricks category {category!r}. Fix: use one of {', '.join(CATEGORIES)}.")
    return CATEGORIES.index(category)


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if min(h, w) < 32:
        raise ConfigError(f"bricks image size {size} is too small. Fix: use at least 32 pixels per side.")
    return int(h), int(w)


# ---------------------------------------------------------------------------------- drawing
def _distance(shape, pts: np.ndarray, pad: int = 1) -> tuple[tuple[slice, slice], np.ndarray]:
    """Signed distance (px, positive inside) to a convex polygon on its bounding box: (roi, (h, w) float32).

    pts (N, 2) float pixel xy; pixel centres sit at integer coordinates (OpenCV's convention).
    """
    h, w = shape
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + pad + 1, (w, h))
    x1, y1 = max(x1, x0), max(y1, y0)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    centre = pts.mean(0)
    d = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    for p, q in zip(pts, np.roll(pts, -1, axis=0)):
        e = q - p
        n = np.array([-e[1], e[0]]) / max(np.hypot(*e), 1e-9)
        if np.dot(centre - p, n) < 0:
            n = -n
        np.minimum(d, (xs - np.float32(p[0])) * np.float32(n[0]) + (ys - np.float32(p[1])) * np.float32(n[1]),
                   out=d)
    return (slice(y0, y1), slice(x0, x1)), d


def _coverage(d: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage uint8 = clip(0.5 + distance, 0, 1) * 255; >= 128 iff the centre is inside."""
    return np.clip(d * np.float32(255.0) + np.float32(128.0), 0, 255).astype(np.uint8)


def _fill(shape, pts: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (H, W) uint8 of a convex polygon (cv2.fillPoly's LINE_AA grows shapes by
    ~0.7 px, which would make masks disagree with the drawn pixels)."""
    a = np.zeros(shape, np.uint8)
    roi, d = _distance(shape, pts)
    a[roi] = _coverage(d)
    return a


def _disc(a: np.ndarray, xy, r: float, value: int = 255) -> None:
    cv2.circle(a, (int(round(xy[0] * _ONE)), int(round(xy[1] * _ONE))), max(1, int(round(r * _ONE))),
               value, -1, lineType=cv2.LINE_AA, shift=_SHIFT)


def _bbox(alpha_u8: np.ndarray) -> tuple[slice, slice]:
    x, y, w, h = cv2.boundingRect(alpha_u8)
    return slice(y, y + h), slice(x, x + w)


def _blend(img: np.ndarray, alpha_u8: np.ndarray, colour, roi: tuple[slice, slice] | None = None) -> None:
    """In place: img = img * (1 - a) + colour * a inside `roi` (default: alpha's bounding box).

    alpha_u8 and colour: full-frame (H, W[, 3]) or already cut to the roi; colour may be (3,).
    """
    ys, xs = roi or _bbox(alpha_u8)
    if ys.stop == ys.start or xs.stop == xs.start:
        return
    target = img[ys, xs]
    alpha = alpha_u8 if alpha_u8.shape == target.shape[:2] else alpha_u8[ys, xs]
    a = alpha.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
    c = np.asarray(colour, np.float32)
    if c.ndim == 3 and c.shape[:2] != target.shape[:2]:
        c = c[ys, xs]
    target += a * (c - target)


def _rect(centre, length: float, width: float, angle_deg: float) -> np.ndarray:
    """(4, 2) corners of a rectangle with its long side at angle_deg (image y points down)."""
    t = np.deg2rad(angle_deg)
    u = np.array([np.cos(t), np.sin(t)]) * length / 2
    v = np.array([-np.sin(t), np.cos(t)]) * width / 2
    c = np.asarray(centre, float)
    return np.stack([c - u - v, c + u - v, c + u + v, c - u + v])


@lru_cache(maxsize=8)
def _static_scene(h: int, w: int) -> np.ndarray:
    """Floor, gridded tray and screws: the fixed machine, float32 (H, W, 3) in [0, 1], read-only."""
    rng = np.random.default_rng(1234)  # the physical tray: same texture in every image
    s = min(h, w)
    cx, cy = w / 2, h / 2
    img = np.empty((h, w, 3), np.float32)
    img[:] = (0.22, 0.23, 0.25)
    brushed = cv2.blur(rng.standard_normal((h, w)).astype(np.float32), (max(3, s // 12) | 1, 1))
    img += 0.05 * brushed[..., None]
    half = TRAY_HALF * s
    tray = _fill((h, w), np.array([[cx - half, cy - half], [cx + half, cy - half],
                                   [cx + half, cy + half], [cx - half, cy + half]]))
    lowfreq = cv2.resize(rng.standard_normal((8, 8)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)
    tray_col = np.array([0.70, 0.72, 0.73], np.float32) * (1 + 0.03 * lowfreq[..., None])
    tray_col = tray_col + 0.015 * rng.standard_normal((h, w, 1)).astype(np.float32)
    _blend(img, tray, tray_col)
    grid = np.zeros((h, w), np.uint8)
    n_cells = 12
    step = 2 * half / n_cells
    thick = max(1, int(round(s / 256)))
    for i in range(1, n_cells):
        x = cx - half + i * step
        y = cy - half + i * step
        p = [(x, cy - half), (x, cy + half), (cx - half, y), (cx + half, y)]
        q = [(int(round(a * _ONE)), int(round(b * _ONE))) for a, b in p]
        cv2.line(grid, q[0], q[1], 255, thick, cv2.LINE_AA, _SHIFT)
        cv2.line(grid, q[2], q[3], 255, thick, cv2.LINE_AA, _SHIFT)
    _blend(img, (grid * 0.45).astype(np.uint8), np.array([0.42, 0.45, 0.48], np.float32))
    rim = np.zeros((h, w), np.uint8)
    for sx, sy in BRICK_ORDER:
        _disc(rim, (cx + sx * (half - 0.035 * s), cy + sy * (half - 0.035 * s)), 0.014 * s)
    _blend(img, rim, np.array([0.35, 0.36, 0.38], np.float32))
    img.setflags(write=False)
    return img


# ---------------------------------------------------------------------------------- the scene
@dataclass
class BrickPose:
    """One brick: centre (x, y) pixels before the camera warp, angle in degrees, expected angle."""

    centre: tuple[float, float]
    angle_deg: float
    expected_deg: float


def scene_poses(category: str, defect: str | None, rng: np.random.Generator, size=256,
                jitter: Jitter = DEFAULT_JITTER) -> tuple[list[BrickPose], int | None]:
    """Brick poses of one scene and the index of the wrong brick (None for a normal scene)."""
    k = _category_index(category) + 1
    h, w = _size_hw(size)
    s = min(h, w)
    wrong = None
    if defect is not None:
        if defect not in DEFECT_ANGLE_DEG:
            raise ConfigError(f"unknown bricks defect {defect!r}. "
                              f"Fix: use one of {', '.join(DEFECTS)} or None.")
        wrong = int(rng.integers(4))
        sign = 1.0 if rng.random() < 0.5 else -1.0
    poses = []
    for i, (sx, sy) in enumerate(BRICK_ORDER):
        expected = 90.0 if i < k else 0.0
        angle = expected + rng.uniform(-jitter.place_rot_deg, jitter.place_rot_deg)
        if i == wrong:
            angle += sign * DEFECT_ANGLE_DEG[defect]
        dx, dy = rng.uniform(-jitter.place_shift, jitter.place_shift, 2) * s
        poses.append(BrickPose((w / 2 + sx * BRICK_OFFSET * s + dx, h / 2 + sy * BRICK_OFFSET * s + dy),
                               float(angle), expected))
    return poses, wrong


_NOISE_PAD = 64


@lru_cache(maxsize=8)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """Unit Gaussian sensor noise (H + pad, W + pad, 3) float32; each image takes a seeded random window
    (drawing fresh normals costs more than the rest of the render)."""
    bank = np.random.default_rng(4321).standard_normal((h + _NOISE_PAD, w + _NOISE_PAD, 3), dtype=np.float32)
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the centre in units of s: (nx, ny), each (H, W) float32, read-only."""
    s = min(h, w)
    nx = ((np.arange(w, dtype=np.float32) - w / 2) / s)[None, :].repeat(h, 0)
    ny = ((np.arange(h, dtype=np.float32) - h / 2) / s)[:, None].repeat(w, 1)
    nx.setflags(write=False)
    ny.setflags(write=False)
    return nx, ny


def _draw_bricks(img: np.ndarray, poses: list[BrickPose], rng: np.random.Generator, s: int,
                 light: np.ndarray) -> None:
    """Shadows, bodies, bevels and studs of every brick onto img (H, W, 3) float32, in place."""
    h, w = img.shape[:2]
    length, width = BRICK_LENGTH * s, BRICK_WIDTH * s
    shapes = [_distance((h, w), _rect(p.centre, length, width, p.angle_deg), pad=2) for p in poses]
    # soft shadow cast away from the light: the bricks' footprint, shifted and blurred
    body = np.zeros((h, w), np.uint8)
    for roi, d in shapes:
        np.maximum(body[roi], _coverage(d), out=body[roi])
    dx, dy = np.round(-light * 0.018 * s).astype(int)
    shadow = np.zeros_like(body)
    shadow[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        body[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.012 * s)
    ys, xs = _bbox(shadow)
    img[ys, xs] *= 1.0 - np.float32(0.45 / 255.0) * shadow[ys, xs, None].astype(np.float32)
    # body colour: brighter towards the light, a faint grain, per-brick brightness
    nx, ny = _grid(h, w)
    grain = cv2.resize(rng.standard_normal((max(4, h // 6), max(4, w // 6))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_LINEAR)
    base = (np.array([0.78, 0.24, 0.13]) * rng.uniform(0.95, 1.05, 3)).astype(np.float32)
    stud_hi = np.minimum(base * np.float32(1.25) + np.float32(0.06), np.float32(1.0))
    layer = np.zeros((h, w), np.uint8)
    inset = np.float32(0.045 * width)
    for p, (roi, d) in zip(poses, shapes):
        ys, xs = roi
        cx, cy = (p.centre[0] - w / 2) / s, (p.centre[1] - h / 2) / s
        proj = ((nx[roi] - cx) * light[0] + (ny[roi] - cy) * light[1]) * np.float32(s / length)
        shade = (1.0 + 0.25 * proj + 0.03 * grain[roi]) * np.float32(rng.uniform(0.93, 1.07))
        cov = _coverage(d)
        _blend(img, cov, base * shade[..., None], roi)
        # bevel: the rim between the outline and a slightly smaller top face
        _blend(img, cv2.subtract(cov, _coverage(d - inset)) >> 1, base * np.float32(0.55), roi)
        # 2 x 4 studs: a darker offset disc (shadow side), then the lit cap
        t = np.deg2rad(p.angle_deg)
        u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        centres = [np.asarray(p.centre) + a * length * u + b * width * v
                   for a in (-0.375, -0.125, 0.125, 0.375) for b in (-0.25, 0.25)]
        layer[roi] = 0
        for c in centres:
            _disc(layer, c - light * 0.05 * width, 0.17 * width, 153)
        _blend(img, layer, base * np.float32(0.5), roi)
        layer[roi] = 0
        for c in centres:
            _disc(layer, c, 0.15 * width)
        _blend(img, layer, stud_hi, roi)


def render_bricks_scene(category: str = "one_up", defect: str | None = None,
                        rng: np.random.Generator | int | None = None, size: int | Sequence[int] = 256,
                        jitter: Jitter = DEFAULT_JITTER) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: image (H, W, 3) uint8 RGB and mask (H, W) bool of the wrong brick.

    defect: None (normal) or one of DEFECTS; size: int or (H, W); rng: Generator or seed.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h, w = _size_hw(size)
    s = min(h, w)
    poses, wrong = scene_poses(category, defect, rng, (h, w), jitter)
    img = _static_scene(h, w).copy()
    la = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(la), np.sin(la)], np.float32)
    _draw_bricks(img, poses, rng, s, light)
    # camera pose: rotation + scale about the centre, then a shift
    ang = rng.uniform(-jitter.cam_rot_deg, jitter.cam_rot_deg)
    scale = 1.0 + rng.uniform(-jitter.cam_scale, jitter.cam_scale)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, scale)
    m[:, 2] += rng.uniform(-jitter.cam_shift, jitter.cam_shift, 2) * s
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if wrong is None:
        mask = np.zeros((h, w), bool)
    else:
        corners = _rect(poses[wrong].centre, BRICK_LENGTH * s, BRICK_WIDTH * s, poses[wrong].angle_deg)
        mask = _fill((h, w), corners @ m[:, :2].T + m[:, 2]) >= 128  # the footprint in final coordinates
    # lighting: gain, white balance, gradient, vignette, then sensor noise
    nx, ny = _grid(h, w)
    ga = rng.uniform(0, 2 * np.pi)
    g = np.float32(2 * rng.uniform(0, jitter.gradient))
    field = 1.0 + g * (nx * np.float32(np.cos(ga)) + ny * np.float32(np.sin(ga)))
    field *= 1.0 - np.float32(2 * rng.uniform(0.05, 0.15)) * (nx * nx + ny * ny)
    gain = ((1.0 + rng.uniform(-jitter.gain, jitter.gain)) * rng.uniform(0.97, 1.03, 3)).astype(np.float32)
    img *= field[..., None]
    img *= gain * np.float32(255.0)
    oy, ox = rng.integers(0, _NOISE_PAD, 2)
    img += _noise_bank(h, w)[oy:oy + h, ox:ox + w] * np.float32(jitter.noise_sigma * 255.0)
    img += np.float32(0.5)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), mask


# ---------------------------------------------------------------------------------- data set
def _png(path: Path, a: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a)
    if not ok:  # pragma: no cover - OpenCV PNG encoding of uint8 arrays does not fail
        raise ConfigError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def generate_bricks(out_dir, category: str = "one_up", n_train: int = 60, n_test_good: int = 20,
                    n_test_bad: int = 30, size: int | Sequence[int] = 256, seed: int = 0,
                    defects: Sequence[str] = DEFECTS, jitter: Jitter = DEFAULT_JITTER) -> Path:
    """Write one category in the MVTec AD layout and return the category folder `out_dir/category`.

    Anomalous images cycle through `defects` (rot30, rot45, rot60, rot30, ...). Image i of each
    split draws from its own seed stream, so changing a count leaves the other images unchanged.
    Load with `fovea.data.load_mvtec(out_dir, category)`.
    """
    cat = _category_index(category)
    for d in defects:
        if d not in DEFECT_ANGLE_DEG:
            raise ConfigError(f"unknown bricks defect {d!r}. Fix: use some of {', '.join(DEFECTS)}.")
    if min(n_train, n_test_good, n_test_bad) < 0 or n_train < 1:
        raise ConfigError(f"bricks counts must be >= 0 and n_train >= 1, got n_train={n_train}, "
                          f"n_test_good={n_test_good}, n_test_bad={n_test_bad}.")
    if n_test_bad and not defects:
        raise ConfigError("n_test_bad > 0 needs at least one defect type.")
    h, w = _size_hw(size)
    root = Path(out_dir) / category
    records = []
    for split, code, n in (("train", 0, n_train), ("test", 1, n_test_good)):
        for i in range(n):
            rng = np.random.default_rng([seed, cat, code, i])
            img, _ = render_bricks_scene(category, None, rng, (h, w), jitter)
            _png(root / split / "good" / f"{i:03d}.png", img)
    counters = dict.fromkeys(defects, 0)
    for i in range(n_test_bad):
        d = defects[i % len(defects)]
        img, mask = render_bricks_scene(category, d, np.random.default_rng([seed, cat, 2, i]), (h, w), jitter)
        j = counters[d]
        counters[d] += 1
        _png(root / "test" / d / f"{j:03d}.png", img)
        _png(root / "ground_truth" / d / f"{j:03d}_mask.png", mask.astype(np.uint8) * 255)
        records.append({"file": f"test/{d}/{j:03d}.png", "defect": d, "mask_pixels": int(mask.sum())})
    meta = {"generator": "fovea.synth.bricks", "category": category, "seed": seed, "size": [h, w],
            "n_train": n_train, "n_test_good": n_test_good, "n_test_bad": n_test_bad,
            "defects": list(defects), "jitter": jitter.__dict__, "anomalous": records}
    (root / "bricks.json").write_text(json.dumps(meta, indent=1))
    return root
