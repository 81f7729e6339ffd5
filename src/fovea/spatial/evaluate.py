"""Scoring predicted answers against truth records, with the metrics the spatial benchmarks use.

- qualitative (predicate, choice, among, fits, on_top): accuracy of the parsed label against the
  truth label; and `wrong_sign`: confident answers (yes/no or an object) that contradict the sign of
  the true comparison (no margin) - the number that must be 0;
- quantities: success within [0.5x, 2x] (SpatialVLM, Q-Spatial: max(p/t, t/p) < 2), within +-25 %
  (SpatialRGPT-Bench: 0.75 t <= p <= 1.25 t), mean relative error |p - t| / t, and VSI-Bench's MRA
  (mean over theta in {0.50, 0.55, ..., 0.95} of 1[|p - t| / t < 1 - theta]);
- clock: success when the hour is within one hour (circular);
- count: exact match.
A prediction is either a record with "value" (numbers in SI units, labels, object ids) or with a
free-text "answer", which the deterministic parsers of `fovea.spatial.language` read. Unparsed
answers count as wrong and are reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from fovea.errors import DataError
from fovea.spatial.language import parse_area, parse_clock, parse_count, parse_length, parse_yes_no

QUALITATIVE = ("predicate", "choice", "among", "fits", "on_top")
MRA_THETAS = np.arange(0.50, 0.951, 0.05)


def mra(pred: float, truth: float) -> float:
    """VSI-Bench mean relative accuracy of one answer."""
    rel = abs(pred - truth) / abs(truth)
    return float(np.mean(rel < 1 - MRA_THETAS))


def read_jsonl(path) -> list[dict]:
    """Records of a JSON-lines file; a clear error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist. Fix: pass a JSON-lines file written by `fovea spatial synth`.")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i} is not JSON ({exc}). Fix: one JSON object per line.") from None
    return out


def _choice_from_text(text: str, truth: dict) -> object:
    """Object id whose phrase occurs first in the text (or 'same'); None when no phrase occurs."""
    low = text.lower()
    if parse_yes_no(text) == "same" and truth["kind"] == "choice":
        return "same"
    ids = truth["objects"][1:] if truth["kind"] == "among" else truth["objects"]
    phrases = truth["phrases"][1:] if truth["kind"] == "among" else truth["phrases"]
    hits = [(low.find(p.lower()), i) for i, p in zip(ids, phrases) if p.lower() in low]
    # prefer the longest phrase at a position ("the left apple" over "the apple")
    hits.sort(key=lambda h: (h[0], -len(phrases[ids.index(h[1])])))
    return hits[0][1] if hits else None


def parse_prediction(pred: dict, truth: dict):
    """The predicted value in the truth record's terms (number in SI units, label, id), or None."""
    if "value" in pred and pred["value"] is not None:
        return pred["value"]
    text = str(pred.get("answer", ""))
    kind, unit = truth["kind"], truth.get("unit")
    if kind in ("predicate", "fits", "on_top"):
        return parse_yes_no(text)
    if kind in ("choice", "among"):
        return _choice_from_text(text, truth)
    if kind == "clock":
        return parse_clock(text)
    if kind == "count":
        return parse_count(text)
    return parse_area(text) if unit == "m2" else parse_length(text)


def evaluate(preds: list[dict], truths: list[dict]) -> dict:
    """Per-type and overall scores (module doc). Records pair by qid; a truth without a prediction counts
    as missing (wrong), a prediction without a truth is ignored and counted."""
    by_qid = {p["qid"]: p for p in preds}
    per = defaultdict(lambda: defaultdict(list))
    counts = {"missing": 0, "unparsed": 0, "no_truth": 0, "extra": len(set(by_qid) - {t["qid"] for t in truths})}
    for t in truths:
        if "truth" not in t:
            counts["no_truth"] += 1
            continue
        s = per[t["type"]]
        p = by_qid.get(t["qid"])
        v = None if p is None else parse_prediction(p, t)
        counts["missing"] += p is None
        counts["unparsed"] += p is not None and v is None
        kind, tv = t["kind"], t["truth"]
        s["kind"] = kind
        if kind in QUALITATIVE:
            s["correct"].append(v is not None and v == tv)
            confident = v is not None and v != "same"
            if confident and "truth_sign" in t:
                s["confident"].append(1)
                s["wrong_sign"].append(v != t["truth_sign"])
            elif v == "same":
                s["same"].append(1)
        elif kind == "clock":
            ok = v is not None and min(abs(v - tv) % 12, 12 - abs(v - tv) % 12) <= 1
            s["clock_ok"].append(ok)
        elif kind == "count":
            s["correct"].append(v is not None and int(v) == int(tv))
        else:
            if v is None or tv == 0:
                s["within25"].append(False), s["ratio2"].append(False), s["mra"].append(0.0)
                s["relerr"].append(np.nan)
                continue
            v = float(v)
            s["within25"].append(0.75 * tv <= v <= 1.25 * tv)
            s["ratio2"].append(v > 0 and max(v / tv, tv / v) < 2)
            s["relerr"].append(abs(v - tv) / tv)
            s["mra"].append(mra(v, tv))
    return {"types": {k: _summary(v) for k, v in sorted(per.items())}, "counts": counts,
            "overall": _overall(per)}


def _summary(s) -> dict:
    out = {"kind": s["kind"]}
    n = len(s["correct"]) or len(s["clock_ok"]) or len(s["within25"])
    out["n"] = n
    if s["correct"]:
        out["accuracy"] = float(np.mean(s["correct"]))
    if s["confident"] or s["same"] or s["kind"] in QUALITATIVE:
        out["confident"] = len(s["confident"])
        out["wrong_sign"] = int(np.sum(s["wrong_sign"]))
        out["same"] = len(s["same"])
    if s["clock_ok"]:
        out["within_1h"] = float(np.mean(s["clock_ok"]))
    if s["within25"]:
        out["within25"] = float(np.mean(s["within25"]))
        out["ratio2"] = float(np.mean(s["ratio2"]))
        out["mean_rel_err"] = float(np.nanmean(s["relerr"])) if np.isfinite(s["relerr"]).any() else float("nan")
        out["mra"] = float(np.mean(s["mra"]))
    return out


def _overall(per) -> dict:
    qual = [c for s in per.values() if s["kind"] in QUALITATIVE for c in s["correct"]]
    quant = [c for s in per.values() for c in s["within25"]]
    ratio = [c for s in per.values() for c in s["ratio2"]]
    wrong = sum(int(np.sum(s["wrong_sign"])) for s in per.values())
    return {"qualitative_accuracy": float(np.mean(qual)) if qual else float("nan"),
            "quantitative_within25": float(np.mean(quant)) if quant else float("nan"),
            "quantitative_ratio2": float(np.mean(ratio)) if ratio else float("nan"),
            "wrong_sign": wrong}
