"""Anomalib side of `benchmarks/anomaly.py`: fit and predict one model on one prepared split.

Runs with the Anomalib venv's python (`benchmarks/.venv-anomalib`), never imports fovea, and
writes raw scores/maps (npz) and timings (JSON) for the parent to evaluate with fovea's metric
functions. Usage: `python _anomalib_child.py JOB.json` (the job file is written by the parent).

Protocol, per the parent's job: timm `efficientnet_lite0` built with `pre_trained=False`, then
the parent's converted ImageNet state dict loaded into the feature extractor (checked against
fovea's feature maps on one image); Folder data with the parent's train / val folders
(`val_split_mode="same_as_test"`, so Anomalib's thresholds come from exactly fovea's validation
images); `PostProcessor(enable_normalization=False)` so `engine.predict` returns raw, unclamped
scores and maps; one torch thread; per-image latency of `model(image)` (pre-processing, model,
post-processing: Anomalib's export path) after warm-up.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # k-center-greedy prints its own bar otherwise


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load_rgb(path: str):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _build_model(job: dict):
    from anomalib.models import Padim, Patchcore
    from anomalib.post_processing import PostProcessor

    common = dict(backbone=job["backbone"], layers=list(job["layers"]), pre_trained=False,
                  post_processor=PostProcessor(enable_normalization=False), visualizer=False)
    size = tuple(job["input_size"])
    if job["model"] == "patchcore":
        return Patchcore(coreset_sampling_ratio=job["coreset_ratio"], num_neighbors=job["num_neighbors"],
                         pre_processor=Patchcore.configure_pre_processor(image_size=size), **common)
    if job["model"] == "padim":
        return Padim(n_features=job["n_features"], pre_processor=Padim.configure_pre_processor(image_size=size),
                     **common)
    raise SystemExit(f"unknown model {job['model']!r}")


def _load_weights(model, job: dict) -> None:
    """Load the converted timm state dict (fovea's offline ImageNet weights) into the extractor."""
    from safetensors.torch import load_file

    model.model.feature_extractor.feature_extractor.load_state_dict(load_file(job["weights"]), strict=True)


def _check_weights(model, job: dict) -> dict:
    """Compare feature maps (and pre-processing) on fovea's reference image with fovea's."""
    import numpy as np
    import torch

    extractor = model.model.feature_extractor  # anomalib TimmFeatureExtractor
    ref = np.load(job["reference"])
    x = torch.from_numpy(ref["input"])  # fovea's normalised (1, 3, H, W)
    with torch.no_grad():
        feats = extractor(x)
        image = torch.from_numpy(ref["image"]).permute(2, 0, 1)[None].float() / 255.0
        pre = model.pre_processor(image)
    out = {"pre_processing_max_abs_diff": float((pre - x).abs().max())}
    for i, layer in enumerate(job["layers"]):
        f = feats[layer].numpy()
        r = ref[f"feat{i}"]
        out[f"feature_{layer}_max_abs_diff"] = float(np.abs(f - r).max()) if f.shape == r.shape else float("inf")
        out[f"feature_{layer}_scale"] = float(np.abs(r).max())
    return out


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    import numpy as np
    import torch
    from lightning.pytorch import seed_everything

    torch.set_num_threads(int(job["threads"]))
    from anomalib.data import Folder, PredictDataset
    from anomalib.engine import Engine

    rss_after_import = _rss_mb()
    seed_everything(int(job["seed"]), workers=True)
    t0, c0 = time.perf_counter(), time.process_time()
    model = _build_model(job)
    _load_weights(model, job)
    build_s = time.perf_counter() - t0
    c1 = time.process_time()
    check = _check_weights(model, job)
    check_cpu_s = time.process_time() - c1

    split = Path(job["split_dir"])
    datamodule = Folder(name=job["name"], root=split, normal_dir="train/good", abnormal_dir="val/bad",
                        normal_test_dir="val/good", mask_dir="val/masks", train_batch_size=job["batch_size"],
                        eval_batch_size=job["batch_size"], num_workers=0, test_split_mode="from_dir",
                        val_split_mode="same_as_test", seed=int(job["seed"]))
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    default_root_dir=job["work_dir"], enable_model_summary=False)
    t0 = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_s = build_s + time.perf_counter() - t0  # like fovea's fit_pipeline: build with weights + fit + val
    fit_cpu_s = time.process_time() - c0 - check_cpu_s  # the same span, CPU time of this process

    dataset = PredictDataset(split / "test", image_size=tuple(job["input_size"]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=job["batch_size"], collate_fn=dataset.collate_fn)
    t0 = time.perf_counter()
    batches = engine.predict(model=model, dataloaders=loader, return_predictions=True)
    predict_all_s = time.perf_counter() - t0
    by_path = {}
    for b in batches:
        maps = b.anomaly_map.reshape(len(b.image_path), *b.anomaly_map.shape[-2:])
        for p, s, m in zip(b.image_path, b.pred_score.reshape(-1), maps):
            by_path[os.path.realpath(p)] = (float(s), m.float().numpy())
    order = [os.path.realpath(p) for p in job["test_paths"]]
    missing = [p for p in order if p not in by_path]
    if missing:
        raise SystemExit(f"engine.predict returned no result for {len(missing)} test images, e.g. {missing[:3]}")
    scores = np.array([by_path[p][0] for p in order], np.float64)
    maps = np.stack([by_path[p][1] for p in order]).astype(np.float32)

    # single-image latency through Anomalib's inference path (pre-processor, model, post-processor)
    model.eval()
    images = [_load_rgb(p) for p in job["test_paths"]]
    lat, lat_cpu, forward_scores = [], [], []
    with torch.inference_mode():
        for img in images[: job["warmup"]]:
            model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0)
        for img in images:
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0)
            lat.append(time.perf_counter() - t0)
            lat_cpu.append(time.process_time() - c0)
            forward_scores.append(float(out.pred_score.reshape(-1)[0]))
    np.savez_compressed(job["out_npz"], scores=scores, maps=maps)
    result = {
        "side": "anomalib", "model": job["model"], "dataset": job["name"],
        "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "build_s": build_s, "predict_all_s": predict_all_s, "n_test": len(order),
        "latency_ms": [t * 1000 for t in lat], "latency_cpu_ms": [t * 1000 for t in lat_cpu],
        "forward_vs_predict_max_abs_diff": float(np.abs(np.array(forward_scores) - scores).max()),
        "memory_bank_rows": int(model.model.memory_bank.shape[0]) if job["model"] == "patchcore" else None,
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "weights_check": check, "threads": torch.get_num_threads(),
        "versions": {"anomalib": __import__("anomalib").__version__, "torch": torch.__version__,
                     "timm": __import__("timm").__version__},
    }
    Path(job["out_json"]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
