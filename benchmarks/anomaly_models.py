"""Anomaly model families side by side: WinCLIP zero-shot, WinCLIP+ 1/4-shot, VAE, VQ-VAE, PatchCore and
Reverse Distillation on the bricks categories and the three textures, in one run.

Every model goes through the `AnomalyPipeline` the `fovea anomaly` workflow uses (resize to --size,
ImageNet normalisation, model, sigma-4 map smoothing). Data: `fovea.synth.bricks` (one_up .. four_up:
orientation defects) and `fovea.synth.textures` (brick, grass, gravel: scratches, stains, foreign
patches), MVTec layout, seed 0. Metrics on the test split with `fovea.engine.metrics`: image AUROC,
pixel AUROC, AUPRO (FPR <= 0.3) on raw scores / maps. Fit time: wall and process-CPU seconds of
`model.fit` on the preprocessed training images (WinCLIP: the prompt embeddings and the few-shot
memory; the tower itself is loaded before the clock). Predict latency: median wall ms of `pipe.raw`
for one uint8 image. PatchCore is the named baseline; the issue-16 targets are checked against it in the
same run. WinCLIP runs on fovea's two-tower model trained on generated captions
(`fovea.vl.pretrained.trained_two_tower`, or --tower FOLDER). Results accumulate in
--out/results.json; --resume reuses finished (data set, model) cells.

    .venv/bin/python benchmarks/anomaly_models.py --threads 1            # 7 data sets, 96 px, 20 epochs (~15 CPU-min)
    .venv/bin/python benchmarks/anomaly_models.py --threads 1 --quick    # one_up only, 5 epochs, 20 train images
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, load_average, table  # noqa: E402

from fovea.anomaly.models import build_model  # noqa: E402
from fovea.anomaly.pipeline import AnomalyPipeline  # noqa: E402
from fovea.engine.metrics import aupro, auroc, pixel_auroc  # noqa: E402
from fovea.io import read_image, read_mask  # noqa: E402

BRICKS = ("one_up", "two_up", "three_up", "four_up")
TEXTURES = ("brick", "grass", "gravel")
MODELS = ("winclip_0shot", "winclip_1shot", "winclip_4shot", "vae", "vqvae", "vqvae_pixels", "patchcore",
          "reverse_distillation")
# what the images show, in the words of the captions the two-tower model was trained on
OBJECT_NAMES = {**{c: "tray of bricks" for c in BRICKS}, "brick": "brick surface", "grass": "grass surface",
                "gravel": "gravel surface"}


def make_data(root: Path, name: str, args) -> Path:
    from fovea.synth.bricks import generate_bricks
    from fovea.synth.textures import generate_textures

    gen = generate_bricks if name in BRICKS else generate_textures
    return gen(root, name, n_train=args.n_train, n_test_good=args.n_test_good, n_test_bad=args.n_test_bad,
               size=args.size, seed=args.seed)


def split(root: Path):
    train = sorted((root / "train" / "good").glob("*.png"))
    test = [(p, 0, None) for p in sorted((root / "test" / "good").glob("*.png"))]
    for d in sorted(p.name for p in (root / "test").iterdir() if p.name != "good"):
        test += [(p, 1, root / "ground_truth" / d / f"{p.stem}_mask.png") for p in sorted((root / "test" / d).glob("*.png"))]
    return train, test


def model_options(model: str, data: str, args) -> tuple[str, dict]:
    common = {"seed": args.seed}
    if model.startswith("winclip"):
        k = int(model.split("_")[1][0])
        opts = {"k_shot": k, "object_name": OBJECT_NAMES[data]}
        return "winclip", {**common, **opts, **({"tower_path": args.tower} if args.tower else {})}
    if model == "vae":
        return model, {**common, "epochs": args.epochs, "width": args.width, "batch_size": 8}
    if model.startswith("vqvae"):  # vqvae: Lite0 feature target (default), vqvae_pixels: the image itself
        target = {"target": "pixels", "width": args.width} if model == "vqvae_pixels" else {"n_down": 1}
        return "vqvae", {**common, "epochs": args.epochs, "batch_size": 8, **target}
    if model == "reverse_distillation":
        return model, {**common, "epochs": args.epochs}
    return model, common


def _batches(pipe: AnomalyPipeline, paths: list[Path], batch_size: int = 8):
    for i in range(0, len(paths), batch_size):
        with torch.no_grad():
            yield torch.cat([pipe.preprocess(torch.from_numpy(read_image(p).copy())[None])
                             for p in paths[i:i + batch_size]])


def run_one(model: str, data: str, root: Path, args) -> dict:
    name, opts = model_options(model, data, args)
    load0 = load_average()
    train, test = split(root)
    torch.manual_seed(args.seed)
    net = build_model(name, **opts)  # backbones / towers are loaded before the clock
    pipe = AnomalyPipeline(net, (args.size, args.size), blur_sigma=4.0).eval()
    images = list(_batches(pipe, train))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    net.fit(images)
    fit_wall, fit_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    pipe.eval()
    scores, labels, maps, masks, lat = [], [], [], [], []
    for path, label, mask_path in test:
        img = torch.from_numpy(read_image(path).copy())[None]
        with torch.no_grad():
            t0 = time.perf_counter()
            s, m = pipe.raw(img)
            lat.append(time.perf_counter() - t0)
        scores.append(float(s[0]))
        labels.append(label)
        maps.append(m[0, 0].numpy())
        masks.append(read_mask(mask_path) > 0 if mask_path else np.zeros(maps[-1].shape, bool))
    maps_a, masks_a = np.stack(maps), np.stack(masks)
    out = {"model": model, "data": data, "image_auroc": auroc(np.asarray(scores), np.asarray(labels)),
           "pixel_auroc": pixel_auroc(maps_a, masks_a), "aupro": aupro(maps_a, masks_a),
           "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu, "latency_ms_p50": 1000 * statistics.median(lat[1:] or lat),
           "load_1min": [load0, load_average()]}
    hist = getattr(net, "history", None) or []
    if hist:
        out["loss_first_last"] = [hist[0].get("train_loss"), hist[-1].get("train_loss")]
        if "perplexity" in hist[-1]:
            out["perplexity_last"] = hist[-1]["perplexity"]
            out["codebook_usage_last"] = hist[-1]["codebook_usage"]
    return out


def save_results(path: Path, results: dict) -> dict:
    """Merge `results` into the JSON file under an exclusive lock (several processes may fill one --out,
    each with its own --datasets); returns the merged dict."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **results}
        path.write_text(json.dumps(merged, indent=1))
    return merged


def summary_lines(results: dict, datasets, models) -> list[str]:
    lines = []
    bricks = [d for d in datasets if d in BRICKS]

    def mean(model, key, ds):
        vals = [results[f"{d}/{model}"][key] for d in ds if f"{d}/{model}" in results]
        return (float(np.mean(vals)), len(vals)) if vals else (None, 0)

    pc, n_pc = mean("patchcore", "image_auroc", bricks)
    vq, n_vq = mean("vqvae", "image_auroc", bricks)
    if pc is not None and vq is not None:
        worst = max(results[f"{d}/patchcore"]["image_auroc"] - results[f"{d}/vqvae"]["image_auroc"]
                    for d in bricks if f"{d}/patchcore" in results and f"{d}/vqvae" in results)
        lines.append(f"- VQ-VAE within 0.05 of PatchCore's image AUROC on the bricks categories: mean {vq:.3f} vs "
                     f"{pc:.3f} over {min(n_pc, n_vq)} categories, largest per-category gap {worst:+.3f}: "
                     f"{'met' if worst <= 0.05 else 'NOT met'}.")
    if "one_up/winclip_0shot" in results:
        v = results["one_up/winclip_0shot"]["image_auroc"]
        lines.append(f"- WinCLIP zero-shot on bricks one_up, image AUROC >= 0.9: {v:.3f}: {'met' if v >= 0.9 else 'NOT met'}.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(BRICKS + TEXTURES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test-good", type=int, default=10)
    ap.add_argument("--n-test-bad", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=20, help="VAE, VQ-VAE and RD training epochs")
    ap.add_argument("--width", type=int, default=16, help="VAE / VQ-VAE base channels")
    ap.add_argument("--tower", default=None, help="two-tower checkpoint folder for WinCLIP (default: the cached "
                                                   "model trained on generated captions)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_anomaly_models")
    ap.add_argument("--resume", action="store_true", help="reuse finished cells of --out/results.json")
    ap.add_argument("--render", action="store_true", help="compute nothing: write the table of the cells "
                                                          "--out/results.json holds (for runs split over processes)")
    add_doc_args(ap, "anomaly_models", "bricks one_up only, 5 epochs, 20 train images")
    args = ap.parse_args()
    run_doc = Run(args, full_command=".venv/bin/python benchmarks/anomaly_models.py --threads 1 --models "
                                        + ",".join(m for m in MODELS if m != "vqvae_pixels"))
    if args.quick:
        args.datasets, args.epochs, args.n_train = "one_up", 5, 20
        args.out = str(Path(args.out) / "quick")
    torch.set_num_threads(args.threads)
    datasets, models = args.datasets.split(","), args.models.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if (args.resume or args.render) and res_path.is_file() else {}
    for data in [] if args.render else datasets:
        root = make_data(out / "data", data, args)
        for model in models:
            key = f"{data}/{model}"
            if key in results:
                continue
            print(f"{key} ...", flush=True)
            try:
                results[key] = run_one(model, data, root, args)
            except Exception as exc:  # one failing cell is reported in the table, the run goes on
                results[key] = {"model": model, "data": data, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(results[key]), flush=True)
            results = save_results(res_path, results)
    rows = []
    for data in datasets:
        for model in models:
            r = results.get(f"{data}/{model}")
            if r is None:
                continue
            if "error" in r:
                rows.append([data, model, "failed: " + r["error"].replace("|", "/"), "", "", "", ""])
                continue
            rows.append([data, model + (" (baseline)" if model == "patchcore" else ""), f"{r['image_auroc']:.3f}",
                         f"{r['pixel_auroc']:.3f}", f"{r['aupro']:.3f}",
                         f"{r['fit_wall_s']:.1f} / {r['fit_cpu_s']:.1f}", f"{r['latency_ms_p50']:.0f}"])
    body = [
        f"Data sets {', '.join(datasets)}: {args.size} px, {args.n_train} normal training images, "
        f"{args.n_test_good} good + {args.n_test_bad} anomalous test images each, seed {args.seed}. VAE / VQ-VAE: "
        f"{args.epochs} epochs, AdamW lr 2e-3, batch 8, EMA codebook of 64 codes (VAE: pixels, width {args.width}, "
        f"latent at 1/16; VQ-VAE: standardised Lite0 stage 2+3 features at 1/8, width 32, codes at 1/16; "
        f"vqvae_pixels: pixels, width {args.width}, codes at 1/8); RD: {args.epochs} epochs; PatchCore: defaults (Lite0 stages 2+3, coreset 10 %); "
        f"WinCLIP: fovea two-tower {'from ' + args.tower if args.tower else '(cached, trained on generated captions)'}, "
        "the paper's 7 x 21 + 4 x 21 prompt ensemble with the object names "
        f"{sorted(set(OBJECT_NAMES[d] for d in datasets))}, scales 2 and 3. {args.threads} torch thread(s).", "",
        *table(["data", "model", "image AUROC", "pixel AUROC", "AUPRO", "fit wall / CPU s", "latency p50 ms"], rows),
        "", "Targets (issue 16):", *summary_lines(results, datasets, models),
    ]
    if args.render:
        loads = [v for r in results.values() for v in r.get("load_1min", [])]
        body += ["", "Rendered from " + str(res_path) + " (`--render`): the load line above is the rendering's; "
                 + (f"while the cells were measured the 1-min load average was {min(loads):.1f}-{max(loads):.1f}."
                    if loads else "the cells' load was not recorded by the processes that measured them.")]
    run_doc.write("Anomaly model families", body)


if __name__ == "__main__":
    main()
