"""Blind intervals counted: how many objects passed the camera while no frame was usable.

Between the last usable frame (t_from) and the next (t_to) the belt moved `travel_mm`. An item's
centre could pass wholly unseen only within the stretch `travel_mm - seen_mm` (seen_mm: the view
plus one item length, since an item is detected once a little of it is in view); nothing can hide
when that is <= 0. For items spaced at a mean pitch (belt length per item, measured by the runner
as belt covered / items that arrived on it), the expected number of centres in that stretch is

    E[n] = unseen_stretch / pitch          (exact for any stationary spacing distribution)

Bounds: at most ceil(unseen_stretch / min_pitch) (no two items closer than the closest pair seen),
and, when the two seen items that bracket the stretch are known (`gap_mm` apart centre to centre),
at most floor(gap / min_pitch) - 1 items fit between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class BlindEstimate:
    """Unseen-object estimate of one blind interval."""

    unseen_mm: float       # belt stretch no usable frame covered (<= 0: nothing could pass unseen)
    unseen_est: float      # expected number of objects that passed unseen
    unseen_max: int        # upper bound from the closest spacing seen
    method: str            # "none" | "neighbours" | "stretch"


def estimate_unseen(travel_mm: float, seen_mm: float, pitch_mm: float, min_pitch_mm: float,
                    gap_mm: float | None = None) -> BlindEstimate:
    """Objects that passed unseen while the belt moved travel_mm (see the module docstring)."""
    unseen = travel_mm - seen_mm
    if unseen <= 0:
        return BlindEstimate(unseen, 0.0, 0, "none")
    pitch = max(pitch_mm, 1e-6)
    lo = max(min(min_pitch_mm, pitch), 1e-6)
    est = unseen / pitch
    most = math.ceil(unseen / lo)
    method = "stretch"
    if gap_mm is not None and gap_mm > 0:
        most = min(most, max(0, math.floor(gap_mm / lo + 1e-9) - 1))
        method = "stretch+neighbours"
    return BlindEstimate(unseen, est, max(most, math.ceil(est)), method)
