"""Learning-rate schedules evaluated per optimizer step: linear warm-up, then cosine or step decay.

The schedule is a pure function of the step index, so a resumed run (which restores the step
count) continues on exactly the same curve. Warm-up and cosine move every step; step decay
changes only at epoch boundaries (every `step_size` epochs), as users expect from "StepLR".
"""

from __future__ import annotations

import math

import torch

from fovea.errors import ConfigError

SCHEDULES = ("none", "cosine", "step")


def lr_factor(
    step: int,
    *,
    schedule: str,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_epochs: int = 0,
    step_size: int = 10,
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base lr for the update with 0-based index `step`.

    Warm-up: factor = (step + 1) / warmup_steps for the first warmup_steps = warmup_epochs *
    steps_per_epoch updates (never 0, so the first update moves the weights).
    cosine: 0.5 * (1 + cos(pi * t)), t = (step - warmup_steps) / (total_steps - warmup_steps),
    decaying to 0 at the end of training. step: gamma ** floor(epoch / step_size), where epoch =
    step // steps_per_epoch. none: 1.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {schedule!r}. Fix: use one of {', '.join(SCHEDULES)}.")
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        total = max_epochs * steps_per_epoch
        span = max(total - warmup_steps, 1)
        t = min((step - warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return gamma ** ((step // steps_per_epoch) // step_size)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, steps_per_epoch: int, max_epochs: int,
                    warmup_epochs: int = 0, step_size: int = 10, gamma: float = 0.1
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state is only the step count (resumable)."""
    if warmup_epochs < 0 or steps_per_epoch < 1 or max_epochs < 1 or step_size < 1:
        raise ConfigError(
            f"invalid schedule sizes: warmup_epochs={warmup_epochs}, steps_per_epoch={steps_per_epoch}, "
            f"max_epochs={max_epochs}, step_size={step_size}. Fix: use warmup_epochs >= 0 and positive sizes."
        )
    lr_factor(0, schedule=schedule, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs)  # validates name

    def factor(step: int) -> float:
        return lr_factor(step, schedule=schedule, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs,
                         warmup_epochs=warmup_epochs, step_size=step_size, gamma=gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
