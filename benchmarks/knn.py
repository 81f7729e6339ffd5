"""PatchCore's nearest-neighbour scoring by memory-bank size: guarded exact index vs torch.cdist + topk.

Queries are the 1,024 patch features (152-d, offline ImageNet EfficientNet-Lite0 layers 2+3, 256 px)
of one generated bricks `one_up` test image; the bank is M patch features of other training images
of the same kind (an evenly strided subset of their patches; a coreset bank of that size would need
M / 102 training images at ratio 0.1). Per bank size, in the same process, one torch thread,
round-robin over repeats:

- `cdist + topk`: `torch.cdist(x, bank).topk(1, largest=False)` on the whole (1024, M) matrix
  (the naive baseline; Anomalib's PatchCore does the same with its own cdist-like expansion);
- `chunked min (old)`: fovea's previous unguarded expansion, 4,096 bank rows per block, values only;
- `BankIndex GEMM`: `BankIndex(method="gemm").min_distance` (cache tiles, exact with the float32 guard);
- `BankIndex`: the default (`method="auto"`): the rank-32 lower bound evaluated in registers by the C
  kernel, exact float64 distances where the bound can win, what `PatchCore.forward` runs now.

Every result is checked against float64 `torch.cdist` (nearest index equal on all rows); the table
gives the rows the GEMM guard re-searched, and the exact distances per query and deferred rows of
the default path.
Quick version: `--quick` (banks of 2,048 and 8,192 rows, 3 repeats; about a minute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402


def bricks_features(n_images: int, first_seed: int = 0) -> torch.Tensor:
    """(n_images * 1024, 152) PatchCore patch features of generated `one_up` bricks images, 256 px."""
    from fovea.anomaly.patchcore import PatchCore
    from fovea.synth.bricks import render_bricks_scene

    model = PatchCore()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    chunks = []
    with torch.no_grad():
        for i in range(first_seed, first_seed + n_images):
            img, _ = render_bricks_scene("one_up", None, rng=i, size=256)
            x = (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255 - mean) / std
            e = model.embed(x)
            chunks.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    return torch.cat(chunks).contiguous()


def main() -> None:
    from fovea.anomaly.knn import BankIndex
    from fovea.anomaly.patchcore import chunked_min_distance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--banks", default="2048,8192,20480,40960", help="memory-bank rows (comma separated)")
    ap.add_argument("--repeats", type=int, default=7)
    add_doc_args(ap, "knn", "banks of 2,048 and 8,192 rows, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.banks, args.repeats = "2048,8192", 3
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/knn.py")
    banks = [int(v) for v in args.banks.split(",")]
    x = bricks_features(1, first_seed=10_000)
    pool = bricks_features(max(1, -(-max(banks) // 1024)) * 2)  # twice the rows needed, strided below
    rows = []
    for m in banks:
        bank = pool[:: max(1, pool.shape[0] // m)][:m].contiguous()
        gemm = BankIndex(bank, method="gemm")
        index = BankIndex(bank)
        methods = {
            "cdist + topk": lambda: torch.cdist(x, bank).topk(1, dim=1, largest=False),
            "chunked min (old)": lambda: chunked_min_distance(x, bank, 4096),
            "BankIndex GEMM": lambda: gemm.min_distance(x),
            "BankIndex": lambda: index.min_distance(x),
        }
        times = {name: [] for name in methods}
        cpu = {name: [] for name in methods}
        for _ in range(args.repeats):  # round-robin, so load drift hits every method alike
            for name, fn in methods.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        ref = torch.cdist(x.double(), bank.double()).min(1)
        gemm.rechecked_rows = index.exact_evaluations = index.deferred_rows = 0
        dg, ig = gemm.search(x, 1)
        d, i = index.search(x, 1)
        same = bool(torch.equal(i[:, 0], ref.indices)) and bool(torch.equal(ig[:, 0], ref.indices))
        err = float((d[:, 0].double() - ref.values).abs().max())
        gerr = float((dg[:, 0].double() - ref.values).abs().max())
        old_err = float((chunked_min_distance(x, bank, 4096).double() - ref.values).abs().max())
        med = {name: 1000 * statistics.median(v) for name, v in times.items()}
        mc = {name: 1000 * statistics.median(v) for name, v in cpu.items()}
        rows.append([f"{m:,}", *(f"{med[k]:.1f} / {mc[k]:.1f}" for k in methods),
                     f"{mc['cdist + topk'] / mc['BankIndex']:.2f}x / {mc['BankIndex GEMM'] / mc['BankIndex']:.2f}x",
                     "yes" if same else "**NO**", f"{err:.1e} / {gerr:.1e} / {old_err:.1e}", gemm.rechecked_rows,
                     f"{index.exact_evaluations / x.shape[0]:.1f} / {index.deferred_rows}"])
        print(rows[-1], flush=True)
    body = table(["bank rows", "cdist + topk ms (wall / CPU)", "chunked min (old)", "BankIndex GEMM", "BankIndex (default)",
                  "default's speed-up (CPU) vs cdist / vs GEMM",
                  "nearest index = float64 (both BankIndex paths)",
                  "max abs distance error: default / GEMM / old", "GEMM rows re-searched",
                  "default: exact distances per query / deferred rows"], rows)
    body += ["", f"1,024 query patches (one 256 px image), 152-d features; medians of {args.repeats} round-robin "
             "repeats, one torch thread; CPU = process time, less sensitive than wall time to other jobs on the machine. "
             "Errors against float64 `torch.cdist`."]
    run.write("PatchCore nearest-neighbour scoring by bank size", body)


if __name__ == "__main__":
    main()
