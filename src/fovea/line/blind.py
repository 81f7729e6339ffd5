"""Blind intervals counted: how many objects passed the camera while no frame was usable.

Between the last usable frame (t_from) and the next (t_to) the belt moved `travel_mm`. An item
can pass wholly unseen only if the unseen stretch `travel_mm - view_mm` is positive. Its count is
estimated from the spacing statistics of the items seen so far (median centre-to-centre pitch)
and, when the run knows them, the two seen items that bracket the unseen stretch:

- both neighbours known (the most upstream record at t_from and the most downstream record first
  seen at t_to, `gap_mm` apart centre to centre): E[n] = max(0, gap / pitch - 1), at most
  floor(gap / min_pitch) - 1 (no two items closer than the closest pair seen);
- otherwise: E[n] = unseen_stretch / pitch, at most ceil(unseen_stretch / min_pitch).
Without any pitch yet (nothing seen so far) the nominal pitch passed in is used.
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


def estimate_unseen(travel_mm: float, view_mm: float, pitch_mm: float, min_pitch_mm: float,
                    gap_mm: float | None = None) -> BlindEstimate:
    """Objects that passed unseen while the belt moved travel_mm (see the module docstring)."""
    unseen = travel_mm - view_mm
    if unseen <= 0:
        return BlindEstimate(unseen, 0.0, 0, "none")
    pitch = max(pitch_mm, 1e-6)
    lo = max(min(min_pitch_mm, pitch), 1e-6)
    if gap_mm is not None and gap_mm > 0:
        est = max(0.0, gap_mm / pitch - 1.0)
        most = max(0, math.floor(gap_mm / lo + 1e-9) - 1)
        return BlindEstimate(unseen, est, max(most, math.ceil(est)), "neighbours")
    est = unseen / pitch
    return BlindEstimate(unseen, est, max(math.ceil(unseen / lo), math.ceil(est)), "stretch")
