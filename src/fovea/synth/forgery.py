"""Image-manipulation forgeries of scikit-image's photographs and textures, with exact masks.

Every sample starts from a host: a random crop of one shipped scikit-image picture (offline, no
download) at a random scale, randomly flipped, resized to the output size. Then one of:

- `splice`: a random polygon of ANOTHER picture's crop pasted in (optionally with a feathered
  edge: the polygon's alpha blurred by a Gaussian);
- `copy_move`: a polygon of the same host moved elsewhere, optionally scaled and rotated (one
  affine warp of the host, composited inside the warped polygon; optionally feathered);
- `inpaint`: a polygon removed and filled by OpenCV's inpainting (Telea or Navier-Stokes);
- `authentic`: nothing changed (empty mask).

The mask is exact: a pixel is in it iff the manipulation changed its value (any channel), so
`mask == any(image != original)` before post-processing. Post-processing then mimics re-saving:
optional resize (the mask follows, area-weighted at 0.5) and JPEG re-compression (the mask stays:
JPEG noise is global, not a manipulation). Sources are split into `TRAIN_SOURCES` and
`HELD_OUT_SOURCES` (no picture in both), and sample i of a seed is drawn from its own generator
(seed, i), so sets are deterministic and a sample does not depend on how many are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fovea.errors import ConfigError

KINDS: tuple[str, ...] = ("authentic", "splice", "copy_move", "inpaint")
TRAIN_SOURCES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "camera", "brick", "grass", "coins", "moon",
                                  "ihc", "hubble_deep_field", "motorcycle_left")
HELD_OUT_SOURCES: tuple[str, ...] = ("rocket", "gravel", "retina", "clock_motion", "cell")
_FILES = {"rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg", "retina": "retina.jpg"}


@dataclass
class ForgeryConfig:
    """How forgeries are drawn.

    size: output (H, W) before post-processing. kinds / kind_weights: which kinds and their odds
    (default equal). sources: scikit-image picture names (`TRAIN_SOURCES`, `HELD_OUT_SOURCES`).
    region_fraction: (min, max) share of the image a manipulated polygon covers. feather_prob:
    chance that a splice or copy-move is alpha-blended over a blurred edge. copy_scale /
    copy_angle_deg: ranges of the copy-move warp ((1, 1) and (0, 0) = pure translation).
    jpeg_quality: (min, max) JPEG re-save quality, or None for none. resize: (min, max) final
    scale factor, or None.
    """

    size: tuple[int, int] = (256, 256)
    kinds: tuple[str, ...] = KINDS
    kind_weights: tuple[float, ...] | None = None
    sources: tuple[str, ...] = TRAIN_SOURCES
    region_fraction: tuple[float, float] = (0.02, 0.15)
    feather_prob: float = 0.5
    copy_scale: tuple[float, float] = (0.8, 1.25)
    copy_angle_deg: tuple[float, float] = (-30.0, 30.0)
    jpeg_quality: tuple[int, int] | None = None
    resize: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.kinds, self.sources = tuple(self.kinds), tuple(self.sources)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"unknown forgery kind(s) {bad or '(none given)'}. Fix: choose from {list(KINDS)}.")
        known = TRAIN_SOURCES + HELD_OUT_SOURCES
        bad = [s for s in self.sources if s not in known]
        if bad or not self.sources:
            raise ConfigError(f"unknown source picture(s) {bad or '(none given)'}. Fix: choose from {list(known)}.")
        if "splice" in self.kinds and len(self.sources) < 2:
            raise ConfigError(f"splicing needs two source pictures, got {list(self.sources)}. Fix: add a source.")
        if self.kind_weights is not None and len(self.kind_weights) != len(self.kinds):
            raise ConfigError(f"{len(self.kind_weights)} kind_weights for kinds {list(self.kinds)}. Fix: one each.")
        lo, hi = self.region_fraction
        if not 0 < lo <= hi < 0.5:
            raise ConfigError(f"region_fraction {self.region_fraction} must satisfy 0 < min <= max < 0.5.")
        if min(self.size) < 32:
            raise ConfigError(f"size {self.size} is too small for a forgery. Fix: use at least 32 x 32.")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"jpeg_quality {self.jpeg_quality} must be (min, max) within 1..100.")


@dataclass
class ForgerySample:
    """One generated image. image: (H, W, 3) uint8 RGB after post-processing; mask: (H, W) bool, the
    changed pixels; kind: one of `KINDS`; original: (h, w, 3) uint8 host before the manipulation
    and post-processing; source / donor: picture names (donor: the spliced picture, else None)."""

    image: np.ndarray
    mask: np.ndarray
    kind: str
    original: np.ndarray
    source: str
    donor: str | None = None
    params: dict = field(default_factory=dict)


@lru_cache(maxsize=32)
def load_source(name: str) -> np.ndarray:
    """A shipped scikit-image picture as (H, W, 3) uint8 RGB (grey pictures repeated), read-only."""
    import skimage
    import skimage.io

    if name not in TRAIN_SOURCES + HELD_OUT_SOURCES:
        raise ConfigError(f"unknown source picture {name!r}. Fix: one of {list(TRAIN_SOURCES + HELD_OUT_SOURCES)}.")
    img = skimage.io.imread(Path(skimage.__file__).parent / "data" / _FILES.get(name, f"{name}.png"))
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    img = np.ascontiguousarray(img, dtype=np.uint8)
    img.setflags(write=False)
    return img


def random_crop(name: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: a random crop of picture `name` resized to `size` (zoom 1-2.5 x the zoom at which
    the whole picture covers the output), at a random position, flipped left-right half of the time."""
    src = load_source(name)
    h, w = size
    zoom_min = max(h / src.shape[0], w / src.shape[1])  # output px per source px when the crop is the picture
    zoom = zoom_min * rng.uniform(1.0, 2.5)
    ch, cw = min(src.shape[0], int(round(h / zoom))), min(src.shape[1], int(round(w / zoom)))
    y0, x0 = int(rng.integers(0, src.shape[0] - ch + 1)), int(rng.integers(0, src.shape[1] - cw + 1))
    crop = src[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
    out = cv2.resize(crop, (w, h), interpolation=interp)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def random_polygon(size: tuple[int, int], fraction: float, rng: np.random.Generator,
                   margin_px: int = 2) -> np.ndarray:
    """(H, W) bool: a random star-shaped polygon of about `fraction` of the image, fully inside it."""
    h, w = size
    n = int(rng.integers(4, 14))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.55, 1.0, n)
    # area of the star polygon with unit mean radius scale: 0.5 * sum r_i r_{i+1} sin(d_angle)
    d = np.diff(np.append(angles, angles[0] + 2 * np.pi))
    unit_area = 0.5 * np.sum(radii * np.roll(radii, -1) * np.sin(d))
    scale = np.sqrt(fraction * h * w / max(unit_area, 1e-6))
    scale = min(scale, (min(h, w) / 2 - margin_px) / radii.max())
    r = radii * scale
    cy = rng.uniform(r.max() + margin_px, h - r.max() - margin_px)
    cx = rng.uniform(r.max() + margin_px, w - r.max() - margin_px)
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _feather(region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Alpha (H, W) float32 in [0, 1]: the region blurred by a Gaussian of sigma 1-3 px."""
    sigma = float(rng.uniform(1.0, 3.0))
    return cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigma), sigma


def _paste(host: np.ndarray, patch: np.ndarray, region: np.ndarray, cfg: ForgeryConfig, rng: np.random.Generator,
           params: dict) -> np.ndarray:
    """round(alpha * patch + (1 - alpha) * host) as uint8, alpha = the region, feathered with odds
    cfg.feather_prob (its sigma noted in params)."""
    if rng.random() < cfg.feather_prob:
        alpha, params["feather_sigma"] = _feather(region, rng)
    else:
        alpha = region.astype(np.float32)
    a = alpha[..., None]
    return np.clip(np.rint(a * patch + (1 - a) * host), 0, 255).astype(np.uint8)


def _splice(host, source, cfg, rng, fraction) -> tuple[np.ndarray, dict]:
    donor = str(rng.choice([s for s in cfg.sources if s != source]))
    patch = random_crop(donor, cfg.size, rng)
    region = random_polygon(cfg.size, fraction, rng)
    params: dict = {"donor": donor}
    return _paste(host, patch, region, cfg, rng, params), params


def _copy_move(host, source, cfg, rng, fraction) -> tuple[np.ndarray, dict]:
    h, w = cfg.size
    for _ in range(50):  # a warp whose moved polygon lands inside the image, away from where it came from
        region = random_polygon(cfg.size, fraction, rng)
        s = float(rng.uniform(*cfg.copy_scale))
        angle = float(rng.uniform(*cfg.copy_angle_deg))
        ys, xs = np.nonzero(region)
        cy, cx = ys.mean(), xs.mean()
        ty, tx = rng.uniform(0, h), rng.uniform(0, w)
        warp = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, s)
        warp[:, 2] += (round(tx - cx), round(ty - cy))  # whole pixels: a pure translation copies exactly
        moved = cv2.warpAffine(region.astype(np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST) > 0
        inside = moved.sum() >= 0.9 * s * s * region.sum()
        apart = (moved & region).sum() <= 0.1 * moved.sum()
        border = moved[0].any() or moved[-1].any() or moved[:, 0].any() or moved[:, -1].any()
        if inside and apart and not border and moved.any():
            break
    else:
        raise ConfigError(f"no copy-move placement found for a region of {fraction:.3f} of {cfg.size}. "
                          "Fix: lower region_fraction or copy_scale.")
    warped = cv2.warpAffine(host, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    params = {"scale": s, "angle_deg": angle, "shift_px": (round(tx - cx), round(ty - cy))}
    return _paste(host, warped, moved, cfg, rng, params), params


def _inpaint(host, source, cfg, rng, fraction) -> tuple[np.ndarray, dict]:
    region = random_polygon(cfg.size, fraction, rng)
    method = str(rng.choice(["telea", "ns"]))
    radius = float(rng.uniform(3.0, 7.0))
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    out = cv2.inpaint(np.ascontiguousarray(host), region.astype(np.uint8), radius, flag)
    return out, {"method": method, "radius_px": radius}


_MAKERS = {"splice": _splice, "copy_move": _copy_move, "inpaint": _inpaint}


def post_process(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 cfg: ForgeryConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Re-save effects: resize (mask: area-weighted, kept where >= 0.5), then JPEG re-compression."""
    params: dict = {}
    if cfg.resize is not None:
        f = float(rng.uniform(*cfg.resize))
        h, w = max(16, int(round(image.shape[0] * f))), max(16, int(round(image.shape[1] * f)))
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (w, h), interpolation=interp)
        mask = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA if f < 1
                          else cv2.INTER_LINEAR) >= 0.5
        params["resize"] = f
    if cfg.jpeg_quality is not None:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        image = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        params["jpeg_quality"] = q
    return image, mask, params


def forgery_sample(seed: int, index: int, config: ForgeryConfig | None = None) -> ForgerySample:
    """Sample `index` of the set drawn with `seed` (its own generator: independent of the set size)."""
    cfg = config or ForgeryConfig()
    rng = np.random.default_rng([int(seed), int(index)])
    p = None if cfg.kind_weights is None else np.asarray(cfg.kind_weights, float) / np.sum(cfg.kind_weights)
    kind = str(rng.choice(list(cfg.kinds), p=p))
    source = str(rng.choice(list(cfg.sources)))
    host = random_crop(source, cfg.size, rng)
    params: dict = {}
    if kind == "authentic":
        image = host.copy()
    else:
        fraction = float(rng.uniform(*cfg.region_fraction))
        image, params = _MAKERS[kind](host, source, cfg, rng, fraction)
        params["region_fraction"] = fraction
    mask = np.any(image != host, axis=2)
    image, mask, post = post_process(image, mask, rng, cfg)
    return ForgerySample(image=image, mask=mask, kind=kind, original=host, source=source,
                         donor=params.pop("donor", None), params={**params, **post})


def generate_forgeries(n: int, seed: int = 0, config: ForgeryConfig | None = None) -> list[ForgerySample]:
    """n samples (index 0..n-1) of the set drawn with `seed`."""
    if n < 0:
        raise ConfigError(f"n={n}: the number of forgeries must be >= 0.")
    return [forgery_sample(seed, i, config) for i in range(n)]


def write_forgery_folder(out_dir: str | Path, samples: Sequence[ForgerySample]) -> Path:
    """DATA layout of `fovea forgery fit/test`: images/NNNNN_<kind>.png (lossless: a re-compressed sample's
    decoded pixels) + masks/NNNNN_<kind>.png (0 / 255), and kinds.json {stem: kind}."""
    import json

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    kinds = {}
    for i, s in enumerate(samples):
        stem = f"{i:05d}_{s.kind}"
        cv2.imwrite(str(out / "images" / f"{stem}.png"), s.image[..., ::-1])
        cv2.imwrite(str(out / "masks" / f"{stem}.png"), s.mask.astype(np.uint8) * 255)
        kinds[stem] = s.kind
    (out / "kinds.json").write_text(json.dumps(kinds, indent=1))
    return out
