"""Gather the per-area benchmark tables (docs/benchmarks/*.md) into docs/benchmarks.md.

Each area's script writes its own file with the command that produced it; this only concatenates
them in a fixed order, so docs/benchmarks.md never holds a number no script printed. Files whose
tables are not in a `<!-- begin benchmarks/<script> -->` block (the shared writer in
benchmarks/_doc.py) are listed, so a hand-assembled table shows up.

    .venv/bin/python benchmarks/collect.py
"""

from __future__ import annotations

from pathlib import Path

ORDER = ["anomaly", "padim_seeds", "coreset", "data", "engine", "task_layer", "rd", "classify", "train", "segment", "line",
         "stereo", "scan", "backbones"]


def main() -> None:
    root = Path(__file__).resolve().parents[1] / "docs"
    parts = sorted((root / "benchmarks").glob("*.md"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    text = ["# fovea benchmarks", "",
            "Collected from `docs/benchmarks/*.md` by `benchmarks/collect.py`; each section names the script "
            "and command that produced it. Ratios are against a baseline measured in the same run; medians.", ""]
    unmarked = [p.name for p in parts if "<!-- begin benchmarks/" not in p.read_text()]
    for p in parts:
        body = p.read_text().strip().splitlines()
        if body and body[0].startswith("# "):
            body[0] = "#" + body[0]  # demote each file's title one level
        text += body + [""]
    (root / "benchmarks.md").write_text("\n".join(text))
    print(f"wrote {root / 'benchmarks.md'} from {len(parts)} files")
    if unmarked:
        print("not written through benchmarks/_doc.py (check their script writes them): " + ", ".join(unmarked))


if __name__ == "__main__":
    main()
