"""`TrainConfig`: every setting of `fovea.engine.train.fit` besides the task and the data.

Its own module so the Lightning glue (`engine/_lightning.py`) and `engine/train.py` both import it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fovea.core import check_config_keys


@dataclass
class TrainConfig:
    """Everything `fit` needs besides the task and data. Loadable from YAML via `from_dict`."""

    optimizer: str = "adamw"          # "sgd" | "adamw"
    lr: float = 1e-3
    momentum: float = 0.9             # sgd only
    nesterov: bool = False            # sgd only
    weight_decay: float = 0.0
    batch_size: int = 32              # global; 1 = stochastic, 0 or >= len(train) = full batch, else mini-batch
    max_epochs: int = 10
    schedule: str = "none"            # "none" | "cosine" | "step" (evaluated per optimizer step)
    warmup_epochs: int = 0            # linear warm-up, per step, over this many epochs
    step_size: int = 10               # step schedule: decay every step_size epochs
    gamma: float = 0.1                # step schedule: decay factor
    grad_clip: float | None = None    # max global grad L2 norm
    monitor: str | None = None        # validation metric name, e.g. "val_acc", "val_loss"
    mode: str = "max"                 # "max" | "min" for monitor
    early_stopping_patience: int | None = None
    precision: str = "32"             # "32" | "bf16" (CPU autocast; HardwareError if unsupported)
    seed: int = 0
    devices: int = 1                  # > 1 = Lightning DDP on CPU (gloo)
    ddp_start_method: str = "auto"    # "auto" | "spawn" | "fork": how DDP processes start (see fit)
    num_workers: int = 0
    out_dir: str = "runs/train"
    resume_from: str | None = None
    # additions beyond the agreed API
    shuffle: bool = True              # False: epochs visit the data in index order
    val_batch_size: int | None = None  # None: max(batch_size, 64)
    progress: bool = False            # rich progress bar
    max_time_s: float | None = None   # wall-clock cap on training (Lightning max_time); best epoch so far is kept
    max_cpu_time_s: float | None = None  # cap on this process's CPU seconds (fair on a shared machine)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. parsed YAML); unknown keys are an error naming the valid ones."""
        check_config_keys(cls, d)
        return cls(**d)
