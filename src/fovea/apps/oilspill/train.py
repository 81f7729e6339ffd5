"""Train the oil-film segmenter (water / sheen / rainbow / true colour) on synthetic sea surveys
with `fovea.segment.train_segmenter` (which runs `fovea.engine.train.fit`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fovea.errors import ConfigError
from fovea.synth.sea import CLASS_NAMES, DroneCamera, render_survey


def sea_arrays(n_surveys: int, seed: int, images_per_survey: int = 4, camera: DroneCamera | None = None):
    """Lists of (H, W, 3) uint8 images and (H, W) class masks from `n_surveys` random surveys,
    at random altitudes 80-160 m and spreads 0.8-1.6 (seeded)."""
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    for k in range(n_surveys):
        views = render_survey(images_per_survey, seed=int(rng.integers(1 << 30)), altitude_m=float(rng.uniform(80, 160)),
                              camera=camera, spread=float(rng.uniform(0.8, 1.6)))
        imgs += [v.image for v in views]
        masks += [v.mask.astype(np.int64) for v in views]
    return imgs, masks


def _dataset(images, masks, size, augment):
    from fovea.segment.data import SegmentationDataset

    class _SeaDataset(SegmentationDataset):
        num_classes = len(CLASS_NAMES)
        class_names = CLASS_NAMES

        def __len__(self):
            return len(images)

        def load(self, i):
            return images[i], masks[i]

        def name(self, i):
            return f"sea_{i:04d}"

    return _SeaDataset(size, augment)


def train_oilspill_segmenter(out_dir, n_train_surveys: int = 6, n_val_surveys: int = 2, epochs: int = 8,
                             seed: int = 0, size=(240, 320), weights: str = "default", batch_size: int = 8):
    """Render data, train with the engine, return (predictor, val dataset). Needs fovea.segment + engine."""
    try:
        from fovea.engine.train import TrainConfig
        from fovea.segment.train import train_segmenter
    except ImportError as exc:
        raise ConfigError(f"segmentation training is unavailable in this build ({exc}). Fix: install a fovea "
                          "with fovea.engine.train and fovea.segment.") from None
    tr = sea_arrays(n_train_surveys, seed)
    va = sea_arrays(n_val_surveys, seed + 1000)
    train_ds = _dataset(*tr, size, True)
    val_ds = _dataset(*va, size, False)
    cfg = TrainConfig(lr=2e-3, batch_size=batch_size, max_epochs=epochs, schedule="cosine", seed=seed,
                      out_dir=str(Path(out_dir)), monitor="val_miou", mode="max")
    pred = train_segmenter(train_ds, val_ds, len(CLASS_NAMES), CLASS_NAMES, config=cfg, weights=weights,
                           input_size=tuple(size), class_weights="auto")
    return pred, val_ds
