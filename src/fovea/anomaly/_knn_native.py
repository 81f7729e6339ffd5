"""Native row kernel of the exact nearest-neighbour search with a low-rank lower bound (`BankIndex`).

Contract of `fovea_lbnn`:

    L[i, j] = |b~_j|^2 - 2 q~_i . b~_j, the expanded squared distance of the query's and bank row's
          low-rank coordinates, computed in registers (4 queries x 2 panels of W bank rows per block,
          W = 16 with AVX-512, 8 with AVX) and never stored: two passes over the panels;
    qsq   (n,) float64: |q~_i|^2, so that L[i, j] + qsq[i] is a lower bound of |q_i - b_j|^2 up to
          eps[i] (float64, the rounding bound of the GEMM and of the float32 coordinates);
    q     (n, d) float32 and bank (m, d) float32: the original vectors (not centred).

For each row: j0 = the best of the previous block's nearest rows (neighbouring patches share
neighbours) or, for the first block, the first index of the smallest L; best = its exact squared
distance (float64 sum of float64 differences). Every bank row whose bound can
still beat best (L[i, j] <= best + eps[i] - qsq[i], a limit tightened as best falls) gets its exact
distance; the smallest wins, ties to the lower index. A row that is not visited has
|q - b|^2 >= L + qsq - eps > best, so the result equals the float64 loop over the whole bank (up to
the order of the float64 partial sums). A query far from every bank row (an anomaly, noise) can leave
most of the bank as candidates; past `cap` the row is deferred to the caller's full GEMM instead.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from fovea.nn._cbuild import build_shared

C_SOURCE = r"""/* fovea exact 1-NN over a bank with a low-rank lower bound. See _knn_native.py for the contract. */
#include <math.h>
#include <stdint.h>
#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef int64_t i64;

/* exact squared distance: float64 sum of float64 differences (8 partial sums with AVX) */
static double exact_d(const float *a, const float *b, i64 d) {
    double s = 0.0;
    i64 k = 0;
#if defined(__AVX__)
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (; k + 8 <= d; k += 8) {
        __m256 av = _mm256_loadu_ps(a + k), bv = _mm256_loadu_ps(b + k);
        __m256d t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(av)),
                                   _mm256_cvtps_pd(_mm256_castps256_ps128(bv)));
        __m256d t1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(av, 1)),
                                   _mm256_cvtps_pd(_mm256_extractf128_ps(bv, 1)));
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(t0, t0));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(t1, t1));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    s = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; k < d; k++) {
        double u = (double)a[k] - (double)b[k];
        s += u * u;
    }
    return s;
}

static float round_up(double v) {
    float f = (float)v;
    if ((double)f < v) f = nextafterf(f, INFINITY);
    return f;
}

/* vector width W (bank rows per panel): 16 with AVX-512, 8 with AVX, else 8 scalar lanes */
#if defined(__AVX512F__)
#define W 16
typedef __m512 vf;
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VMADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMASK_LE(a, b) ((int)_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ))
#define VMIN_UPDATE(mv, iv, lb, pf) do { __mmask16 lt_ = _mm512_cmp_ps_mask(lb, mv, _CMP_LT_OQ); \
    mv = _mm512_mask_blend_ps(lt_, mv, lb); iv = _mm512_mask_blend_ps(lt_, iv, pf); } while (0)
#define HAVE_VEC 1
#elif defined(__AVX__)
#define W 8
typedef __m256 vf;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#if defined(__FMA__)
#define VMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#else
#define VMADD(a, b, c) _mm256_add_ps(_mm256_mul_ps(a, b), c)
#endif
#define VMASK_LE(a, b) _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ))
#define VMIN_UPDATE(mv, iv, lb, pf) do { __m256 lt_ = _mm256_cmp_ps(lb, mv, _CMP_LT_OQ); \
    mv = _mm256_blendv_ps(mv, lb, lt_); iv = _mm256_blendv_ps(iv, pf, lt_); } while (0)
#define HAVE_VEC 1
#else
#define W 8
#define HAVE_VEC 0
#endif

int fovea_lbnn_width(void) { return W; }

/* bounds of 4 queries against two panels (2W bank rows), stored in lb[t][lane], t = 4 h + i
 * (panel h, query i): lb = bsq - 2 q~_i . b~. Eight independent accumulators keep the FMA units busy. */
static inline void panel_bounds(const float *const qr[4], const float *P, i64 K, const float *bsq, float lb[8][W]) {
#if HAVE_VEC
    const float *P1 = P + W * K;
    vf a0 = VZERO(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    for (i64 k = 0; k < K; k++) {
        vf pv = VLOAD(P + W * k), pw = VLOAD(P1 + W * k);
        vf q0 = VSET1(qr[0][k]), q1 = VSET1(qr[1][k]), q2 = VSET1(qr[2][k]), q3 = VSET1(qr[3][k]);
        a0 = VMADD(q0, pv, a0); c0 = VMADD(q0, pw, c0);
        a1 = VMADD(q1, pv, a1); c1 = VMADD(q1, pw, c1);
        a2 = VMADD(q2, pv, a2); c2 = VMADD(q2, pw, c2);
        a3 = VMADD(q3, pv, a3); c3 = VMADD(q3, pw, c3);
    }
    vf m2 = VSET1(-2.0f), b0 = VLOAD(bsq), b1 = VLOAD(bsq + W);
    VSTORE(lb[0], VMADD(a0, m2, b0)); VSTORE(lb[1], VMADD(a1, m2, b0));
    VSTORE(lb[2], VMADD(a2, m2, b0)); VSTORE(lb[3], VMADD(a3, m2, b0));
    VSTORE(lb[4], VMADD(c0, m2, b1)); VSTORE(lb[5], VMADD(c1, m2, b1));
    VSTORE(lb[6], VMADD(c2, m2, b1)); VSTORE(lb[7], VMADD(c3, m2, b1));
#else
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++)
            for (int l = 0; l < W; l++) {
                float acc = 0.0f;
                for (i64 k = 0; k < K; k++) acc += qr[i][k] * P[h * W * K + W * k + l];
                lb[4 * h + i][l] = bsq[W * h + l] - 2.0f * acc;
            }
#endif
}

typedef struct {
    i64 j0, bi, cnt;
    double best;
    float lim;
    int dead;
} row_state;

/* pass 2 for one query and one panel: visit the lanes whose bound can still win (mask), in order */
static void visit(row_state *st, int mask, const float *lbv, i64 base, i64 m, const float *x, const float *bank,
                  i64 d, double eps, double qsq, i64 cap, i64 *ev) {
    while (mask && !st->dead) {
        int lane = __builtin_ctz(mask);
        mask &= mask - 1;
        i64 j = base + lane;
        if (j >= m || j == st->j0) continue;
        if (!(lbv[lane] <= st->lim)) continue;  /* the limit fell since the mask was taken */
        if (++st->cnt > cap) { st->dead = 1; break; }
        double dj = exact_d(x, bank + j * d, d);
        (*ev)++;
        if (dj < st->best || (dj == st->best && j < st->bi)) {
            st->best = dj;
            st->bi = j;
            st->lim = round_up(dj + eps - qsq);
        }
    }
}

/* panels: (np, K, W) bank coordinates, W bank rows per panel, np even (rows >= m padded, bsq = +inf
 * there). Returns 0, or 1 when a query has no finite bound (NaN input). A query whose bound leaves
 * more than `cap` candidates stops there: its index goes to deferred[] (out_i = -1), for a GEMM. */
int fovea_lbnn(const float *qa, i64 n, i64 K, const float *panels, const float *bsq, i64 np, i64 m,
               const double *qsq, const double *eps, const float *q, const float *bank, i64 d, i64 cap,
               i64 *out_i, double *out_d, i64 *evals, i64 *deferred, i64 *n_deferred) {
    i64 ev = 0;
    for (i64 r0 = 0; r0 < n; r0 += 4) {
        int nr = (int)(n - r0 < 4 ? n - r0 : 4);
        const float *qr[4];
        for (int i = 0; i < 4; i++) qr[i] = qa + (r0 + (i < nr ? i : 0)) * K;
        float vmin[4][W];
        i64 jmin[4][W];
        float lb[8][W];
        row_state st[4];
        /* neighbouring queries (patches in raster order) tend to share neighbours: the nearest rows of the
         * previous block seed each query's bound, and pass 1 runs only when there are none */
        int seeded = 0;
        if (r0 >= 4) {
            for (int i = 0; i < nr; i++) {
                st[i].best = INFINITY;
                st[i].bi = -1;
                for (int s = 1; s <= 4; s++) {
                    i64 j = out_i[r0 - s];
                    if (j < 0) continue;
                    double dj = exact_d(q + (r0 + i) * d, bank + j * d, d);
                    ev++;
                    if (dj < st[i].best || (dj == st[i].best && j < st[i].bi)) { st[i].best = dj; st[i].bi = j; }
                }
            }
            seeded = st[0].bi >= 0;
        }
        if (seeded) {
            for (int i = 0; i < nr; i++) {
                st[i].j0 = st[i].bi;
                st[i].lim = round_up(st[i].best + eps[r0 + i] - qsq[r0 + i]);
                st[i].cnt = 0;
                st[i].dead = 0;
            }
        } else {
        /* pass 1: the smallest bound per query and lane (its row is the likeliest nearest) */
#if HAVE_VEC
        vf mv[4], iv[4];
        for (int i = 0; i < 4; i++) { mv[i] = VSET1(INFINITY); iv[i] = VSET1(-1.0f); }
        for (i64 p = 0; p < np; p += 2) {
            panel_bounds(qr, panels + p * K * W, K, bsq + W * p, lb);
            vf p0 = VSET1((float)p), p1 = VSET1((float)(p + 1));   /* exact below 2^24 panels */
            for (int i = 0; i < 4; i++) {
                vf l0 = VLOAD(lb[i]), l1 = VLOAD(lb[4 + i]);
                VMIN_UPDATE(mv[i], iv[i], l0, p0);
                VMIN_UPDATE(mv[i], iv[i], l1, p1);
            }
        }
        for (int i = 0; i < 4; i++) {
            float pv[W];
            VSTORE(vmin[i], mv[i]);
            VSTORE(pv, iv[i]);
            for (int l = 0; l < W; l++) jmin[i][l] = pv[l] < 0.0f ? -1 : (i64)pv[l] * W + l;
        }
#else
        for (int i = 0; i < 4; i++)
            for (int l = 0; l < W; l++) { vmin[i][l] = INFINITY; jmin[i][l] = -1; }
        for (i64 p = 0; p < np; p += 2) {
            panel_bounds(qr, panels + p * K * W, K, bsq + W * p, lb);
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 4; i++)
                    for (int l = 0; l < W; l++)
                        if (lb[4 * h + i][l] < vmin[i][l]) { vmin[i][l] = lb[4 * h + i][l]; jmin[i][l] = (p + h) * W + l; }
        }
#endif
        for (int i = 0; i < nr; i++) {
            float v = INFINITY;
            i64 j = -1;
            for (int l = 0; l < W; l++)
                if (jmin[i][l] >= 0 && (vmin[i][l] < v || (vmin[i][l] == v && jmin[i][l] < j))) { v = vmin[i][l]; j = jmin[i][l]; }
            if (j < 0 || j >= m) return 1;
            st[i].j0 = st[i].bi = j;
            st[i].best = exact_d(q + (r0 + i) * d, bank + j * d, d);
            st[i].lim = round_up(st[i].best + eps[r0 + i] - qsq[r0 + i]);
            st[i].cnt = 0;
            st[i].dead = 0;
            ev++;
        }
        }
        /* pass 2: exact distances where the bound can still beat the best one */
        for (i64 p = 0; p < np; p += 2) {
            panel_bounds(qr, panels + p * K * W, K, bsq + W * p, lb);
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < nr; i++) {
                    if (st[i].dead) continue;
                    int t = 4 * h + i, mask = 0;
#if HAVE_VEC
                    mask = VMASK_LE(VLOAD(lb[t]), VSET1(st[i].lim));
#else
                    for (int l = 0; l < W; l++) if (lb[t][l] <= st[i].lim) mask |= 1 << l;
#endif
                    if (mask)
                        visit(&st[i], mask, lb[t], (p + h) * W, m, q + (r0 + i) * d, bank, d,
                              eps[r0 + i], qsq[r0 + i], cap, &ev);
                }
        }
        for (int i = 0; i < nr; i++) {
            if (st[i].dead) {
                deferred[(*n_deferred)++] = r0 + i;
                out_i[r0 + i] = -1;
            } else {
                out_i[r0 + i] = st[i].bi;
                out_d[r0 + i] = st[i].best;
            }
        }
    }
    *evals += ev;
    return 0;
}
"""

# No -ffast-math and no FMA contraction: the float64 sums must stay sequential.
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC", "-std=gnu99"]
FALLBACK_FLAGS = ["-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=gnu99"]

_LIB = None
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _build() -> Path:
    return build_shared(C_SOURCE, "lbnn", (FLAGS, FALLBACK_FLAGS), "lbnn")


def load():
    """Build (if needed) and load the library; raises RuntimeError when impossible."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(_build()))
        lib.fovea_lbnn.argtypes = [_P, _I, _I, _P, _P, _I, _I, _P, _P, _P, _P, _I, _I, _P, _P, _P, _P, _P]
        lib.fovea_lbnn.restype = ctypes.c_int
        lib.fovea_lbnn_width.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def pack_panels(aug: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank coordinates (M, K) float32 -> panels (np, K, W) of W bank rows each (W = the kernel's vector
    width, np even: the kernel takes two panels per block) and their squared norms (np W,), padded rows
    with norm +inf (never a candidate)."""
    width = int(load().fovea_lbnn_width())
    m, k = aug.shape
    npan = 2 * ((m + 2 * width - 1) // (2 * width))
    padded = torch.zeros(npan * width, k)
    padded[:m] = aug
    sq = torch.full((npan * width,), float("inf"))
    sq[:m] = aug.pow(2).sum(1)
    return padded.reshape(npan, width, k).transpose(1, 2).contiguous(), sq


def lbnn(qa: torch.Tensor, panels: torch.Tensor, bsq: torch.Tensor, m: int, qsq: torch.Tensor, eps: torch.Tensor,
         q: torch.Tensor, bank: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Exact 1-NN of q (n, d) in bank (m, d) (float32, contiguous), ranked by the bound of qa (n, K) against
    the panels. Returns (indices (n,) int64 (-1 where deferred), squared distances (n,) float64,
    exact distances computed, deferred rows (more than `cap` candidates: search them with a GEMM))."""
    n, k = qa.shape
    out_i = torch.empty(n, dtype=torch.long)
    out_d = torch.empty(n, dtype=torch.float64)
    evals = torch.zeros(1, dtype=torch.long)
    deferred = torch.empty(n, dtype=torch.long)
    n_def = torch.zeros(1, dtype=torch.long)
    code = load().fovea_lbnn(qa.data_ptr(), n, k, panels.data_ptr(), bsq.data_ptr(), panels.shape[0], m,
                             qsq.data_ptr(), eps.data_ptr(), q.data_ptr(), bank.data_ptr(), q.shape[1], int(cap),
                             out_i.data_ptr(), out_d.data_ptr(), evals.data_ptr(), deferred.data_ptr(),
                             n_def.data_ptr())
    if code != 0:
        raise ValueError("nearest-neighbour search got a query or bank row without finite values (NaN)")
    return out_i, out_d, int(evals), deferred[: int(n_def)]
