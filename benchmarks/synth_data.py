"""Cost of the embedded data generators per image, against writing the same image as PNG.

Median milliseconds (wall and process CPU) per image for `render_bricks_scene` and
`render_texture_sample`, and as the baseline `cv2.imencode(".png")` of a rendered bricks image
measured in the same run; ratios = render / PNG encode. Single thread. Writes its block of
docs/benchmarks/data.md.

    .venv/bin/python benchmarks/synth_data.py            # 60 images of 256 px per row
    .venv/bin/python benchmarks/synth_data.py --quick    # 15 images per row
"""

from __future__ import annotations

import argparse

import cv2
from _doc import Run, add_doc_args, median_wall_cpu, table

from fovea.synth.bricks import DEFECTS as BRICK_DEFECTS
from fovea.synth.bricks import render_bricks_scene
from fovea.synth.textures import DEFECTS as TEXTURE_DEFECTS
from fovea.synth.textures import render_texture_sample


BUDGET_MS = 20.0  # generator budget per 256 px image (CPU ms)


def per_call_ms(fn, n: int) -> tuple[float, float]:
    """Median wall ms and median CPU ms over n calls of fn(i), i = 0..n-1 (a new scene each call)."""
    calls = iter(range(n))
    wall, cpu = median_wall_cpu(lambda: fn(next(calls)), n)
    return 1e3 * wall, 1e3 * cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=60)
    add_doc_args(ap, "data", "15 images per row instead of --n")
    a = ap.parse_args()
    run = Run(a, full_command=".venv/bin/python benchmarks/synth_data.py")
    n = 15 if a.quick else a.n
    cv2.setNumThreads(1)
    render_bricks_scene("one_up", None, 0, a.size)  # warm caches (static tray, noise bank)
    render_texture_sample("brick", None, 0, a.size)
    sample = render_bricks_scene("two_up", "rot45", 0, a.size)[0]
    cases = [
        ("bricks normal (two_up)", lambda i: render_bricks_scene("two_up", None, i, a.size)),
        ("bricks anomalous (two_up)", lambda i: render_bricks_scene("two_up", BRICK_DEFECTS[i % 3], i, a.size)),
        ("textures normal (gravel)", lambda i: render_texture_sample("gravel", None, i, a.size)),
        ("textures anomalous (gravel)", lambda i: render_texture_sample("gravel", TEXTURE_DEFECTS[i % 3], i, a.size)),
    ]
    base_wall, base_cpu = per_call_ms(lambda i: cv2.imencode(".png", sample), n)
    rows = [["baseline: cv2.imencode PNG of a bricks image", f"{base_wall:.2f}", f"{base_cpu:.2f}", "1.0"]]
    worst = 0.0
    for name, fn in cases:
        w, c = per_call_ms(fn, n)
        worst = max(worst, c)
        rows.append([name, f"{w:.2f}", f"{c:.2f}", f"{c / max(base_cpu, 1e-9):.1f}"])
    body = [f"{a.size} px images, median of {n} calls per row, 1 OpenCV thread.", "",
            *table(["generator", "wall ms", "CPU ms", "CPU ratio vs PNG encode"], rows), "",
            f"Slowest generator: {worst:.1f} ms CPU per image against the budget of {BUDGET_MS:.0f} ms per 256 px "
            f"image: {'met' if worst <= BUDGET_MS else 'NOT met'}" + ("" if a.size == 256 else " (budget is for 256 px)") + "."]
    run.write("Data generators", body)


if __name__ == "__main__":
    main()
