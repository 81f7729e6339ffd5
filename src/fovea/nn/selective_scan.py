"""S6 selective scan (Mamba / VMamba) with grouped B, C: a reference loop and fast CPU paths.

Interface of the official `selective_scan_fn` as VMamba calls it (fp32 state, "oflex"):

    u, delta: (Bt, K*D, L)     A: (K*D, N), already negative (A = -exp(A_logs))
    B, C: (Bt, K, N, L)        channel c reads group c // D (one group per scan direction)
    D, delta_bias: (K*D,)      dt = softplus(delta + delta_bias) if delta_softplus

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t      (h: (Bt, K*D, N), h_{-1} = 0)
    y_t = <C_t, h_t> + D * u_t                             -> y (Bt, K*D, L) in u's dtype

Backends (all compute in fp32 and return the same numbers up to rounding):

- ``"native"``: a small C kernel (`_scan_native`) compiled with the system C compiler on first
  use and loaded through ctypes: the sequential recurrence over L, vectorised over the N states,
  threads over channels, and a hand-written backward (reverse recurrence). O(L*D*N) work,
  O(L*N) scratch per thread; stable because every step multiplies by exp(dt*A) in (0, 1].
- ``"chunked"``: pure PyTorch, ~2*sqrt(L) vectorised steps per scan (`_scan_torch`), segment
  sums inside chunks (never a division by a cumulative decay), hand-written backward.
- ``"ref"``: `selective_scan_ref`, the plain loop over L (tests and benchmarks only).
- ``"auto"``: native on CPU when it builds, else chunked; chunked without the custom
  autograd Function while tracing / exporting to ONNX.

`FOVEA_SCAN_BACKEND` (environment) overrides ``"auto"``.

Why the native kernel is the default (benchmarks/scan.py, docs/benchmarks/scan.md): the work is
O(L*D*N) multiply-adds plus one exp per (t, n); a compiled loop does exactly that, while PyTorch
either pays per-op overhead on each of the L steps (reference) or reorganises the scan into a few
large passes that touch every element several times (chunked, a few x faster than the reference
only). `torch.compile` was not tried: it needs a C++ toolchain as well, and tracing the loop over L
unrolls it into a graph of thousands of steps per sequence length.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from fovea.errors import ConfigError
from fovea.nn import _scan_torch

BACKENDS = ("auto", "native", "chunked", "ref")


def selective_scan_ref(
    u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend="ref"
) -> torch.Tensor:
    """The plain loop over L, written to be obviously right (tests and benchmarks only).

    Per-step tensors come from `unbind`, not indexing, so autograd stays linear in L.
    """
    _check(u, delta, A, B, C, D, delta_bias)
    dtype = u.dtype
    if B.dim() == 3:  # ungrouped (Bt, N, L)
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    cdt = _compute_dtype(u)
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bx = B.repeat_interleave(KD // K, dim=1)  # (Bt, KD, N, L): channel c reads group c // D
    Cx = C.repeat_interleave(KD // K, dim=1)
    h = u.new_zeros(Bt, KD, N)
    ys = []
    for dt_t, u_t, B_t, C_t in zip(delta.unbind(-1), u.unbind(-1), Bx.unbind(-1), Cx.unbind(-1)):
        h = torch.exp(dt_t[..., None] * A) * h + (dt_t * u_t)[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u
    return y.to(dtype)


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/fp16/bf16 inputs (state kept in fp32); fp64 stays fp64 (gradcheck)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


class _SelectiveScanFn(torch.autograd.Function):
    """Custom autograd around a backend's fused forward/backward (inputs saved, h recomputed)."""

    @staticmethod
    def forward(ctx, impl, u, delta, A, B, C, D, bias, softplus):
        ctx.impl, ctx.softplus = impl, softplus
        ctx.save_for_backward(u, delta, A, B, C, D, bias)
        return impl.forward(u, delta, A, B, C, D, bias, softplus)

    @staticmethod
    def backward(ctx, gy):
        u = ctx.saved_tensors[0]
        grads = ctx.impl.backward(gy.contiguous().to(u.dtype), *ctx.saved_tensors, ctx.softplus)
        return (None, *grads, None)


def selective_scan(
    u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend="auto"
) -> torch.Tensor:
    """Grouped S6 selective scan; shapes and math in the module docstring. Returns (Bt, K*D, L)."""
    if backend not in BACKENDS:
        raise ConfigError(f"selective_scan: unknown backend={backend!r}. Fix: use one of {BACKENDS}.")
    if backend == "auto":
        backend = os.environ.get("FOVEA_SCAN_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ConfigError(
                f"FOVEA_SCAN_BACKEND={backend!r} is not a scan backend. Fix: unset it or use one of "
                f"{BACKENDS}."
            )
    if backend == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, delta_bias, delta_softplus)
    _check(u, delta, A, B, C, D, delta_bias)
    dtype = u.dtype
    if B.dim() == 3:  # ungrouped (Bt, N, L): one group for all channels
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    KD = u.shape[1]
    cdt = _compute_dtype(u)
    f32 = [t.to(cdt).contiguous() for t in (u, delta, A, B, C)]
    Dv = D.to(cdt).contiguous() if D is not None else u.new_zeros(KD, dtype=cdt)
    bias = delta_bias.to(cdt).contiguous() if delta_bias is not None else u.new_zeros(KD, dtype=cdt)
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    if backend == "auto" and tracing:
        return _scan_torch.plain_forward(*f32, Dv, bias, bool(delta_softplus)).to(dtype)
    impl = _scan_torch
    if backend in ("auto", "native") and u.device.type == "cpu" and cdt == torch.float32:
        native = _native_impl(required=backend == "native")
        if native is not None:
            impl = native
    elif backend == "native":
        raise ConfigError(
            f"selective_scan: backend='native' computes in fp32 on CPU, got {u.dtype} on {u.device}. "
            "Fix: use backend='auto' or 'chunked'."
        )
    y = _SelectiveScanFn.apply(impl, *f32, Dv, bias, bool(delta_softplus))
    return y.to(dtype)


_NATIVE = {"tried": False, "impl": None, "error": None}


def _native_impl(required: bool):
    """The compiled kernel module, or None (with one warning) when it cannot be built."""
    if not _NATIVE["tried"]:
        _NATIVE["tried"] = True
        try:
            from fovea.nn import _scan_native

            _scan_native.load()
            _NATIVE["impl"] = _scan_native
        except Exception as exc:  # noqa: BLE001 - any build/load failure means: use the fallback
            _NATIVE["error"] = exc
            if not required:
                warnings.warn(
                    f"fovea selective_scan: native CPU kernel unavailable ({exc}); using the slower "
                    "pure-PyTorch chunked scan. Fix: install a C compiler (gcc/clang) or set "
                    "FOVEA_SCAN_BACKEND=chunked to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if _NATIVE["impl"] is None and required:
        raise ConfigError(
            f"selective_scan: backend='native' is unavailable: {_NATIVE['error']}. Fix: install a C "
            "compiler (gcc/clang, or set CC) or use backend='chunked'."
        )
    return _NATIVE["impl"]


def native_available() -> bool:
    """True when the compiled CPU kernel builds and loads on this machine."""
    return _native_impl(required=False) is not None


def _check(u, delta, A, B, C, D, delta_bias) -> None:
    def bad(msg):
        raise ConfigError(
            f"selective_scan: {msg}. Fix: follow the shapes in fovea.nn.selective_scan's docstring."
        )

    if u.dim() != 3 or delta.shape != u.shape:
        bad(f"u and delta must both be (Bt, K*D, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    Bt, KD, L = u.shape
    if A.dim() != 2 or A.shape[0] != KD or A.is_complex():
        bad(f"A must be real (K*D={KD}, N), got {tuple(A.shape)} {A.dtype}")
    N = A.shape[1]
    if B.shape != C.shape or B.dim() not in (3, 4):
        bad(f"B and C must both be (Bt, K, N, L), got {tuple(B.shape)} and {tuple(C.shape)}")
    K = B.shape[1] if B.dim() == 4 else 1
    if B.shape[0] != Bt or B.shape[-2:] != (N, L) or KD % K:
        bad(f"B, C {tuple(B.shape)} do not fit u {tuple(u.shape)} and A {tuple(A.shape)}: need (Bt, K, N, L) "
            f"with K dividing K*D")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (KD,):
            bad(f"{name} must be (K*D={KD},), got {tuple(t.shape)}")
