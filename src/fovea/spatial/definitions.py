"""The 40 question types: one written definition and one function each, shared by estimate and truth.

Every function takes `ObjectGeometry`s in the canonical frame (x right, y up, z away from the camera;
see `fovea.spatial.frame`). The same function computes the answer from lifted depth and the truth from
a generator's exact solids, so the two differ only by the measurement. The texts in `TYPES` are the
definitions docs/spatial.md lists.

Margins (qualitative types): a comparison d (positive = the predicate holds) is decided only when
|d| > margin; otherwise the answer is "about the same" (or the question is skipped), never yes/no.
- position (left/right: centre x; above/below: centre y; behind/front: centre z):
  margin = max(1.5 cm, 20 % of the smaller of the two objects' extents on that axis, 3 sigma_pair);
- width, height: margin = max(1 cm, 10 % of the larger value, 3 sqrt(2) sigma_pair);
- volume (bigger/smaller): margin = 30 % of the larger volume;
sigma_pair = sqrt(sigma_A^2 + sigma_B^2), the objects' depth-noise uncertainties.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fovea.spatial.language import clock_hour
from fovea.spatial.lift import ObjectGeometry


@dataclass(frozen=True)
class QType:
    """kind: predicate | choice | quantity | clock | among | count | fits | on_top; unit of the value."""

    name: str
    kind: str
    unit: str | None
    definition: str


# relation -> (key (function of one object), sign (+1: larger key means the predicate holds), family, axis)
RELATION_KEYS = {
    "left": (lambda g: g.centre[0], -1, "position", 0), "right": (lambda g: g.centre[0], 1, "position", 0),
    "above": (lambda g: g.centre[1], 1, "position", 1), "below": (lambda g: g.centre[1], -1, "position", 1),
    "behind": (lambda g: g.centre[2], 1, "position", 2), "front": (lambda g: g.centre[2], -1, "position", 2),
    "wider": (lambda g: g.size[0], 1, "size", 0), "thinner": (lambda g: g.size[0], -1, "size", 0),
    "taller": (lambda g: g.size[1], 1, "size", 1), "shorter": (lambda g: g.size[1], -1, "size", 1),
    "bigger": (lambda g: g.box_volume, 1, "volume", None), "smaller": (lambda g: g.box_volume, -1, "volume", None),
}
_REL_TEXT = {
    "left": "A's centre x is smaller than B's (x: the camera's right direction along the floor)",
    "right": "A's centre x is larger than B's",
    "above": "A's centre is higher above the support surface than B's (centre = middle of the upright bounding box)",
    "below": "A's centre is lower than B's",
    "behind": "A's centre is farther from the camera along the floor direction z than B's",
    "front": "A's centre is nearer to the camera along z than B's",
    "wider": "A's width (extent along x) is larger than B's",
    "thinner": "A's width (extent along x) is smaller than B's",
    "taller": "A's height (bottom to top, along y) is larger than B's",
    "shorter": "A's height is smaller than B's",
    "bigger": "A's bounding volume (minimum-area footprint rectangle x height) is larger than B's",
    "smaller": "A's bounding volume is smaller than B's",
}
_Q_TEXT = {
    "centre_distance": ("m", "Euclidean distance between the centres of the two objects' upright bounding boxes"),
    "gap_distance": ("m", "shortest 3D distance between the two objects' surfaces (0 when they touch)"),
    "vertical_distance": ("m", "|difference of the centres' heights above the support surface|"),
    "horizontal_distance": ("m", "distance between the centres projected on the support surface (x-z plane)"),
    "width": ("m", "extent of the object along x (the camera's right direction along the floor)"),
    "height": ("m", "extent along y: from the object's bottom (the surface it rests on) to its top"),
    "depth_extent": ("m", "extent along z (front to back, away from the camera)"),
    "distance_from_camera": ("m", "Euclidean distance from the camera's optical centre to the object's centre"),
    "elevation": ("m", "height of the object's centre above the support surface (floor or table top)"),
    "footprint_area": ("m2", "area of the object's footprint: its convex outline projected on the support surface"),
}
TYPES: dict[str, QType] = {}
for _r, _t in _REL_TEXT.items():
    TYPES[f"{_r}_predicate"] = QType(f"{_r}_predicate", "predicate", None, f"yes iff {_t}, by more than the margin")
    TYPES[f"{_r}_choice"] = QType(f"{_r}_choice", "choice", None, f"the object for which {_t.replace('A', 'it')}; "
                                  "'about the same' inside the margin")
for _q, (_u, _t) in _Q_TEXT.items():
    TYPES[_q] = QType(_q, "quantity", _u, _t)
TYPES["direction_clock"] = QType("direction_clock", "clock", "hour",
                                 "clock hour of B's centre seen from A's centre, facing +z (away from the camera): "
                                 "12 = straight away, 3 = right, 6 = toward the camera; nearest hour")
TYPES["closest_to"] = QType("closest_to", "among", None, "among 3-4 candidates, the one whose centre is nearest A's "
                            "centre; asked only when it beats the runner-up by max(3 cm, 10 %, 3 sigma)")
TYPES["farthest_from"] = QType("farthest_from", "among", None, "among 3-4 candidates, the one whose centre is "
                               "farthest from A's; asked only with a clear winner (as closest_to)")
TYPES["count"] = QType("count", "count", "count", "number of object masks carrying the name")
TYPES["fits_between"] = QType("fits_between", "fits", None,
                              "yes iff the shortest distance between A's and B's footprints exceeds C's smallest "
                              "footprint side (minimum-area rectangle) by more than max(1 cm, 10 % of that side, "
                              "3 sigma); no if it falls short by more; otherwise skipped")
TYPES["on_top_of"] = QType("on_top_of", "on_top", None,
                           "yes iff A rests on B: A's bottom is at B's top (within max(2 cm, 2 sigma)) and A's "
                           "footprint centre lies in B's footprint")


# ---- relations -------------------------------------------------------------------------------------
def relation(rel: str, a: ObjectGeometry, b: ObjectGeometry) -> tuple[float, float]:
    """(d, margin): d > 0 iff rel(A, B) holds (module doc for the margins)."""
    key, sign, family, axis = RELATION_KEYS[rel]
    va, vb = float(key(a)), float(key(b))
    d = sign * (va - vb)
    sp = float(np.hypot(a.sigma_m, b.sigma_m))
    if family == "position":
        m = max(0.015, 0.2 * min(a.size[axis], b.size[axis]), 3 * sp)
    elif family == "size":
        m = max(0.01, 0.1 * max(va, vb), 3 * np.sqrt(2) * sp)
    else:
        m = 0.3 * max(va, vb)
    return d, float(m)


def decide(d: float, margin: float) -> str:
    """'yes' / 'no' outside the margin, 'same' inside it."""
    return "same" if abs(d) <= margin else ("yes" if d > 0 else "no")


# ---- quantities --------------------------------------------------------------------------------------
def gap3d(a: ObjectGeometry, b: ObjectGeometry) -> float:
    """Shortest distance between the two objects' surface samples (exact; scikit-learn's KD-tree: scipy's
    cKDTree crashed the test process at this call after a long pytest session, reproducibly)."""
    from sklearn.neighbors import KDTree

    small, large = (a.points, b.points) if len(a.points) <= len(b.points) else (b.points, a.points)
    return float(KDTree(np.asarray(large, np.float64)).query(np.asarray(small, np.float64), k=1)[0].min())


def _seg_dist(p: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """(P,) distance of points (P, 2) to the nearest of segments s0->s1 (S, 2)."""
    v = s1 - s0
    t = np.clip(((p[:, None] - s0[None]) * v[None]).sum(-1) / np.maximum((v * v).sum(-1), 1e-18)[None], 0, 1)
    q = s0[None] + t[..., None] * v[None]
    return np.linalg.norm(p[:, None] - q, axis=-1).min(1)


def footprint_gap(a: ObjectGeometry, b: ObjectGeometry) -> float:
    """Shortest distance between the two footprint polygons (0 when they overlap)."""
    pa, pb = np.asarray(a.footprint, np.float64), np.asarray(b.footprint, np.float64)
    for p, poly in ((pa, pb), (pb, pa)):
        c = poly.astype(np.float32)
        if any(cv2.pointPolygonTest(c, (float(x), float(z)), False) >= 0 for x, z in p):
            return 0.0
    da = _seg_dist(pa, pb, np.roll(pb, -1, 0)).min()
    db = _seg_dist(pb, pa, np.roll(pa, -1, 0)).min()
    return float(min(da, db))


def quantity(qtype: str, a: ObjectGeometry, b: ObjectGeometry | None = None,
             camera: np.ndarray | None = None) -> float:
    """The value of a quantity type (metres, square metres or a clock hour)."""
    if qtype == "centre_distance":
        return float(np.linalg.norm(a.centre - b.centre))
    if qtype == "gap_distance":
        return gap3d(a, b)
    if qtype == "vertical_distance":
        return float(abs(a.centre[1] - b.centre[1]))
    if qtype == "horizontal_distance":
        return float(np.hypot(*(a.centre - b.centre)[[0, 2]]))
    if qtype == "width":
        return float(a.size[0])
    if qtype == "height":
        return float(a.size[1])
    if qtype == "depth_extent":
        return float(a.size[2])
    if qtype == "distance_from_camera":
        return float(np.linalg.norm(a.centre - camera))
    if qtype == "elevation":
        return float(a.centre[1])
    if qtype == "footprint_area":
        return a.footprint_area
    if qtype == "direction_clock":
        dx, _, dz = b.centre - a.centre
        return float(clock_hour(dx, dz))
    raise KeyError(qtype)


def among(qtype: str, a: ObjectGeometry, candidates: list[ObjectGeometry]) -> tuple[int, float, float]:
    """(winner id, lead over the runner-up, margin) of closest_to / farthest_from by centre distance."""
    d = np.array([np.linalg.norm(c.centre - a.centre) for c in candidates])
    order = np.argsort(d if qtype == "closest_to" else -d)
    best, second = d[order[0]], d[order[1]]
    sig = max(np.hypot(a.sigma_m, c.sigma_m) for c in candidates)
    return candidates[order[0]].id, float(abs(second - best)), float(max(0.03, 0.1 * best, 3 * sig))


def fits(c: ObjectGeometry, a: ObjectGeometry, b: ObjectGeometry) -> tuple[float, float]:
    """(d, margin) of 'C fits between A and B': d = footprint gap(A, B) - C's smallest footprint side."""
    side = float(min(c.rect_sides))
    sig = float(np.sqrt(a.sigma_m**2 + b.sigma_m**2 + c.sigma_m**2))
    return footprint_gap(a, b) - side, float(max(0.01, 0.1 * side, 3 * sig))


def on_top(a: ObjectGeometry, b: ObjectGeometry) -> tuple[bool, bool]:
    """(A rests on B, clear): clear is False for a near tie (A's bottom near B's top AND A's centre near
    B's footprint edge) - such pairs are skipped."""
    tol = max(0.02, 2 * a.sigma_m)
    level = abs(a.lo[1] - b.hi[1]) <= tol
    inside = cv2.pointPolygonTest(b.footprint.astype(np.float32), (float(a.centre[0]), float(a.centre[2])), True)
    yes = level and inside >= 0
    clear = not (abs(a.lo[1] - b.hi[1]) <= 2 * tol and abs(inside) < max(0.02, 0.1 * float(min(b.rect_sides))))
    return bool(yes), bool(clear)
