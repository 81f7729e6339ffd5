"""Outputs: JSON-lines records, a LLaVA-style conversation file, and a picture per scene."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from fovea.spatial.frame import SupportFrame
from fovea.spatial.lift import ObjectGeometry


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def write_jsonl(records: list[dict], path) -> Path:
    """One JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(_plain(r)) + "\n")
    return path


def to_llava(records: list[dict], images: dict[str, str], max_turns: int = 0) -> list[dict]:
    """LLaVA conversation entries, one per scene: {"id", "image", "conversations": [{"from": "human",
    "value": "<image>\\nQ1"}, {"from": "gpt", "value": "A1"}, ...]}; max_turns 0 = every question."""
    by_scene: dict[str, list[dict]] = {}
    for r in records:
        by_scene.setdefault(r["scene"], []).append(r)
    out = []
    for sid, recs in by_scene.items():
        recs = recs[:max_turns] if max_turns else recs
        conv = []
        for i, r in enumerate(recs):
            conv.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + r["question"]})
            conv.append({"from": "gpt", "value": r["answer"]})
        out.append({"id": sid, "image": images.get(sid, f"{sid}.png"), "conversations": conv})
    return out


def _box_corners(g: ObjectGeometry) -> np.ndarray:
    """(8, 3) canonical corners of the upright bounding box."""
    return np.array([[x, y, z] for x in (g.lo[0], g.hi[0]) for y in (g.lo[1], g.hi[1]) for z in (g.lo[2], g.hi[2])])


_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def draw_scene(rgb: np.ndarray, objects: list[ObjectGeometry], frame: SupportFrame, K: np.ndarray,
               records: list[dict], n_questions: int = 4) -> np.ndarray:
    """(H, W + 420, 3) uint8: the image with each object's upright 3D box and name (green = reliable,
    orange = border / occluded), and a panel with a few of its questions and answers."""
    img = np.ascontiguousarray(rgb[..., ::-1]).copy()
    for g in objects:
        pc = frame.to_camera(_box_corners(g))
        if np.any(pc[:, 2] <= 0.01):
            continue
        uv = (pc[:, :2] / pc[:, 2:3]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        col = (60, 200, 60) if g.reliable else (0, 140, 255)
        for i, j in _EDGES:
            cv2.line(img, tuple(int(v) for v in uv[i]), tuple(int(v) for v in uv[j]), col, 1, cv2.LINE_AA)
        x0, y0 = int(uv[:, 0].min()), int(uv[:, 1].min())
        cv2.putText(img, f"{g.id}:{g.name}", (max(x0, 0), max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, col, 1,
                    cv2.LINE_AA)
    h = img.shape[0]
    panel = np.full((h, 420, 3), 255, np.uint8)
    y = 16
    step = max(1, len(records) // max(n_questions, 1))
    for r in records[::step][:n_questions]:  # spread over the types (records come grouped by type)
        for text, col in ((f"Q: {r['question']}", (0, 0, 0)), (f"A: {r['answer']}", (150, 60, 0))):
            for k in range(0, len(text), 62):
                if y < h - 6:
                    cv2.putText(panel, text[k:k + 62], (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, col, 1, cv2.LINE_AA)
                y += 14
        y += 6
    return np.concatenate([img, panel], 1)[..., ::-1].copy()
