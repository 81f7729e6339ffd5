"""Cost of the embedded data generators per image, against writing the same image as PNG.

Median milliseconds (wall and process CPU) per 256 px image for `render_bricks_scene` and
`render_texture_sample`, and as the baseline `cv2.imencode(".png")` of the rendered image measured
in the same run; ratios = render / PNG encode. Single thread.

    .venv/bin/python benchmarks/synth_data.py --size 256 --n 60
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from fovea.synth.bricks import DEFECTS as BRICK_DEFECTS
from fovea.synth.bricks import render_bricks_scene
from fovea.synth.textures import DEFECTS as TEXTURE_DEFECTS
from fovea.synth.textures import render_texture_sample


def _per_call(fn, n: int) -> tuple[float, float]:
    """Median wall ms and median CPU ms over n calls of fn(i)."""
    wall, cpu = [], []
    for i in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    render_bricks_scene("one_up", None, 0, a.size)  # warm caches (static tray, noise bank)
    render_texture_sample("brick", None, 0, a.size)
    sample = render_bricks_scene("two_up", "rot45", 0, a.size)[0]
    rows = [
        ("bricks normal", lambda i: render_bricks_scene("two_up", None, i, a.size)),
        ("bricks anomalous", lambda i: render_bricks_scene("two_up", BRICK_DEFECTS[i % 3], i, a.size)),
        ("textures normal", lambda i: render_texture_sample("gravel", None, i, a.size)),
        ("textures anomalous", lambda i: render_texture_sample("gravel", TEXTURE_DEFECTS[i % 3], i, a.size)),
    ]
    base_wall, base_cpu = _per_call(lambda i: cv2.imencode(".png", sample), a.n)
    print(f"| generator ({a.size} px) | wall ms | CPU ms | CPU ratio vs PNG encode |")
    print("|---|---|---|---|")
    print(f"| baseline: cv2.imencode PNG | {base_wall:.2f} | {base_cpu:.2f} | 1.0 |")
    for name, fn in rows:
        w, c = _per_call(fn, a.n)
        print(f"| {name} | {w:.2f} | {c:.2f} | {c / max(base_cpu, 1e-9):.1f} |")


if __name__ == "__main__":
    main()
