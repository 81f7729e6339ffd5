"""Task layer: ms per frame of every task through every runtime (in-process, TorchScript, ONNX), one
image per call vs batched `predict`, and how far each runtime's answer is from the in-process one.
Baseline: the in-process model called one image at a time (what the anomaly and segment predictors
did before the task layer), measured in the same run. Models: EfficientNet-Lite0 backbones with
random weights (timing and parity do not depend on training). Table: docs/benchmarks/task_layer.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/task_layer.py            # 8 frames of 480x640, 5 repeats
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/task_layer.py --quick    # 4 frames, 2 repeats
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _doc import Run, add_doc_args, median_wall_cpu, table


def build_pipelines(input_px: int) -> dict:
    """{task: pipeline} with EfficientNet-Lite0 backbones (random init); PatchCore fitted on 4 noise images,
    thresholds set inside their raw score and map ranges."""
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.anomaly.postprocess import Thresholds
    from fovea.classify.model import ClassifierRecipe, build_classifier
    from fovea.segment.model import SegmentationModel, SegmentationPipeline, SegModelConfig

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size = (input_px, input_px)
    anomaly = AnomalyPipeline(build_model("patchcore", weights="random"), size).eval()
    train = [rng.integers(0, 256, (input_px, input_px, 3), dtype=np.uint8) for _ in range(4)]
    anomaly.model.fit([torch.cat([anomaly.preprocess(torch.from_numpy(t)[None]) for t in train])])
    with torch.no_grad():  # thresholds inside the raw ranges, so normalised scores and maps are not clamped
        scores, maps = anomaly.raw(torch.from_numpy(np.stack(train)))
    s, m = scores.numpy(), maps.numpy()
    anomaly.set_thresholds(Thresholds(float(np.median(s)), float(np.median(m)), float(s.min() - np.ptp(s) - 1),
                                      float(s.max() + np.ptp(s) + 1), float(m.min() - np.ptp(m)),
                                      float(m.max() + np.ptp(m))))
    classify = build_classifier(ClassifierRecipe(class_names=["good", "scratch", "dent"], input_size=size,
                                                 weights="random")).eval()
    segment = SegmentationPipeline(SegmentationModel(SegModelConfig(num_classes=3, weights="random",
                                                                    input_size=size))).eval()
    return {"anomaly": anomaly, "classify": classify, "segment": segment}


def numbers(result) -> np.ndarray:
    """The result's numbers, flattened (probabilities, or score, raw score and map)."""
    if hasattr(result, "anomaly_map"):
        return np.concatenate([[result.score, result.raw_score], result.anomaly_map.ravel()])
    return np.asarray(result.probs).ravel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--input-px", type=int, default=224, help="model input size (square)")
    ap.add_argument("--repeats", type=int, default=5)
    add_doc_args(ap, "task_layer", "4 frames, 2 repeats")
    a = ap.parse_args()
    run = Run(a, full_command="OMP_NUM_THREADS=1 .venv/bin/python benchmarks/task_layer.py")
    n, repeats = (4, 2) if a.quick else (a.frames, a.repeats)

    import fovea
    from fovea.anomaly.predictor import AnomalyPredictor
    from fovea.classify.predictor import ClassifierPredictor
    from fovea.engine.export import export
    from fovea.segment.predictor import SegmentationPredictor

    predictor_cls = {"anomaly": AnomalyPredictor, "classify": ClassifierPredictor, "segment": SegmentationPredictor}

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (a.height, a.width, 3), dtype=np.uint8) for _ in range(n)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, pipe in build_pipelines(a.input_px).items():
            files = export(pipe, Path(tmp) / task)
            predictors = {"in-process": predictor_cls[task].from_pipeline(pipe),
                          "torchscript": fovea.load_predictor(files["torchscript"]),
                          "onnx": fovea.load_predictor(files["onnx"])}
            reference = [numbers(r) for r in predictors["in-process"].predict(frames)]
            timings = {}
            for name, p in predictors.items():
                p.predict(frames[:2])  # warm-up: frozen graphs, ONNX session allocations
                one = median_wall_cpu(lambda: [p.predict_one(f) for f in frames], repeats)
                batched = median_wall_cpu(lambda: p.predict(frames), repeats)
                diff = max(float(np.abs(numbers(r) - ref).max()) for r, ref in zip(p.predict(frames), reference))
                timings[name] = (one, batched, diff)
            base = timings["in-process"][0][0]
            for name, (one, batched, diff) in timings.items():
                rows.append([task, name, f"{one[0] / n * 1e3:.1f}", f"{batched[0] / n * 1e3:.1f}",
                             f"{base / one[0]:.2f}x", f"{base / batched[0]:.2f}x", f"{diff:.1e}"])
    body = [
        f"{n} random uint8 frames of {a.height}x{a.width}, models at {a.input_px} px (EfficientNet-Lite0, random "
        f"weights; PatchCore fitted on 4 noise images); median of {repeats} passes over the frames. Speed-up: "
        "baseline (in-process, one image per call) time / this row's time, same run. Max abs diff: largest "
        "difference of the row's numbers (probabilities; anomaly score, raw score and map) from the in-process "
        "answer.", "",
        *table(["task", "runtime", "ms/frame, one per call", "ms/frame, batched", "speed-up one per call",
                "speed-up batched", "max abs diff vs in-process"], rows),
    ]
    run.write("Task layer: runtimes and batching", body)


if __name__ == "__main__":
    main()
