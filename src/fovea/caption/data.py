"""Caption training data from a user's folder: a CSV of `image,caption` rows (several rows per image give
several phrasings), image paths relative to the CSV's folder."""

from __future__ import annotations

import csv
from pathlib import Path

from fovea.errors import DataError
from fovea.io import read_image
from fovea.synth.captions import CaptionSample


def read_captions_csv(path: str | Path) -> list[CaptionSample]:
    """Samples (one per distinct image, its captions in file order) from a CSV with columns image, caption."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"captions file {path} does not exist. Fix: give a CSV with columns image,caption.")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise DataError(f"{path}: columns {reader.fieldnames} lack 'image' and 'caption'. Fix: a header line "
                            "'image,caption', one row per (image, caption) pair.")
        captions: dict[str, list[str]] = {}
        for row_no, row in enumerate(reader, start=2):
            image, text = (row.get("image") or "").strip(), (row.get("caption") or "").strip()
            if not image or not text:
                raise DataError(f"{path} line {row_no}: empty image or caption ({row}). Fix: fill both columns.")
            captions.setdefault(image, []).append(text)
    if not captions:
        raise DataError(f"{path} has no caption rows. Fix: add 'image,caption' rows under the header.")
    missing = [name for name in captions if not (path.parent / name).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image(s) not found next to it, e.g. {missing[:3]}. Fix: image paths "
                        f"are relative to {path.parent}; correct or remove those rows.")
    return [CaptionSample(read_image(path.parent / name), caps, {"image": name}) for name, caps in captions.items()]
