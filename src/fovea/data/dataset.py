"""Torch view of anomaly `Sample`s: resized uint8 images, labels and ground-truth masks."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fovea.data.folder import Sample
from fovea.errors import ConfigError, MaskMismatchError
from fovea.io import read_image, read_mask


class AnomalyDataset(Dataset):
    """Items are dicts: image (3, H, W) uint8, label () int64, mask (H, W) bool (zeros for normal
    images and for anomalous ones without ground truth; `has_mask` tells which), path, defect_type.

    image_size (H, W) resizes with cv2 INTER_AREA (images) and INTER_NEAREST (masks); None keeps
    each file's own size. A mask whose size differs from its image raises MaskMismatchError.
    """

    def __init__(self, samples: Sequence[Sample], image_size: tuple[int, int] | int | None = (256, 256)):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ConfigError(f"image_size={image_size} must be (H, W) with positive sides.")
        self.samples = list(samples)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    def __len__(self) -> int:
        return len(self.samples)

    def _resize(self, a: np.ndarray, interpolation: int) -> np.ndarray:
        if self.image_size is None or a.shape[:2] == self.image_size:
            return a
        h, w = self.image_size
        return cv2.resize(a, (w, h), interpolation=interpolation)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = read_image(s.path)
        h, w = image.shape[:2]
        has_mask = s.label == 0 or s.mask_path is not None
        if s.label == 1 and s.mask_path is not None:
            mask = read_mask(s.mask_path)
            if mask.shape != (h, w):
                raise MaskMismatchError(
                    f"mask {s.mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {s.path} is "
                    f"{w}x{h}. Fix: masks must have exactly their image's size.")
            mask = self._resize(mask.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        else:
            mask = np.zeros(self.image_size or (h, w), bool)
        image = self._resize(image, cv2.INTER_AREA)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.tensor(int(s.label), dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "has_mask": has_mask,
            "path": str(s.path),
            "defect_type": s.defect_type,
        }
