"""Contrastive training of the two-tower model on the shared engine (`fovea.engine.train.fit`).

Data: `CaptionSample`s from `fovea.synth.captions` or a user folder with a captions CSV
(`path,caption`, several rows per image allowed). With both trunks locked (LiT, the default) the
trunk features of every image and every caption are computed once (`cache_features`) and training
moves only the projections and the temperature: a CPU run takes seconds to minutes. Each epoch
draws one of an image's captions at random. The loss is `ClipLoss` or `SigLipLoss` from
`fovea.nn.contrastive`, exact under the engine's DDP (`devices > 1`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fovea.engine.train import TrainConfig, fit
from fovea.errors import DataError
from fovea.io import read_image
from fovea.models.vl.two_tower import TwoTower, TwoTowerConfig, build_two_tower, save_two_tower
from fovea.nn.contrastive import ClipLoss, SigLipLoss

__all__ = ["CachedPairs", "ContrastiveTask", "ProjectionHeads", "ZeroShotProbe", "cache_features", "read_captions_csv", "train_two_tower"]


@dataclass
class CaptionedImage:
    """One image with its captions (any number >= 1)."""

    image: np.ndarray
    captions: list[str]


def read_captions_csv(path: str | Path) -> list[CaptionedImage]:
    """CSV `path,caption` (header optional; paths relative to the CSV's folder); rows of one image merge.

    A missing or unreadable image, or an empty caption, is a DataError naming the row and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"captions CSV {path} does not exist. Fix: pass a CSV with rows `image_path,caption`.")
    by_image: dict[Path, list[str]] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or row[0].startswith("#") or (i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "caption"]):
                continue
            if len(row) < 2 or not row[1].strip():
                raise DataError(f"{path} line {i + 1}: expected `path,caption` with a non-empty caption, got {row}.")
            img = Path(row[0].strip())
            img = img if img.is_absolute() else path.parent / img
            if not img.is_file():
                raise DataError(f"{path} line {i + 1}: image {img} does not exist. Fix: paths are relative to the "
                                "CSV's folder; remove the row or add the image.")
            by_image.setdefault(img, []).append(row[1].strip())
    if not by_image:
        raise DataError(f"{path} has no `path,caption` rows.")
    return [CaptionedImage(read_image(p), caps) for p, caps in by_image.items()]


class CachedPairs(Dataset):
    """Trunk features of images (N, F) and of all captions (M, W), caption ranges per image.

    Item: {"image_feat": (F,), "text_feat": (W,)} with one of the image's captions drawn from torch's
    global RNG (seeded by the engine).
    """

    def __init__(self, image_feats: torch.Tensor, text_feats: torch.Tensor, caption_ranges: Sequence[tuple[int, int]]):
        self.image_feats, self.text_feats = image_feats, text_feats
        self.ranges = list(caption_ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> dict:
        a, b = self.ranges[i]
        j = a + int(torch.randint(0, b - a, ()))
        return {"image_feat": self.image_feats[i], "text_feat": self.text_feats[j]}


@torch.no_grad()
def cache_features(model: TwoTower, samples: Sequence, batch_size: int = 64) -> CachedPairs:
    """Run the (locked) trunks once over `samples` (objects with .image (H, W, 3) uint8 and .captions)."""
    if not samples:
        raise DataError("no image-caption pairs to train on.")
    model.eval()
    feats = []
    for i in range(0, len(samples), batch_size):
        chunk = [s.image for s in samples[i:i + batch_size]]
        same = len({im.shape for im in chunk}) == 1
        groups = [np.stack(chunk)] if same else [im[None] for im in chunk]
        feats += [model.image_trunk_features(torch.from_numpy(np.ascontiguousarray(g))) for g in groups]
    captions, ranges = [], []
    for s in samples:
        ranges.append((len(captions), len(captions) + len(s.captions)))
        captions += list(s.captions)
    unique = sorted(set(captions))
    index = {c: k for k, c in enumerate(unique)}
    text = torch.cat([model.text_trunk_features(unique[i:i + 256]) for i in range(0, len(unique), 256)])
    return CachedPairs(torch.cat(feats), text[[index[c] for c in captions]], ranges)


class ProjectionHeads(nn.Module):
    """The trainable part of a locked two-tower model, sharing its parameters: image projection, text
    projection, temperature. `fit` trains and checkpoints this small module instead of the towers."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.image_head = model.visual.head
        self.text_projection = model.text_projection
        self.logit = model.logit

    def project(self, image_feat: torch.Tensor, text_feat: torch.Tensor):
        """(B, F), (B, W) trunk features -> unit (B, D), (B, D)."""
        return (F.normalize(self.image_head(image_feat), dim=-1),
                F.normalize(text_feat @ self.text_projection, dim=-1))


class ContrastiveTask:
    """TaskSpec for `fit`: contrastive loss between projected cached trunk features."""

    name = "vl"

    def __init__(self, model: TwoTower, loss: str = "clip", probe: ZeroShotProbe | None = None):
        self.model = ProjectionHeads(model)
        self.loss = SigLipLoss() if loss == "siglip" else ClipLoss(local_loss=True, gather_with_grad=True)
        self.probe = probe

    def _loss(self, heads: ProjectionHeads, batch: dict) -> torch.Tensor:
        img, txt = heads.project(batch["image_feat"], batch["text_feat"])
        return self.loss(img, txt, heads.logit(), heads.logit.bias)

    def training_loss(self, model, batch) -> torch.Tensor:
        return self._loss(model, batch)

    def validation_metrics(self, model, loader) -> dict[str, float]:
        with torch.no_grad():
            losses = [float(self._loss(model, b)) for b in loader]
            out = {"val_loss": float(np.mean(losses))}
            if self.probe is not None:
                out["val_acc"] = self.probe.accuracy(model)
        return out


@dataclass
class ZeroShotProbe:
    """Zero-shot accuracy on validation images during training: text trunk features of every
    template x class prompt (C * T, W), cached image trunk features (N, F) and true classes (N,).

    With a locked text tower the prompt features never change, so each check costs two matmuls.
    A contrastive validation loss is a poor guide here (many captions repeat across images)."""

    prompt_feats: torch.Tensor
    n_classes: int
    image_feats: torch.Tensor
    labels: np.ndarray

    @classmethod
    @torch.no_grad()
    def build(cls, model: TwoTower, class_prompts: Sequence[str], image_feats: torch.Tensor, labels,
              templates: Sequence[str] | None = None) -> "ZeroShotProbe":
        from fovea.vl.zeroshot import INSPECTION_TEMPLATES

        templates = templates or INSPECTION_TEMPLATES
        prompts = [t.format(c) for c in class_prompts for t in templates]
        return cls(model.text_trunk_features(prompts), len(class_prompts), image_feats, np.asarray(labels))

    def accuracy(self, heads: ProjectionHeads) -> float:
        img, txt = heads.project(self.image_feats, self.prompt_feats)
        mean = txt.reshape(self.n_classes, -1, txt.shape[-1]).mean(1)
        pred = (img @ F.normalize(mean, dim=-1).T).argmax(1).numpy()
        return float((pred == self.labels).mean())


def train_two_tower(train_samples: Sequence, out_dir: str | Path, *, val_samples: Sequence | None = None,
                    config: TwoTowerConfig | None = None, train: TrainConfig | None = None,
                    model: TwoTower | None = None, probe_classes: Sequence[str] | None = None,
                    probe_labels: Sequence[int] | None = None) -> tuple[TwoTower, dict]:
    """Train projections (+ temperature) of a two-tower model on image-caption samples; save to out_dir.

    With `probe_classes` (class descriptions) and `probe_labels` (true class of every validation
    sample) the best epoch is the one with the highest zero-shot validation accuracy (val_acc), else
    the lowest validation loss. Returns (model, summary) with timings, history and the best metric.
    """
    t0 = time.perf_counter()
    config = config or TwoTowerConfig()
    model = model or build_two_tower(config)
    if not (model.config.lock_image and model.config.lock_text):
        raise DataError("train_two_tower trains locked towers on cached features. Fix: lock_image=lock_text=True "
                        "(unlocked trunks need an image-level data loader, not written yet).")
    # samples, or CachedPairs already computed with this model's trunks (benchmarks reuse them)
    train_ds = train_samples if isinstance(train_samples, CachedPairs) else cache_features(model, train_samples)
    val_ds = val_samples if isinstance(val_samples, CachedPairs) or not val_samples else \
        cache_features(model, val_samples)
    t_cache = time.perf_counter() - t0
    train = replace(train or TrainConfig(lr=3e-3, batch_size=128, max_epochs=60, weight_decay=0.0,
                                          schedule="cosine"), out_dir=str(out_dir))
    probe = None
    if val_ds is not None and probe_classes is not None:
        probe = ZeroShotProbe.build(model, probe_classes, val_ds.image_feats, probe_labels)
    if val_ds is not None and train.monitor is None:
        train = replace(train, monitor="val_acc", mode="max") if probe else replace(train, monitor="val_loss", mode="min")
    task = ContrastiveTask(model, model.config.loss, probe)
    result = fit(task, train_ds, val_ds, train)
    out = save_two_tower(model, out_dir, {"n_train": len(train_ds), "best_metric": result.best_metric,
                                          "monitor": train.monitor})
    summary = {"cache_s": t_cache, "fit_s": result.timings_s["fit"], "best_metric": result.best_metric,
               "monitor": train.monitor, "best_epoch": result.best_epoch,
               "n_train": len(train_ds), "out_dir": str(out), "logit_scale": float(model.logit().detach()),
               "history": result.history}
    return model.eval(), summary
