"""Native CPU selective-scan kernel: C source compiled on first use, loaded with ctypes.

Why this route (measured in benchmarks/scan.py): the S6 recurrence is cheap arithmetic
(O(L*D*N)) but strictly sequential in L, so PyTorch pays its per-op overhead on every step or
reorganises the work into larger vectorised passes (`_scan_torch`); a compiled loop does neither.
A plain C shared library needs no PyTorch headers, so it compiles in about a second with the
system compiler (`CC`, else gcc/cc/clang), unlike a `torch.utils.cpp_extension` build. The .so is
cached under `$FOVEA_CACHE_DIR` (default `~/.cache/fovea/scan`), keyed by source, flags,
compiler and CPU; when no compiler works, `selective_scan` falls back to the chunked PyTorch scan.

Threads: ctypes releases the GIL, so channel (forward) or direction-group (backward) ranges run
on a small thread pool of `torch.get_num_threads()` workers. Inputs must be finite (the kernel is
built with -ffast-math so expf/log1pf vectorise through the C library's vector math).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from fovea.nn._cbuild import build_shared, thread_pool, compiler as _compiler  # noqa: F401  (tests call _compiler)

C_SOURCE = r"""/* fovea selective scan: native CPU kernel (fp32), loaded through ctypes by _scan_native.py.
 *
 * Per channel c (of Bt*K*Dg) and state n:
 *   dt_t = softplus(delta_t + bias_c)                    (or delta_t + bias_c)
 *   h_t[n] = exp(dt_t * A[c,n]) * h_{t-1}[n] + dt_t * u_t * B_t[n]
 *   y_t    = sum_n C_t[n] * h_t[n] + D_c * u_t
 * B and C come transposed to (Bt, K, L, N) so the N states of one step are contiguous.
 * The transcendental functions are evaluated in separate, dependency-free loops (vectorised
 * with -ffast-math through the compiler's vector math library); the recurrence itself is a
 * multiply-add chain. Every step multiplies by exp(dt*A) in (0, 1] for dt >= 0 and A <= 0, so
 * nothing overflows and nothing is divided.
 *
 * Backward (same channel, reverse time), gy = dLoss/dy:
 *   gh_t = C_t gy_t + a_{t+1} gh_{t+1}
 *   dL/d(dt_t A_n) = gh_t[n] a_t[n] h_{t-1}[n],  dB_t += gh_t dt_t u_t,  dC_t += gy_t h_t
 *   du_t = dt_t sum_n gh_t[n] B_t[n] + D gy_t, d dt_t = sum_n (A_n dla_t[n] + gh_t[n] B_t[n] u_t)
 * The forward states of the channel are recomputed into an (L, N) scratch buffer first.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef int64_t i64;

#define INLINE static inline __attribute__((always_inline))

INLINE float softplus1(float z) {
    /* log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)) */
    float e = expf(-fabsf(z));
    return fmaxf(z, 0.0f) + log1pf(e);
}

/* dt (L) and a = exp(dt * A) (L, N) of one channel: loops without dependencies (vectorised). */
INLINE void prepare(const float *delta, float bias, int softplus, const float *A, i64 L, i64 N,
                    float *dt, float *a) {
    if (softplus) {
        for (i64 t = 0; t < L; t++) dt[t] = softplus1(delta[t] + bias);
    } else {
        for (i64 t = 0; t < L; t++) dt[t] = delta[t] + bias;
    }
    if (N == 1) {
        float A0 = A[0];
        for (i64 t = 0; t < L; t++) a[t] = expf(dt[t] * A0);
    } else {
        for (i64 t = 0; t < L; t++)
            for (i64 n = 0; n < N; n++) a[t * N + n] = expf(dt[t] * A[n]);
    }
}

/* Forward recurrence of one channel; writes y (L) and, if hs != NULL, all states (L + 1, N). */
INLINE void recur(const float *restrict u, const float *restrict dt, const float *restrict a,
                  const float *restrict Bg, const float *restrict Cg, float Dc, i64 L, const i64 N,
                  float *restrict h, float *restrict y, float *restrict hs) {
    for (i64 n = 0; n < N; n++) h[n] = 0.0f;
    if (hs)
        for (i64 n = 0; n < N; n++) hs[n] = 0.0f; /* row 0 = h_{-1}; h_t goes to row t + 1 */
    for (i64 t = 0; t < L; t++) {
        float ut = u[t], dtu = dt[t] * ut, acc = 0.0f;
        const float *at = a + t * N, *bt = Bg + t * N, *ct = Cg + t * N;
        for (i64 n = 0; n < N; n++) {
            h[n] = at[n] * h[n] + dtu * bt[n];
            acc += ct[n] * h[n];
        }
        if (hs)
            for (i64 n = 0; n < N; n++) hs[(t + 1) * N + n] = h[n];
        if (y) y[t] = acc + Dc * ut;
    }
}

static void recur_any(const float *u, const float *dt, const float *a, const float *Bg,
                      const float *Cg, float Dc, i64 L, i64 N, float *h, float *y, float *hs) {
    /* constant N lets the compiler unroll/vectorise the state loop for the common sizes */
    if (N == 1) recur(u, dt, a, Bg, Cg, Dc, L, 1, h, y, hs);
    else if (N == 4) recur(u, dt, a, Bg, Cg, Dc, L, 4, h, y, hs);
    else if (N == 16) recur(u, dt, a, Bg, Cg, Dc, L, 16, h, y, hs);
    else recur(u, dt, a, Bg, Cg, Dc, L, N, h, y, hs);
}


/* d_state 1 (VMamba v2, SparX): one state per channel makes the recurrence a single latency-bound
 * multiply-add chain, so CB channels of one direction group run interleaved (independent chains,
 * B_t and C_t shared). Scratch: dt, a, x = dt*u per channel, (CB, L) each; hs (CB, L + 1). */
#define CB 8

INLINE void fwd1_block(const float *restrict *u, float *restrict *y, const float *restrict dt,
                       const float *restrict a, const float *restrict Bg, const float *restrict Cg,
                       const float *restrict Dc, i64 L, const int nb) {
    float h[CB] = {0};
    (void)dt;
    for (i64 t = 0; t < L; t++) {
        const float bt = Bg[t], ct = Cg[t];
        for (int j = 0; j < nb; j++) {
            h[j] = a[j * L + t] * h[j] + dt[j * L + t] * u[j][t] * bt;
            y[j][t] = ct * h[j] + Dc[j] * u[j][t];
        }
    }
}

INLINE void hs1_block(const float *restrict *u, const float *restrict dt, const float *restrict a,
                      const float *restrict Bg, float *restrict hs, i64 L, const int nb) {
    float h[CB] = {0};
    for (int j = 0; j < nb; j++) hs[j * (L + 1)] = 0.0f;
    for (i64 t = 0; t < L; t++) {
        const float bt = Bg[t];
        for (int j = 0; j < nb; j++) {
            h[j] = a[j * L + t] * h[j] + dt[j * L + t] * u[j][t] * bt;
            hs[j * (L + 1) + t + 1] = h[j];
        }
    }
}

INLINE void bwd1_block(const float *restrict *u, const float *restrict *gy, float *restrict *du,
                       float *restrict *dd, const float *restrict dt, const float *restrict a,
                       const float *restrict hs, const float *restrict Bg, const float *restrict Cg,
                       const float *restrict Ac, const float *restrict Dc, float *restrict dBg,
                       float *restrict dCg, float *restrict dAc, float *restrict dDc, i64 L,
                       const int nb) {
    float gh[CB] = {0}, dA[CB] = {0}, dD[CB] = {0};
    for (i64 t = L - 1; t >= 0; t--) {
        const float bt = Bg[t], ct = Cg[t];
        float sC = 0.0f, sB = 0.0f;
        for (int j = 0; j < nb; j++) {
            const float g = gy[j][t], ut = u[j][t], dtt = dt[j * L + t], at = a[j * L + t];
            const float ghn = gh[j] + ct * g;
            const float dla = ghn * at * hs[j * (L + 1) + t];
            const float gb = ghn * bt;
            sC += g * hs[j * (L + 1) + t + 1];
            sB += ghn * dtt * ut;
            du[j][t] = dtt * gb + Dc[j] * g;
            dd[j][t] = dla * Ac[j] + gb * ut;
            dA[j] += dla * dtt;
            dD[j] += g * ut;
            gh[j] = ghn * at;
        }
        dCg[t] += sC;
        dBg[t] += sB;
    }
    for (int j = 0; j < nb; j++) { dAc[j] += dA[j]; dDc[j] += dD[j]; }
}

/* Channels [c0, c1) of the flat (Bt * KD) range. Returns 0, or 1 when out of memory. */
int fovea_scan_fwd(const float *u, const float *delta, const float *A, const float *B,
                   const float *C, const float *D, const float *bias, float *y, i64 Bt, i64 K,
                   i64 Dg, i64 N, i64 L, int softplus, i64 c0, i64 c1) {
    (void)Bt;
    i64 KD = K * Dg;
    i64 S = N == 1 ? CB : 1; /* channels per block */
    float *dt = malloc(sizeof(float) * L * S), *a = malloc(sizeof(float) * L * N * S),
          *h = malloc(sizeof(float) * N);
    if (!dt || !a || !h) { free(dt); free(a); free(h); return 1; }
    if (N == 1) {
        for (i64 idx = c0; idx < c1;) {
            i64 b = idx / KD, c = idx % KD, k = c / Dg;
            int nb = (int)(c1 - idx < CB ? c1 - idx : CB);
            if ((k + 1) * Dg - c < nb) nb = (int)((k + 1) * Dg - c); /* stay inside the group */
            const float *us[CB], *Bg = B + (b * K + k) * L, *Cg = C + (b * K + k) * L;
            float *ys[CB], Ds[CB];
            for (int j = 0; j < nb; j++) {
                us[j] = u + (idx + j) * L;
                ys[j] = y + (idx + j) * L;
                Ds[j] = D[c + j];
                prepare(delta + (idx + j) * L, bias[c + j], softplus, A + c + j, L, 1, dt + j * L, a + j * L);
            }
            if (nb == CB) fwd1_block(us, ys, dt, a, Bg, Cg, Ds, L, CB);
            else fwd1_block(us, ys, dt, a, Bg, Cg, Ds, L, nb);
            idx += nb;
        }
        free(dt); free(a); free(h);
        return 0;
    }
    for (i64 idx = c0; idx < c1; idx++) {
        i64 b = idx / KD, c = idx % KD, k = c / Dg;
        const float *Bg = B + (b * K + k) * L * N, *Cg = C + (b * K + k) * L * N;
        prepare(delta + idx * L, bias[c], softplus, A + c * N, L, N, dt, a);
        recur_any(u + idx * L, dt, a, Bg, Cg, D[c], L, N, h, y + idx * L, NULL);
    }
    free(dt); free(a); free(h);
    return 0;
}

INLINE void reverse(const float *restrict u, const float *restrict delta, const float *restrict gy,
                    const float *restrict dt, const float *restrict a, const float *restrict hs,
                    const float *restrict Bg, const float *restrict Cg, const float *restrict Ac,
                    float Dc, float bias, int softplus, i64 L, const i64 N, float *restrict gh,
                    float *restrict du, float *restrict ddelta, float *restrict dAc,
                    float *restrict dBg, float *restrict dCg, float *restrict dDc,
                    float *restrict dbc) {
    float dD = 0.0f;
    for (i64 n = 0; n < N; n++) gh[n] = 0.0f;
    for (i64 t = L - 1; t >= 0; t--) {
        const float g = gy[t], ut = u[t], dtt = dt[t], dtu = dtt * ut;
        const float *at = a + t * N, *bt = Bg + t * N, *ct = Cg + t * N;
        const float *ht = hs + (t + 1) * N, *hp = hs + t * N; /* h_t, h_{t-1} */
        float *dbt = dBg + t * N, *dct = dCg + t * N;
        float sB = 0.0f, sA = 0.0f;
        for (i64 n = 0; n < N; n++) {
            float ghn = gh[n] + ct[n] * g;
            float dla = ghn * at[n] * hp[n];
            dct[n] += g * ht[n];
            dbt[n] += ghn * dtu;
            sB += ghn * bt[n];
            sA += dla * Ac[n];
            dAc[n] += dla * dtt;
            gh[n] = ghn * at[n];
        }
        dD += g * ut;
        du[t] = dtt * sB + Dc * g;
        ddelta[t] = sA + sB * ut; /* d loss / d dt_t; chain through softplus below */
    }
    if (softplus) {
        for (i64 t = 0; t < L; t++) ddelta[t] *= 1.0f / (1.0f + expf(-(delta[t] + bias)));
    }
    float sb = 0.0f;
    for (i64 t = 0; t < L; t++) sb += ddelta[t];
    *dDc += dD;
    *dbc += sb;
}

/* Groups [g0, g1) of the flat (Bt * K) range; each group owns its dB, dC slices, so groups can
 * run in parallel. dA, dD, dbias are per batch element: (Bt, KD, N), (Bt, KD), (Bt, KD), zeroed
 * by the caller, as are dB, dC. */
int fovea_scan_bwd(const float *gy, const float *u, const float *delta, const float *A,
                   const float *B, const float *C, const float *D, const float *bias, float *du,
                   float *ddelta, float *dA, float *dB, float *dC, float *dD, float *dbias, i64 Bt,
                   i64 K, i64 Dg, i64 N, i64 L, int softplus, i64 g0, i64 g1) {
    (void)Bt;
    i64 KD = K * Dg;
    i64 S = N == 1 ? CB : 1; /* channels per block */
    float *dt = malloc(sizeof(float) * L * S), *a = malloc(sizeof(float) * L * N * S),
          *hs = malloc(sizeof(float) * (L + 1) * N * S), *h = malloc(sizeof(float) * N),
          *gh = malloc(sizeof(float) * N);
    if (!dt || !a || !hs || !h || !gh) { free(dt); free(a); free(hs); free(h); free(gh); return 1; }
    for (i64 grp = g0; grp < g1 && N == 1; grp++) {
        i64 b = grp / K, k = grp % K;
        for (i64 c = k * Dg; c < (k + 1) * Dg;) {
            int nb = (int)((k + 1) * Dg - c < CB ? (k + 1) * Dg - c : CB);
            i64 idx = b * KD + c;
            const float *us[CB], *gys[CB];
            float *dus[CB], *dds[CB], Ds[CB];
            for (int j = 0; j < nb; j++) {
                us[j] = u + (idx + j) * L;
                gys[j] = gy + (idx + j) * L;
                dus[j] = du + (idx + j) * L;
                dds[j] = ddelta + (idx + j) * L;
                Ds[j] = D[c + j];
                prepare(delta + (idx + j) * L, bias[c + j], softplus, A + c + j, L, 1, dt + j * L, a + j * L);
            }
#define BLK(NB) hs1_block(us, dt, a, B + grp * L, hs, L, NB); \
            bwd1_block(us, gys, dus, dds, dt, a, hs, B + grp * L, C + grp * L, A + c, Ds, dB + grp * L, \
                       dC + grp * L, dA + idx, dD + idx, L, NB)
            if (nb == CB) { BLK(CB); } else { BLK(nb); }
#undef BLK
            for (int j = 0; j < nb; j++) {
                float *ddj = dds[j], sb = 0.0f;
                const float *dj = delta + (idx + j) * L, bj = bias[c + j];
                if (softplus)
                    for (i64 t = 0; t < L; t++) ddj[t] *= 1.0f / (1.0f + expf(-(dj[t] + bj)));
                for (i64 t = 0; t < L; t++) sb += ddj[t];
                dbias[idx + j] += sb;
            }
            c += nb;
        }
    }
    for (i64 grp = g0; grp < g1 && N != 1; grp++) {
        i64 b = grp / K, k = grp % K;
        const float *Bg = B + grp * L * N, *Cg = C + grp * L * N;
        float *dBg = dB + grp * L * N, *dCg = dC + grp * L * N;
        for (i64 c = k * Dg; c < (k + 1) * Dg; c++) {
            i64 idx = b * KD + c;
            prepare(delta + idx * L, bias[c], softplus, A + c * N, L, N, dt, a);
            recur_any(u + idx * L, dt, a, Bg, Cg, D[c], L, N, h, NULL, hs);
#define REV(NN) reverse(u + idx * L, delta + idx * L, gy + idx * L, dt, a, hs, Bg, Cg, A + c * N, \
                        D[c], bias[c], softplus, L, NN, gh, du + idx * L, ddelta + idx * L,     \
                        dA + idx * N, dBg, dCg, dD + idx, dbias + idx)
            if (N == 1) REV(1);
            else if (N == 4) REV(4);
            else if (N == 16) REV(16);
            else REV(N);
#undef REV
        }
    }
    free(dt); free(a); free(hs); free(h); free(gh);
    return 0;
}
"""

FLAGS = ["-O3", "-ffast-math", "-march=native", "-shared", "-fPIC", "-std=c99"]
FALLBACK_FLAGS = ["-O3", "-ffast-math", "-shared", "-fPIC", "-std=c99"]

_LIB = None
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _build() -> Path:
    """Compile C_SOURCE (once per source/flags/compiler/CPU) and return the .so path."""
    return build_shared(C_SOURCE, "scan", (FLAGS, FALLBACK_FLAGS), "scan")


def load():
    """Build (if needed) and load the kernel library; raises RuntimeError when impossible."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(_build()))
        lib.fovea_scan_fwd.argtypes = [_P] * 8 + [_I] * 5 + [ctypes.c_int, _I, _I]
        lib.fovea_scan_fwd.restype = ctypes.c_int
        lib.fovea_scan_bwd.argtypes = [_P] * 15 + [_I] * 5 + [ctypes.c_int, _I, _I]
        lib.fovea_scan_bwd.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def _run(fn, total: int, args) -> None:
    """Call fn(*args, start, stop) over [0, total) split across the thread pool."""
    parts = max(1, min(total, torch.get_num_threads()))
    bounds = [total * i // parts for i in range(parts + 1)]
    if parts == 1:
        codes = [fn(*args, 0, total)]
    else:
        pool = thread_pool("scan", parts)
        futures = [pool.submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(parts)]
        codes = [f.result() for f in futures]
    if any(codes):
        raise MemoryError("fovea scan kernel: out of memory for its scratch buffers")


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def forward(u, delta, A, B, C, D, bias, softplus: bool) -> torch.Tensor:
    """y (Bt, KD, L) fp32; inputs contiguous fp32 CPU tensors as in `selective_scan`."""
    lib = load()
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    Bn = B.transpose(-1, -2).contiguous()  # (Bt, K, L, N)
    Cn = C.transpose(-1, -2).contiguous()
    y = torch.empty_like(u)
    args = [_ptr(t) for t in (u, delta, A, Bn, Cn, D, bias, y)] + [Bt, K, KD // K, N, L, int(softplus)]
    _run(lib.fovea_scan_fwd, Bt * KD, args)
    return y


def backward(gy, u, delta, A, B, C, D, bias, softplus: bool):
    """Gradients (du, ddelta, dA, dB, dC, dD, dbias) of `forward` given gy (Bt, KD, L)."""
    lib = load()
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    Bn = B.transpose(-1, -2).contiguous()
    Cn = C.transpose(-1, -2).contiguous()
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA = u.new_zeros(Bt, KD, N)
    dB, dC = torch.zeros_like(Bn), torch.zeros_like(Cn)
    dD, dbias = u.new_zeros(Bt, KD), u.new_zeros(Bt, KD)
    tensors = (gy, u, delta, A, Bn, Cn, D, bias, du, ddelta, dA, dB, dC, dD, dbias)
    args = [_ptr(t) for t in tensors] + [Bt, K, KD // K, N, L, int(softplus)]
    _run(lib.fovea_scan_bwd, Bt * K, args)
    return du, ddelta, dA.sum(0), dB.transpose(-1, -2), dC.transpose(-1, -2), dD.sum(0), dbias.sum(0)
