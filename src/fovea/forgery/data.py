"""Forgery data sets on the segmentation data layer: (image, binary manipulation mask) pairs.

Both yield what `fovea.segment.data.SegmentationDataset` yields, `{"image": float (3, h, w)
normalised, "target": int64 (h, w) 0 / 1}` at the input size (the same resize as the pipeline),
`load(i)` -> (image uint8 (H, W, 3), mask int64 (H, W)) and `kind(i)`:

- `SynthForgerySet`: generated `ForgerySample`s in memory (kind = the sample's);
- `ForgeryFolder`: DATA/images + DATA/masks (same stems; any non-zero mask pixel = manipulated, so
  0/1 and 0/255 masks both work), kinds from DATA/kinds.json ({stem: kind}) when present, else
  "authentic" for an empty mask and "manipulated" otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from fovea.forgery.model import CLASS_NAMES
from fovea.segment.data import MaskFolderDataset, SegmentationDataset
from fovea.synth.forgery import ForgerySample


class SynthForgerySet(SegmentationDataset):
    """Generated forgeries as a data set; `size` is the network input (h, w)."""

    num_classes = 2
    class_names = CLASS_NAMES

    def __init__(self, samples: Sequence[ForgerySample], size: tuple[int, int] = (256, 256), augment: bool = False,
                 name: str = "synth"):
        super().__init__(size, augment)
        self.samples = list(samples)
        self.root = name

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        return f"{self.root}[{i}] {self.samples[i].kind} of {self.samples[i].source}"

    def kind(self, i: int) -> str:
        return self.samples[i].kind

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[i]
        return s.image, s.mask.astype(np.int64)


class ForgeryFolder(MaskFolderDataset):
    """DATA/images + DATA/masks (non-zero = manipulated), optional DATA/kinds.json {stem: kind}."""

    def __init__(self, root: str | Path, size: tuple[int, int] = (256, 256), augment: bool = False,
                 indices: Sequence[int] | None = None, skip_bad: bool = False):
        root = Path(root)
        super().__init__(root / "images", root / "masks", class_names=CLASS_NAMES, size=size, augment=augment,
                         indices=indices, skip_bad=skip_bad)
        kinds_file = root / "kinds.json"
        self.kinds = json.loads(kinds_file.read_text()) if kinds_file.is_file() else {}

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = super().load(i)
        return image, (mask > 0).astype(np.int64)

    def kind(self, i: int) -> str:
        stem = self.pairs[i][0].stem
        if stem in self.kinds:
            return str(self.kinds[stem])
        return "manipulated" if self.load(i)[1].any() else "authentic"
