"""Training throughput of `fovea.engine.train.fit`: fp32 vs bf16 and 1 vs 2 processes, in one run.

Workload A (model-bound): EfficientNet-Lite0 (random init) on random 3x64x64 images, global batch
32, AdamW. Samples/s = samples per epoch / median epoch wall time over the epochs after the first
(warm-up), measured inside the training processes. Baseline: fp32, 1 process, 1 thread; also 1
process using all cores as threads, and 2 DDP processes of 1 thread each.
bf16 runs only where the CPU has native bf16 (avx512_bf16 / amx_bf16); otherwise the table says so.

Workload B (overhead-bound): a 2-layer MLP, batch 8: optimizer steps/s through `fit` vs a plain
torch loop doing the same steps (ratio = Lightning wrapper overhead).

    .venv/bin/python benchmarks/train.py            # 128 samples/epoch, 3 epochs -> docs/benchmarks/train.md
    .venv/bin/python benchmarks/train.py --quick    # 64 samples/epoch, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from _doc import Run, add_doc_args, table
from torch.utils.data import DataLoader, TensorDataset

from fovea.engine.train import TrainConfig, cpu_supports_bf16, fit


class EpochTimer(Callback):
    """Rank 0 writes per-epoch wall times to `path` (DDP work happens in child processes)."""

    def __init__(self, path: Path):
        self.path = path
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self.t0)
        if trainer.global_rank == 0:
            self.path.write_text(json.dumps({"times": self.times, "threads": torch.get_num_threads()}))


class ImageTask:
    def __init__(self, model):
        self.model = model

    def training_loss(self, model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    def validation_metrics(self, model, loader):
        return {}


def image_run(out: Path, data, precision: str, devices: int, threads: int, args) -> dict:
    import timm

    torch.set_num_threads(threads)  # DDP children get cpu_count // devices threads from Lightning
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=10)
    timer_file = out / f"timer_{precision}_{devices}_{threads}.json"
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, batch_size=32, max_epochs=args.epochs, precision=precision,
                      devices=devices, out_dir=str(out / f"{precision}_{devices}_{threads}"))
    t0 = time.perf_counter()
    fit(ImageTask(model), data, None, cfg, callbacks=[EpochTimer(timer_file)])
    total = time.perf_counter() - t0
    rec = json.loads(timer_file.read_text())
    epoch_s = statistics.median(rec["times"][1:] or rec["times"])
    return {"precision": precision, "devices": devices, "threads_per_process": rec["threads"],
            "samples_per_s": len(data) / epoch_s, "epoch_s": epoch_s, "total_s": total}


def overhead(args) -> dict:
    torch.manual_seed(0)
    n, bs = 512, 8
    x, y = torch.randn(n, 32), torch.randint(0, 4, (n,))
    data = TensorDataset(x, y)

    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))

    # plain loop
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(data, batch_size=bs, shuffle=True)
    plain = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        timer = Path(tmp) / "t.json"
        cfg = TrainConfig(optimizer="sgd", lr=0.01, batch_size=bs, max_epochs=args.epochs, out_dir=tmp)
        fit(ImageTask(mlp()), data, None, cfg, callbacks=[EpochTimer(timer)])
        wrapped = json.loads(timer.read_text())["times"]
    steps = n // bs
    p, w = statistics.median(plain[1:]), statistics.median(wrapped[1:])
    return {"plain_steps_per_s": steps / p, "fit_steps_per_s": steps / w, "overhead_ms_per_step": (w - p) / steps * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="training images per epoch")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    add_doc_args(ap, "train", "64 samples per epoch, 2 epochs")
    args = ap.parse_args()
    run = Run(args, full_command=".venv/bin/python benchmarks/train.py")
    if args.quick:
        args.n, args.epochs = 64, 2
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(args.n, 3, args.size, args.size, generator=g),
                         torch.randint(0, 10, (args.n,), generator=g))
    bf16 = cpu_supports_bf16()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cores = os.cpu_count() or 1
        configs = [("32", 1, 1), ("32", 1, cores), ("32", 2, 1)]
        configs += [("bf16", 1, 1), ("bf16", 2, 1)] if bf16 else []
        for precision, devices, threads in configs:
            rows.append(image_run(Path(tmp), data, precision, devices, threads, args))
            print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(1)
    ov = overhead(args)
    print(json.dumps(ov), flush=True)
    base = rows[0]["samples_per_s"]
    cells = [[("fp32" if r["precision"] == "32" else r["precision"]), r["devices"] if r["devices"] == 1 else
              f"{r['devices']} (DDP)", r["threads_per_process"], f"{r['samples_per_s']:.1f}",
              f"{r['samples_per_s'] / base:.2f}"] for r in rows]
    if not bf16:
        cells.append(["bf16", "-", "-", "not run: this CPU lacks avx512_bf16/amx_bf16 (fit raises HardwareError)", "-"])
    epochs = "epoch 2" if args.epochs == 2 else f"epochs 2..{args.epochs}"
    body = [
        f"Workload A: EfficientNet-Lite0 (random init), {args.size}x{args.size} random images, global batch 32, "
        f"{args.n} samples/epoch, {args.epochs} epochs; samples/s from the median epoch time of {epochs}, "
        f"measured inside the training processes. Torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}.", "",
        *table(["precision", "processes", "threads/process", "samples/s", "vs fp32, 1 process, 1 thread"], cells), "",
        f"Workload B (Lightning wrapper overhead; 2-layer MLP, batch 8, 1 thread): plain torch loop "
        f"{ov['plain_steps_per_s']:.0f} steps/s, `fit` {ov['fit_steps_per_s']:.0f} steps/s, "
        f"+{ov['overhead_ms_per_step']:.2f} ms per step; against workload A's fp32 1-process step "
        f"({32 / base * 1e3:.0f} ms per batch of 32) that is {ov['overhead_ms_per_step'] / (32 / base * 1e3) * 100:.1f} %.",
    ]
    run.write("Training engine throughput", body)


if __name__ == "__main__":
    main()
