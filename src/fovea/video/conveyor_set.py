"""The conveyor-event clip set on disk: MP4 clips (PyAV, H.264) per class plus a labels CSV.

`write_event_clip_set(out_dir, n_per_class, seed)` renders `fovea.synth.conveyor_events` clips of
every class in EVENT_CLASSES and writes out_dir/<class>/<seed>.mp4 and out_dir/labels.csv
(path,label,start_s,end_s: the first event's times within the clip, empty for normal flow).
Train and test sets use disjoint seeds, so test clips are new belts, items and event times.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fovea.synth.conveyor_events import EVENT_CLASSES, make_event_clip, write_mp4


def write_event_clip_set(out_dir: str | Path, n_per_class: int, seed: int = 0, n_frames: int = 16,
                         fps: float = 10.0) -> Path:
    """Render n_per_class clips of each class; returns the labels CSV path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, kind in enumerate(EVENT_CLASSES):
        for i in range(n_per_class):
            s = seed * 1_000_003 + k * 10_007 + i
            frames, events, _ = make_event_clip(kind, s, n_frames, fps=fps)
            path = write_mp4(out / kind / f"{s}.mp4", frames, fps)
            ev = next((e for e in events if e.kind == kind), None)
            rows.append({"path": str(path.relative_to(out)), "label": kind,
                         "start_s": "" if ev is None else round(ev.t_start_s, 4),
                         "end_s": "" if ev is None else round(ev.t_end_s, 4)})
    labels = out / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "start_s", "end_s"])
        w.writeheader()
        w.writerows(rows)
    return labels
