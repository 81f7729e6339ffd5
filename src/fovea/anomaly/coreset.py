"""Greedy k-center coreset selection (Sener & Savarese 2018), as PatchCore uses it.

`greedy_k_center_reference` is the plain loop: every step computes the squared distance of all N
points to the newest centre and keeps each point's minimum; the next centre is the first point with
the largest minimum. Its distances are defined to the bit: the sequential float64 sum over the D
coordinates of ((double)x_j - (double)c_j)^2 (`_exact_sq`, a `cumsum` scan). A float32 matrix-vector
expansion |x|^2 - 2 x.c + |c|^2 is not a definition: BLAS rounds rows differently depending on the
kernel and on a row's position (measured: the last M mod 4 rows of a product), and near-ties among
400k points then pick different centres on different machines.

`greedy_k_center` selects the SAME indices with far less work. A point's distance to a new centre is
computed only when cheap lower bounds cannot rule out that it shrinks: the triangle inequality over
points grouped by their nearest centre (C path) and a bound from a few principal coordinates plus
the norm of the rest (both paths), each with margins far above the float rounding, so a skipped
point's minimum could not have changed; the distances it does compute use the reference's exact
formula, so every minimum and every argmax is the reference's. The C path
(`fovea.anomaly._coreset_native`, compiled on first use) runs the whole loop in one call; the
pure-torch path (no compiler) streams the bound of every point per step.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

ProgressFn = Callable[[int, int], None]
log = logging.getLogger(__name__)
# absolute margin of the float32 principal-coordinate bound, in units of max |x - mean|^2 (its float32
# rounding error is below ~1e-5 of that for bound dimensions up to 64)
BOUND_MARGIN = 6e-5


def _exact_sq(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances (N,) float64 of the rows of x (N, D) float32 to c (D,): the sequential sum over j of
    ((double)x_j - (double)c_j)^2 (cumsum is a left-to-right scan), one rounding per operation."""
    diff = x.double() - c.double()
    return (diff * diff).cumsum(1)[:, -1]


def greedy_k_center_reference(x: torch.Tensor, n_select: int, start: int) -> torch.Tensor:
    """The plain greedy loop: x (N, D) float32 -> indices (n_select,), first index `start`."""
    n = x.shape[0]
    selected = torch.empty(n_select, dtype=torch.long)
    current = int(start)
    min_d = torch.full((n,), float("inf"), dtype=torch.float64)
    for step in range(n_select):
        selected[step] = current
        torch.minimum(min_d, _exact_sq(x, x[current]), out=min_d)
        current = int(torch.argmax(min_d))  # first maximum on ties (documented)
    return selected


def _principal_basis(x: torch.Tensor, m: int, sample: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and the top-m principal directions (D, m), float64, from an evenly strided sample.
    Only the pruning bound uses them, so any orthonormal basis keeps the result exact."""
    step = max(1, x.shape[0] // sample)
    xs = x[::step].double()
    mu = xs.mean(0)
    _, _, vh = torch.linalg.svd(xs - mu, full_matrices=False)
    return mu, vh[:m].T.contiguous()


def principal_coordinates(x: torch.Tensor, m: int, chunk: int = 65536):
    """x (N, D) -> (z (N, m) float32 principal coordinates, rest (N,) float32 norm of the remaining
    component, scale2 = max |x - mean|^2), computed in float64 blocks of `chunk` rows.
    For any two points |x - y|^2 >= |z_x - z_y|^2 + (rest_x - rest_y)^2 (Pythagoras on the orthonormal
    split, then the reverse triangle inequality on the rest)."""
    mu, basis = _principal_basis(x, m)
    zs, rests, scale2 = [], [], 0.0
    for a in range(0, x.shape[0], chunk):
        xc = x[a:a + chunk].double() - mu
        z = xc @ basis
        sq = xc.pow(2).sum(1)
        rests.append((sq - z.pow(2).sum(1)).clamp_min(0.0).sqrt().float())
        zs.append(z.float())
        scale2 = max(scale2, float(sq.max()))
    return torch.cat(zs).contiguous(), torch.cat(rests).contiguous(), scale2


def greedy_k_center(x: torch.Tensor, n_select: int, start: int, bound_dim: int = 24,
                    progress: ProgressFn | None = None, native: bool | None = None) -> torch.Tensor:
    """Exact greedy k-center: x (N, D) float32, first centre `start` -> indices (n_select,), equal to
    `greedy_k_center_reference(x, n_select, start)`.

    native: True = the C loop (error if it cannot be built), False = the pure-torch loop, None = C when
    it builds, else torch (logged once). bound_dim: principal coordinates in the pruning bound.
    """
    x = x.contiguous().float()
    n, dim = x.shape
    n_select = max(1, min(int(n_select), n))
    m = max(1, min(int(bound_dim), dim - 1)) if dim > 1 else 1
    z, rest, scale2 = principal_coordinates(x, m)
    eps = BOUND_MARGIN * scale2
    if native is not False:
        try:
            from fovea.anomaly._coreset_native import greedy_k_center_native, load

            load()
        except (RuntimeError, OSError) as exc:
            if native:
                raise
            log.warning("native greedy k-center unavailable (%s); using the torch loop", exc)
        else:
            return greedy_k_center_native(x, n_select, start, z, rest, eps, progress)[0]
    return _greedy_k_center_torch(x, n_select, start, z, rest, eps, progress)


def _greedy_k_center_torch(x: torch.Tensor, n_select: int, start: int, z: torch.Tensor, rest: torch.Tensor,
                           eps: float, progress: ProgressFn | None) -> torch.Tensor:
    """The pruned loop in torch ops: per step the bound of every point (z (N, m), rest (N,)), then the exact
    distance (`_exact_sq`) of the points whose bound does not rule out a smaller minimum."""
    n = x.shape[0]
    zsq = z.pow(2).sum(1)
    min_d = torch.empty(n, dtype=torch.float64)
    for a in range(0, n, 65536):
        min_d[a:a + 65536] = _exact_sq(x[a:a + 65536], x[start])
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = current = int(start)
    for step in range(1, n_select):
        current = int(torch.argmax(min_d))
        selected[step] = current
        zc, rc = z[current], rest[current]
        bound = zsq - 2.0 * (z @ zc) + (zc @ zc) + (rest - rc).pow(2) - eps  # float32, margin eps
        idx = torch.nonzero(bound.double() < min_d * (1.0 + 1e-9)).flatten()
        if idx.numel():
            min_d[idx] = torch.minimum(min_d[idx], _exact_sq(x[idx], x[current]))
        if progress is not None and step % 256 == 0:
            progress(step, n_select)
    if progress is not None:
        progress(n_select, n_select)
    return selected
