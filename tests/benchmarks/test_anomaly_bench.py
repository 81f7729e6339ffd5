"""Pure helpers of benchmarks/anomaly.py: the Anomalib folder layout of a split and the ratio summary."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "anomaly.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_anomaly", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _s(path, label, defect="good", mask=None):
    return SimpleNamespace(path=Path(path), label=label, defect_type=defect, mask_path=Path(mask) if mask else None)


def test_split_layout_keeps_every_file_once_and_pairs_masks(bench):
    splits = SimpleNamespace(
        train=[_s("/d/train/good/000.png", 0), _s("/d/train/good/001.png", 0)],
        val=[_s("/d/test/good/000.png", 0), _s("/d/test/rot30/000.png", 1, "rot30", "/d/gt/rot30/000_mask.png"),
             _s("/d/test/rot45/000.png", 1, "rot45", "/d/gt/rot45/000_mask.png")],
        test=[_s("/d/test/good/001.png", 0), _s("/d/test/rot30/001.png", 1, "rot30", "/d/gt/rot30/001_mask.png")])
    links = bench.split_layout(splits)
    # same stem in two defect folders must not collide; each val anomaly gets its mask by stem
    assert links["val/bad/rot30_000.png"] == "/d/test/rot30/000.png"
    assert links["val/bad/rot45_000.png"] == "/d/test/rot45/000.png"
    assert links["val/masks/rot45_000_mask.png"] == "/d/gt/rot45/000_mask.png"
    assert links["val/good/good_000.png"] == "/d/test/good/000.png"
    assert sorted(k for k in links if k.startswith("test/")) == ["test/0000_good_001.png", "test/0001_rot30_001.png"]
    assert len(links) == 2 + 3 + 2 + 2  # train + val images + val masks + test


def test_goal_summary_ratios_by_hand(bench):
    def row(ds, side, fit, p50, auc):
        return {"dataset": ds, "model": "patchcore", "side": side, "fit_s": fit, "p50_ms": p50, "p95_ms": 2 * p50,
                "image_auroc": auc, "pixel_auroc": 0.9, "aupro": 0.8, "peak_rss_mb": 100.0}

    rows = [row("a", "fovea", 10, 50, 1.0), row("a", "anomalib", 100, 200, 0.9),
            row("b", "anomalib", 30, 100, 0.95), row("b", "fovea", 10, 60, 0.9), row("c", "fovea", 1, 1, 1.0)]
    pairs = bench.pair_rows(rows)
    assert [(f["dataset"], a["side"]) for f, a in pairs] == [("a", "anomalib"), ("b", "anomalib")]
    s = bench.goal_summary(pairs)["patchcore"]
    assert s["fit_speedup_median"] == pytest.approx((10 + 3) / 2)
    assert s["latency_ratio_p50_median"] == pytest.approx((0.25 + 0.6) / 2)
    assert s["image_auroc_not_worse"] == 1 and s["n"] == 2
