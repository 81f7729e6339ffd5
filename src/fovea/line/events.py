"""Observability: an append-only JSON-lines event log, stage latencies, FPS and counters.

Every event is one line `{"t": <monotonic s>, "type": ..., ...}`; types: frame, frame_dropped,
fault, health, detection, decision, command, ack, nak, done, outcome. `summarize(events)` turns a
log (live or replayed from disk) into the run report, so a report never depends on in-memory
state the log does not hold.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fovea.errors import DataError

STAGES = ("queue", "infer", "decide", "send", "ack", "done")


class EventLog:
    """Thread-safe append-only event sink: a JSON-lines file and/or an in-memory list."""

    def __init__(self, path: str | Path | None = None, keep: bool = True, flush_every: int = 256):
        self.path = Path(path) if path else None
        self.events: list[dict[str, Any]] = []
        self.keep = keep
        self._lock = threading.Lock()
        self._fh = open(self.path, "a") if self.path else None
        self._n = 0
        self._flush_every = flush_every
        self.counts: Counter = Counter()

    def emit(self, t: float, type: str, **fields: Any) -> dict[str, Any]:
        ev = {"t": round(float(t), 6), "type": type, **fields}
        with self._lock:
            self.counts[type] += 1
            if self.keep:
                self.events.append(ev)
            if self._fh:
                self._fh.write(json.dumps(ev, default=_jsonable) + "\n")
                self._n += 1
                if self._n % self._flush_every == 0:
                    self._fh.flush()
        return ev

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["type"] in types]

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Load a JSON-lines event log; a malformed line is a DataError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"event log {p} does not exist; pass the EVENTS.jsonl written by `fovea line run`")
    out = []
    with open(p) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{i} is not valid JSON ({exc.msg}); the log may be truncated") from exc
    return out


def percentiles(xs: Iterable[float]) -> dict[str, float]:
    """p50/p99 (and n) of a sample in milliseconds (inputs in seconds)."""
    a = np.asarray(list(xs), float)
    if a.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50) * 1e3),
            "p99_ms": float(np.percentile(a, 99) * 1e3)}


def fps_intervals(times: Iterable[float], interval_s: float = 1.0) -> list[float]:
    """Frames per second in consecutive full intervals of `interval_s` (first/last partial dropped)."""
    t = np.sort(np.asarray(list(times), float))
    if t.size < 2:
        return []
    edges = np.arange(t[0], t[-1], interval_s)
    if edges.size < 2:
        return []
    counts, _ = np.histogram(t, bins=edges)
    return [float(c) / interval_s for c in counts]


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Run report from events: outcomes, reasons, drops, faults, stage latencies, FPS."""
    by_type: dict[str, list] = defaultdict(list)
    for e in events:
        by_type[e["type"]].append(e)
    outcomes = by_type["outcome"]
    per_record = Counter(e["record"] for e in outcomes)
    lanes = Counter(e["lane"] for e in outcomes)
    reasons = Counter(e["reason"] for e in outcomes if e["lane"] == "default")
    decisions = by_type["decision"]
    late_commits = sum(1 for e in decisions if e["t"] > e["t_commit"] + 1e-9)
    lat: dict[str, list[float]] = defaultdict(list)
    for e in by_type["frame_done"]:
        lat["queue"].append(e["t_infer_start"] - e["t_capture"])
        lat["infer"].append(e["t"] - e["t_infer_start"])
    for e in decisions:
        if "t_evidence" in e:
            lat["decide"].append(e["t"] - e["t_evidence"])
    cmd_t = {e["cmd"]: e for e in by_type["command"]}
    for e in by_type["command"]:
        lat["send"].append(e["t"] - e["t_decision"])
    for kind in ("ack", "done"):
        for e in by_type[kind]:
            c = cmd_t.get(e["cmd"])
            if c is not None:
                lat[kind].append(e["t"] - c["t"])
    e2e = [e["t"] - e["t_capture"] for e in by_type["command"] if "t_capture" in e]
    frames = by_type["frame"]
    fps = fps_intervals([e["t"] for e in by_type["frame_done"]])
    return {
        "frames": len(frames),
        "frames_processed": len(by_type["frame_done"]),
        "frames_dropped": dict(Counter(e["cause"] for e in by_type["frame_dropped"])),
        "faults": dict(Counter(e["kind"] for e in by_type["fault"])),
        "records": len(per_record),
        "records_with_multiple_outcomes": sum(1 for c in per_record.values() if c > 1),
        "outcomes": dict(lanes),
        "default_reasons": dict(reasons),
        "unknown_reasons": dict(Counter(e["reason"] for e in outcomes if e["lane"] == "unknown")),
        "decisions": len(decisions),
        "decisions_after_deadline": late_commits,
        "commands": len(by_type["command"]),
        "latency": {k: percentiles(lat[k]) for k in STAGES},
        "e2e_capture_to_send": percentiles(e2e),
        "fps_median": float(np.median(fps)) if fps else float("nan"),
        "fps_min": float(np.min(fps)) if fps else float("nan"),
        **_perception_summary(by_type),
    }


def _perception_summary(by_type: dict[str, list]) -> dict[str, Any]:
    """Blind intervals with the objects estimated to have passed unseen, belt speed changes, merged
    ghost records and frames refused for their time (see fovea.line.blind / speed / frametime)."""
    blind = [e for e in by_type["fault"] if e.get("kind") == "blind_interval"]
    return {
        "blind_intervals": len(blind),
        "blind_s": float(sum(e["t_to"] - e["t_from"] for e in blind)),
        "unseen_objects_est": float(sum(e.get("unseen_est", 0.0) for e in blind)),
        "unseen_objects_max": int(sum(e.get("unseen_max", 0) for e in blind)),
        "speed_changes": [(round(e["t"], 3), e["from_mm_s"], e["to_mm_s"]) for e in by_type["speed_change"]],
        "merged_records": len(by_type["merge"]),
        "frame_time_faults": dict(Counter(e["cause"] for e in by_type["fault"] if e.get("kind") == "frame_time")),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable multi-line report of `summarize`'s output."""
    lines = [f"frames {s['frames']} (processed {s['frames_processed']}, dropped {s['frames_dropped']})",
             f"records {s['records']}  outcomes {s['outcomes']}",
             f"default-route reasons {s['default_reasons']}",
             f"unknown outcomes (nobody can tell where the item went) {s.get('unknown_reasons', {})}",
             f"decisions {s['decisions']} (after deadline: {s['decisions_after_deadline']}), "
             f"commands {s['commands']}, records with >1 outcome: {s['records_with_multiple_outcomes']}",
             f"faults {s['faults']}",
             f"fps median {s['fps_median']:.1f} min {s['fps_min']:.1f}"]
    if "blind_intervals" in s:
        lines += [f"blind intervals {s['blind_intervals']} ({s['blind_s']:.1f} s): objects passed unseen ~"
                  f"{s['unseen_objects_est']:.1f} (at most {s['unseen_objects_max']})",
                  f"belt speed changes {len(s['speed_changes'])} {s['speed_changes'][:6]}  merged ghost records "
                  f"{s['merged_records']}  frames refused for their time {s['frame_time_faults']}"]
    for k, v in s["latency"].items():
        lines.append(f"  {k:7s} p50 {v['p50_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms  (n={v['n']})")
    v = s["e2e_capture_to_send"]
    lines.append(f"  capture->send p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms")
    return "\n".join(lines)
