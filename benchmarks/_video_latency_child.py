"""Child process of benchmarks/video.py: params, MACs and per-clip CPU time of one library's
models. Runs in fovea's venv (--lib fovea) or in the PyTorchVideo venv (--lib ptv), which has no
fovea: it imports only torch and that library. Prints one JSON line per model."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

# benchmark name: (fovea builder, PyTorchVideo hub builder, frames, slow frames (SlowFast) or 0)
PAIRS = {"I3D-R50 8x8": ("i3d_r50_8x8", "i3d_r50", 8, 0),
         "R(2+1)D-R50 16x4": ("r2plus1d_r50", "r2plus1d_r50", 16, 0),
         "SlowFast-R50 8x8": ("slowfast_r50_8x8", "slowfast_r50", 32, 8)}


def build(lib: str, name: str) -> torch.nn.Module:
    fv, ptv, _, _ = PAIRS[name]
    if lib == "fovea":
        import fovea.models.video as V

        return V.create_model(fv)
    from pytorchvideo.models import hub

    return getattr(hub, ptv)(pretrained=False)


def inputs(lib: str, name: str, size: int):
    _, _, t, slow = PAIRS[name]
    clip = torch.randn(1, 3, t, size, size, generator=torch.Generator().manual_seed(0))
    if lib == "ptv" and slow:
        return lambda: [clip[:, :, :: t // slow].clone(), clip.clone()]   # SlowFast mutates its input list
    return lambda: clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=("fovea", "ptv"), required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torch.utils.flop_counter import FlopCounterMode

    for name in PAIRS:
        model = build(args.lib, name).eval()
        make = inputs(args.lib, name, args.size)
        params = sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(make())
        cpu, wall = [], []
        with torch.inference_mode():
            for _ in range(args.repeats):
                x = make()
                c0, w0 = time.process_time(), time.perf_counter()
                model(x)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
        print(json.dumps({"lib": args.lib, "model": name, "params": params, "gmacs": counter.get_total_flops() / 2e9,
                          "cpu_s": cpu, "wall_s": wall, "median_cpu_s": statistics.median(cpu)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
