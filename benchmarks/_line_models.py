"""Trained models drive the sorting line: classifier, anomaly model and segmenter on the synthetic
conveyor, each judged by the physical audit (`fovea.line.audit`), against the oracle test double.

`model_accuracy_table(quick)` returns the markdown section that `benchmarks/line.py --models`
writes into docs/benchmarks/line.md. The helpers (crop data from a conveyor, one trainer per
model kind, one simulated run) are shared with `tests/line/test_line_models.py`, which runs them
at a tiny size.

Training data: object crops of a conveyor with another seed than the run (held-out items), cut
like the runner cuts them (ground-truth box + `crop_pad_px`), with the per-pixel labels of
`Conveyor.render_with_labels` for the segmenter. Models:
- classifier: `fovea.classify.train_classifier` (good / damaged / box), lanes good -> 1, damaged -> 2;
- anomaly: `fovea.anomaly.workflow.fit_pipeline` (PaDiM) on good apples only, thresholds from
  held-out good and not-good crops; lane good -> 1, everything anomalous -> default route;
- segmenter: `fovea.segment.train_segmenter` on the crops' masks (background, apple skin, damage
  kinds, box); the class-area rule sends apples with >= 2 % damage pixels to lane 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fovea.io import write_image
from fovea.line.adapters import AdaptedPredictor, AnomalyLaneAdapter, ClassLaneAdapter, SegAreaAdapter, SegAreaRule
from fovea.line.localize import crop
from fovea.line.sim import line_config_for, simulate
from fovea.synth.conveyor import SEG_CLASS_NAMES, Conveyor, ConveyorConfig

TWO_LANES = {"good": 1, "damaged": 2}


@dataclass
class ModelSizes:
    """How big the data, models and runs are (tests use `TINY`, the benchmark `MODEST`)."""

    n_train_items: int = 120          # conveyor items rendered for training crops
    crops_per_item: int = 2           # frames per item (different sensor noise and sub-pixel place)
    n_run_items: int = 60             # items on the belt of the judged run
    classify_px: int = 48
    classify_backbone: str = "efficientnet_lite0"
    classify_epochs: int = 4
    anomaly_px: int = 64
    anomaly_model: str = "padim"
    segment_px: int = 64
    segment_epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 8
    train_seed: int = 11               # conveyor seed of the training crops
    run_seed: int = 5                  # conveyor seed of the judged run (held-out items)
    appearance: str = "realistic"
    width_px: int = 160                # camera: 160 x 96 px at 2.5 mm/px sees 400 x 240 mm of belt
    height_px: int = 96
    mm_per_px: float = 2.5

    def conveyor(self, n_objects: int, seed: int) -> ConveyorConfig:
        return ConveyorConfig(n_objects=n_objects, seed=seed, appearance=self.appearance, width_px=self.width_px,
                              height_px=self.height_px, mm_per_px=self.mm_per_px)


TINY = ModelSizes(n_train_items=60, crops_per_item=2, n_run_items=24, classify_px=64, classify_epochs=4,
                  anomaly_px=48, segment_px=48, segment_epochs=5, appearance="simple")
# realistic apples at 1.25 mm/px (apple crops ~55 px): a modest run that fits ~20 min on 2 busy cores
MODEST = ModelSizes(n_train_items=150, crops_per_item=2, n_run_items=200, classify_px=64, classify_epochs=5,
                    anomaly_px=64, segment_px=64, segment_epochs=8, appearance="realistic", width_px=320,
                    height_px=192, mm_per_px=1.25)


# ------------------------------------------------------------------------------------ data

def write_crop_data(out_dir: str | Path, sizes: ModelSizes) -> Path:
    """Render a training conveyor and write its item crops for all three model kinds.

    Layout: classify/<class>/*.png, normal/*.png (good apples), holdout/<class>/*.png (threshold
    fitting, items not in normal/), seg/images/*.png + seg/masks/*.png + seg/classes.json.
    Only items fully inside the image are cut (the runner gives edge-cut boxes no vote).
    """
    out = Path(out_dir)
    cfg = sizes.conveyor(sizes.n_train_items, sizes.train_seed)
    conv = Conveyor(cfg)
    pad = line_config_for(cfg).crop_pad_px
    W = cfg.width_px
    taken: dict[int, int] = {}
    k, t_end = 0, conv.duration_s()
    while k / cfg.fps <= t_end:
        img, labels, truths = conv.render_with_labels(k / cfg.fps)
        k += 1
        for tr in truths:
            x0, _, x1, _ = tr.xyxy
            if x0 <= 0 or x1 >= W or taken.get(tr.uid, 0) >= sizes.crops_per_item:
                continue
            n = taken[tr.uid] = taken.get(tr.uid, 0) + 1
            box = np.asarray(tr.xyxy, np.float32)
            rgb = crop(img, box, pad)
            lab = crop(labels[..., None].repeat(3, 2).astype(np.uint8), box, pad)[..., 0]
            name = f"{tr.uid:05d}_{n}.png"
            write_image(out / "classify" / tr.class_name / name, rgb)
            holdout = tr.uid % 4 == 3                   # a quarter of the items fit thresholds only
            if tr.class_name == "good" and not holdout:
                write_image(out / "normal" / name, rgb)
            if holdout:
                write_image(out / "holdout" / tr.class_name / name, rgb)
            if not holdout:
                write_image(out / "seg" / "images" / name, rgb)
                write_image(out / "seg" / "masks" / name, np.repeat(lab[..., None], 3, 2))
    (out / "seg" / "classes.json").write_text(json.dumps({"classes": list(SEG_CLASS_NAMES)}))
    return out


# ------------------------------------------------------------------------------------ models

def train_classifier_model(data: Path, out_dir: Path, sizes: ModelSizes) -> Path:
    """Fine-tune an ImageNet EfficientNet-Lite0 on the crops (good / damaged / box); checkpoint folder."""
    from fovea.classify.train import train_classifier
    from fovea.engine.train_config import TrainConfig

    cfg = TrainConfig(lr=sizes.lr, batch_size=sizes.batch_size, max_epochs=sizes.classify_epochs, seed=0,
                      schedule="cosine", monitor="val_loss", mode="min")   # val_acc saturates in one epoch
    res = train_classifier(data / "classify", out_dir, backbone=sizes.classify_backbone, weights="default",
                           input_size=sizes.classify_px, config=cfg, val_fraction=0.2, topk=(1,))
    return Path(res.out_dir)


def fit_anomaly_model(data: Path, out_dir: Path, sizes: ModelSizes) -> Path:
    """PaDiM (ImageNet EfficientNet-Lite0 features) on good apple crops; thresholds on held-out crops."""
    from fovea.anomaly.workflow import FitOptions, fit_pipeline

    normal = sorted((data / "normal").glob("*.png"))
    val = [SimpleNamespace(path=p, label=int(p.parent.name != "good"), mask_path=None)
           for p in sorted((data / "holdout").glob("*/*.png"))]
    opts = FitOptions(model=sizes.anomaly_model, input_size=(sizes.anomaly_px, sizes.anomaly_px), batch_size=16,
                      blur_sigma=1.0)
    pipe, _ = fit_pipeline(normal, val, opts)
    pipe.save(out_dir)
    return Path(out_dir)


def train_segmenter_model(data: Path, out_dir: Path, sizes: ModelSizes) -> Path:
    """LR-ASPP on ImageNet EfficientNet-Lite0, trained on the crops' per-pixel labels; checkpoint folder."""
    import torch

    from fovea.engine.train_config import TrainConfig
    from fovea.segment.data import MaskFolderDataset, split_indices
    from fovea.segment.train import train_segmenter

    torch.manual_seed(0)
    size = (sizes.segment_px, sizes.segment_px)
    seg = data / "seg"
    n = len(list((seg / "images").glob("*.png")))
    tr, va = split_indices(n, 0.2, seed=0)
    train_ds = MaskFolderDataset(seg / "images", seg / "masks", size=size, augment=True, indices=tr)
    val_ds = MaskFolderDataset(seg / "images", seg / "masks", size=size, indices=va)
    cfg = TrainConfig(lr=sizes.lr, batch_size=sizes.batch_size, max_epochs=sizes.segment_epochs, seed=0, schedule="cosine",
                      out_dir=str(out_dir))
    train_segmenter(train_ds, val_ds, len(SEG_CLASS_NAMES), SEG_CLASS_NAMES, config=cfg, weights="default",
                    class_weights="auto")
    return Path(out_dir) / "model"


def defect_fraction(result, rule: SegAreaRule) -> float:
    """Share of a crop's object pixels that the segmenter labels as a defect class (0 if none)."""
    names = list(result.class_names)
    counts = np.bincount(result.class_map.ravel(), minlength=len(names))
    obj = sum(c for n, c in zip(names, counts) if n not in rule.background)
    bad = sum(c for n, c in zip(names, counts) if n in rule.defect_classes)
    return bad / obj if obj else 0.0


def fit_seg_rule(predictor, data: Path) -> SegAreaRule:
    """The area rule's reject_fraction that best separates held-out good from damaged crops.

    Candidates are midpoints between sorted defect fractions; the best accuracy wins, ties go to
    the middle of the best run (a threshold fitted like the anomaly model's, never on the run).
    """
    from fovea.io import read_image

    rule = SegAreaRule(reject_lane="damaged")
    fr, bad = [], []
    for cls in ("good", "damaged"):
        for p in sorted((data / "holdout" / cls).glob("*.png")):
            fr.append(defect_fraction(predictor.predict([read_image(p)])[0], rule))
            bad.append(cls == "damaged")
    fr, bad = np.asarray(fr), np.asarray(bad)
    v = np.unique(fr)
    cands = np.concatenate([[v[0] / 2 if v[0] > 0 else 1e-4], (v[:-1] + v[1:]) / 2, [min(v[-1] * 1.5, 1.0)]])
    cands = cands[cands > 0]
    acc = np.array([((fr >= c) == bad).mean() for c in cands])
    best = np.flatnonzero(acc == acc.max())
    return replace(rule, reject_fraction=float(cands[best[len(best) // 2]]))


# ------------------------------------------------------------------------------------ runs

def load_any(path: Path):
    """`fovea.load_predictor` once the task layer has it, else the task's own loader."""
    import fovea

    if hasattr(fovea, "load_predictor"):
        return fovea.load_predictor(path)
    from fovea.anomaly.pipeline import CONFIG_FILE as ANOMALY_CONFIG
    from fovea.classify.model import RECIPE_FILE

    if (path / RECIPE_FILE).is_file():
        from fovea.classify import load_predictor

        return load_predictor(path)
    cfg = json.loads((path / ANOMALY_CONFIG).read_text())
    if str(cfg.get("format", "")).startswith("fovea.segment"):
        from fovea.segment.predictor import SegmentationPredictor

        return SegmentationPredictor.load(path)
    from fovea.anomaly.predictor import AnomalyPredictor

    return AnomalyPredictor.load(path)


LANES = {"classifier": TWO_LANES, "anomaly": {"good": 1}, "segmenter": TWO_LANES, "oracle": TWO_LANES}
TRAIN = {"classifier": train_classifier_model, "anomaly": fit_anomaly_model, "segmenter": train_segmenter_model}


def build(kind: str, data: Path, out_dir: Path, sizes: ModelSizes):
    """Train/fit model `kind`, reload it from its checkpoint folder; returns (predictor, adapter, path)."""
    path = TRAIN[kind](data, out_dir, sizes)
    predictor = load_any(path)
    if kind == "classifier":
        adapter = ClassLaneAdapter()                       # good -> good, damaged -> damaged, box -> box
    elif kind == "anomaly":
        adapter = AnomalyLaneAdapter.calibrated(predictor, good_lane="good", reject_lane="reject")
    else:
        adapter = SegAreaAdapter(fit_seg_rule(predictor, data))
    return predictor, adapter, path


class TimedPredictor:
    """Wraps a predictor and sums the wall time of its `predict` calls (for ms per crop)."""

    def __init__(self, inner):
        self.inner, self.seconds, self.crops = inner, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, frames):
        t0 = time.perf_counter()
        out = self.inner.predict(frames)
        self.seconds += time.perf_counter() - t0
        self.crops += len(frames)
        return out


def run_line(kind: str, predictor, adapter, sizes: ModelSizes):
    """One simulated run of a held-out conveyor; returns (SimResult, timed predictor or None)."""
    conv = Conveyor(sizes.conveyor(sizes.n_run_items, sizes.run_seed))
    cfg = line_config_for(conv.config, lanes=LANES[kind])
    if kind == "oracle":
        return simulate(conv, cfg), None
    timed = TimedPredictor(AdaptedPredictor(predictor, adapter))
    timed.inner.check_lanes(cfg.lanes)
    return simulate(conv, cfg, predictor=timed), timed


def one_outcome_ok(res) -> bool:
    """Every physical item has exactly one record and every record exactly one outcome."""
    a = res.audit
    outcomes = [e for e in res.log.events if e["type"] == "outcome"]
    return (a.items_without_record == 0 and a.items_with_several_records == 0 and a.records_with_outcome == a.records
            and len(outcomes) == len({e["record"] for e in outcomes}) == a.records)


def row(kind: str, res, timed) -> dict:
    a = res.audit
    intended_default = sum(1 for it in res.source.conveyor.items if it.class_name not in LANES[kind])
    return {"model": kind, "items": a.n_items, "accuracy": a.accuracy, "wrong_lane": sum(a.wrong_in_lane.values()),
            "default_routed": a.bins.get("default", 0), "intended_default": intended_default,
            "one_outcome": one_outcome_ok(res),
            "ms_per_crop": 1e3 * timed.seconds / max(timed.crops, 1) if timed else float("nan")}


def model_accuracy_table(quick: bool) -> list[str]:
    """Train/fit the three model kinds, run the line with each, return a markdown section."""
    import tempfile

    import torch

    sizes = replace(TINY, n_run_items=60) if quick else MODEST
    torch.set_num_threads(1)              # one thread: no OpenMP spinning on a shared machine, same results
    t_all = time.perf_counter()
    rows, train_s = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_crop_data(tmp / "data", sizes)
        res, _ = run_line("oracle", None, None, sizes)
        rows.append(row("oracle", res, None))
        print(f"models: {rows[-1]}", file=sys.stderr, flush=True)
        for kind in TRAIN:
            t0 = time.perf_counter()
            predictor, adapter, _ = build(kind, data, tmp / kind, sizes)
            train_s[kind] = time.perf_counter() - t0
            res, timed = run_line(kind, predictor, adapter, sizes)
            rows.append(row(kind, res, timed))
            print(f"models: {rows[-1]}  ({train_s[kind]:.0f} s to train/fit)", file=sys.stderr, flush=True)
    lines = ["## Trained models on the line (issue 10 item 4)", "",
             f"`benchmarks/line.py --section models{' --quick' if quick else ''}`: {sizes.n_train_items} training items x "
             f"{sizes.crops_per_item} crops (conveyor seed {sizes.train_seed}), judged run: {sizes.n_run_items} "
             f"held-out items (seed {sizes.run_seed}), {sizes.appearance} appearance, camera {sizes.width_px}x"
             f"{sizes.height_px} px at {sizes.mm_per_px} mm/px. Models (ImageNet EfficientNet-Lite0 backbones, one "
             f"thread): classifier {sizes.classify_px} px, {sizes.classify_epochs} epochs; {sizes.anomaly_model} "
             f"{sizes.anomaly_px} px (votes calibrated from its thresholds); LR-ASPP segmenter {sizes.segment_px} px, "
             f"{sizes.segment_epochs} epochs, area rule's reject fraction fitted on held-out training crops. "
             "Every model is reloaded from its checkpoint folder. Accuracy = physical bin (audit) equals the "
             "intended bin; the anomaly line has one lane (good), so damaged apples and boxes are intended for "
             "the default route there. ms per crop = model + adapter, wall time inside the run. Baseline: the "
             "oracle test double (ground-truth labels) on the same conveyor.",
             f"Load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} CPUs; total "
             f"{time.perf_counter() - t_all:.0f} s.", "",
             "| model | items | sorting accuracy | wrong lane | default-routed (intended) | one outcome per object "
             "| ms per crop | train/fit s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['items']} | {r['accuracy']:.3f} | {r['wrong_lane']} | "
                     f"{r['default_routed']} ({r['intended_default']}) | {'yes' if r['one_outcome'] else 'NO'} | "
                     f"{r['ms_per_crop']:.1f} | {train_s.get(r['model'], float('nan')):.0f} |")
    return lines
