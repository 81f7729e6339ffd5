"""PatchCore (Roth et al., CVPR 2022): a memory bank of locally aware patch features.

Fit: patch features from two mid-level stages, 3x3 neighbourhood average pooling, the coarser map
upsampled to the finer one and concatenated; a greedy k-center coreset (chosen on a random
projection) keeps `coreset_ratio` of the patches. Score: distance of each test patch to its
nearest memory-bank patch; the image score is the largest patch distance, reweighted as in the
paper by how isolated its nearest bank patch is among that patch's own neighbours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.coreset import greedy_k_center
from fovea.anomaly.features import FeatureExtractor
from fovea.anomaly.knn import BankIndex
from fovea.engine.runtime import plain_eager


@dataclass
class PatchCoreConfig:
    backbone: str = "efficientnet_lite0"
    layers: tuple[int, ...] = (2, 3)
    coreset_ratio: float = 0.1
    num_neighbors: int = 9
    projection_dim: int = 128
    pool_size: int = 3
    chunk_size: int = 4096  # memory-bank rows per distance block: bounds memory at (patches x chunk)
    seed: int = 0
    weights: str | None = "default"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _cross_term(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) |y|^2 - 2 x.y in one addmm: squared distance minus the row constant |x|^2."""
    return torch.addmm(y.pow(2).sum(1)[None, :], x, y.T, beta=1.0, alpha=-2.0)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances via one matmul (export-friendly).

    Not clamped: rounding can make an entry slightly negative; callers clamp what they keep.
    """
    return _cross_term(x, y) + x.pow(2).sum(1, keepdim=True)


def chunked_nearest(x: torch.Tensor, bank: torch.Tensor, k: int, chunk_size: int):
    """k nearest bank rows of each row of x, computing (N, chunk) distance blocks at a time.

    Returns (distances (N, k), indices (N, k)), Euclidean, ascending. k = 1 uses min (one pass)
    instead of a top-k selection; only the kept distances are clamped at 0 and square-rooted.
    """
    best_d = None
    best_i = None
    for start in range(0, bank.shape[0], chunk_size):
        block = squared_distances(x, bank[start:start + chunk_size])
        if k == 1:
            d, i = block.min(dim=1, keepdim=True)
        else:
            d, i = block.topk(min(k, block.shape[1]), dim=1, largest=False)
        i = i + start
        if best_d is None:
            best_d, best_i = d, i
        elif k == 1:
            closer = d < best_d
            best_d, best_i = torch.where(closer, d, best_d), torch.where(closer, i, best_i)
        else:
            cat_d = torch.cat([best_d, d], 1)
            cat_i = torch.cat([best_i, i], 1)
            kk = min(k, cat_d.shape[1])
            best_d, pos = cat_d.topk(kk, dim=1, largest=False)
            best_i = cat_i.gather(1, pos)
    return best_d.clamp_min(0.0).sqrt(), best_i


def chunked_min_distance(x: torch.Tensor, bank: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Euclidean distance of each row of x to its nearest bank row: (N, D), (M, D) -> (N,).

    Values only (a plain min-reduction is ~3x cheaper than min with indices): |x|^2 is added after
    the reduction, since it is constant along a row.
    """
    best = None
    for start in range(0, bank.shape[0], chunk_size):
        m = _cross_term(x, bank[start:start + chunk_size]).amin(dim=1)
        best = m if best is None else torch.minimum(best, m)
    return (best + x.pow(2).sum(1)).clamp_min(0.0).sqrt()


def greedy_coreset(features: torch.Tensor, n_select: int, projection_dim: int = 128, seed: int = 0,
                   progress=None) -> torch.Tensor:
    """Greedy k-center selection (Sener & Savarese) on a Gaussian random projection.

    features (N, D) -> indices (n_select,). Exact greedy (each step adds the point farthest from
    the chosen set), computed by `fovea.anomaly.coreset.greedy_k_center`, which prunes the points a
    new centre cannot change and selects the same indices as the plain loop.
    """
    n = features.shape[0]
    n_select = max(1, min(int(n_select), n))
    gen = torch.Generator().manual_seed(seed)
    x = features.float()
    if projection_dim and projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=gen) / projection_dim**0.5
        x = x @ proj
    start = int(torch.randint(n, (1,), generator=gen))
    return greedy_k_center(x, n_select, start, progress=progress)


class PatchCore(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in raw distance units."""

    def __init__(self, config: PatchCoreConfig | None = None, **overrides):
        super().__init__()
        self.config = config or PatchCoreConfig(**overrides)
        self.extractor = FeatureExtractor(self.config.backbone, self.config.layers, self.config.weights)
        dim = sum(self.extractor.channels)
        self.register_buffer("memory_bank", torch.zeros(0, dim))
        self.__dict__["_index"] = (None, None)  # (bank key, BankIndex): plain attribute, not state

    def bank_index(self) -> BankIndex:
        """The exact k-NN index of the current memory bank, rebuilt when the bank changes."""
        bank = self.memory_bank
        key = (bank.data_ptr(), bank._version, tuple(bank.shape))
        if self._index[0] != key:
            self.__dict__["_index"] = (key, BankIndex(bank))
        return self._index[1]

    def _nearest(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) -> k nearest bank rows (distances (N, k), indices (N, k)): the guarded exact index in
        eager CPU code; the plain chunked expansion while tracing or exporting (one graph, no branches)."""
        if plain_eager(x):
            return self.bank_index().search(x, k)
        return chunked_nearest(x, self.memory_bank, k, self.config.chunk_size)

    @property
    def embedding_dim(self) -> int:
        return sum(self.extractor.channels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w) locally aware patch features at the finest chosen stage."""
        feats = self.extractor(x)
        k = self.config.pool_size
        # zero-padded average, as the reference implementation (torch AvgPool2d default): on the grass
        # texture benchmark count_include_pad=False made noisy border patches dominate (AUROC 0.39 vs 0.88)
        feats = [F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=True) for f in feats]
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(feats, 1)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor | dict], progress=None) -> None:
        """Build the memory bank from normal images. batches yield (B,3,H,W) or dicts with "image"."""
        self.eval()
        chunks = []
        for batch in batches:
            x = batch["image"] if isinstance(batch, dict) else batch
            e = self.embed(x)
            chunks.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
        if not chunks:
            raise ValueError("PatchCore.fit got no training images")
        patches = torch.cat(chunks)
        n_keep = max(1, int(round(patches.shape[0] * self.config.coreset_ratio)))
        if n_keep < patches.shape[0]:
            idx = greedy_coreset(patches, n_keep, self.config.projection_dim, self.config.seed, progress)
            patches = patches[idx]
        self.memory_bank = patches.contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(x)
        b, c, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(-1, c)
        if plain_eager(flat):
            patch_scores = self.bank_index().min_distance(flat).reshape(b, h * w)
        else:
            patch_scores = chunked_min_distance(flat, self.memory_bank, self.config.chunk_size).reshape(b, h * w)
        scores = self._reweighted_scores(flat.reshape(b, h * w, c), patch_scores)
        maps = patch_scores.reshape(b, 1, h, w)
        maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores, maps

    def _reweighted_scores(self, feats, patch_scores) -> torch.Tensor:
        """Paper eq. 7: s = (1 - exp(s*) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*."""
        max_scores, max_pos = patch_scores.max(1)  # (B,)
        b = feats.shape[0]
        test_patch = feats[torch.arange(b), max_pos]  # (B, C)
        _, nn_index = self._nearest(test_patch, 1)
        bank_nn = self.memory_bank[nn_index[:, 0]]  # (B, C) = m*, the test patch's nearest bank patch
        k = min(self.config.num_neighbors, self.memory_bank.shape[0])
        _, support = self._nearest(bank_nn, k)  # (B, k), m* first
        support_feats = self.memory_bank[support]  # (B, k, C)
        d = (support_feats - test_patch[:, None, :]).pow(2).sum(-1).clamp_min(0).sqrt()  # (B, k)
        weight = 1.0 - torch.softmax(d, dim=1)[:, 0]
        return weight * max_scores
