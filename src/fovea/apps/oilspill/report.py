"""Markdown report with overlays for an oil-spill survey, and a before/after comparison page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from fovea.apps.oilspill.assess import CLASS_NAMES, SurveyAssessment

COLOURS = {"water": None, "sheen": (210, 210, 210), "rainbow": (230, 40, 230), "true_colour": (255, 140, 0)}


def overlay(image: np.ndarray, class_map: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
            alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) RGB with oil classes tinted and outlined; the input is not modified."""
    out = image.astype(np.float32).copy()
    for k, name in enumerate(class_names):
        col = COLOURS.get(name)
        if col is None:
            continue
        m = class_map == k
        out[m] = (1 - alpha) * out[m] + alpha * np.array(col, np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    for k, name in enumerate(class_names):
        col = COLOURS.get(name)
        if col is None:
            continue
        cs = cv2.findContours((class_map == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours = cs[0] if len(cs) == 2 else cs[1]  # OpenCV 4.x/5.x: 2 values; 3.x: 3
        cv2.drawContours(out, contours, -1, col, 1)
    return out


def write_report(assessment: SurveyAssessment, images: Sequence[np.ndarray], class_maps: Sequence[np.ndarray],
                 out_dir, names: Sequence[str] | None = None, title: str = "Oil-spill survey") -> Path:
    """Write out_dir/report.md, out_dir/assessment.json and out_dir/overlays/*.png; returns report.md."""
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    a = assessment
    lines = [f"# {title}", "",
             f"**Severity grade {a.grade} ({a.grade_name})**", "", f"**Recommended response:** {a.response}", "",
             f"Altitude {a.altitude_m:g} m, nominal ground sampling distance {a.gsd_m * 100:.1f} cm/pixel "
             "(per-pixel footprints from the lens model are used for areas).", "",
             "| class | area (m²) | thickness band (µm) | volume range (m³) |", "|---|---|---|---|"]
    for name in a.area_m2:
        if name == "water":
            continue
        v = a.volume_m3.get(name, [0.0, 0.0])
        band = f"{v[0] / a.area_m2[name] * 1e6:g}–{v[1] / a.area_m2[name] * 1e6:g}" if a.area_m2[name] else "–"
        lines.append(f"| {name} | {a.area_m2[name]:.1f} | {band} | {v[0]:.3g} – {v[1]:.3g} |")
    lines += [f"| **oil total** | **{a.oiled_area_m2:.1f}** | | **{a.volume_range_m3[0]:.3g} – "
              f"{a.volume_range_m3[1]:.3g}** |", "", f"Thickness bands: {a.rules_source}.", "", "## Images", ""]
    for name, im, cm, per in zip(names, images, class_maps, a.images):
        fn = f"overlays/{Path(name).stem}.png"
        cv2.imwrite(str(out / fn), overlay(im, cm)[..., ::-1])
        areas = ", ".join(f"{k} {v:.1f} m²" for k, v in per["area_m2"].items() if k != "water")
        lines += [f"### {name}", "", f"![{name}]({fn})", "", areas, ""]
    a.save(out / "assessment.json")
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def comparison_markdown(cmp: dict[str, Any], before_name: str = "before", after_name: str = "after") -> str:
    """A small markdown table of `compare_surveys` output."""
    lines = [f"# Survey comparison: {before_name} → {after_name}", "",
             "| class | before (m²) | after (m²) | change |", "|---|---|---|---|"]
    for k, v in {**cmp["area_m2"], "oil total": cmp["oiled_area_m2"]}.items():
        lines.append(f"| {k} | {v['before']:.1f} | {v['after']:.1f} | {v['change_pct']:+.1f} % |")
    vb, va = cmp["volume_range_m3"]["before"], cmp["volume_range_m3"]["after"]
    lines += ["", f"Volume range: {vb[0]:.3g}–{vb[1]:.3g} m³ → {va[0]:.3g}–{va[1]:.3g} m³.",
              f"Grade: {cmp['grade']['before']} → {cmp['grade']['after']} ({cmp['trend']})."]
    return "\n".join(lines) + "\n"
