"""Exact k-nearest-neighbour search of a memory bank, blocked for cache, with a float32 guard.

PatchCore scores every test patch (1,024 per 256 px image) by its distance to the nearest of M
memory-bank rows (M = 2k-40k after the coreset). The work is one (N, M) matrix of squared distances
in the expanded form |x|^2 - 2 x.b + |b|^2, i.e. one GEMM, followed by a row-wise selection.
`BankIndex` does that in tiles of (query_tile x bank_tile) so each distance block stays in cache
while it is reduced, and never holds more than one block (memory is bounded, whatever M is).

The expanded form loses precision by cancellation when |x| and |b| are large compared with
|x - b| (float32 features far from the origin). Two measures keep the result exact:

1. The bank is stored centred on its mean (queries are centred the same way), which leaves every
   distance unchanged and makes |x|, |b| as small as the data allows.
2. Each row keeps `k + extra` candidates from the expanded form; their distances are then
   recomputed directly as sum((x - b)^2) (no cancellation), and a row is accepted only if the
   worst kept candidate is provably farther than the k-th recomputed one: any bank row that was not
   kept has an expanded distance at least the worst kept one's, and the expanded form errs by at most
   tol = 2 (D + 2) u (|x| + max|b|)^2 (u = float32 unit roundoff, D = feature length; the standard
   dot-product rounding bound). Rows that fail the test (near ties, heavy cancellation) are searched
   again with direct differences over the whole bank.

The result equals a slow float64 loop's (indices, distances to float32 rounding); ties are ordered
by bank index.
"""

from __future__ import annotations

import torch

from fovea.errors import ConfigError, DataError

_U32 = float(torch.finfo(torch.float32).eps) / 2  # unit roundoff of float32


class BankIndex:
    """Exact k-NN over a fixed bank (M, D) float32.

    search(x (N, D), k) -> (distances (N, k) Euclidean ascending, indices (N, k) int64).
    min_distance(x (N, D)) -> (N,) distance to the nearest bank row.
    """

    def __init__(self, bank: torch.Tensor, query_tile: int = 1024, bank_tile: int = 512, extra: int = 3):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ConfigError(f"BankIndex needs a non-empty (M, D) memory bank, got shape {tuple(bank.shape)}; "
                              "fit the model on at least one normal image first")
        bank = bank.detach().float()
        self.mean = bank.double().mean(0).float()
        self.bank = (bank - self.mean).contiguous()                 # (M, D), centred
        self.sq = self.bank.pow(2).sum(1)                            # (M,)
        self.max_norm = float(self.sq.max().sqrt())
        self.query_tile = int(query_tile)
        self.bank_tile = int(bank_tile)
        self.extra = int(extra)
        self.rechecked_rows = 0  # rows the guard sent to the direct search (statistics for benchmarks)

    def __len__(self) -> int:
        return self.bank.shape[0]

    def min_distance(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) Euclidean distance to the nearest bank row."""
        return self.search(x, 1)[0][:, 0]

    def search(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D), k -> exact k nearest bank rows: distances (N, k) ascending, indices (N, k)."""
        m, dim = self.bank.shape
        if x.ndim != 2 or x.shape[1] != dim:
            raise DataError(f"k-NN queries must be (N, {dim}) to match the memory bank, got shape "
                            f"{tuple(x.shape)}; use features of the backbone and layers the bank was built with")
        k = max(1, min(int(k), m))
        xc = (x.detach().float() - self.mean).contiguous()
        out_d = torch.empty(xc.shape[0], k)
        out_i = torch.empty(xc.shape[0], k, dtype=torch.long)
        for start in range(0, xc.shape[0], self.query_tile):
            q = xc[start:start + self.query_tile]
            d, i = self._search_tile(q, k)
            out_d[start:start + q.shape[0]], out_i[start:start + q.shape[0]] = d, i
        return out_d, out_i

    def _candidates(self, q: torch.Tensor, kc: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q (n, D) -> the kc smallest expanded values |b|^2 - 2 q.b per row (n, kc) and their indices."""
        best_v = best_i = None
        for start in range(0, self.bank.shape[0], self.bank_tile):
            b = self.bank[start:start + self.bank_tile]
            block = torch.addmm(self.sq[start:start + b.shape[0]][None, :], q, b.T, beta=1.0, alpha=-2.0)
            v, i = block.topk(min(kc, block.shape[1]), dim=1, largest=False, sorted=False)
            i += start
            if best_v is None:
                best_v, best_i = v, i
            else:
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
                best_v, pos = v.topk(min(kc, v.shape[1]), dim=1, largest=False, sorted=False)
                best_i = i.gather(1, pos)
        return best_v, best_i

    def _block(self, q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """q (n, D) -> (n, stop - start) expanded values |b|^2 - 2 q.b for bank rows start:stop."""
        return torch.addmm(self.sq[start:stop][None, :], q, self.bank[start:stop].T, beta=1.0, alpha=-2.0)

    def _two_smallest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (n, D) -> per row the smallest expanded value (n,), its bank index (n,) and the second
        smallest value (n,) (+inf when the bank has one row).

        Pass 1 keeps only each bank tile's row minimum (`amin`, ~20x cheaper than a minimum with its
        index); pass 2 recomputes, for each row, only the tile that holds its minimum and takes the
        index and the runner-up there. Extra GEMM work: one tile per row (bank_tile / M of pass 1).
        """
        m = self.bank.shape[0]
        starts = list(range(0, m, self.bank_tile))
        tile_min = torch.stack([self._block(q, s, min(s + self.bank_tile, m)).amin(1) for s in starts], 1)
        best_tile = tile_min.argmin(1)                                # (n,)
        others = tile_min.scatter(1, best_tile[:, None], float("inf")).amin(1)  # best of the other tiles
        b1 = torch.empty(q.shape[0])
        b2 = torch.empty(q.shape[0])
        i1 = torch.empty(q.shape[0], dtype=torch.long)
        for t in torch.unique(best_tile).tolist():
            rows = torch.nonzero(best_tile == t).flatten()
            s = starts[t]
            block = self._block(q[rows], s, min(s + self.bank_tile, m))
            v1, j1 = block.min(dim=1)
            block.scatter_(1, j1[:, None], float("inf"))
            b1[rows], i1[rows], b2[rows] = v1, j1 + s, torch.minimum(block.amin(1), others[rows])
        return b1, i1, b2

    def _search_tile(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        m, dim = self.bank.shape
        if k == 1:
            _, cand, worst = self._two_smallest(q)
            cand = cand[:, None]
            d = _direct_sq(q, self.bank, cand)                        # (n, 1), no cancellation
            i = cand
        else:
            kc = min(k + self.extra, m)
            approx, cand = self._candidates(q, kc)                   # (n, kc)
            worst = approx.amax(1)
            d, i = _sort_by_distance_then_index(_direct_sq(q, self.bank, cand), cand)
            d, i = d[:, :k], i[:, :k]
            if kc == m:
                worst = torch.full_like(worst, float("inf"))           # every bank row is a candidate
        # every non-candidate's expanded value is >= worst, and the expanded form errs by at most tol
        qsq = q.pow(2).sum(1)
        tol = 2.0 * (dim + 2) * _U32 * (qsq.sqrt() + self.max_norm).pow(2)
        floor = worst + qsq - tol
        unsure = torch.nonzero(floor <= d[:, -1] * (1.0 + 2.0 * (dim + 2) * _U32)).flatten()
        if unsure.numel():
            self.rechecked_rows += int(unsure.numel())
            d[unsure], i[unsure] = self._direct_search(q[unsure], k, d[unsure, -1], tol[unsure])
        return d.clamp_min(0.0).sqrt(), i

    def _direct_search(self, q: torch.Tensor, k: int, upper: torch.Tensor, tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k nearest for a few rows q (n, D) whose guard failed -> squared distances (n, k), indices.

        upper (n,): an exact squared distance that the true k-th nearest cannot exceed (the k-th of the
        re-checked candidates); tol (n,): the expanded form's error bound. Every bank row that could be
        nearer has an expanded value below upper + tol, so only those are recomputed directly.
        """
        expanded = self._block(q, 0, self.bank.shape[0]) + q.pow(2).sum(1, keepdim=True)   # (n, M)
        out_d = torch.empty(q.shape[0], k)
        out_i = torch.empty(q.shape[0], k, dtype=torch.long)
        slack = 1.0 + 2.0 * (q.shape[1] + 2) * _U32
        for r in range(q.shape[0]):
            cand = torch.nonzero(expanded[r] - tol[r] <= upper[r] * slack).flatten()[None]   # (1, c), c >= k
            d, i = _sort_by_distance_then_index(_direct_sq(q[r:r + 1], self.bank, cand), cand)
            out_d[r], out_i[r] = d[0, :k], i[0, :k]
        return out_d, out_i


def _direct_sq(q: torch.Tensor, bank: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """q (n, D), bank (M, D), cand (n, c) -> sum((q - bank[cand])^2) (n, c), without the expanded form."""
    return (bank[cand] - q[:, None, :]).pow(2).sum(-1)


def _sort_by_distance_then_index(d: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (distance, index): index order first, then a stable sort by distance."""
    i, pos = i.sort(dim=1)
    d = d.gather(1, pos)
    d, pos = d.sort(dim=1, stable=True)
    return d, i.gather(1, pos)
