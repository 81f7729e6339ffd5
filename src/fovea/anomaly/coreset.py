"""Greedy k-center coreset selection (Sener & Savarese 2018), as PatchCore uses it.

`greedy_k_center_reference` is the plain loop: every step computes the distance of all N points to
the newest centre, so it reads the whole (N, D) matrix per step and costs O(N k D), bound by memory
bandwidth (a 42 MB matrix-vector product takes ~14 ms here, times k = 8,192 steps).

`greedy_k_center` selects the SAME indices with far less memory traffic. Before computing a
point's exact distance to the new centre it checks a lower bound built from a few principal
coordinates and the norm of the rest; a point whose bound is not below its current nearest-centre
distance cannot change and is skipped. The exact distances it does compute use the same float32
expansion |x|^2 - 2 x.c + |c|^2 as the reference, bit for bit (`_rows_dot`), and the bound carries a
margin for float32 rounding, so the selected indices equal the reference's (tested on random,
clustered, tied and real features). Cost per step: (bound_dim + 4) floats per point streamed plus
the exact rows of the few percent of points that pass.
"""

from __future__ import annotations

from typing import Callable

import torch

ProgressFn = Callable[[int, int], None]


def _first_argmax(values: torch.Tensor) -> int:
    """Index of the first maximum (torch.argmax's documented tie rule, made explicit)."""
    return int(torch.argmax(values))


def greedy_k_center_reference(x: torch.Tensor, n_select: int, start: int) -> torch.Tensor:
    """The plain greedy loop: x (N, D) float32 -> indices (n_select,), first index `start`."""
    n = x.shape[0]
    sq = x.pow(2).sum(1)
    selected = torch.empty(n_select, dtype=torch.long)
    current = int(start)
    min_d = torch.full((n,), float("inf"))
    for step in range(n_select):
        selected[step] = current
        d = sq - 2.0 * (x @ x[current]) + sq[current]
        torch.minimum(min_d, d, out=min_d)
        current = _first_argmax(min_d)
    return selected


def _principal_basis(x: torch.Tensor, m: int, sample: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and the top-m principal directions (D, m) of x, from an evenly strided sample.
    Only the pruning bound uses them, so any orthonormal basis keeps the result exact."""
    step = max(1, x.shape[0] // sample)
    xs = x[::step].double()
    mu = xs.mean(0)
    _, _, vh = torch.linalg.svd(xs - mu, full_matrices=False)
    return mu.float(), vh[:m].T.contiguous().float()


def _rows_dot(x: torch.Tensor, idx: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x[idx] @ c, bit for bit as the rows of the full product x @ c.

    BLAS matrix-vector kernels round the last (M mod 4) rows of an M-row product differently
    (measured: a gathered 7-row product differs in the last bit from the same rows of the full
    product), so the gathered block is padded to a multiple of 16 rows with a repeated row.
    """
    pad = (-idx.numel()) % 16
    if pad:
        idx = torch.cat([idx, idx[:1].expand(pad)])
    out = x[idx] @ c
    return out[: out.numel() - pad] if pad else out


def greedy_k_center(x: torch.Tensor, n_select: int, start: int, bound_dim: int = 24,
                    progress: ProgressFn | None = None) -> torch.Tensor:
    """Exact greedy k-center: x (N, D) float32, first centre `start` -> indices (n_select,), equal to
    `greedy_k_center_reference(x, n_select, start)`.

    Each step first computes a cheap lower bound of every point's squared distance to the new
    centre c: with z = P^T (x - mu) the coordinates on the top `bound_dim` principal directions and
    r = |x - mu - P z| the norm of the rest, |x - c|^2 >= |z_x - z_c|^2 + (r_x - r_c)^2 (Pythagoras,
    then the reverse triangle inequality on the orthogonal rest). A point whose bound is not below
    its current nearest-centre distance (plus a float32 rounding margin) cannot change; the exact
    distance is computed only for the others (~1-5 % of points on PatchCore features). Per step this
    streams (bound_dim + 4) floats per point instead of D.
    """
    x = x.contiguous().float()
    n, dim = x.shape
    n_select = max(1, min(int(n_select), n))
    sq = x.pow(2).sum(1)
    m = max(1, min(int(bound_dim), dim - 1)) if dim > 1 else 1
    mu, basis = _principal_basis(x, m)
    xc = x - mu
    z = (xc @ basis).contiguous()                       # (N, m)
    zsq = z.pow(2).sum(1)
    rest = (xc.pow(2).sum(1) - zsq).clamp_min(0.0).sqrt()
    del xc
    # Bound on the float32 rounding error of an expanded squared distance (dot products of length D),
    # applied to both the exact distances and the bound.
    tol = 4.0 * dim * torch.finfo(torch.float32).eps * float(sq.max())
    min_d = torch.full((n,), float("inf"))
    selected = torch.empty(n_select, dtype=torch.long)
    current = int(start)
    for step in range(n_select):
        selected[step] = current
        c = x[current]
        if step == 0:
            torch.minimum(min_d, sq - 2.0 * (x @ c) + sq[current], out=min_d)
        else:
            zc, rc = z[current], rest[current]
            bound = zsq - 2.0 * (z @ zc) + (zc @ zc) + (rest - rc).pow(2)
            idx = torch.nonzero(bound < min_d + tol).flatten()
            if idx.numel():
                d = sq[idx] - 2.0 * _rows_dot(x, idx, c) + sq[current]
                min_d[idx] = torch.minimum(min_d[idx], d)
        current = int(torch.argmax(min_d))
        if progress is not None and step % 256 == 0:
            progress(step, n_select)
    if progress is not None:
        progress(n_select, n_select)
    return selected
