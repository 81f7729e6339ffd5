"""Texture anomalies on real photographs: scikit-image's `brick`, `grass` and `gravel` (shipped offline).

Normal images are random crops of one texture (scale jitter 0.9-1.1, random flips), resized to
the output size. Train crops come from the left 60 % of the 512 x 512 photograph and test crops
from the right 40 %, so no test pixel was seen in training. Defects, each with an exact mask:

- `scratch`: a thin anti-aliased curve (quadratic Bezier), much brighter or darker than the texture;
- `stain`: an irregular soft-edged blob that darkens and tints the surface (oil or water);
- `patch`: an ellipse of another texture pasted in, matched to the local mean and contrast, so it
  differs in structure, not brightness.

Output is the MVTec AD layout (`out/<texture>/train/good`, `test/<defect>`,
`ground_truth/<defect>/<stem>_mask.png`), deterministic by seed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fovea.errors import ConfigError

TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
DEFECTS: tuple[str, ...] = ("scratch", "stain", "patch")
TRAIN_FRACTION = 0.6  # share of the photograph's width that train crops come from
CROP_FRACTION = 0.35  # crop side as a share of the photograph's side (before scale jitter)


@lru_cache(maxsize=3)
def _source(texture: str) -> np.ndarray:
    """The scikit-image photograph as float32 (512, 512) in [0, 255], read-only."""
    if texture not in TEXTURES:
        raise ConfigError(f"unknown texture {texture!r}. Fix: use one of {', '.join(TEXTURES)}.")
    from skimage import data

    img = getattr(data, texture)()
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    out = img.astype(np.float32)
    out.setflags(write=False)
    return out


def _crop(texture: str, split: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random (size, size) float32 crop from the train (left) or test (right) part of the photograph."""
    src = _source(texture)
    h, w = src.shape
    cut = int(round(w * TRAIN_FRACTION))
    x_lo, x_hi = (0, cut) if split == "train" else (cut, w)
    side = int(round(min(h, w) * CROP_FRACTION * rng.uniform(0.9, 1.1)))
    side = min(side, x_hi - x_lo, h)
    x0 = int(rng.integers(x_lo, x_hi - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    crop = src[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)


# ---------------------------------------------------------------------------------- defects
def _scratch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a curved scratch in place; returns its coverage in [0, 1]."""
    n = img.shape[0]
    length = rng.uniform(0.3, 0.65) * n
    theta = rng.uniform(0, np.pi)
    centre = rng.uniform(0.25, 0.75, 2) * n
    d = np.array([np.cos(theta), np.sin(theta)]) * length / 2
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.4, 0.4)
    p0, p1, p2 = centre - d, centre + bend, centre + d
    t = np.linspace(0, 1, 48)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    layer = np.zeros_like(img, dtype=np.uint8)
    thick = max(2, int(round(rng.uniform(1.5, 3.0) * n / 256)))
    cv2.polylines(layer, [np.round(curve * 16).astype(np.int32)], False, 255, thick, cv2.LINE_AA, 4)
    alpha = layer.astype(np.float32) / 255.0
    value = rng.uniform(225, 255) if rng.random() < 0.5 else rng.uniform(0, 30)
    img += alpha * (value - img)
    return alpha


def _blob(n: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Soft irregular blob alpha (n, n) in [0, 1]: a noisy radial field, thresholded with a soft edge."""
    c = rng.uniform(0.3, 0.7, 2) * n
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    aspect = rng.uniform(0.6, 1.0)
    phi = rng.uniform(0, np.pi)
    u = (xx - c[0]) * np.cos(phi) + (yy - c[1]) * np.sin(phi)
    v = -(xx - c[0]) * np.sin(phi) + (yy - c[1]) * np.cos(phi)
    r = np.sqrt(u ** 2 + (v / aspect) ** 2) / radius
    cells = int(np.clip(2.5 * n / radius, 4, 64))  # a few wobbles across the blob
    wobble = cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (n, n),
                        interpolation=cv2.INTER_CUBIC)
    field = 1.0 - r + 0.3 * wobble
    edge = max(1.5, n / 128)
    return np.clip(field * radius / edge + 0.5, 0.0, 1.0)


def _stain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = img.shape[0]
    alpha = _blob(n, rng, rng.uniform(0.08, 0.16) * n)
    darken = rng.uniform(0.45, 0.7)
    img *= 1.0 - alpha * (1.0 - darken)
    return alpha


def _patch(img: np.ndarray, texture: str, rng: np.random.Generator) -> np.ndarray:
    n = img.shape[0]
    others = [t for t in TEXTURES if t != texture]
    other = _crop(others[int(rng.integers(len(others)))], "train", rng, n)
    alpha = np.zeros((n, n), np.uint8)
    axes = (rng.uniform(0.1, 0.2, 2) * n * 16).astype(int)
    centre = (rng.uniform(0.3, 0.7, 2) * n * 16).astype(int)
    angle = float(rng.uniform(0, 180))
    cv2.ellipse(alpha, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, 255, -1,
                cv2.LINE_AA, 4)
    a = alpha.astype(np.float32) / 255.0
    inside = a > 0.5
    # match the local brightness and contrast so the patch differs in structure only
    local_mean, local_std = img[inside].mean(), img[inside].std() + 1e-3
    o_mean, o_std = other[inside].mean(), other[inside].std() + 1e-3
    other = (other - o_mean) * (local_std / o_std) + local_mean
    img += a * (other - img)
    return a


def render_texture_sample(texture: str = "brick", defect: str | None = None,
                          rng: np.random.Generator | int | None = None, size: int = 256,
                          split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """One crop: image (size, size, 3) uint8 RGB (gray repeated) and mask (size, size) bool.

    defect: None or one of DEFECTS; split: "train" (left part of the photograph) or "test" (right).
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split={split!r}. Fix: use 'train' or 'test'.")
    if defect is not None and defect not in DEFECTS:
        raise ConfigError(f"unknown texture defect {defect!r}. Fix: use one of {', '.join(DEFECTS)} or None.")
    if size < 32:
        raise ConfigError(f"texture size {size} is too small. Fix: use at least 32 pixels.")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img = _crop(texture, split, rng, size)
    mask = np.zeros((size, size), bool)
    if defect == "scratch":
        mask = _scratch(img, rng) >= 0.5
    elif defect == "stain":
        mask = _stain(img, rng) >= 0.5
    elif defect == "patch":
        mask = _patch(img, texture, rng) >= 0.5
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2), mask


# ---------------------------------------------------------------------------------- data set
def _png(path: Path, a: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a)
    if not ok:  # pragma: no cover
        raise ConfigError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def generate_textures(out_dir, texture: str = "brick", n_train: int = 60, n_test_good: int = 20,
                      n_test_bad: int = 30, size: int = 256, seed: int = 0,
                      defects: Sequence[str] = DEFECTS) -> Path:
    """Write one texture in the MVTec AD layout; returns the category folder `out_dir/texture`.

    Anomalous images cycle through `defects`; image i of each split has its own seed stream.
    """
    _source(texture)  # validates the name
    bad = [d for d in defects if d not in DEFECTS]
    if bad:
        raise ConfigError(f"unknown texture defect(s) {bad}. Fix: use some of {', '.join(DEFECTS)}.")
    if n_train < 1 or min(n_test_good, n_test_bad) < 0 or (n_test_bad and not defects):
        raise ConfigError(f"need n_train >= 1, counts >= 0 and a defect type for anomalous images; got "
                          f"n_train={n_train}, n_test_good={n_test_good}, n_test_bad={n_test_bad}.")
    t = TEXTURES.index(texture)
    root = Path(out_dir) / texture
    for split, code, n in (("train", 0, n_train), ("test", 1, n_test_good)):
        for i in range(n):
            rng = np.random.default_rng([seed, t, code, i])
            img, _ = render_texture_sample(texture, None, rng, size, split)
            _png(root / split / "good" / f"{i:03d}.png", img)
    counters = dict.fromkeys(defects, 0)
    records = []
    for i in range(n_test_bad):
        d = defects[i % len(defects)]
        img, mask = render_texture_sample(texture, d, np.random.default_rng([seed, t, 2, i]), size, "test")
        j = counters[d]
        counters[d] += 1
        _png(root / "test" / d / f"{j:03d}.png", img)
        _png(root / "ground_truth" / d / f"{j:03d}_mask.png", mask.astype(np.uint8) * 255)
        records.append({"file": f"test/{d}/{j:03d}.png", "defect": d, "mask_pixels": int(mask.sum())})
    meta = {"generator": "fovea.synth.textures", "texture": texture, "source": f"skimage.data.{texture}",
            "seed": seed, "size": size, "n_train": n_train, "n_test_good": n_test_good,
            "n_test_bad": n_test_bad, "defects": list(defects), "anomalous": records}
    (root / "textures.json").write_text(json.dumps(meta, indent=1))
    return root
