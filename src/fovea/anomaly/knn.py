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

k = 1 (PatchCore's patch scores) takes a faster exact path when the C kernel builds (`method="auto"`):
the bank's top-r principal axes P (r = 32) give the lower bound |P(x - b)|^2 + (|rest x| - |rest b|)^2
<= |x - b|^2 with r + 1 multiply-adds per pair instead of D; the kernel evaluates it in registers
(never storing the (N, M) matrix), seeds each query with its raster neighbours' nearest rows, and
computes exact float64 distances only for bank rows whose bound (less its rounding bound) can still
win. A query left with more than M / 4 candidates falls back to the GEMM path above. On real
PatchCore features this takes 1.9x (2k bank rows) to 2.8x (41k) less CPU than the GEMM path
(benchmarks/knn.py, docs/benchmarks/knn.md).
"""

from __future__ import annotations

import torch

from fovea.anomaly import _knn_native
from fovea.errors import ConfigError, DataError
from fovea.nn._cbuild import thread_pool

_U32 = float(torch.finfo(torch.float32).eps) / 2  # unit roundoff of float32


class BankIndex:
    """Exact k-NN over a fixed bank (M, D) float32.

    search(x (N, D), k) -> (distances (N, k) Euclidean ascending, indices (N, k) int64).
    min_distance(x (N, D)) -> (N,) distance to the nearest bank row.
    """

    def __init__(self, bank: torch.Tensor, query_tile: int = 1024, bank_tile: int = 512, extra: int = 3,
                 method: str = "auto", rank: int = 32, defer_cap: int | None = None):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ConfigError(f"BankIndex needs a non-empty (M, D) memory bank, got shape {tuple(bank.shape)}; "
                              "fit the model on at least one normal image first")
        if method not in ("auto", "lowrank", "gemm"):
            raise ConfigError(f"BankIndex method must be 'auto', 'lowrank' or 'gemm', got {method!r}")
        bank = bank.detach().float()
        self.original = bank.contiguous()
        self.method = method
        self.rank = max(1, min(int(rank), bank.shape[1]))
        self._lowrank: dict | None = None
        self.defer_cap = defer_cap  # low-rank: candidates past which a query takes the GEMM (None: M / 4)
        self.exact_evaluations = 0  # exact distances the low-rank path computed (statistics for benchmarks)
        self.deferred_rows = 0      # low-rank rows with too many candidates, searched by the GEMM instead
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
        if k == 1 and self._use_lowrank():
            return self._search_lowrank(x.detach().float())
        xc = (x.detach().float() - self.mean).contiguous()
        out_d = torch.empty(xc.shape[0], k)
        out_i = torch.empty(xc.shape[0], k, dtype=torch.long)
        for start in range(0, xc.shape[0], self.query_tile):
            q = xc[start:start + self.query_tile]
            d, i = self._search_tile(q, k)
            out_d[start:start + q.shape[0]], out_i[start:start + q.shape[0]] = d, i
        return out_d, out_i

    # --- low-rank bound + native row kernel (k = 1) ------------------------------------------------
    def _use_lowrank(self) -> bool:
        if self.method == "gemm":
            return False
        try:
            _knn_native.load()
        except (RuntimeError, OSError) as exc:
            if self.method == "lowrank":
                raise RuntimeError(f"BankIndex(method='lowrank') needs its C kernel: {exc}. "
                                   "Fix: install a C compiler (gcc) or use method='gemm'") from exc
            return False
        return True

    def _lowrank_state(self) -> dict:
        """Principal axes of the centred bank (float64) and the bank's low-rank coordinates plus the
        norm of its remainder, as float32 rows [z_1..z_r, |rest|] with their squared norms."""
        if self._lowrank is None:
            mean = self.original.double().mean(0)
            bc = self.original.double() - mean
            _, vecs = torch.linalg.eigh(bc.T @ bc)
            axes = vecs[:, -self.rank:].flip(1).contiguous()             # (D, r), largest variance first
            aug = self._augment(bc, axes)
            panels, panel_sq = _knn_native.pack_panels(aug)
            self._lowrank = {"mean": mean, "axes": axes, "panels": panels, "panel_sq": panel_sq,
                             "aug_max": float(aug.double().norm(dim=1).max())}
        return self._lowrank

    @staticmethod
    def _augment(centred: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
        """(n, D) float64 centred rows -> (n, r + 1) float32 [coordinates on the axes, norm of the rest]."""
        z = centred @ axes
        rest = (centred - z @ axes.T).norm(dim=1, keepdim=True)
        return torch.cat([z, rest], 1).float().contiguous()

    def _search_lowrank(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact 1-NN: |P(q - b)|^2 + (|rest q| - |rest b|)^2 <= |q - b|^2 (P: the bank's top-r principal
        axes, orthonormal) is evaluated in registers by the C kernel (r + 1 multiply-adds per pair instead
        of D), which computes exact distances only where that bound can still win."""
        st = self._lowrank_state()
        m = self.bank.shape[0]
        x = x.contiguous()
        q = self._augment(x.double() - st["mean"], st["axes"])          # (n, r + 1) float32
        qd = q.double()
        qsq = qd.pow(2).sum(1)
        # rounding bound: the kernel's expanded form (gamma_{r+1} per dot product, two roundings of the
        # sums) and the float32 rounding of both coordinate vectors, doubled for margin
        eps = (2.0 * (self.rank + 1) + 12.0) * _U32 * (qd.norm(dim=1) + st["aug_max"]).pow(2)
        # past m / 4 candidates (a few GEMM rows' worth of exact distances) a query takes the GEMM instead
        cap = max(16, m // 4) if self.defer_cap is None else self.defer_cap

        def part(a: int, b: int):
            return _knn_native.lbnn(q[a:b], st["panels"], st["panel_sq"], m, qsq[a:b], eps[a:b], x[a:b],
                                    self.original, cap)

        workers = min(torch.get_num_threads(), x.shape[0] // 256)
        if workers > 1:   # the kernel releases the GIL (ctypes): contiguous query ranges run side by side
            bounds = [round(i * x.shape[0] / workers) for i in range(workers + 1)]
            parts = list(thread_pool("knn", workers).map(part, bounds[:-1], bounds[1:]))
            idx = torch.cat([p[0] for p in parts])
            d2 = torch.cat([p[1] for p in parts])
            evals = sum(p[2] for p in parts)
            deferred = torch.cat([p[3] + a for p, a in zip(parts, bounds)])
        else:
            idx, d2, evals, deferred = part(0, x.shape[0])
        self.exact_evaluations += evals
        dist = d2.sqrt().float()[:, None]
        idx = idx[:, None]
        if deferred.numel():
            self.deferred_rows += int(deferred.numel())
            xc = (x[deferred] - self.mean).contiguous()
            for s in range(0, deferred.numel(), self.query_tile):
                rows = deferred[s:s + self.query_tile]
                dist[rows], idx[rows] = self._search_tile(xc[s:s + self.query_tile], 1)
        return dist, idx

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
