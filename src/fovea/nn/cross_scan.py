"""VMamba cross-scan / cross-merge: flatten a feature map into K directional sequences and back.

`cross_scan` turns (B, C, H, W) into (B, K, C, L), L = H*W, one sequence per scan direction;
`cross_merge` re-aligns K sequences of (B, K, C, L) to row-major order and sums them. Merge is
the exact adjoint of scan (<scan(x), y> == <x, merge(y)>), because both are made of index
permutations only (flatten, transpose, flip) and merge sums where scan copies.

Orders of the official `CrossScanF` (VMamba `csm_triton.py`), index t of sequence k for a pixel
(h, w) of an H x W map:

- ``"cross2d"`` (scans=0, every released VMamba/SparX model): k0 row-major t = h*W + w,
  k1 column-major t = w*H + h, k2 = k0 reversed, k3 = k1 reversed.
  A 2x3 map gives k0 [0..5], k1 [0,3,1,4,2,5], k2 [5..0], k3 [5,2,4,1,3,0].
- ``"unidi"`` (scans=1): four copies of the row-major order.
- ``"bidi"`` (scans=2): row-major, row-major, reversed, reversed.

Plain tensor ops, so autograd, TorchScript tracing and ONNX export go straight through; the
gradient of scan is merge and the gradient of merge is scan.
"""

from __future__ import annotations

import torch

from fovea.errors import ConfigError

SCAN_MODES = ("cross2d", "unidi", "bidi")
_MODE_ALIASES = {0: "cross2d", 1: "unidi", 2: "bidi"}


def _mode(scans) -> str:
    mode = _MODE_ALIASES.get(scans, scans)
    if mode not in SCAN_MODES:
        raise ConfigError(
            f"cross_scan: unknown scans={scans!r}. Fix: use one of {SCAN_MODES} (or 0, 1, 2 as in "
            "VMamba's cross_scan_fn)."
        )
    return mode


def _check_map(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ConfigError(
            f"{name}: expected a feature map of shape (B, C, H, W), got shape {tuple(x.shape)}. "
            "Fix: pass channels-first 4-d input (permute channels-last maps first)."
        )


def cross_scan(x: torch.Tensor, scans="cross2d") -> torch.Tensor:
    """Flatten (B, C, H, W) into four directional sequences (B, 4, C, H*W) (orders: module doc)."""
    _check_map(x, "cross_scan")
    mode = _mode(scans)
    row = x.flatten(2)  # (B, C, L) row-major
    if mode == "unidi":
        return row.unsqueeze(1).expand(-1, 4, -1, -1).contiguous()
    if mode == "bidi":
        rev = row.flip(-1)
        return torch.stack([row, row, rev, rev], dim=1)
    col = x.transpose(2, 3).flatten(2)  # (B, C, L) column-major: t = w*H + h
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, H: int, W: int, scans="cross2d") -> torch.Tensor:
    """Re-align four sequences (B, 4, C, H*W) to row-major order and sum them: (B, C, H*W).

    Also accepts (B, 4, C, H, W) as VMamba's `CrossMergeF` does. Adjoint of `cross_scan`.
    """
    mode = _mode(scans)
    if y.dim() == 5:
        y = y.flatten(3)
    if y.dim() != 4 or y.shape[1] != 4 or y.shape[3] != H * W:
        raise ConfigError(
            f"cross_merge: expected shape (B, 4, C, {H}*{W}={H * W}), got {tuple(y.shape)}. "
            "Fix: pass the (B, 4, C, L) output of the scan with the H, W used by cross_scan."
        )
    B, _, C, L = y.shape
    if mode == "unidi":
        return y.sum(1)
    if mode == "bidi":
        return y[:, 0] + y[:, 1] + (y[:, 2] + y[:, 3]).flip(-1)
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)  # column-major (B, C, L): index w*H + h
    return row + col.view(B, C, W, H).transpose(2, 3).reshape(B, C, L)
