"""Per-class colour overlays of segmentation results (PNG); inputs are never modified."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

# background black, then well-separated colours (Sasha Trubetskoy's list order)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (60, 180, 75), (230, 25, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128))


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours; cycles a fixed list, background black."""
    return np.array([PALETTE[i % len(PALETTE)] if i < len(PALETTE) else
                     tuple((np.array(PALETTE[1 + i % (len(PALETTE) - 1)]) * 0.6).astype(int))
                     for i in range(num_classes)], np.uint8)


def colorize(class_map: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB."""
    class_map = np.asarray(class_map, np.int64)
    colors = palette(int(class_map.max()) + 1) if colors is None else np.asarray(colors, np.uint8)
    return colors[class_map]


def overlay(image: np.ndarray, class_map: np.ndarray, colors: np.ndarray | None = None, alpha: float = 0.5,
            background: int | None = 0, outline: bool = True) -> np.ndarray:
    """Image (H, W, 3) uint8 with classes blended in at `alpha` (the background class left clear) and
    class boundaries drawn in full colour. Returns a new array."""
    if image.shape[:2] != class_map.shape:
        raise ValueError(f"image {image.shape[:2]} and class map {class_map.shape} differ in size")
    col = colorize(class_map, colors)
    show = np.ones(class_map.shape, bool) if background is None else class_map != background
    out = image.astype(np.float32)
    out[show] = (1 - alpha) * out[show] + alpha * col[show].astype(np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if outline:
        cm = class_map.astype(np.int32)
        edge = np.zeros(cm.shape, bool)
        edge[:-1] |= cm[:-1] != cm[1:]
        edge[:, :-1] |= cm[:, :-1] != cm[:, 1:]
        edge &= show
        out[edge] = col[edge]
    return out


def legend(class_names: Sequence[str], colors: np.ndarray, width: int) -> np.ndarray:
    """A (h, width, 3) strip naming each class next to its colour."""
    row = 16
    per_line = max(1, width // 110)
    lines = (len(class_names) + per_line - 1) // per_line
    strip = np.full((row * lines + 4, width, 3), 255, np.uint8)
    for i, name in enumerate(class_names):
        x, y = 4 + (i % per_line) * 110, 2 + (i // per_line) * row
        cv2.rectangle(strip, (x, y + 2), (x + 10, y + 12), tuple(int(c) for c in colors[i]), -1)
        cv2.putText(strip, str(name)[:14], (x + 14, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return strip


def save_overlay(path: str | Path, image: np.ndarray, class_map: np.ndarray, class_names: Sequence[str],
                 target: np.ndarray | None = None, alpha: float = 0.5) -> Path:
    """PNG: prediction overlay (| ground-truth overlay when `target` is given) above a legend."""
    colors = palette(len(class_names))
    panels = [overlay(image, class_map, colors, alpha)]
    if target is not None:
        panels.append(overlay(image, target, colors, alpha))
    grid = np.concatenate(panels, 1)
    grid = np.concatenate([grid, legend(class_names, colors, grid.shape[1])], 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
