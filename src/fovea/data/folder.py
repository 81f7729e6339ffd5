"""Folder and MVTec AD anomaly data sets: normal images to train on, labelled images to test on.

Expected layout (free folder layout, `FolderSpec`; every folder is relative to `root`)::

    root/
      good/                 normal_dir       normal images (train; some move to test, see below)
      good_test/            normal_test_dir  optional: normal images kept for testing
      scratch/  stain/ ...  abnormal_dirs    one folder per defect type; the folder name is the type
      masks/                mask_dir         optional ground truth, either
        scratch/ stain/ ...                    one sub-folder per defect type, or
        *.png                                  one flat folder (stems unique across defect types)

A mask belongs to the anomalous image with the same file stem, or the stem plus `_mask`
(`007.png` <- `007.png` or `007_mask.png`); any nonzero pixel is a defect and the mask must have
its image's size. With a mask folder, every anomalous image needs exactly one mask and every
mask an image; otherwise `MaskMismatchError` lists the unmatched files on both sides.

Splits: train = normal images (minus `normal_split_ratio` of them moved to test when there is no
`normal_test_dir`); test = test normals + all anomalous images; val = a stratified
`val_split_ratio` share of the test set (taken out of it) for choosing thresholds, or
`"same_as_test"` (also 0) for val = test, Anomalib's MVTec protocol. All splits are seeded.

MVTec AD layout (`load_mvtec`): `<root>/<category>/train/good`, `<root>/<category>/test/<defect>`
(with `test/good`), `<root>/<category>/ground_truth/<defect>/<stem>_mask.png`.

Unreadable files raise `ImageReadError` naming them, or with `skip_bad=True` are left out and
listed in `AnomalySplits.skipped` as (path, reason).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from fovea.errors import ConfigError, DataError, ImageReadError, MaskMismatchError
from fovea.io import IMAGE_EXTENSIONS, image_header_size, list_images, read_image, read_mask

PathLike = Union[str, os.PathLike]
SAME_AS_TEST = "same_as_test"
NORMAL = "good"
_LIST_LIMIT = 12  # files listed in an error message before "... and N more"


# ------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Sample:
    """One image: label 0 = normal, 1 = anomalous; defect_type "good" for normal images."""

    path: Path
    label: int
    defect_type: str = NORMAL
    mask_path: Path | None = None


@dataclass
class AnomalySplits:
    """train (normal only), val (for thresholds), test; `skipped` lists (path, reason) left out."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    val_mode: str = "from_test"  # or "same_as_test" (val is test)

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test image has a ground-truth mask."""
        bad = [s for s in self.test if s.label == 1]
        return bool(bad) and all(s.mask_path is not None for s in bad)

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test + self.val if s.label == 1})

    def summary(self) -> str:
        """One line per split with counts per defect type, plus the skipped count."""
        lines = []
        for name in ("train", "val", "test"):
            items = getattr(self, name)
            counts = Counter(s.defect_type for s in items)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            same = " (same as test)" if name == "val" and self.val_mode == SAME_AS_TEST else ""
            lines.append(f"{name}: {len(items)} images{same}" + (f" ({detail})" if detail else ""))
        if self.skipped:
            lines.append(f"skipped: {len(self.skipped)} unreadable file(s)")
        return "\n".join(lines)


@dataclass
class FolderSpec:
    """Where a folder data set lives and how to split it (see the module docstring for the layout).

    val_split_ratio: share of the test set moved to validation, in [0, 1); 0 or "same_as_test"
    makes validation the test set itself. verify_images: decode every image and mask while
    loading (catches corrupt files before fitting); False only opens headers (sizes, formats).
    """

    root: PathLike | None = None
    normal_dir: PathLike = NORMAL
    abnormal_dirs: Sequence[PathLike] = ()
    mask_dir: PathLike | None = None
    normal_test_dir: PathLike | None = None
    normal_split_ratio: float = 0.2
    val_split_ratio: float | str = 0.5
    seed: int = 0
    extensions: Sequence[str] = IMAGE_EXTENSIONS
    skip_bad: bool = False
    verify_images: bool = True


# ---------------------------------------------------------------------------------- helpers
def _fmt_list(paths: Iterable, limit: int = _LIST_LIMIT) -> str:
    items = [str(p) for p in paths]
    head = ", ".join(items[:limit])
    return head + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _resolve(root: Path | None, d: PathLike) -> Path:
    p = Path(d).expanduser()
    return p if p.is_absolute() or root is None else root / p


def _exts(extensions: Sequence[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _list_dir(d: Path, exts: tuple[str, ...], role: str, required: bool = True) -> list[Path]:
    """Sorted image files directly in `d` (`fovea.io.list_images`); DataError naming the folder when
    it is missing, or empty while `required`. Files are checked later, by `_Checker`."""
    if not d.exists():
        raise DataError(f"{role} folder {d} does not exist. Fix: check the path (relative paths are "
                        "taken from the data root).")
    if not d.is_dir():
        raise DataError(f"{role} {d} is a file, not a folder. Fix: pass the folder that holds the images.")
    try:
        return list(list_images(d, extensions=exts, check=False))
    except DataError as exc:
        if not required:
            return []
        raise DataError(f"{role} folder: {exc}") from None


def _size_of(path: Path, verify: bool, is_mask: bool = False) -> tuple[int, int]:
    if not verify:
        return image_header_size(path)
    arr = read_mask(path) if is_mask else read_image(path)
    return arr.shape[0], arr.shape[1]


def _check_mask_size(image: Path, image_hw: tuple[int, int], mask: Path, mask_hw: tuple[int, int]) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise MaskMismatchError(
            f"mask {mask} is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image} is "
            f"{image_hw[1]}x{image_hw[0]}. Fix: masks must have exactly their image's size; re-export the "
            "mask at the image resolution (or correct the pairing).")


def _mask_key(mask: Path) -> str:
    return mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem


def _pair_masks(images: list[Path], masks: list[Path], where: str) -> dict[Path, Path]:
    """image -> mask by stem (or stem + "_mask"); MaskMismatchError listing both unmatched sides."""
    by_stem: dict[str, list[Path]] = {}
    for m in masks:
        by_stem.setdefault(m.stem, []).append(m)
    pairs: dict[Path, Path] = {}
    unmatched_images = []
    for img in images:
        cands = by_stem.get(img.stem, []) + by_stem.get(img.stem + "_mask", [])
        if len(cands) > 1:
            raise MaskMismatchError(f"image {img} has {len(cands)} candidate masks in {where}: "
                                    f"{_fmt_list(cands)}. Fix: keep one mask per image.")
        if cands:
            pairs[img] = cands[0]
        else:
            unmatched_images.append(img)
    claimed = Counter(pairs.values())
    twice = sorted(m for m, n in claimed.items() if n > 1)
    if twice:
        owners = sorted(i for i, m in pairs.items() if m in twice)
        raise MaskMismatchError(f"mask(s) {_fmt_list(twice)} match several images ({_fmt_list(owners)}). "
                                "Fix: rename so each mask matches one image stem.")
    unmatched_masks = [m for m in masks if m not in claimed]
    if unmatched_images or unmatched_masks:
        parts = []
        if unmatched_images:
            parts.append(f"{len(unmatched_images)} anomalous image(s) without a mask: "
                         f"{_fmt_list(unmatched_images)}")
        if unmatched_masks:
            parts.append(f"{len(unmatched_masks)} mask(s) without an image: {_fmt_list(unmatched_masks)}")
        raise MaskMismatchError(
            f"masks in {where} do not match the anomalous images one-to-one by file stem; "
            + "; ".join(parts) + ". Fix: name each mask like its image (<stem>.png or <stem>_mask.png) "
            "and remove masks of images that are not in the data set.")
    return pairs


def _match_masks(abnormal: dict[str, list[Path]], mask_root: Path, exts: tuple[str, ...]) -> dict[Path, Path]:
    """Masks for every anomalous image: per-defect sub-folders of `mask_root`, or one flat folder."""
    if not mask_root.is_dir():
        raise DataError(f"mask folder {mask_root} does not exist. Fix: check the path or leave mask_dir "
                        "unset (pixel metrics are then skipped).")
    subdirs = {p.name for p in mask_root.iterdir() if p.is_dir()}
    if subdirs & set(abnormal):
        missing = [d for d in abnormal if d not in subdirs]
        if missing:
            raise MaskMismatchError(
                f"mask folder {mask_root} has per-defect sub-folders but none for defect type(s) "
                f"{', '.join(missing)}. Fix: add {mask_root}/<defect>/ with the masks of each defect type.")
        pairs = {}
        for defect, images in abnormal.items():
            masks = _list_dir(mask_root / defect, exts, "mask", required=False)
            pairs.update(_pair_masks(images, masks, str(mask_root / defect)))
        return pairs
    all_images = [p for images in abnormal.values() for p in images]
    stems = Counter(p.stem for p in all_images)
    dup = sorted(p for p in all_images if stems[p.stem] > 1)
    if dup:
        raise MaskMismatchError(
            f"one flat mask folder {mask_root} cannot tell apart anomalous images with the same stem: "
            f"{_fmt_list(dup)}. Fix: use per-defect mask sub-folders ({mask_root}/<defect>/) or unique "
            "names.")
    masks = _list_dir(mask_root, exts, "mask", required=False)
    return _pair_masks(all_images, masks, str(mask_root))


def _check_ratio(name: str, value: float, allow_one: bool = False) -> float:
    v = float(value)
    if not (0.0 <= v < 1.0 or (allow_one and v == 1.0)):
        raise ConfigError(f"{name}={value} is outside [0, 1). Fix: pass a fraction such as 0.2.")
    return v


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _stratified_take(samples: list[Sample], ratio: float, rng: np.random.Generator) -> tuple[list, list]:
    """Split samples per defect type: round(ratio * n) of each group go to the first list."""
    taken, rest = [], []
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.defect_type, []).append(s)
    for key in sorted(groups):
        g = sorted(groups[key], key=lambda s: str(s.path))
        k = _round_half_up(ratio * len(g))
        order = rng.permutation(len(g))
        taken += [g[i] for i in order[:k]]
        rest += [g[i] for i in order[k:]]
    return taken, rest


def _sorted(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.label, s.defect_type, str(s.path)))


# ------------------------------------------------------------------------------------ loading
class _Checker:
    """Reads (or header-checks) files once, turning unreadable ones into errors or skipped entries."""

    def __init__(self, verify: bool, skip_bad: bool):
        self.verify, self.skip_bad = verify, skip_bad
        self.skipped: list[tuple[str, str]] = []

    def size(self, path: Path, is_mask: bool = False, owner: Path | None = None) -> tuple[int, int] | None:
        try:
            return _size_of(path, self.verify, is_mask)
        except ImageReadError as exc:
            if not self.skip_bad:
                raise
            reason = exc.reason if owner is None else f"its mask {path} is unreadable: {exc.reason}"
            self.skipped.append((str(owner or path), reason))
            return None

    def keep(self, paths: list[Path]) -> list[Path]:
        return [p for p in paths if self.size(p) is not None]


def load_folder(spec: FolderSpec) -> AnomalySplits:
    """Build train/val/test `Sample` lists from a `FolderSpec`; errors name files and the fix."""
    root = Path(spec.root).expanduser() if spec.root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"data root {root} is not a folder. "
                        "Fix: pass the folder that holds the image folders.")
    exts = _exts(spec.extensions)
    normal_split = _check_ratio("normal_split_ratio", spec.normal_split_ratio)
    same_as_test = spec.val_split_ratio == SAME_AS_TEST or (
        not isinstance(spec.val_split_ratio, str) and float(spec.val_split_ratio) == 0.0)
    if isinstance(spec.val_split_ratio, str) and not same_as_test:
        raise ConfigError(f"val_split_ratio={spec.val_split_ratio!r} is not a fraction or 'same_as_test'.")
    val_split = 0.0 if same_as_test else _check_ratio("val_split_ratio", spec.val_split_ratio)
    check = _Checker(spec.verify_images, spec.skip_bad)

    # normal images
    normal_dir = _resolve(root, spec.normal_dir)
    normals = check.keep(_list_dir(normal_dir, exts, "normal"))
    if not normals:
        raise DataError(f"every image in the normal folder {normal_dir} is unreadable "
                        f"({len(check.skipped)} skipped). Fix: replace the files.")
    if spec.normal_test_dir is not None:
        train_paths = normals
        test_normals = check.keep(_list_dir(_resolve(root, spec.normal_test_dir), exts, "normal test"))
    else:
        rng = np.random.default_rng([int(spec.seed), 0])
        order = rng.permutation(len(normals))
        n_test = _round_half_up(normal_split * len(normals))
        if n_test >= len(normals):
            raise DataError(f"normal_split_ratio={normal_split} leaves no training images out of "
                            f"{len(normals)} in {normal_dir}. Fix: add normal images or lower the ratio.")
        test_normals = [normals[i] for i in order[:n_test]]
        train_paths = [normals[i] for i in order[n_test:]]

    # anomalous images, one folder per defect type
    single = isinstance(spec.abnormal_dirs, (str, os.PathLike))
    dirs = [spec.abnormal_dirs] if single else list(spec.abnormal_dirs)
    abnormal: dict[str, list[Path]] = {}
    for d in dirs:
        path = _resolve(root, d)
        if path.name in abnormal:
            raise ConfigError(f"two abnormal folders share the defect name {path.name!r} ({path}). "
                              "Fix: give each defect type its own folder name.")
        abnormal[path.name] = _list_dir(path, exts, f"abnormal ({path.name})")
    mask_of: dict[Path, Path] = {}
    if spec.mask_dir is not None and abnormal:
        mask_of = _match_masks(abnormal, _resolve(root, spec.mask_dir), exts)

    bad_samples = []
    for defect, images in abnormal.items():
        for img in images:
            hw = check.size(img)
            if hw is None:
                continue
            mask = mask_of.get(img)
            if mask is not None:
                mhw = check.size(mask, is_mask=True, owner=img)
                if mhw is None:
                    continue
                _check_mask_size(img, hw, mask, mhw)
            bad_samples.append(Sample(img, 1, defect, mask))

    train = [Sample(p, 0) for p in train_paths]
    test = [Sample(p, 0) for p in test_normals] + bad_samples
    if same_as_test:
        return AnomalySplits(_sorted(train), _sorted(test), _sorted(test), check.skipped, SAME_AS_TEST)
    val, test = _stratified_take(test, val_split, np.random.default_rng([int(spec.seed), 1]))
    return AnomalySplits(_sorted(train), _sorted(val), _sorted(test), check.skipped, "from_test")


def load_mvtec(root: PathLike, category: str | None = None, *, val_split_ratio: float | str = 0.5,
               seed: int = 0, skip_bad: bool = False, verify_images: bool = True,
               extensions: Sequence[str] = IMAGE_EXTENSIONS) -> AnomalySplits:
    """Load one MVTec AD category (`root/category/...`; category None: root is the category folder).

    train/good -> train; test/good + test/<defect> -> test (val taken from it, see FolderSpec);
    ground_truth/<defect>/<stem>_mask.png -> masks.
    """
    root = Path(root).expanduser()
    cat_dir = root if category is None else root / category
    if not cat_dir.is_dir():
        avail = sorted(p.name for p in root.iterdir() if (p / "train").is_dir()) if root.is_dir() else []
        raise DataError(f"MVTec category folder {cat_dir} does not exist"
                        + (f"; categories in {root}: {', '.join(avail)}" if avail else "")
                        + ". Fix: pass --category with one of those, or the data root that contains it.")
    if not (cat_dir / "train" / NORMAL).is_dir():
        raise DataError(f"{cat_dir} is not in the MVTec AD layout: {cat_dir / 'train' / NORMAL} is missing. "
                        "Fix: use <category>/train/good, <category>/test/<defect>, "
                        "<category>/ground_truth/<defect>/<stem>_mask.png, or the folder layout options.")
    test_dir = cat_dir / "test"
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name != NORMAL) \
        if test_dir.is_dir() else []
    gt = cat_dir / "ground_truth"
    spec = FolderSpec(
        root=cat_dir, normal_dir=Path("train") / NORMAL,
        normal_test_dir=Path("test") / NORMAL if (test_dir / NORMAL).is_dir() else None,
        abnormal_dirs=[Path("test") / d for d in defects],
        mask_dir=Path("ground_truth") if gt.is_dir() and defects else None,
        normal_split_ratio=0.0 if (test_dir / NORMAL).is_dir() else 0.2,
        val_split_ratio=val_split_ratio, seed=seed, extensions=extensions, skip_bad=skip_bad,
        verify_images=verify_images)
    return load_folder(spec)
