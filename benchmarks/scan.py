"""Selective scan at VMamba-T stage-1 size: fast backends vs the reference loop, same run.

    .venv/bin/python benchmarks/scan.py [--repeats 5] [--threads 1] [--no-official-style]

Cases (batch 1, K=4 directions, L=56*56=3136, S4D-real A, dt bias so softplus(bias) ~ 1e-3..0.1,
inputs as in the fact sheet): VMamba-T s1l8 (D=96, N=1), T s2l5 / SparX-T (D=192, N=1), vanilla
v0-T (D=192, N=16). Prints medians of forward (no_grad) and forward+backward for the reference
loop, the native kernel and the chunked PyTorch scan, the speed-ups, the max abs error of values
and gradients vs the reference, and whether a cumprod-and-divide chunked scan (the "easy"
formulation) stays finite. For the N=1 cases it also times a loop that indexes per-step slices of
materialised (Bt, KD, L, N) tensors like VMamba's `selective_scan_torch` (its backward is
quadratic in L; at N=16 it takes ~13 min, so it is skipped there). Each timing is reported as the
median wall time and the median process CPU time; on a shared machine CPU time is the steadier.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fovea.nn.selective_scan import native_available, selective_scan, selective_scan_ref

CASES = (
    ("VMamba-T s1l8 stage 1", 96, 1),
    ("VMamba-T s2l5 / SparX-T stage 1", 192, 1),
    ("VMamba-T v0 stage 1", 192, 16),
)


def make_inputs(Bt=1, K=4, Dg=96, N=1, L=3136, seed=0):
    """u ~ N(0,1), delta ~ 0.5 N(0,1), bias = inverse-softplus of dt in [1e-3, 0.1], A = -(1..N)."""
    g = torch.Generator().manual_seed(seed)
    KD = K * Dg
    lo, hi = torch.log(torch.tensor(1e-3)), torch.log(torch.tensor(0.1))
    dt = torch.exp(torch.rand(KD, generator=g) * (hi - lo) + lo)
    return dict(
        u=torch.randn(Bt, KD, L, generator=g),
        delta=0.5 * torch.randn(Bt, KD, L, generator=g),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(KD, 1),
        B=torch.randn(Bt, K, N, L, generator=g),
        C=torch.randn(Bt, K, N, L, generator=g),
        D=torch.ones(KD),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )


def official_style_loop(u, delta, A, B, C, D, delta_bias):
    """Like VMamba's `selective_scan_torch`: materialised deltaA/deltaB_u, per-step indexing."""
    KD, L = u.shape[1], u.shape[2]
    dt = F.softplus(delta + delta_bias[:, None])
    Bx = B.repeat_interleave(KD // B.shape[1], 1)
    Cx = C.repeat_interleave(KD // C.shape[1], 1)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", dt, A))
    dBu = torch.einsum("bdl,bdnl,bdl->bdln", dt, Bx, u)
    h = u.new_zeros(u.shape[0], KD, A.shape[1])
    ys = []
    for i in range(L):
        h = dA[:, :, i] * h + dBu[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", h, Cx[:, :, :, i]))
    return torch.stack(ys, -1) + u * D[:, None]


def cumprod_divide_scan(u, delta, A, B, C, D, delta_bias, chunk=64):
    """The unstable "easy" chunked form: h = exp(A ts) * cumsum(dt u B / exp(A ts)) + carry."""
    KD, L = u.shape[1], u.shape[2]
    dt = F.softplus(delta + delta_bias[:, None])
    Bx = B.repeat_interleave(KD // B.shape[1], 1)
    Cx = C.repeat_interleave(KD // C.shape[1], 1)
    h = u.new_zeros(u.shape[0], KD, A.shape[1], 1)
    ys = []
    for s in range(0, L, chunk):
        ts = dt[:, :, None, s:s + chunk].cumsum(-1)
        Ats = torch.exp(A[None, :, :, None] * ts)
        x = dt[:, :, None, s:s + chunk] * u[:, :, None, s:s + chunk] * Bx[..., s:s + chunk]
        hs = Ats * (x / Ats).cumsum(-1) + Ats * h
        ys.append((hs * Cx[..., s:s + chunk]).sum(2))
        h = hs[..., -1:]
    return torch.cat(ys, -1) + u * D[:, None]


def _median_time(fn, repeats):
    """(median wall seconds, median process-CPU seconds) over `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _fwd_bwd(fn, inputs, w):
    xs = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**xs)
    (y * w).sum().backward()
    return y.detach(), {k: v.grad for k, v in xs.items()}


def bench_scan(cases=CASES, repeats=5, ref_repeats=3, official_style=True, L=3136) -> dict:
    """Time reference vs fast scans per case; returns {case: {metric: value}}.

    Times are (wall, cpu) second pairs; speed-ups are (wall ratio, cpu ratio) vs the reference loop.
    """
    backends = ["native", "chunked"] if native_available() else ["chunked"]
    results = {}
    for name, Dg, N in cases:
        inp = make_inputs(Dg=Dg, N=N, L=L)
        w = torch.randn(inp["u"].shape, generator=torch.Generator().manual_seed(1))
        r = {"K*D": 4 * Dg, "N": N, "L": L}
        with torch.no_grad():
            selective_scan(**inp)  # warm-up (builds the native kernel once)
            r["ref_fwd_s"] = _median_time(lambda: selective_scan_ref(**inp), ref_repeats)
            y_ref = selective_scan_ref(**inp)
            for b in backends:
                r[f"{b}_fwd_s"] = _median_time(lambda: selective_scan(**inp, backend=b), repeats)
                r[f"{b}_fwd_speedup"] = _ratio(r["ref_fwd_s"], r[f"{b}_fwd_s"])
            easy = cumprod_divide_scan(**inp)
            r["cumprod_divide_finite"] = bool(torch.isfinite(easy).all())
        r["ref_fwdbwd_s"] = _median_time(lambda: _fwd_bwd(selective_scan_ref, inp, w), 1)  # slow: once
        y_ref, g_ref = _fwd_bwd(selective_scan_ref, inp, w)
        for b in backends:
            fn = lambda **kw: selective_scan(**kw, backend=b)  # noqa: E731
            r[f"{b}_fwdbwd_s"] = _median_time(lambda: _fwd_bwd(fn, inp, w), repeats)
            r[f"{b}_fwdbwd_speedup"] = _ratio(r["ref_fwdbwd_s"], r[f"{b}_fwdbwd_s"])
            y, g = _fwd_bwd(fn, inp, w)
            r[f"{b}_max_abs_err_y"] = (y - y_ref).abs().max().item()
            r[f"{b}_max_rel_err_grad"] = max(
                ((g[k] - g_ref[k]).abs().max() / g_ref[k].abs().max()).item() for k in g
            )
        if official_style and N == 1:
            with torch.no_grad():
                r["official_fwd_s"] = _median_time(lambda: official_style_loop(**inp), ref_repeats)
            r["official_fwdbwd_s"] = _median_time(lambda: _fwd_bwd(official_style_loop, inp, w), 1)
            for b in backends:
                r[f"{b}_fwd_speedup_vs_official"] = _ratio(r["official_fwd_s"], r[f"{b}_fwd_s"])
                r[f"{b}_fwdbwd_speedup_vs_official"] = _ratio(r["official_fwdbwd_s"], r[f"{b}_fwdbwd_s"])
        results[name] = r
    return results


def _ratio(a, b):
    return tuple(x / y for x, y in zip(a, b))


def _fmt(t):
    return f"{t[0] * 1e3:9.1f} ms (cpu {t[1] * 1e3:8.1f})"


def _fmtx(x):
    return f"{x[0]:6.1f}x (cpu {x[1]:6.1f}x)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-official-style", action="store_true", help="skip the official-style loop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native kernel: {native_available()}")
    res = bench_scan(repeats=args.repeats, ref_repeats=args.ref_repeats,
                     official_style=not args.no_official_style)
    for name, r in res.items():
        print(f"\n{name}: K*D={r['K*D']} N={r['N']} L={r['L']}   (wall median, cpu median)")
        print(f"  reference loop  fwd {_fmt(r['ref_fwd_s'])}  fwd+bwd {_fmt(r['ref_fwdbwd_s'])}")
        if "official_fwd_s" in r:
            print(f"  official-style  fwd {_fmt(r['official_fwd_s'])}  "
                  f"fwd+bwd {_fmt(r['official_fwdbwd_s'])}")
        for b in ("native", "chunked"):
            if f"{b}_fwd_s" not in r:
                continue
            print(f"  {b:8s}        fwd {_fmt(r[f'{b}_fwd_s'])}  fwd+bwd {_fmt(r[f'{b}_fwdbwd_s'])}")
            print(f"      speed-up vs reference loop: fwd {_fmtx(r[f'{b}_fwd_speedup'])}  "
                  f"fwd+bwd {_fmtx(r[f'{b}_fwdbwd_speedup'])}")
            if f"{b}_fwd_speedup_vs_official" in r:
                print(f"      speed-up vs official-style: fwd {_fmtx(r[f'{b}_fwd_speedup_vs_official'])}  "
                      f"fwd+bwd {_fmtx(r[f'{b}_fwdbwd_speedup_vs_official'])}")
            print(f"      max|y - ref| {r[f'{b}_max_abs_err_y']:.1e}   max relative gradient error "
                  f"{r[f'{b}_max_rel_err_grad']:.1e}")
        print(f"  cumprod-and-divide chunked scan finite: {r['cumprod_divide_finite']}")


if __name__ == "__main__":
    main()
