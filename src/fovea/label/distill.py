"""Knowledge distillation: train a small student classifier on a teacher's soft labels.

loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, hard label), where
x_T = softmax(logits / T) (Hinton et al. 2015; the T^2 keeps the soft term's gradient scale
independent of T) and the teacher's logits are log(p_teacher). Hard labels are the CSV's label
column (after human review they may differ from the teacher's argmax); alpha = 0 trains on them
alone. With `consistency` > 0 every image is seen in two random augmentations per step: the
distillation loss on both, plus consistency * the symmetric KL between the student's two answers
(each side against the other held fixed), so the student answers alike for every crop / flip /
colour change of an image. The student is an ordinary fovea classifier (`ClassifierPipeline`),
trained by `fovea.engine.train.fit`, saved as a classify checkpoint: every classify command,
export and the line use it as is.
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

__all__ = ["DEFAULT_AUGMENT", "DEFAULT_CONSISTENCY", "DEFAULT_INPUT_SIZE", "DistillationTask", "TwoViewDataset",
           "consistency_loss", "default_train_config", "distill_student", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, hard: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """(B, C) student logits, (B, C) teacher probabilities, (B,) hard labels -> scalar loss."""
    t = float(temperature)
    teacher_t = torch.softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher_t, reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, hard)


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """(B, C) logits of two views of the same images -> (KL(p_a || p_b) + KL(p_b || p_a)) / 2, each KL with
    its target side detached (batch mean)."""
    la, lb = F.log_softmax(logits_a, dim=1), F.log_softmax(logits_b, dim=1)
    ab = F.kl_div(lb, la.detach(), reduction="batchmean", log_target=True)
    ba = F.kl_div(la, lb.detach(), reduction="batchmean", log_target=True)
    return 0.5 * (ab + ba)


class TwoViewDataset(ImageClassDataset):
    """ImageClassDataset whose training items also carry "image2": a second, independent augmentation."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if self.train:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            item["image2"] = self.augment(self.image(i), self.input_size, g)
        return item


class DistillationTask(ClassificationTask):
    """TaskSpec: distillation loss on batches of ImageClassDataset (their "index" finds the soft labels);
    validation as the classification task (accuracy against the CSV labels)."""

    name = "distill"

    def __init__(self, model, soft: np.ndarray, temperature: float = 4.0, alpha: float = 0.7,
                 consistency: float = 0.0):
        super().__init__(model)
        if not 0 <= alpha <= 1 or temperature <= 0 or consistency < 0:
            raise ConfigError(f"need 0 <= alpha <= 1, temperature > 0 and consistency >= 0, got alpha={alpha}, "
                              f"T={temperature}, consistency={consistency}.")
        self.soft = torch.as_tensor(soft, dtype=torch.float32)
        self.temperature, self.alpha, self.consistency = float(temperature), float(alpha), float(consistency)

    def training_loss(self, model, batch) -> torch.Tensor:
        soft, hard = self.soft[batch["index"]], batch["target"]
        if "image2" not in batch:
            return distillation_loss(model(batch["image"]).float(), soft, hard, self.temperature, self.alpha)
        n = len(hard)
        logits = model(torch.cat([batch["image"], batch["image2"]])).float()  # one pass over both views
        kd = distillation_loss(logits, soft.repeat(2, 1), hard.repeat(2), self.temperature, self.alpha)
        return kd + self.consistency * consistency_loss(logits[:n], logits[n:])


# the recipe benchmarks/label.py judges (its `kd_cons@48` student) and `fovea label distill` uses by default
DEFAULT_INPUT_SIZE = 48
DEFAULT_AUGMENT = Augment(scale=(0.7, 1.0), vflip=True)
DEFAULT_CONSISTENCY = 1.0


def default_train_config(epochs: int = 40, lr: float = 2e-3, seed: int = 0) -> TrainConfig:
    """AdamW, cosine schedule with 2 warm-up epochs, batch 32, weight decay 0.05."""
    return TrainConfig(lr=lr, batch_size=32, max_epochs=epochs, schedule="cosine", warmup_epochs=2,
                       weight_decay=0.05, seed=seed)


def distill_student(labels_csv: str | Path, out_dir: str | Path, *, student: str = "cloformer_xxs",
                    weights: str = "random", input_size: int = DEFAULT_INPUT_SIZE, temperature: float = 4.0,
                    alpha: float = 0.7, consistency: float = DEFAULT_CONSISTENCY, val_fraction: float = 0.15,
                    config: TrainConfig | None = None, augment: Augment | None = DEFAULT_AUGMENT) -> dict:
    """Train `student` on the labels CSV written by `fovea label run`; returns a summary dict.

    A stratified `val_fraction` of the labelled images (against the CSV labels) picks the best epoch.
    consistency > 0 needs `augment` (two augmented views per image and step). The defaults are the
    benchmarked recipe (docs/benchmarks/label.md).
    """
    if consistency > 0 and augment is None:
        raise ConfigError(f"consistency={consistency} compares two augmentations of each image. Fix: pass an "
                          "Augment or set consistency=0.")
    paths, soft, names, labels = read_soft_labels(labels_csv)
    index = {n: i for i, n in enumerate(names)}
    samples = [Sample(p, index[lab]) for p, lab in zip(paths, labels)]
    keep, val = stratified_split(samples, val_fraction, seed=(config.seed if config else 0))
    pos = {id(s): i for i, s in enumerate(samples)}
    size = (int(input_size), int(input_size))
    train_ds = (TwoViewDataset if consistency > 0 else ImageClassDataset)(keep, names, size,
                                                                         train=augment is not None, augment=augment)
    val_ds = ImageClassDataset(val, names, size, train=False)
    config = replace(config or default_train_config(), out_dir=str(out_dir))
    if config.monitor is None:
        config = replace(config, monitor="val_acc", mode="max")
    recipe = ClassifierRecipe(backbone=student, class_names=list(names), input_size=size, weights=str(weights))
    torch.manual_seed(config.seed)
    pipeline = build_classifier(recipe)
    task = DistillationTask(pipeline, soft[[pos[id(s)] for s in keep]], temperature, alpha, consistency)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(task, train_ds, val_ds, config)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    out = save_classifier(task.model, recipe, out_dir)
    summary = {"student": student, "input_size": list(size), "temperature": temperature, "alpha": alpha,
               "consistency": consistency,
               "n_train": len(keep), "n_val": len(val), "best_val_acc": result.best_metric,
               "best_epoch": result.best_epoch, "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
               "epochs_planned": config.max_epochs,
               "lr": config.lr, "batch_size": config.batch_size, "augment": None if augment is None else asdict(augment),
               "torch_threads": torch.get_num_threads()}
    (out / "distill.json").write_text(json.dumps(summary, indent=1))
    return summary
