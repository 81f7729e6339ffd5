"""Video data sets: labelled clips from class folders or a CSV (path, label[, start_s, end_s]).

`VideoClipDataset` decodes the sampled frames of each video (`fovea.video.decode.VideoReader`),
turns them into a (3, T, H, W) float clip, resizes/crops and normalises it. Training draws TSN
segment offsets from a per-item, per-epoch seeded generator; testing takes segment centres.
Bad files raise `VideoReadError` naming the file (never skipped silently).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fovea.errors import DataError
from fovea.video.decode import VideoReader
from fovea.video.samplers import tsn_indices, tsn_test_views
from fovea.video.transforms import (center_crop, frames_to_clip, hflip, normalize, random_crop, resize_short_side,
                                    three_crop, vflip)

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
LITE0_MEAN_255 = (127.5, 127.5, 127.5)       # timm efficientnet_lite0: mean = std = 0.5 of 1.0
LITE0_STD_255 = (127.5, 127.5, 127.5)


@dataclass(frozen=True)
class VideoItem:
    """One labelled video (start/end in seconds for localization sets, else None)."""

    path: Path
    label: int
    start_s: float | None = None
    end_s: float | None = None


def items_from_folders(root: str | Path, class_names: list[str] | None = None) -> tuple[list[VideoItem], list[str]]:
    """root/<class>/<video>: items and class names (sorted folder names unless given)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"video folder {root} does not exist. Fix: pass a folder with one sub-folder per class.")
    names = class_names or sorted(p.name for p in root.iterdir() if p.is_dir())
    items = []
    for k, name in enumerate(names):
        files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in VIDEO_EXTS)
        items += [VideoItem(p, k) for p in files]
    if not items:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTS)}) under {root}/<class>/. Fix: put clips in class folders.")
    return items, list(names)


def items_from_csv(path: str | Path, class_names: list[str] | None = None) -> tuple[list[VideoItem], list[str]]:
    """CSV with header `path,label[,start_s,end_s]`; relative paths are relative to the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist. Fix: write a CSV with columns path,label.")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{path}: needs a header with columns path,label (optional start_s,end_s); got "
                        f"{list(rows[0]) if rows else 'no rows'}")
    names = class_names or sorted({r["label"] for r in rows})
    items = []
    for i, r in enumerate(rows, start=2):
        if r["label"] not in names:
            raise DataError(f"{path} line {i}: label {r['label']!r} is not one of {names}")
        start = float(r["start_s"]) if r.get("start_s") not in (None, "") else None
        end = float(r["end_s"]) if r.get("end_s") not in (None, "") else None
        if start is not None and end is not None and end < start:
            raise DataError(f"{path} line {i}: end_s={end} < start_s={start}")
        p = Path(r["path"])
        items.append(VideoItem(p if p.is_absolute() else path.parent / p, names.index(r["label"]), start, end))
    return items, list(names)


class VideoClipDataset(Dataset):
    """(clip (3, T, H, W) float normalised, label) per video, T = num_segments TSN frames.

    size: crop side (None: keep the decoded size); short_side: resize first (None: no resize).
    Multi-view testing (train=False): `num_clips` TSN samplings x (3 crops if `three_crops`, else 1)
    -> each item is (V, 3, T, H, W); `fovea.video.train.predict_scores` fuses views by mean softmax.
    Training augmentation: `flip` (left-right) and `vertical_flip` (top-bottom), each with p = 0.5."""

    def __init__(self, items: list[VideoItem], num_segments: int = 8, *, train: bool, size: int | None = None,
                 short_side: int | None = None, mean=LITE0_MEAN_255, std=LITE0_STD_255, flip: bool = False,
                 seed: int = 0, num_clips: int = 1, three_crops: bool = False, vertical_flip: bool = False):
        if not items:
            raise DataError("VideoClipDataset: no items. Fix: pass at least one labelled video.")
        self.items, self.num_segments, self.train = list(items), num_segments, train
        self.size, self.short_side, self.mean, self.std = size, short_side, mean, std
        self.flip, self.vertical_flip, self.seed = flip, vertical_flip, seed
        self.num_clips, self.three_crops = num_clips, three_crops
        self._draws = np.zeros(len(self.items), np.int64)     # per-item draw counter: new offsets each epoch

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        self._draws[index] += 1
        return np.random.default_rng([self.seed, index, int(self._draws[index])])

    def __getitem__(self, index: int):
        item = self.items[index]
        rng = self._rng(index)
        if not self.train and (self.num_clips > 1 or self.three_crops):
            return self._views(item), torch.tensor(item.label)
        with VideoReader(item.path) as reader:
            idx = tsn_indices(len(reader), self.num_segments, train=self.train, rng=rng)
            frames = reader.get_frames(idx)
        clip = frames_to_clip(frames)
        if self.short_side:
            clip = resize_short_side(clip, self.short_side)
        if self.size:
            clip = random_crop(clip, self.size, rng) if self.train else center_crop(clip, self.size)
        if self.train and self.flip and rng.random() < 0.5:
            clip = hflip(clip)
        if self.train and self.vertical_flip and rng.random() < 0.5:
            clip = vflip(clip)
        return normalize(clip, self.mean, self.std), torch.tensor(item.label)

    def _views(self, item: VideoItem) -> torch.Tensor:
        """(num_clips * crops, 3, T, H, W) test views of one video."""
        with VideoReader(item.path) as reader:
            idx = tsn_test_views(len(reader), self.num_segments, self.num_clips)
            frames = reader.get_frames(idx.reshape(-1))
        views = []
        for k in range(self.num_clips):
            clip = frames_to_clip(frames[k * self.num_segments:(k + 1) * self.num_segments])
            if self.short_side:
                clip = resize_short_side(clip, self.short_side)
            if self.three_crops:
                crops = three_crop(clip, self.size or min(clip.shape[-2:]))
            else:                  # one view per clip, cropped as the single-view path does (not at all without size)
                crops = [center_crop(clip, self.size) if self.size else clip]
            views += [normalize(c, self.mean, self.std) for c in crops]
        return torch.stack(views)
