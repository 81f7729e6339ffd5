"""Plain functions from inputs to question records: one RGB-D + masks frame, or a generated scene.

    records, info = questions_from_frame(depth, K, labels, names, scene_id="img0")
    records, info = questions_from_scene(random_scene(0), depth_source="stereo")   # + truth
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fovea.geometry.stereo import SGMConfig, compute_disparity, disparity_to_depth
from fovea.spatial.lift import LiftResult, lift_scene, rendered_sigma, stereo_sigma
from fovea.spatial.questions import attach_truth, generate_questions
from fovea.spatial.truth import true_objects
from fovea.synth.scenes3d import Scene


@dataclass
class FrameInfo:
    """What happened to one frame: the lift (objects, frame, skipped masks) and skipped questions."""

    lift: LiftResult
    skipped: Counter = field(default_factory=Counter)


def mask_counts(labels: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    """name -> number of non-empty masks carrying it."""
    present = set(np.nonzero(np.bincount(np.asarray(labels, np.int64).ravel()))[0].tolist())
    out: dict[str, int] = {}
    for k, n in names.items():
        if k in present:
            out[n] = out.get(n, 0) + 1
    return out


def questions_from_frame(depth: np.ndarray, K: np.ndarray, labels: np.ndarray, names: dict[int, str],
                         scene_id: str = "frame", sigma: Callable = rendered_sigma,
                         gravity_cam: np.ndarray | None = None, seed: int = 0, per_type: int = 2,
                         imperial: bool = False, depth_source: str = "file", erode_px: int = 1,
                         ) -> tuple[list[dict], FrameInfo]:
    """Metric depth (H, W) m + K (3, 3) + instance labels (H, W) with names -> question records."""
    lift = lift_scene(depth, K, labels, names, sigma=sigma, gravity_cam=gravity_cam, erode_px=erode_px,
                      source=scene_id, seed=seed)
    records, skipped = generate_questions(lift.objects, mask_counts(labels, names), lift.frame.camera_canonical,
                                          scene_id, seed=seed, per_type=per_type, imperial=imperial,
                                          depth_source=depth_source)
    skipped.update({f"mask: {k}": v for k, v in lift.skipped.items()})
    return records, FrameInfo(lift, skipped)


STEREO_DISPARITIES = {"room": 96, "tabletop": 160}  # working range: z >= 0.66 m (room), >= 0.2 m (tabletop)


def stereo_depth(scene: Scene, num_disparities: int | None = None) -> np.ndarray:
    """fovea's SGBM matcher (left-right check, holes NOT filled: unknown stays nan) on the scene's
    rectified pair -> (H, W) float32 depth in metres."""
    nd = num_disparities or STEREO_DISPARITIES.get(scene.kind, 128)
    disp, _ = compute_disparity(scene.rgb, scene.right_rgb, SGMConfig(num_disparities=nd, fill_holes=False))
    return disparity_to_depth(disp, float(scene.K[0, 0]), scene.baseline_m)


def questions_from_scene(scene: Scene, depth_source: str = "render", per_type: int = 2, imperial: bool = False,
                         depth: np.ndarray | None = None) -> tuple[list[dict], FrameInfo]:
    """A generated scene -> records with truth attached. depth_source: "render" (exact depth) or "stereo"
    (fovea stereo on the rendered pair; pass `depth` to reuse one already computed)."""
    if depth_source == "stereo":
        depth = stereo_depth(scene) if depth is None else depth
        sigma, erode = stereo_sigma(float(scene.K[0, 0]), scene.baseline_m), 2
    else:
        depth = np.where(np.isfinite(scene.depth), scene.depth, np.nan).astype(np.float32)
        sigma, erode = rendered_sigma, 1
    sid = f"{scene.kind}-{scene.seed:05d}"
    records, info = questions_from_frame(depth, scene.K, scene.labels, scene.names, sid, sigma=sigma,
                                         seed=scene.seed, per_type=per_type, imperial=imperial,
                                         depth_source=depth_source, erode_px=erode)
    truth = true_objects(scene)
    camera = scene.world_to_canonical(scene.camera_centre[None])[0]
    attach_truth(records, truth, mask_counts(scene.labels, scene.names), camera)
    return records, info
