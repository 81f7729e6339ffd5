"""Semantic-segmentation data sets: image + mask-PNG folders and COCO polygon JSON.

Both yield `{"image": float (3, h, w) ImageNet-normalised, "target": int64 (h, w)}` at a fixed
input size, made by the same resize as `SegmentationPipeline.preprocess`, so training sees the
pixels inference sees. `load(i)` returns the original (image uint8 (H, W, 3), mask int64 (H, W)).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fovea.errors import DataError, ImageReadError, MaskMismatchError
from fovea.io import image_header_size, list_images, read_image
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD

LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")  # cannot hold exact class indices


def read_index_mask(path: str | Path) -> np.ndarray:
    """(H, W) int64 class indices from a single-channel PNG (a 3-channel PNG must be grey)."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ImageReadError(path, "OpenCV cannot decode the mask")
    if m.ndim == 3:
        if m.shape[2] == 4:
            m = m[..., :3]
        if not (np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 0], m[..., 2])):
            raise DataError(f"mask {path} is a colour image; masks must hold one class index per pixel. "
                            "Fix: save a single-channel PNG whose values are 0..num_classes-1.")
        m = m[..., 0]
    return m.astype(np.int64)


def preprocess_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, h, w): antialiased bilinear resize + ImageNet normalisation."""
    x = images.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False,
                          antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) index mask to size (h, w)."""
    if mask.shape == tuple(size):
        return mask
    return cv2.resize(mask.astype(np.int32), (int(size[1]), int(size[0])),
                      interpolation=cv2.INTER_NEAREST).astype(np.int64)


class SegmentationDataset(Dataset):
    """Base: subclasses implement `__len__`, `load(i)` and `name(i)`; this does resizing and flips."""

    num_classes: int
    class_names: tuple[str, ...]

    def __init__(self, size: tuple[int, int] = (256, 256), augment: bool = False):
        self.size = (int(size[0]), int(size[1]))
        self.augment = augment

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def _check(self, i: int, img: np.ndarray, mask: np.ndarray) -> None:
        if img.shape[:2] != mask.shape:
            raise MaskMismatchError(f"{self.name(i)}: image is {img.shape[1]}x{img.shape[0]} but its mask is "
                                    f"{mask.shape[1]}x{mask.shape[0]} (WxH). Fix: save the mask at the image size.")
        if mask.size and (mask.min() < 0 or mask.max() >= self.num_classes):
            raise DataError(f"{self.name(i)}: mask holds class index {int(mask.max())} (min {int(mask.min())}) but "
                            f"there are {self.num_classes} classes {list(self.class_names)}. Fix: pass the right "
                            "class names / num_classes or repair the mask.")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img, mask = self.load(i)
        self._check(i, img, mask)
        x = preprocess_images(torch.from_numpy(np.array(img, np.uint8, copy=True))[None], self.size)[0]
        t = torch.from_numpy(resize_mask(mask, self.size))
        if self.augment:
            if torch.rand(()) < 0.5:
                x, t = x.flip(-1), t.flip(-1)
            if torch.rand(()) < 0.5:
                x, t = x.flip(-2), t.flip(-2)
        return {"image": x.contiguous(), "target": t.contiguous()}


class MaskFolderDataset(SegmentationDataset):
    """Images in `images_dir`, masks with the same stem in `masks_dir` (PNG, class index per pixel).

    class_names: tuple of names (index = class id); default from `classes.json` beside the folders
    ({"classes": [...]}) or, failing that, num_classes. Both folders are listed with
    `fovea.io.list_images` (header-checked): an unreadable image or mask raises, or with skip_bad
    its pair is left out and listed in `self.skipped` as (path, reason).
    """

    def __init__(self, images_dir: str | Path, masks_dir: str | Path, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None, size: tuple[int, int] = (256, 256), augment: bool = False,
                 indices: Sequence[int] | None = None, skip_bad: bool = False):
        super().__init__(size, augment)
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        for d, what in ((images_dir, "images"), (masks_dir, "masks")):
            if not d.is_dir():
                raise DataError(f"{what} folder {d} does not exist. Fix: pass an existing folder.")
        images = list_images(images_dir, skip_bad=skip_bad)
        mask_files = list_images(masks_dir, skip_bad=skip_bad)
        lossy = [m.name for m in mask_files if m.suffix.lower() in LOSSY_EXTENSIONS]
        if lossy:
            raise DataError(f"{len(lossy)} mask(s) in {masks_dir} use a lossy format, e.g. {lossy[:3]}: JPEG/WebP "
                            "change class indices at region borders. Fix: save masks as PNG (or TIFF/BMP).")
        masks = {p.stem: p for p in mask_files}
        self.skipped = [(str(q), r) for q, r in images.skipped + mask_files.skipped]
        bad_stems = {Path(q).stem for q, _ in self.skipped}
        images = [p for p in images if p.stem not in bad_stems]
        masks = {k: v for k, v in masks.items() if k not in bad_stems}
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            raise MaskMismatchError(f"{len(missing)} image(s) in {images_dir} have no mask with the same stem in "
                                    f"{masks_dir}, e.g. {missing[:3]}. Fix: add the masks or remove the images.")
        orphans = sorted(set(masks) - {p.stem for p in images})
        if orphans:
            raise MaskMismatchError(f"{len(orphans)} mask(s) in {masks_dir} have no image in {images_dir}, e.g. "
                                    f"{orphans[:3]}. Fix: remove them or add the images.")
        self.root = images_dir.parent
        if class_names is None:
            for cand in (images_dir.parent / "classes.json", masks_dir.parent / "classes.json"):
                if cand.is_file():
                    class_names = json.loads(cand.read_text())["classes"]
                    break
        if class_names is None and num_classes is None:
            raise DataError(f"unknown number of classes for {masks_dir}. Fix: pass class names or num_classes, or "
                            "put classes.json ({\"classes\": [...]}) beside the folders.")
        self.class_names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
        self.num_classes = len(self.class_names)
        pairs = [(p, masks[p.stem]) for p in images]
        self.pairs = pairs if indices is None else [pairs[i] for i in indices]

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, i: int) -> str:
        return f"{self.pairs[i][0]} / {self.pairs[i][1]}"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        return read_image(img_path), read_index_mask(mask_path)


class CocoPolygonDataset(SegmentationDataset):
    """COCO instances JSON with polygon segmentations, rasterised to class-index masks.

    Class ids: 0 background, then COCO categories in ascending id order (1..K). Later annotations
    paint over earlier ones. RLE segmentations are refused with a clear error. Every image's header
    is checked: an unreadable one raises, or with skip_bad is left out and listed in `self.skipped`.
    """

    def __init__(self, json_path: str | Path, images_dir: str | Path | None = None,
                 size: tuple[int, int] = (256, 256), augment: bool = False, indices: Sequence[int] | None = None,
                 skip_bad: bool = False):
        super().__init__(size, augment)
        json_path = Path(json_path)
        if not json_path.is_file():
            raise DataError(f"COCO file {json_path} does not exist.")
        try:
            coco = json.loads(json_path.read_text())
            cats = sorted(coco["categories"], key=lambda c: c["id"])
            images = coco["images"]
            anns = coco.get("annotations", [])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"{json_path} is not COCO JSON (needs images, categories, annotations): {exc}") from exc
        self.images_dir = Path(images_dir) if images_dir else json_path.parent
        self.cat_to_class = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.class_names = ("background", *[str(c["name"]) for c in cats])
        self.num_classes = len(self.class_names)
        by_image: dict = {im["id"]: [] for im in images}
        for a in anns:
            if a.get("image_id") not in by_image:
                raise DataError(f"{json_path}: annotation {a.get('id')} refers to unknown image_id {a.get('image_id')}")
            if a.get("category_id") not in self.cat_to_class:
                raise DataError(f"{json_path}: annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
            if not isinstance(a.get("segmentation"), list):
                raise DataError(f"{json_path}: annotation {a.get('id')} is RLE or has no polygons; only polygon "
                                "segmentations are supported. Fix: export polygons (iscrowd=0).")
            by_image[a["image_id"]].append(a)
        self.skipped: list[tuple[str, str]] = []
        items = []
        for im in images:
            try:
                image_header_size(self.images_dir / im["file_name"])
            except ImageReadError as exc:
                if not skip_bad:
                    raise
                self.skipped.append((exc.path, exc.reason))
                continue
            items.append((im, by_image[im["id"]]))
        self.items = items if indices is None else [items[i] for i in indices]
        self.root = json_path
        self.json_path = json_path

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return str(self.images_dir / self.items[i][0]["file_name"])

    def rasterize(self, i: int, height: int, width: int) -> np.ndarray:
        """(H, W) int64 class-index mask of item i from its polygons (cv2.fillPoly, later on top)."""
        mask = np.zeros((height, width), np.uint8)
        for a in self.items[i][1]:
            polys = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32)
                     for p in a["segmentation"] if len(p) >= 6]
            if polys:
                cv2.fillPoly(mask, polys, int(self.cat_to_class[a["category_id"]]))
        return mask.astype(np.int64)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        im = self.items[i][0]
        img = read_image(self.images_dir / im["file_name"])
        h, w = int(im.get("height", img.shape[0])), int(im.get("width", img.shape[1]))
        if (h, w) != img.shape[:2]:
            raise MaskMismatchError(f"{self.json_path}: image {im['file_name']} is {img.shape[1]}x{img.shape[0]} "
                                    f"but the JSON says {w}x{h}. Fix: correct width/height in the JSON.")
        return img, self.rasterize(i, h, w)


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded random (train, val) index split; at least one item on each side when n >= 2."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
