"""`fit`: train a task's plain torch module with a thin Lightning wrapper.

The task gives a module and two functions (`TaskSpec`); the engine owns optimizer, batching,
lr schedule, clipping, precision, checkpoints, early stopping, resume, DDP and the curve PNG.

Batching: `batch_size` is the GLOBAL batch (summed over processes). 1 = stochastic gradient
descent, 0 or >= len(train) = full-batch gradient descent, between = mini-batch; the last
partial batch is kept (drop_last=False). Each epoch visits a permutation drawn from
(seed + epoch) (or the given sampler, drawn under that seed); with `devices=N` process r takes
positions r, r+N, ... of it, so global batch k is the same set of samples as in one process and
DDP's gradient average equals the one-process gradient whenever each global batch splits evenly.

Files in `out_dir`: best.safetensors (+ best.json), best.ckpt/last.ckpt (Lightning state, loaded
with `weights_only=True`), history.json, curves.png.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fovea.engine.curves import plot_history
from fovea.engine.progress import Progress
from fovea.engine.results import TrainResult
from fovea.engine.sampling import EpochSampler, batch_len, resolve_batch_size
from fovea.engine.schedules import SCHEDULES
from fovea.engine.train_config import TrainConfig
from fovea.errors import CheckpointError, ConfigError, DataError, HardwareError

__all__ = ["EpochSampler", "TaskSpec", "TrainConfig", "TrainResult", "batch_len", "cpu_supports_bf16", "fit",
           "load_weights", "resolve_batch_size", "resolve_start_method"]

OPTIMIZERS = ("sgd", "adamw")
START_METHODS = ("auto", "spawn", "fork")
_PRECISION = {"32": "32-true", "32-true": "32-true", "fp32": "32-true",
              "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed"}


class TaskSpec(Protocol):
    """What a task gives the engine: a plain torch module and two functions.

    An optional `name` attribute ("classify", "segment", ...) becomes `TrainResult.task`.
    """

    model: torch.nn.Module

    def training_loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...

    def validation_metrics(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]: ...


# ----------------------------------------------------------------------------------- hardware

def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (x86 avx512_bf16 / amx_bf16, Arm bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _check_precision(precision: str) -> str:
    if precision not in _PRECISION:
        raise ConfigError(f"precision {precision!r} is not supported. Fix: use '32' or 'bf16'.")
    lightning_precision = _PRECISION[precision]
    if lightning_precision == "bf16-mixed" and not cpu_supports_bf16():
        cap = torch.backends.cpu.get_cpu_capability()
        raise HardwareError(
            f"precision='bf16' needs a CPU with native bf16 (cpuinfo flag avx512_bf16 or amx_bf16); this "
            f"CPU has neither (torch CPU capability {cap}), so bf16 would be emulated and slower than fp32. "
            "Fix: train with precision='32', or run on a CPU with AVX512-BF16/AMX (Cooper Lake, Sapphire "
            "Rapids, Zen 4 or newer)."
        )
    return lightning_precision


# ----------------------------------------------------------------------------------- Lightning glue
# The LightningModule and callbacks live in fovea.engine._lightning (module level, so spawned DDP
# processes can unpickle them). `_lightning` imports only train_config/sampling, never this module;
# `fit` imports it lazily so `import fovea.engine.train` stays light (no Lightning import).

def resolve_start_method(method: str, payload: Any) -> str:
    """How DDP worker processes start. "auto" = "spawn" when the task and data pickle, else "fork".

    A forked child inherits the parent's OpenMP state: once the parent's main thread has run a
    parallel torch op (any training or inference before `fit`), a child that runs its own
    multi-threaded ops can hang, and autograd refuses to run in a child forked after autograd
    threads started (PyTorch wiki "Autograd and Fork"). Spawned children start clean but must
    unpickle the task, data and collate function (module-level classes, no lambdas).
    """
    if method in ("spawn", "fork"):
        return method
    import pickle

    try:
        pickle.dumps(payload)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means: cannot spawn
        warnings.warn(f"DDP starts its processes with fork because the task or data cannot be pickled for "
                      f"spawn ({type(exc).__name__}: {exc}). Forked children can hang if this process ran "
                      "multi-threaded torch ops before fit. Fix: define tasks, datasets and collate functions "
                      "at module level (no lambdas or local classes), or set ddp_start_method='fork' to "
                      "silence this.", RuntimeWarning, stacklevel=3)
        return "fork"
    return "spawn"


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning's banners and advice warnings for the duration of a run."""
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric",
                                              "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*Checkpoint directory.*exists and is not empty.*",
                        ".*is smaller than the logging interval.*", ".*sync_dist=True.*",
                        ".*`training_step` returned `None`.*", ".*torch.cuda.amp.*", ".*PossibleUserWarning.*",
                        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


def _validate(config: TrainConfig, train_data) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {config.optimizer!r} is unknown. Fix: use one of {OPTIMIZERS}.")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"schedule {config.schedule!r} is unknown. Fix: use one of {SCHEDULES}.")
    if config.nesterov and (config.optimizer != "sgd" or config.momentum <= 0):
        raise ConfigError("nesterov=True needs optimizer='sgd' with momentum > 0. Fix: set momentum, e.g. 0.9.")
    if config.mode not in ("max", "min"):
        raise ConfigError(f"mode={config.mode!r}. Fix: 'max' (accuracy-like) or 'min' (loss-like).")
    if config.early_stopping_patience is not None and not config.monitor:
        raise ConfigError("early_stopping_patience needs monitor (e.g. 'val_loss'). Fix: set monitor.")
    if config.ddp_start_method not in START_METHODS:
        raise ConfigError(f"ddp_start_method={config.ddp_start_method!r}. Fix: one of {START_METHODS}.")
    if config.max_epochs < 1 or config.lr <= 0 or config.devices < 1:
        raise ConfigError(f"need max_epochs >= 1, lr > 0, devices >= 1; got {config.max_epochs}, {config.lr}, "
                          f"{config.devices}.")
    if config.grad_clip is not None and config.grad_clip <= 0:
        raise ConfigError(f"grad_clip={config.grad_clip} must be > 0 (or None for no clipping).")
    if len(train_data) == 0:
        raise DataError("the training set is empty. Fix: point the task at a folder with images.")


def fit(task: TaskSpec, train_data: Dataset, val_data: Dataset | None, config: TrainConfig,
        collate_fn: Callable | None = None, sampler: Sampler | None = None, *,
        callbacks: Sequence[Any] = (), progress: Progress | None = None) -> TrainResult:
    """Train `task.model` on `train_data`; returns the checkpoints, best metric and per-epoch history.

    After fit, `task.model` holds the best weights when `config.monitor` is set, else the last.
    `callbacks` are extra Lightning callbacks (e.g. to inspect every step); `progress(stage, done,
    total)` is called after every optimizer step ("batches" of the epoch) and epoch ("epochs").
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from fovea.engine._lightning import CpuTimeLimit, ProgressCallback, TaskModule

    _validate(config, train_data)
    precision = _check_precision(config.precision)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.resume_from is not None and not Path(config.resume_from).is_file():
        raise CheckpointError(f"resume_from={config.resume_from!r} does not exist. Fix: pass the last.ckpt "
                              "written by an earlier run (in its out_dir).")

    n = len(sampler) if sampler is not None else len(train_data)
    global_batch = resolve_batch_size(config.batch_size, n)
    if config.devices > 1 and global_batch != n and global_batch % config.devices:
        raise ConfigError(
            f"batch_size={global_batch} is the global batch and must split evenly over devices={config.devices}. "
            f"Fix: use a multiple of {config.devices} (e.g. {global_batch - global_batch % config.devices or config.devices}).")
    per_rank = math.ceil(n / config.devices)
    steps_per_epoch = math.ceil(per_rank / math.ceil(global_batch / config.devices))

    L.seed_everything(config.seed, workers=True, verbose=False)
    module = TaskModule(task, config, train_data, val_data, collate_fn, sampler, global_batch, steps_per_epoch)
    cbs: list[Any] = []
    if config.monitor:
        cbs.append(ModelCheckpoint(dirpath=out, filename="best", monitor=config.monitor, mode=config.mode,
                                   save_top_k=1, save_last=True, enable_version_counter=False,
                                   auto_insert_metric_name=False, save_on_train_epoch_end=True))
        if config.early_stopping_patience is not None:
            cbs.append(EarlyStopping(monitor=config.monitor, mode=config.mode,
                                     patience=config.early_stopping_patience, check_on_train_epoch_end=True))
    else:
        cbs.append(ModelCheckpoint(dirpath=out, filename="last", monitor=None, save_top_k=0, save_last=True,
                                   enable_version_counter=False, save_on_train_epoch_end=True))
    if config.max_cpu_time_s:
        cbs.append(CpuTimeLimit(config.max_cpu_time_s))
    if config.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar())
    if progress is not None:
        cbs.append(ProgressCallback(progress, config.max_epochs))
    cbs.extend(callbacks)

    strategy: Any = "auto"
    if config.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        method = resolve_start_method(config.ddp_start_method, module)
        strategy = DDPStrategy(start_method=method, process_group_backend="gloo")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    with _quiet_lightning():
        trainer = L.Trainer(accelerator="cpu", devices=config.devices, strategy=strategy, precision=precision,
                            max_epochs=config.max_epochs,
                            max_time={"seconds": config.max_time_s} if config.max_time_s else None,
                            gradient_clip_val=config.grad_clip,
                            gradient_clip_algorithm="norm", callbacks=cbs, logger=False,
                            enable_progress_bar=config.progress, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=out,
                            use_distributed_sampler=False, log_every_n_steps=max(steps_per_epoch, 1))
        try:
            trainer.fit(module, ckpt_path=config.resume_from, weights_only=True)
        except Exception as exc:  # a checkpoint that is not plain data, or not ours
            if config.resume_from is not None and "weights_only" in str(exc):
                raise CheckpointError(f"cannot resume from {config.resume_from}: {exc}. Fix: resume only "
                                      "from a last.ckpt written by fovea's engine.") from exc
            raise
    timings = {"fit": time.perf_counter() - t_wall, "fit_cpu": time.process_time() - t_cpu}
    return _collect(task, config, module, out, timings)


def _load_ckpt(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}. Fix: re-run training.") from exc


def _model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _collect(task, config: TrainConfig, module, out: Path, timings_s: dict[str, float]) -> TrainResult:
    """Turn the run's files into a TrainResult; put best (or last) weights into task.model."""
    from safetensors.torch import save_file

    last = out / "last.ckpt"
    history = module.history
    if config.devices > 1:  # the work happened in child processes: read what rank 0 wrote
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
        if last.is_file() and not config.monitor:
            task.model.load_state_dict(_model_state(_load_ckpt(last)))
    best_path = best_metric = best_epoch = None
    if config.monitor and (out / "best.ckpt").is_file():
        ckpt = _load_ckpt(out / "best.ckpt")
        state = _model_state(ckpt)
        task.model.load_state_dict(state)
        rows = ckpt.get("fovea", {}).get("history") or history
        best_row = rows[-1] if rows else {}
        best_epoch = int(best_row.get("epoch", ckpt.get("epoch", 0)))
        best_metric = float(best_row[config.monitor]) if config.monitor in best_row else None
        best_path = out / "best.safetensors"
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(best_path))
        meta = {"config": asdict(config), "epoch": best_epoch, "monitor": config.monitor,
                "value": best_metric, "metrics": best_row}
        (out / "best.json").write_text(json.dumps(meta, indent=1))
    curve = plot_history(history, out / "curves.png", monitor=config.monitor, best_epoch=best_epoch) \
        if history else None
    kept_row = next((r for r in history if r.get("epoch") == best_epoch), None) if best_epoch is not None \
        else (history[-1] if history else {})
    metrics = {k: v for k, v in (kept_row or {}).items() if k.startswith("val_")}
    return TrainResult(task=str(getattr(task, "name", type(task).__name__)),
                       checkpoint=best_path if best_path is not None else last, metrics=metrics,
                       history=history, curves_png=curve, timings_s=timings_s, best_epoch=best_epoch,
                       best_metric=best_metric, monitor=config.monitor, last_checkpoint=last, out_dir=out)


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load best.safetensors (or a last.ckpt) written by `fit` into `model`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist. Fix: pass the best.safetensors from fit's out_dir.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = _model_state(_load_ckpt(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {exc}. Fix: build the model with "
                              "the same architecture and number of classes as in training.") from exc
    return model
