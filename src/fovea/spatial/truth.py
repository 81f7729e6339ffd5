"""Exact geometry of a generated scene's objects, in the same `ObjectGeometry` form lifting produces.

Built from the solids of `fovea.synth.scenes3d` (not from pixels): the upright bounding box from the
box corners or the cylinder / sphere radius, the footprint from the true rectangle or a 256-gon
circle, and dense surface samples (a grid of about `step_m` on every face plus every edge and
corner) for closest-surface gaps, whose sampling error is below step_m / 2.
"""

from __future__ import annotations

import cv2
import numpy as np

from fovea.spatial.lift import ObjectGeometry
from fovea.synth.scenes3d import Scene, SceneObject


def _grid(n: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, max(n, 2))


def surface_samples(obj: SceneObject, step_m: float) -> np.ndarray:
    """(N, 3) world points on the solid's surface, spaced <= step_m (edges and corners included)."""
    w, h, d = obj.size
    if obj.shape == "box":
        gx, gy, gz = (_grid(int(np.ceil(s / step_m)) + 1) * s for s in (w, h, d))
        faces = []
        for axis, (g1, g2), half in ((0, (gy, gz), w / 2), (1, (gx, gz), h / 2), (2, (gx, gy), d / 2)):
            a, b = np.meshgrid(g1, g2, indexing="ij")
            for sgn in (-1, 1):
                cols = [a.ravel(), b.ravel()]
                cols.insert(axis, np.full(a.size, sgn * half))
                faces.append(np.stack(cols, 1))
        local = np.concatenate(faces)
    elif obj.shape == "cylinder":
        r = w / 2
        n_a = int(np.ceil(2 * np.pi * r / step_m)) + 1
        ang = np.linspace(0, 2 * np.pi, n_a, endpoint=False)
        ys = _grid(int(np.ceil(h / step_m)) + 1) * h
        A, Y = np.meshgrid(ang, ys, indexing="ij")
        side = np.stack([r * np.cos(A).ravel(), Y.ravel(), r * np.sin(A).ravel()], 1)
        rs = np.linspace(0, r, int(np.ceil(r / step_m)) + 1)
        R_, A_ = np.meshgrid(rs, ang, indexing="ij")
        disc = np.stack([(R_ * np.cos(A_)).ravel(), np.zeros(R_.size), (R_ * np.sin(A_)).ravel()], 1)
        local = np.concatenate([side, disc + [0, h / 2, 0], disc - [0, h / 2, 0]])
    else:
        r = w / 2
        n = int(np.ceil(4 * np.pi * r * r / step_m**2)) + 50
        i = np.arange(n) + 0.5  # Fibonacci sphere: near-uniform spacing
        phi = np.arccos(1 - 2 * i / n)
        th = np.pi * (1 + 5**0.5) * i
        local = r * np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], 1)
    return local @ obj.yaw_matrix().T + obj.centre


def footprint_world(obj: SceneObject) -> np.ndarray:
    """(K, 2) world (x, z) outline of the solid's footprint (rectangle corners or a 256-gon)."""
    if obj.shape == "box":
        w, _, d = obj.size
        local = np.array([[-w, 0, -d], [w, 0, -d], [w, 0, d], [-w, 0, d]]) / 2
    else:
        r = obj.size[0] / 2
        a = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        local = np.stack([r * np.cos(a), np.zeros_like(a), r * np.sin(a)], 1)
    return (local @ obj.yaw_matrix().T + obj.centre)[:, [0, 2]]


def true_geometry(scene: Scene, obj: SceneObject, step_m: float | None = None) -> ObjectGeometry:
    """Exact ObjectGeometry of one scene object (canonical frame of the scene's camera)."""
    step = step_m or max(0.002, float(min(obj.size)) / 25)
    pts = scene.world_to_canonical(surface_samples(obj, step))
    c = scene.world_to_canonical(obj.centre[None])[0]
    if obj.shape == "box":
        corners = np.array([[sx, sy, sz] for sx in (-.5, .5) for sy in (-.5, .5) for sz in (-.5, .5)]) * obj.size
        can = scene.world_to_canonical(corners @ obj.yaw_matrix().T + obj.centre)
        lo, hi = can.min(0), can.max(0)
    else:
        r, hh = obj.size[0] / 2, obj.size[1] / 2
        lo, hi = c - [r, hh, r], c + [r, hh, r]
    fp_world = footprint_world(obj)
    fp3 = np.stack([fp_world[:, 0], np.zeros(len(fp_world)), fp_world[:, 1]], 1)
    fp = scene.world_to_canonical(fp3)[:, [0, 2]]
    if obj.shape == "box":
        sides = np.array([obj.size[0], obj.size[2]])
    else:
        sides = np.array([obj.size[0], obj.size[0]])
    return ObjectGeometry(obj.id, obj.name, lo, hi, fp, sides, pts, 0.0, resting=obj.support_id == 0,
                          support_id=obj.support_id)


def true_objects(scene: Scene, step_m: float | None = None) -> dict[int, ObjectGeometry]:
    """id -> exact geometry of every object with at least one visible pixel."""
    visible = set(np.unique(scene.labels).tolist()) if scene.labels is not None else {o.id for o in scene.objects}
    return {o.id: true_geometry(scene, o, step_m) for o in scene.objects if o.id in visible}


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a (K, 2) polygon."""
    return float(abs(cv2.contourArea(np.asarray(poly, np.float32))))
