"""Knowledge distillation: train a small student classifier on a teacher's soft labels.

loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, hard label), where
x_T = softmax(logits / T) (Hinton et al. 2015; the T^2 keeps the soft term's gradient scale
independent of T) and the teacher's logits are log(p_teacher). Hard labels are the CSV's label
column (after human review they may differ from the teacher's argmax). The student is an ordinary
fovea classifier (`ClassifierPipeline`), trained by `fovea.engine.train.fit`, saved as a classify
checkpoint: every classify command, export and the line use it as is.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fovea.classify.data import Augment, ImageClassDataset, Sample, stratified_split
from fovea.classify.model import ClassifierRecipe, build_classifier, save_classifier
from fovea.classify.train import ClassificationTask
from fovea.engine.train import TrainConfig, fit
from fovea.errors import ConfigError
from fovea.label.autolabel import read_soft_labels

__all__ = ["DistillationTask", "distill_student", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, hard: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """(B, C) student logits, (B, C) teacher probabilities, (B,) hard labels -> scalar loss."""
    t = float(temperature)
    teacher_t = torch.softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher_t, reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, hard)


class DistillationTask(ClassificationTask):
    """TaskSpec: distillation loss on batches of ImageClassDataset (their "index" finds the soft labels);
    validation as the classification task (accuracy against the CSV labels)."""

    name = "distill"

    def __init__(self, model, soft: np.ndarray, temperature: float = 4.0, alpha: float = 0.7):
        super().__init__(model)
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ConfigError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, T={temperature}.")
        self.soft = torch.as_tensor(soft, dtype=torch.float32)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def training_loss(self, model, batch) -> torch.Tensor:
        logits = model(batch["image"]).float()
        return distillation_loss(logits, self.soft[batch["index"]], batch["target"], self.temperature, self.alpha)


def distill_student(labels_csv: str | Path, out_dir: str | Path, *, student: str = "cloformer_xxs",
                    weights: str = "random", input_size: int = 64, temperature: float = 4.0, alpha: float = 0.7,
                    val_fraction: float = 0.15, config: TrainConfig | None = None,
                    augment: Augment | None = Augment()) -> dict:
    """Train `student` on the labels CSV written by `fovea label run`; returns a summary dict.

    A stratified `val_fraction` of the labelled images (against the CSV labels) picks the best epoch.
    """
    paths, soft, names, labels = read_soft_labels(labels_csv)
    index = {n: i for i, n in enumerate(names)}
    samples = [Sample(p, index[lab]) for p, lab in zip(paths, labels)]
    keep, val = stratified_split(samples, val_fraction, seed=(config.seed if config else 0))
    pos = {id(s): i for i, s in enumerate(samples)}
    size = (int(input_size), int(input_size))
    train_ds = ImageClassDataset(keep, names, size, train=augment is not None, augment=augment)
    val_ds = ImageClassDataset(val, names, size, train=False)
    config = replace(config or TrainConfig(lr=2e-3, batch_size=32, max_epochs=30, schedule="cosine",
                                           warmup_epochs=1, weight_decay=0.05), out_dir=str(out_dir))
    if config.monitor is None:
        config = replace(config, monitor="val_acc", mode="max")
    recipe = ClassifierRecipe(backbone=student, class_names=list(names), input_size=size, weights=str(weights))
    torch.manual_seed(config.seed)
    pipeline = build_classifier(recipe)
    task = DistillationTask(pipeline, soft[[pos[id(s)] for s in keep]], temperature, alpha)
    t0 = time.perf_counter()
    result = fit(task, train_ds, val_ds, config)
    seconds = time.perf_counter() - t0
    out = save_classifier(task.model, recipe, out_dir)
    summary = {"student": student, "input_size": list(size), "temperature": temperature, "alpha": alpha,
               "n_train": len(keep), "n_val": len(val), "best_val_acc": result.best_metric,
               "best_epoch": result.best_epoch, "train_seconds": seconds, "epochs_planned": config.max_epochs,
               "lr": config.lr, "batch_size": config.batch_size, "augment": None if augment is None else asdict(augment),
               "torch_threads": torch.get_num_threads()}
    (out / "distill.json").write_text(json.dumps(summary, indent=1))
    return summary
