"""Depth sources against rendered truth: fovea stereo, structured light, time of flight (issue 13, part 0).

    .venv/bin/python benchmarks/depth_sources.py           # 10 scenes (room / tabletop alternating)
    .venv/bin/python benchmarks/depth_sources.py --quick   # 2 scenes

Every source sees the same `fovea.synth.scenes3d` scene (640x480, f = 525 px) and is scored on the
pixels with rendered depth: valid fraction, median |error|, median relative error, gross errors
(> 5 % off, among valid pixels: flying pixels, wrong wraps, mismatches), then used for spatial
questions with the rendered masks (quantitative answers within +-25 % of the exact truth; confident
qualitative answers contradicting the true sign).
- stereo: fovea SGBM + left-right check, no hole filling (room baseline 12 cm, tabletop 6 cm) - the
  named baseline;
- structured light: projector 1024x768 beside the camera (15 cm room, 8 cm tabletop), Gray code at
  half-period + 4-step phase shift, period 16 px, ambient 0.08, noise 0.01, 8-bit captures;
- ToF 80 MHz: one frequency, wraps at 1.87 m; ToF 80 + 65 MHz: dual-frequency unwrapping (searched to 20 m;
  the pair's joint range is 29.98 m);
  + filters: amplitude threshold and flying-pixel filter. 2x2 sub-rays per pixel mix at edges.
Spatial questions use each source's own noise model: stereo Z^2 / (f B) x 0.25 px (masks eroded 2 px),
structured light the same triangulation formula with the projector's f and baseline and 0.1 px
column noise, ToF a constant 2 mm (masks eroded 1 px).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

F1, F2 = 80e6, 65e6


def depth_maps(sc) -> dict[str, tuple[np.ndarray, float, object, int]]:
    """source -> (depth (H, W) metres, CPU seconds, depth noise model sigma(z), mask erosion px)."""
    from fovea.geometry.structured_light import (
        ProjectorCameraPair, column_patterns, decode_columns, triangulate_columns,
    )
    from fovea.geometry.tof import (
        amplitude_filter, flying_pixel_filter, four_bucket, phase_to_distance, radial_to_z, unwrap_dual,
    )
    from fovea.spatial.lift import stereo_sigma
    from fovea.spatial.pipeline import stereo_depth
    from fovea.synth.depth_sensors import render_structured_light, render_tof

    out = {}
    c0 = time.process_time()
    out["stereo (fovea SGBM, baseline)"] = (stereo_depth(sc), time.process_time() - c0)
    pair = ProjectorCameraPair.side_by_side(sc.K, 0.15 if sc.kind == "room" else 0.08)
    sig_sl = stereo_sigma(float(pair.K_proj[0, 0]), float(-pair.T[0]), 0.1)  # triangulation, 0.1 px column noise
    pats = column_patterns(*pair.proj_size, period_px=16, n_steps=4)
    caps = render_structured_light(sc, pair, pats, seed=sc.seed)
    c0 = time.process_time()
    dec = decode_columns(caps["gray"], caps["gray_inv"], caps["phase"], 16)
    out["structured light (Gray + phase)"] = (triangulate_columns(dec.column_px, pair), time.process_time() - c0)
    buckets = render_tof(sc, (F1, F2), seed=sc.seed)
    c0 = time.process_time()
    (p1, a1), (p2, _) = four_bucket(buckets[F1]), four_bucket(buckets[F2])
    d1, d2 = phase_to_distance(p1, F1), phase_to_distance(p2, F2)
    t_dec = time.process_time() - c0
    out["ToF 80 MHz (wrapped)"] = (radial_to_z(d1, sc.K), t_dec)
    c0 = time.process_time()
    z2 = radial_to_z(unwrap_dual(d1, d2, F1, F2, 20.0), sc.K)
    t_dec += time.process_time() - c0
    out["ToF 80 + 65 MHz (unwrapped)"] = (z2, t_dec)
    c0 = time.process_time()
    zf = flying_pixel_filter(amplitude_filter(z2, a1, 0.01))
    out["ToF 80 + 65 MHz + filters"] = (zf, t_dec + time.process_time() - c0)
    sig_st = stereo_sigma(float(sc.K[0, 0]), sc.baseline_m)
    sig_tof = lambda z: np.full_like(np.asarray(z, np.float64), 0.002)  # noqa: E731  (phase noise ~ 2 mm)
    models = {"stereo": (sig_st, 2), "structured": (sig_sl, 1), "ToF": (sig_tof, 1)}
    return {k: (z, t, *next(m for key, m in models.items() if k.startswith(key))) for k, (z, t) in out.items()}


def main() -> None:
    from fovea.spatial.evaluate import evaluate
    from fovea.spatial.frame import SupportSurfaceError
    from fovea.spatial.pipeline import mask_counts, questions_from_frame
    from fovea.spatial.questions import attach_truth
    from fovea.spatial.truth import true_objects
    from fovea.synth.scenes3d import random_scene

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=10)
    add_doc_args(ap, "depth_sources", "2 scenes")
    args = ap.parse_args()
    n = 2 if args.quick else args.scenes
    run = Run(args, full_command=".venv/bin/python benchmarks/depth_sources.py")
    stats = defaultdict(lambda: defaultdict(list))
    for i in range(n):
        sc = random_scene(1000 + i, ("room", "tabletop")[i % 2])
        gt = np.where(np.isfinite(sc.depth), sc.depth, np.nan).astype(np.float64)
        has = np.isfinite(gt)
        truth = true_objects(sc)
        cam = sc.world_to_canonical(sc.camera_centre[None])[0]
        for name, (z, cpu, sigma, erode) in depth_maps(sc).items():
            s = stats[name]
            ok = has & np.isfinite(z)
            rel = np.abs(z[ok] - gt[ok]) / gt[ok]
            s["valid"].append(ok.sum() / has.sum())
            s["abs_mm"].append(1000 * np.median(np.abs(z[ok] - gt[ok])))
            s["rel"].append(np.median(rel))
            s["gross"].append(np.mean(rel > 0.05))
            s["cpu"].append(cpu)
            try:
                recs, _ = questions_from_frame(z.astype(np.float32), sc.K, sc.labels, sc.names, f"s{i}",
                                               sigma=sigma, seed=i, erode_px=erode)
            except SupportSurfaceError:
                s["refused"].append(1)  # the depth is too wrong to find the floor: counted, no questions
                continue
            attach_truth(recs, truth, mask_counts(sc.labels, sc.names), cam)
            ev = evaluate(recs, recs)["overall"]
            s["q25"].append(ev["quantitative_within25"])
            s["wrong"].append(ev["wrong_sign"])
            s["nq"].append(len(recs))
        print(f"{i + 1}/{n} scenes", flush=True)
    rows = []
    for name, s in stats.items():
        rows.append([name, f"{np.mean(s['valid']):.3f}", f"{np.median(s['abs_mm']):.1f}",
                     f"{100 * np.median(s['rel']):.2f} %", f"{100 * np.mean(s['gross']):.2f} %",
                     f"{np.nanmean(s['q25']):.3f}" if s["q25"] else "-", str(int(np.sum(s['wrong']))),
                     f"{int(np.sum(s['nq']))} ({len(s['refused'])} frame(s) refused: no floor)",
                     f"{1000 * np.median(s['cpu']):.0f}"])
    body = [f"### {n} scenes (room / tabletop alternating, seeds 1000-{1000 + n - 1}), 640x480", "",
            *table(["source", "valid px", "median abs err (mm)", "median rel err", "gross (> 5 %) of valid",
                    "spatial: quantities within 25 %", "spatial: wrong sign", "questions", "decode CPU (ms)"], rows),
            "", "Errors are against the rendered depth (the same ray caster that made the sensor signals). Decode "
            "CPU: matching / decoding / unwrapping / filtering only, not the simulation. Structured light is invalid "
            "in projector shadows and on surfaces the projector does not reach; stereo in its unmatched left band "
            "and at occlusions; ToF almost nowhere, but one frequency wraps beyond 1.87 m and edge pixels mix two "
            "depths (flying pixels) until filtered."]
    run.write("Depth sources: stereo, structured light, time of flight", body)


if __name__ == "__main__":
    main()
