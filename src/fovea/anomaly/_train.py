"""Training glue shared by the anomaly models that learn from normal images (reverse distillation, VAE,
VQ-VAE): read the loader into memory and run `fovea.engine.train.fit` on the model's own loss."""

from __future__ import annotations

import tempfile
from typing import Callable, Iterable

import torch
from torch import nn

from fovea.errors import DataError


class ImageSet(torch.utils.data.Dataset):
    """In-memory (N, 3, H, W) images as {"image": (3, H, W)} samples."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i]}


class _ReconTask:
    """Engine task around a model's loss function; no validation metric."""

    name = "anomaly"

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        self.model = model
        self.loss_fn = loss_fn

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return self.loss_fn(model, batch["image"])

    def validation_metrics(self, model, loader) -> dict[str, float]:
        return {}


def train_reconstruction(model: nn.Module, train_loader: Iterable, loss_fn, progress=None):
    """Read `train_loader` (dicts with "image" (B, 3, H, W) or such tensors) into memory and train
    `model` for `model.config.epochs` epochs with AdamW on `loss_fn(model, x)`; progress(done, total)
    after every epoch. Leaves the model in eval mode, its loss curve in `model.history`."""
    from fovea.engine.train import TrainConfig, fit

    images = [(b["image"] if isinstance(b, dict) else b).detach().float() for b in train_loader]
    if not images:
        raise DataError(f"{type(model).__name__} got no training images. Fix: give it normal images.")
    data = ImageSet(torch.cat(images))
    cfg = model.config
    epochs = None if progress is None else (
        lambda stage, done, total: progress(done, total) if stage == "epochs" else None)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(optimizer="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                         batch_size=min(cfg.batch_size, len(data)), max_epochs=cfg.epochs,
                         schedule=cfg.schedule, seed=cfg.seed, out_dir=cfg.out_dir or tmp)
        result = fit(_ReconTask(model, loss_fn), data, None, tc, progress=epochs)
    model.history = list(result.history)
    model.eval()
    return result
