"""Image-classification data: a folder of class folders or a CSV `path,label`, as uint8 tensors.

Samples are `{"image": uint8 (S, S, 3), "target": int64}`: resizing to the model's input size and
light augmentation happen here, ImageNet normalisation happens inside the model graph
(`fovea.classify.model.ClassifierPipeline`), so training, evaluation and every export normalise
the same way.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, WeightedRandomSampler

from fovea.errors import DataError, ImageReadError
from fovea.io import IMAGE_EXTENSIONS, image_header_size, list_images, read_image


@dataclass
class Sample:
    path: Path
    label: int


def scan_class_folders(root: str | Path, class_names: Sequence[str] | None = None, *, skip_bad: bool = False,
                       skipped: list | None = None) -> tuple[list[Sample], list[str]]:
    """`root/<class>/*.png` -> samples and sorted class names (or the given order, checked).

    Images are listed with `fovea.io.list_images` (header-checked): an unreadable file raises, or with
    skip_bad is left out and appended to `skipped` as (path, reason).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. Fix: pass a folder with one sub-folder per class, or a CSV.")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no class sub-folders. Fix: put images in {root}/<class name>/.")
    names = list(class_names) if class_names else found
    extra = sorted(set(found) - set(names))
    if extra:
        raise DataError(f"{root} has class folders {extra} that the model does not know (classes {names}). "
                        "Fix: remove them or train a model with those classes.")
    samples = []
    for ci, name in enumerate(names):
        d = root / name
        if not d.is_dir():
            continue
        found = list_images(d, skip_bad=skip_bad)
        samples += [Sample(p, ci) for p in found]
        if skipped is not None:
            skipped += [(str(q), r) for q, r in found.skipped]
    if not samples:
        raise DataError(f"no images under {root}/<class>/ (extensions {', '.join(IMAGE_EXTENSIONS)}).")
    return samples, names


def read_label_csv(path: str | Path, class_names: Sequence[str] | None = None, *, skip_bad: bool = False,
                   skipped: list | None = None) -> tuple[list[Sample], list[str]]:
    """CSV with columns `path,label` (header optional); paths relative to the CSV's folder.

    Every image's header is checked: an unreadable one raises, or with skip_bad is left out and
    appended to `skipped` as (path, reason).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label CSV {path} does not exist.")
    rows = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or row[0].startswith("#"):
                continue
            if i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise DataError(f"{path} line {i + 1}: expected `path,label`, got {row}. Fix: two columns per line.")
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise DataError(f"{path} has no `path,label` rows.")
    names = list(class_names) if class_names else sorted({r[1] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    samples = []
    for p, label in rows:
        if label not in index:
            raise DataError(f"{path}: label {label!r} is not one of the classes {names}.")
        q = Path(p) if Path(p).is_absolute() else path.parent / p
        if not q.is_file():
            raise DataError(f"{path}: image {q} does not exist. Fix: paths are relative to the CSV's folder.")
        try:
            image_header_size(q)
        except ImageReadError as exc:
            if not skip_bad:
                raise
            if skipped is not None:
                skipped.append((str(q), exc.reason))
            continue
        samples.append(Sample(q, index[label]))
    if not samples:
        raise DataError(f"every image listed in {path} is unreadable. Fix: replace the files.")
    return samples, names


def load_samples(source: str | Path, class_names: Sequence[str] | None = None, *, skip_bad: bool = False,
                 skipped: list | None = None) -> tuple[list[Sample], list[str]]:
    """A class-folder root or a `.csv` file; unreadable images raise, or with skip_bad go to `skipped`."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_label_csv(source, class_names, skip_bad=skip_bad, skipped=skipped)
    return scan_class_folders(source, class_names, skip_bad=skip_bad, skipped=skipped)


def stratified_split(samples: Sequence[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Hold out `fraction` of every class (at least one when a class has >= 2 images), seeded."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in sorted({s.label for s in samples}):
        items = [s for s in samples if s.label == label]
        order = rng.permutation(len(items))
        k = int(round(fraction * len(items)))
        if len(items) >= 2:
            k = min(max(k, 1), len(items) - 1)
        held += [items[i] for i in order[:k]]
        keep += [items[i] for i in order[k:]]
    return keep, held


# ----------------------------------------------------------------------------------- transforms

def resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) with the model graph's resize (bilinear, antialiased)."""
    x = image.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=list(size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


@dataclass
class Augment:
    """Light augmentation: random resized crop (area scale, aspect ratio), flips, brightness/contrast.

    The crop keeps >= 85 % of the area by default: in inspection a defect near the border must not
    be cropped away while its label still says "damaged".
    """

    scale: tuple[float, float] = (0.85, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    vflip: bool = False
    brightness: float = 0.15
    contrast: float = 0.15

    def __call__(self, image: torch.Tensor, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
        """uint8 (H, W, 3) -> augmented uint8 (size, 3)."""
        h, w = image.shape[:2]

        def u(a, b):
            return a + (b - a) * float(torch.rand((), generator=g))

        for _ in range(10):
            area = h * w * u(*self.scale)
            ar = math.exp(u(math.log(self.ratio[0]), math.log(self.ratio[1])))
            ch, cw = int(round(math.sqrt(area / ar))), int(round(math.sqrt(area * ar)))
            if 0 < ch <= h and 0 < cw <= w:
                y0, x0 = int(u(0, h - ch + 1 - 1e-9)), int(u(0, w - cw + 1 - 1e-9))
                image = image[y0:y0 + ch, x0:x0 + cw]
                break
        out = resize_uint8(image, size).float()
        if self.hflip and u(0, 1) < 0.5:
            out = out.flip(1)
        if self.vflip and u(0, 1) < 0.5:
            out = out.flip(0)
        if self.brightness or self.contrast:
            b = u(1 - self.brightness, 1 + self.brightness)
            c = u(1 - self.contrast, 1 + self.contrast)
            mean = out.mean()
            out = (out - mean) * c + mean * b
        return out.round_().clamp_(0, 255).to(torch.uint8)


class ImageClassDataset(Dataset):
    """`{"image": uint8 (S, S, 3), "target": int64, "index": int}` per sample.

    train=True applies `augment` (seeded from torch's global RNG, so a seeded run repeats);
    cache=True keeps decoded images in memory (small data sets, several epochs).
    """

    def __init__(self, samples: Sequence[Sample], class_names: Sequence[str], input_size: tuple[int, int] = (224, 224),
                 train: bool = False, augment: Augment | None = None, cache: bool = True):
        if not samples:
            raise DataError("the classification data set is empty.")
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = train
        self.augment = augment or Augment()
        self.cache = cache
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], np.int64)

    def image(self, i: int) -> torch.Tensor:
        """The decoded uint8 (H, W, 3) image of sample i; eval-time resized when not augmenting."""
        if i in self._images:
            return self._images[i]
        img = torch.from_numpy(np.array(read_image(self.samples[i].path), copy=True))
        if not self.train:
            img = resize_uint8(img, self.input_size)
        if self.cache:
            self._images[i] = img
        return img

    def __getitem__(self, i: int) -> dict:
        img = self.image(i)
        if self.train:
            # drawn from torch's global RNG: seeded by fit's seed, restored on resume, per-worker in loaders
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            img = self.augment(img, self.input_size, g)
        return {"image": img, "target": torch.tensor(self.samples[i].label, dtype=torch.int64), "index": i}


def class_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(targets, minlength=num_classes)


def balanced_sampler(targets: np.ndarray, num_classes: int, num_samples: int | None = None) -> WeightedRandomSampler:
    """Draw classes equally often: weight 1 / count(class) per sample, with replacement."""
    counts = class_counts(targets, num_classes)
    if (counts == 0).any():
        missing = [i for i, c in enumerate(counts) if c == 0]
        raise DataError(f"classes {missing} have no training images; a balanced sampler cannot draw them.")
    weights = 1.0 / counts[targets]
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples or len(targets),
                                 replacement=True)
