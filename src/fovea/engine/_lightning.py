"""Lightning glue for `fovea.engine.train.fit`: the LightningModule that wraps a task, the
CPU-time callback and the progress callback.

Kept at module level (not built inside `fit`) so that DDP processes started with "spawn" can
unpickle them; imported lazily by `fovea.engine.train` so importing the engine stays light. It
imports the engine's config and sampling modules, never `fovea.engine.train` (no cycle).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from fovea.engine.progress import Progress
from fovea.engine.sampling import EpochSampler, batch_len
from fovea.engine.schedules import build_scheduler
from fovea.engine.train_config import TrainConfig
from fovea.errors import ConfigError


class CpuTimeLimit(Callback):
    """Stop after the batch at which this process has used `seconds` of CPU time since fit began."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = 0.0

    def on_train_start(self, trainer, pl_module):
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        used = torch.tensor(float(time.process_time() - self.start))
        if trainer.world_size > 1:  # every process must agree to stop
            used = trainer.strategy.reduce(used, reduce_op="max")
        if float(used) >= self.seconds:
            trainer.should_stop = True


class ProgressCallback(Callback):
    """Drive a `progress(stage, done, total)` callback: "batches" per step, "epochs" per epoch (rank 0).

    The callback (often a closure over a terminal bar) does not travel to spawned DDP processes:
    pickling drops it, so their training runs without progress instead of failing to start.
    """

    def __init__(self, progress: Progress | None, max_epochs: int):
        self.progress, self.max_epochs = progress, int(max_epochs)

    def __getstate__(self):
        return {**self.__dict__, "progress": None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.progress is not None and trainer.global_rank == 0:
            self.progress("batches", batch_idx + 1, int(trainer.num_training_batches))

    def on_train_epoch_end(self, trainer, pl_module):
        if self.progress is not None and trainer.global_rank == 0:
            self.progress("epochs", trainer.current_epoch + 1, self.max_epochs)


class TaskModule(L.LightningModule):
    """Training glue: the task's module is `self.model`; validation runs at train-epoch end."""

    def __init__(self, task, config: TrainConfig, train_data, val_data, collate_fn, sampler,
                 global_batch: int, steps_per_epoch: int):
        super().__init__()
        self.__dict__["_task"] = task  # not registered: the task may itself be a Module
        self.model = task.model
        self.cfg = config
        self._train_data, self._val_data = train_data, val_data
        self._collate, self._base_sampler = collate_fn, sampler
        self._global_batch, self._steps_per_epoch = global_batch, steps_per_epoch
        self.history: list[dict] = []
        self.__dict__["_acc"] = {"loss_sum": 0.0, "count": 0, "lr": float(config.lr)}
        self._val_loader = None

    # data
    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.global_rank
        n = len(self._train_data)
        order = EpochSampler(n, shuffle=self.cfg.shuffle, seed=self.cfg.seed, rank=rank, world=world,
                             base=self._base_sampler)
        return DataLoader(self._train_data, batch_size=math.ceil(self._global_batch / world), sampler=order,
                          drop_last=False, collate_fn=self._collate, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0)

    def _val(self):
        if self._val_data is None:
            return None
        if self._val_loader is None:
            bs = self.cfg.val_batch_size or max(self._global_batch, 64)
            self._val_loader = DataLoader(self._val_data, batch_size=min(bs, max(len(self._val_data), 1)),
                                          shuffle=False, collate_fn=self._collate,
                                          num_workers=self.cfg.num_workers)
        return self._val_loader

    # optimisation
    def configure_optimizers(self):
        c = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters (all requires_grad=False). "
                              "Fix: unfreeze at least the head before calling fit.")
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                  weight_decay=c.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.schedule == "none" and c.warmup_epochs == 0:
            return opt
        sched = build_scheduler(opt, schedule=c.schedule, steps_per_epoch=self._steps_per_epoch,
                                max_epochs=c.max_epochs, warmup_epochs=c.warmup_epochs,
                                step_size=c.step_size, gamma=c.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def training_step(self, batch, batch_idx):
        loss = self._task.training_loss(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ConfigError(f"training_loss must return a scalar tensor, got {type(loss).__name__} "
                              f"{getattr(loss, 'shape', '')}. Fix: reduce the loss with .mean().")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(
                f"training loss is {value} at epoch {self.current_epoch}, batch {batch_idx} "
                f"(lr {self._current_lr():.3g}). Fix: lower lr, set grad_clip, or check the data.")
        n = batch_len(batch) or 1
        acc = self.__dict__["_acc"]  # a plain dict: nn.Module.__setattr__ costs per step
        acc["lr"] = self._current_lr()  # the lr this batch's update uses (scheduler steps after it)
        acc["loss_sum"] += value * n
        acc["count"] += n
        return loss

    def _current_lr(self) -> float:
        opts = self.trainer.optimizers if self._trainer is not None else []
        return float(opts[0].param_groups[0]["lr"]) if opts else float(self.cfg.lr)

    # epoch end: train loss, validation, history
    def on_train_epoch_start(self):
        self.__dict__["_acc"].update(loss_sum=0.0, count=0)

    def on_train_epoch_end(self):
        acc = self.__dict__["_acc"]
        totals = torch.tensor([acc["loss_sum"], float(acc["count"])], dtype=torch.float64)
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        row: dict[str, Any] = {"epoch": int(self.current_epoch),
                               "train_loss": float(totals[0] / max(float(totals[1]), 1.0)),
                               "lr": acc["lr"]}
        loader = self._val()
        if loader is not None:
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                metrics = self._task.validation_metrics(self.model, loader)
            self.model.train(was_training)
            row.update({k: float(v) for k, v in metrics.items()})
        if self.cfg.monitor and self.cfg.monitor not in row:
            raise ConfigError(
                f"monitor={self.cfg.monitor!r} is not among the epoch metrics {sorted(row)}. Fix: "
                "monitor one of those (validation metrics need val_data).")
        self.history.append(row)
        for k, v in row.items():
            if k != "epoch":
                self.log(k, float(v), on_step=False, on_epoch=True, sync_dist=self.trainer.world_size > 1,
                         batch_size=1)
        if self.global_rank == 0:
            out = Path(self.cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.json").write_text(json.dumps(self.history, indent=1))

    # resumable extras (plain data + tensors only, so weights_only=True loading works)
    def on_save_checkpoint(self, checkpoint):
        np_state = np.random.get_state()
        checkpoint["fovea"] = {
            "history": self.history,
            "config": asdict(self.cfg),
            "rng_torch": torch.get_rng_state(),
            "rng_python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "rng_numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                          int(np_state[2]), int(np_state[3]), float(np_state[4])],
        }

    def on_load_checkpoint(self, checkpoint):
        extra = checkpoint.get("fovea")
        if not extra:
            return
        self.history = [dict(h) for h in extra["history"]]
        torch.set_rng_state(extra["rng_torch"])
        v, state, gauss = extra["rng_python"]
        random.setstate((v, tuple(state), gauss))
        name, keys, pos, has_gauss, cached = extra["rng_numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
