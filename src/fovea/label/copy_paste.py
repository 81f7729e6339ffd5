"""Copy-paste synthesis: paste masked objects onto backgrounds to grow a segmentation set.

An object is an image crop with a per-pixel class map (0 = not the object). `paste_objects` scales,
flips and places each object at a random position on the background (seeded), writes its pixels
where its class map is non-zero, and returns the composite with its label map: later pastes cover
earlier ones in both. `grow_segmentation_set` does this over folders in the `images/` + `masks/`
layout that `fovea segment` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fovea.errors import ConfigError, DataError

__all__ = ["PasteObject", "grow_segmentation_set", "objects_from_mask", "paste_objects"]


@dataclass
class PasteObject:
    """image (h, w, 3) uint8 and labels (h, w) int (class per pixel, 0 = transparent)."""

    image: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.image.shape[:2] != self.labels.shape or not (self.labels > 0).any():
            raise ConfigError(f"a paste object needs an image and a same-size non-empty label map, got "
                              f"{self.image.shape} and {self.labels.shape} with {(self.labels > 0).sum()} object pixels.")


def objects_from_mask(image: np.ndarray, labels: np.ndarray, min_pixels: int = 20) -> list[PasteObject]:
    """Split a labelled image into connected objects (8-connectivity over labels > 0), cropped to their boxes."""
    n, comp = cv2.connectedComponents((labels > 0).astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(comp == k)
        if len(xs) < min_pixels:
            continue
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        lab = np.where(comp[sl] == k, labels[sl], 0)
        out.append(PasteObject(image[sl].copy(), lab.astype(np.int64)))
    return out


def paste_objects(background: np.ndarray, objects: Sequence[PasteObject], rng: np.random.Generator,
                  background_labels: np.ndarray | None = None, scale: tuple[float, float] = (0.8, 1.2),
                  hflip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """-> (composite (H, W, 3) uint8, labels (H, W) int64). Objects larger than the background are shrunk."""
    img = background.copy()
    h, w = img.shape[:2]
    labels = np.zeros((h, w), np.int64) if background_labels is None else background_labels.astype(np.int64).copy()
    for obj in objects:
        s = float(rng.uniform(*scale))
        oh, ow = obj.labels.shape
        s = min(s, 0.95 * h / oh, 0.95 * w / ow)
        nh, nw = max(1, int(round(oh * s))), max(1, int(round(ow * s)))
        o_img = cv2.resize(obj.image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        o_lab = cv2.resize(obj.labels.astype(np.int32), (nw, nh), interpolation=cv2.INTER_NEAREST)
        if hflip and rng.random() < 0.5:
            o_img, o_lab = o_img[:, ::-1], o_lab[:, ::-1]
        y0, x0 = int(rng.integers(0, h - nh + 1)), int(rng.integers(0, w - nw + 1))
        m = o_lab > 0
        img[y0:y0 + nh, x0:x0 + nw][m] = o_img[m]
        labels[y0:y0 + nh, x0:x0 + nw][m] = o_lab[m]
    return img, labels


def grow_segmentation_set(source: str | Path, backgrounds: Sequence[np.ndarray], out_dir: str | Path, n: int,
                          objects_per_image: tuple[int, int] = (1, 3), seed: int = 0) -> Path:
    """Cut objects out of `source/images` + `source/masks` and write n composites to out_dir/{images,masks}."""
    from fovea.io import list_images, read_image, read_mask, write_image

    source, out = Path(source), Path(out_dir)
    if not backgrounds:
        raise ConfigError("copy-paste needs at least one background image.")
    pool: list[PasteObject] = []
    for p in list_images(source / "images"):
        mask_path = source / "masks" / (p.stem + ".png")
        if not mask_path.is_file():
            raise DataError(f"{p} has no mask {mask_path}. Fix: masks/<stem>.png per image (class index per pixel).")
        pool += objects_from_mask(read_image(p), read_mask(mask_path))
    if not pool:
        raise DataError(f"no objects in the masks under {source / 'masks'}. Fix: masks need non-zero pixels.")
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bg = backgrounds[int(rng.integers(0, len(backgrounds)))]
        k = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        chosen = [pool[int(j)] for j in rng.integers(0, len(pool), k)]
        img, lab = paste_objects(bg, chosen, rng)
        write_image(out / "images" / f"paste_{i:05d}.png", img)
        cv2.imwrite(str(out / "masks" / f"paste_{i:05d}.png"), lab.astype(np.uint8))
    return out
