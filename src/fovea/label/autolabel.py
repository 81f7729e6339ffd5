"""Auto-labelling: run a teacher over an unlabelled folder, write labels with confidences, a review page
sorted by uncertainty, and a CSV that `fovea classify fit/test` read.

A teacher is any classify `Predictor` (the zero-shot two-tower model through
`fovea.vl.zeroshot.zero_shot_predictor`, a trained `fovea classify` model, an exported file) or an
`EnsembleTeacher` of several with the same classes (probabilities averaged).

Files in out_dir:
- `labels.csv`: `path,label,confidence,margin,p_<class>...` (paths relative to out_dir): the classify
  commands read its first two columns;
- `review.html`: every image with its label and probabilities, least certain (smallest margin
  between the two most probable classes) first;
- `soft_labels.npy`: (N, C) teacher probabilities in CSV order (for distillation).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fovea.errors import ConfigError, DataError
from fovea.io import list_images, read_or_skip

__all__ = ["EnsembleTeacher", "LabelRun", "label_folder", "read_soft_labels", "uncertainty_margin"]


class EnsembleTeacher:
    """Mean probabilities of several classify predictors with identical class names."""

    def __init__(self, teachers: Sequence):
        if not teachers:
            raise ConfigError("an ensemble needs at least one teacher.")
        names = [tuple(t.class_names) for t in teachers]
        if len(set(names)) != 1:
            raise ConfigError(f"ensemble teachers disagree on classes: {names}. Fix: use models trained on the same "
                              "class names in the same order.")
        self.teachers = list(teachers)
        self.class_names = names[0]
        self.source = "ensemble(" + ", ".join(str(getattr(t, "source", "?")) for t in teachers) + ")"

    def predict_probs(self, frames) -> np.ndarray:
        return np.mean([t.predict_probs(frames) for t in self.teachers], axis=0)


def uncertainty_margin(probs: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) p_top1 - p_top2: 0 = the teacher cannot decide, 1 = certain."""
    s = np.sort(np.asarray(probs), axis=1)
    return s[:, -1] - s[:, -2]


@dataclass
class LabelRun:
    """What `label_folder` wrote and measured."""

    csv: Path
    html: Path
    soft_labels: Path
    paths: list[Path]
    probs: np.ndarray
    class_names: tuple[str, ...]
    seconds_per_image: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _thumb_b64(image: np.ndarray, side: int = 96) -> str:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _write_review(path: Path, rows: list[dict], class_names: Sequence[str], thumbs: dict[str, str],
                  source: str) -> None:
    order = sorted(rows, key=lambda r: r["margin"])
    parts = ["<!doctype html><meta charset='utf-8'><title>fovea label review</title>",
             "<style>body{font-family:sans-serif}td{padding:4px;vertical-align:middle}tr:nth-child(even){background:#f4f4f4}"
             "</style>", f"<h1>Review: {len(rows)} images labelled by {html.escape(source)}</h1>",
             "<p>Least certain first (margin = top-1 minus top-2 probability). Correct a label by editing "
             "labels.csv.</p><table><tr><th>image</th><th>file</th><th>label</th><th>margin</th>"
             + "".join(f"<th>p({html.escape(c)})</th>" for c in class_names) + "</tr>"]
    for r in order:
        probs = "".join(f"<td>{p:.3f}</td>" for p in r["probs"])
        parts.append(f"<tr><td><img src='data:image/png;base64,{thumbs[r['path']]}'></td><td>{html.escape(r['path'])}"
                     f"</td><td><b>{html.escape(r['label'])}</b></td><td>{r['margin']:.3f}</td>{probs}</tr>")
    parts.append("</table>")
    path.write_text("\n".join(parts))


def label_folder(teacher, folder: str | Path, out_dir: str | Path, *, batch_size: int = 32, recursive: bool = False,
                 skip_bad: bool = False, progress=None) -> LabelRun:
    """Label every image of `folder` with `teacher` (needs `.class_names` and `.predict_probs(frames)`)."""
    listing = list_images(folder, recursive=recursive, skip_bad=skip_bad)
    skipped = [(str(p), r) for p, r in listing.skipped]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(teacher.class_names)
    paths, probs, thumbs = [], [], {}
    t0 = time.perf_counter()
    files = list(listing)
    for i in range(0, len(files), batch_size):
        part = files[i:i + batch_size]
        images = [read_or_skip(p, skip_bad, skipped) for p in part]
        kept = [(p, im) for p, im in zip(part, images) if im is not None]
        if not kept:
            continue
        probs.append(np.asarray(teacher.predict_probs([im for _, im in kept]), np.float64))
        for p, im in kept:
            rel = os.path.relpath(p, out)
            paths.append(Path(p))
            thumbs[rel] = _thumb_b64(im)
        if progress:
            progress("label", min(i + batch_size, len(files)), len(files))
    if not paths:
        raise DataError(f"no image of {folder} could be read. Fix: replace the files.")
    seconds = (time.perf_counter() - t0) / len(paths)
    p = np.concatenate(probs)
    margin = uncertainty_margin(p)
    rows = [{"path": os.path.relpath(q, out), "label": names[int(k)], "confidence": float(pi.max()),
             "margin": float(m), "probs": pi.tolist()} for q, k, pi, m in zip(paths, p.argmax(1), p, margin)]
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "confidence", "margin"] + [f"p_{c}" for c in names])
        for r in rows:
            w.writerow([r["path"], r["label"], f"{r['confidence']:.6f}", f"{r['margin']:.6f}"]
                       + [f"{v:.6f}" for v in r["probs"]])
    np.save(out / "soft_labels.npy", p.astype(np.float32))
    _write_review(out / "review.html", rows, names, thumbs, str(getattr(teacher, "source", "teacher")))
    return LabelRun(out / "labels.csv", out / "review.html", out / "soft_labels.npy", paths, p, names, seconds, skipped)


def read_soft_labels(csv_path: str | Path) -> tuple[list[Path], np.ndarray, list[str], list[str]]:
    """labels.csv -> (image paths, (N, C) probabilities from its p_<class> columns, class names, labels).

    After a reviewer edits a label, the row's probabilities no longer agree with it; distillation uses
    the label column as the hard target and the probabilities as the soft one.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"labels CSV {csv_path} does not exist. Fix: run `fovea label run` first.")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["path", "label"] or not any(c.startswith("p_") for c in rows[0]):
        raise DataError(f"{csv_path} is not a labels CSV written by `fovea label` (header path,label,...,p_<class>).")
    pcols = [i for i, c in enumerate(rows[0]) if c.startswith("p_")]
    names = [rows[0][i][2:] for i in pcols]
    paths, probs, labels = [], [], []
    for line, r in enumerate(rows[1:], start=2):
        q = Path(r[0]) if Path(r[0]).is_absolute() else csv_path.parent / r[0]
        if not q.is_file():
            raise DataError(f"{csv_path} line {line}: image {q} does not exist. Fix: keep the labelled folder in place.")
        if r[1] not in names:
            raise DataError(f"{csv_path} line {line}: label {r[1]!r} is not one of {names}.")
        paths.append(q)
        probs.append([float(r[i]) for i in pcols])
        labels.append(r[1])
    return paths, np.asarray(probs, np.float32), names, labels
