"""Native greedy k-center: the whole coreset loop in one C call, compiled on first use, loaded with ctypes.

Why: at 400 training images PatchCore selects 40,960 of 409,600 patches. A per-step torch loop pays
its dispatch overhead 40,960 times and streams a bound for every point each step; the C loop keeps
the points grouped by their nearest chosen centre and touches only the groups a new centre can
change (Elkan / Hamerly-style triangle-inequality pruning), so most steps read a few thousand
points instead of 409,600.

Exactness: the loop keeps each point's squared distance to its nearest centre, `min_d`, with every
exact distance computed as the sequential float64 sum over coordinates j = 0..D-1 of
((double)x_j - (double)c_j)^2 (each subtraction, product and sum rounded once; the library is built
with -ffp-contract=off and without -ffast-math so nothing is fused or reordered). That is what
`fovea.anomaly.coreset.greedy_k_center_reference` computes with `cumsum` (a sequential scan), so
min_d is bit-identical to the plain loop's and the first-index argmax picks the same point. The
pruning tests only skip a point when its new distance is provably larger than its current one by
far more than float64 rounding (triangle inequality with a (1 + 1e-9) factor, PCA bound with an
absolute margin for its float32 storage), so a skipped point's min_d could not have changed.

The .so is cached like the other native kernels (`fovea.nn._cbuild`); when no compiler works,
`fovea.anomaly.coreset.greedy_k_center` uses its pure-torch path (same indices, slower).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Callable

import torch

from fovea.nn._cbuild import build_shared

C_SOURCE = r"""/* fovea greedy k-center (exact, grouped pruning). See _coreset_native.py for the contract.
 *
 * State: min_d[i] (float64) = squared distance of point i to its nearest chosen centre; every
 * point belongs to one group g (the centre giving its min_d). Per group: member list, radius
 * rad[g] = max min_d of its members and ridx[g] = smallest point index attaining it.
 * Step t with new centre c (the global argmax):
 *   1. centre scan: lb(c, g) = |zc - zg|^2 + (rc - rg)^2 is a lower bound of |c - centre_g|^2
 *      (z: principal coordinates, r: norm of the rest). A member x of g can only move to c if
 *      |c - centre_g| < 2 |x - centre_g|, so g is skipped when lb - eps >= 4 (1 + 1e-9) rad[g].
 *   2. the same test with the accurate centre distance dcg2 (`fast_d`, from a contiguous copy of the
 *      centre rows).
 *   3. members (stored contiguously per group, sorted by min_d descending) are visited while
 *      dcg2 < 4 (1 + 2e-9) min_d[x]; a member is skipped when a.b <= |b|^2 / 2 is certain, with
 *      a = x - centre, b = c - centre and a.b <= a_z.b_z + |a_r| |b_r| (Cauchy-Schwarz on the rest);
 *      the others get their exact distance, and d < min_d[x] moves x to group t.
 *   4. the next centre is the group with the largest (rad, -ridx).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef int32_t i32;
typedef int (*progress_fn)(i64, i64);

/* work counters for benchmarks (summed over calls): scanned-candidate groups, exact distances,
 * groups past the triangle test, -, moved points */
i64 fovea_kcenter_stats[8];

#define REL_GROUP 1.000000001  /* 1 + 1e-9 */
#define REL_POINT 1.000000002  /* 1 + 2e-9 */

/* exact squared distance: sequential float64 sum, one rounding per operation */
static double exact_d(const float *a, const float *b, i64 d) {
    double s = 0.0;
    for (i64 j = 0; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s = s + t * t;
    }
    return s;
}

/* four exact distances at once (independent chains hide the add latency; same order per point) */
static void exact_d4(const float *a0, const float *a1, const float *a2, const float *a3, const float *b,
                     i64 d, double *out) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (i64 j = 0; j < d; j++) {
        double bj = (double)b[j];
        double t0 = (double)a0[j] - bj, t1 = (double)a1[j] - bj;
        double t2 = (double)a2[j] - bj, t3 = (double)a3[j] - bj;
        s0 = s0 + t0 * t0; s1 = s1 + t1 * t1; s2 = s2 + t2 * t2; s3 = s3 + t3 * t3;
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

/* accurate (not bit-defined) squared distance for the pruning tests: eight float64 partial sums, relative
 * error below 1e-14, far inside the 1e-12 margins of the tests that use it */
static double fast_d(const float *a, const float *b, i64 d) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    i64 j = 0;
    for (; j + 8 <= d; j += 8)
        for (int k = 0; k < 8; k++) { double t = (double)a[j + k] - (double)b[j + k]; s[k] += t * t; }
    for (; j < d; j++) { double t = (double)a[j] - (double)b[j]; s[0] += t * t; }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static void prefetch_row(const void *p, i64 bytes) {
    for (i64 o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o);
}

static void exact_list(const float *x, i64 d, const float *c, const i32 *idx, i64 n, double *out) {
    i64 i = 0;
    for (; i + 4 <= n; i += 4)
        exact_d4(x + (i64)idx[i] * d, x + (i64)idx[i + 1] * d, x + (i64)idx[i + 2] * d, x + (i64)idx[i + 3] * d,
                 c, d, out + i);
    for (; i < n; i++) out[i] = exact_d(x + (i64)idx[i] * d, c, d);
}

/* float threshold >= 4 (1 + 1e-9) rad + eps, rounded up (rad < 0: empty group, never a candidate) */
static float group_threshold(double rad, double eps) {
    if (rad <= 0.0) return -1.0f;
    return (float)((4.0 * REL_GROUP * rad + eps) * (1.0 + 1e-6));
}

/* upper bound of |rest part of (x - centre)|: sqrt(|x - centre|^2 - |z_x - z_centre|^2), rounded up with
 * the margin eps for the float32 principal coordinates */
static float residual_bound(double dsq, const float *zx, const float *zg, i64 m, double eps) {
    double s = 0.0;
    for (i64 k = 0; k < m; k++) { double t = (double)zx[k] - (double)zg[k]; s += t * t; }
    double r = dsq * (1.0 + 1e-12) - s + eps;
    return r > 0.0 ? (float)(sqrt(r) * (1.0 + 1e-6)) : 0.0f;
}

/* one group: its members' data stored contiguously (a scan streams it), sorted by v descending */
typedef struct {
    i32 *id;     /* point indices */
    double *v;   /* min_d of each member = squared distance to this group's centre */
    float *q;    /* residual_bound of each member to the centre */
    float *z;    /* (cnt, m) principal coordinates */
    i64 cnt;
} group_t;

typedef struct {
    group_t *g;
    i64 *ridx, *cidx;
    double *rad;
    float *thr;      /* group_threshold(rad) */
    float *cz;       /* (m, cap): principal coordinates of the centres, one row per coordinate */
    float *crest;    /* (cap) */
    float *crow;     /* (cap, d): the centres' rows, contiguous (L3-resident, unlike rows scattered in x) */
    float *czr;      /* (cap, m): the centres' principal coordinates, row-wise */
    i64 cap, m, d;
} groups_t;

static void group_free(group_t *g) {
    free(g->id); free(g->v); free(g->q); free(g->z);
    memset(g, 0, sizeof(*g));
}

static int group_alloc(group_t *g, i64 n, i64 m) {
    g->id = malloc(n * sizeof(i32)); g->v = malloc(n * sizeof(double));
    g->q = malloc(n * sizeof(float)); g->z = malloc(n * m * sizeof(float) + 1);
    g->cnt = n;
    return g->id && g->v && g->q && g->z;
}

/* radius = first value (sorted); ridx = smallest index among the leading equal values */
static void group_radius(groups_t *G, i64 t, double eps) {
    group_t *g = &G->g[t];
    if (!g->cnt) { G->rad[t] = -1.0; G->ridx[t] = -1; G->thr[t] = -1.0f; return; }
    double best = g->v[0];
    i64 bi = g->id[0];
    for (i64 k = 1; k < g->cnt && g->v[k] == best; k++)
        if (g->id[k] < bi) bi = g->id[k];
    G->rad[t] = best;
    G->ridx[t] = bi;
    G->thr[t] = group_threshold(best, eps);
}

typedef struct { double v; i32 i; } vi_t;

static int cmp_desc(const void *pa, const void *pb) {
    const vi_t *a = pa, *b = pb;
    if (a->v != b->v) return a->v < b->v ? 1 : -1;
    return (a->i > b->i) - (a->i < b->i);
}

/* fill group g with the points ids[0..n) (squared distances v to centre zc), sorted by v descending */
static int group_fill(group_t *g, const i32 *ids, const double *v, i64 n, const float *z, const float *zc,
                      i64 m, double eps, vi_t *scratch) {
    if (!group_alloc(g, n, m)) return 0;
    for (i64 k = 0; k < n; k++) { scratch[k].v = v[k]; scratch[k].i = (i32)k; }
    qsort(scratch, n, sizeof(vi_t), cmp_desc);
    for (i64 k = 0; k < n; k++) {
        i64 s = scratch[k].i;
        i64 i = ids[s];
        g->id[k] = (i32)i;
        g->v[k] = v[s];
        memcpy(g->z + k * m, z + i * m, m * sizeof(float));
        g->q[k] = residual_bound(v[s], z + i * m, zc, m, eps);
    }
    return 1;
}

static void add_centre(groups_t *G, i64 t, i64 c, const float *x, const float *z, const float *rest) {
    G->cidx[t] = c;
    for (i64 k = 0; k < G->m; k++) G->cz[k * G->cap + t] = z[c * G->m + k];
    memcpy(G->czr + t * G->m, z + c * G->m, G->m * sizeof(float));
    memcpy(G->crow + t * G->d, x + c * G->d, G->d * sizeof(float));
    G->crest[t] = rest[c];
}

/* groups whose bound lb(c, g) is below their threshold, appended to cand; returns the count */
static i64 scan_centres(const groups_t *G, i64 t, const float *zc, float rc, float epsf, float *buf, i64 *cand) {
    i64 nc = 0;
    const i64 B = 512;
    for (i64 g0 = 0; g0 < t; g0 += B) {
        i64 nb = t - g0 < B ? t - g0 : B;
        const float *cr = G->crest + g0;
        for (i64 k = 0; k < nb; k++) buf[k] = (cr[k] - rc) * (cr[k] - rc) - epsf;
        for (i64 q = 0; q < G->m; q++) {
            const float *row = G->cz + q * G->cap + g0;
            float zq = zc[q];
            for (i64 k = 0; k < nb; k++) buf[k] += (row[k] - zq) * (row[k] - zq);
        }
        const float *thr = G->thr + g0;
        for (i64 k = 0; k < nb; k++)
            if (buf[k] < thr[k]) cand[nc++] = g0 + k;
    }
    return nc;
}

/* members of group gr that the new centre c might take (positions into the group), by the triangle
 * inequality and then a.b <= a_z.b_z + |a_r| |b_r| (a = x - centre, b = c - centre: x moves only if
 * a.b > |b|^2 / 2); returns the count */
static i64 group_candidates(const group_t *gr, const float *zg, const float *zc, double dcg2, i64 m, double eps,
                            float *bz, i32 *pos) {
    double mthr = dcg2 / (4.0 * REL_POINT);
    for (i64 k = 0; k < m; k++) bz[k] = zc[k] - zg[k];
    float bq = residual_bound(dcg2, zc, zg, m, eps);
    float zgb = 0.0f;
    for (i64 k = 0; k < m; k++) zgb += zg[k] * bz[k];
    double lim = dcg2 * (1.0 - 1e-12) - 4.0 * eps;
    i64 nl = 0;
    for (i64 k = 0; k < gr->cnt; k++) {
        double v = gr->v[k];
        if (v <= mthr) break;  /* sorted: every later member is closer to its centre */
        const float *zx = gr->z + k * m;
        float ab = gr->q[k] * bq - zgb;
        for (i64 j = 0; j < m; j++) ab += zx[j] * bz[j];
        if (2.0 * (double)ab + 1e-9 * v <= lim) continue;
        pos[nl++] = (i32)k;
    }
    return nl;
}

/* drop the members whose v was set to -1 (moved), keeping the order */
static void group_compact(group_t *g, i64 m) {
    i64 w = 0;
    for (i64 k = 0; k < g->cnt; k++) {
        if (g->v[k] < 0.0) continue;
        if (w != k) {
            g->id[w] = g->id[k]; g->v[w] = g->v[k]; g->q[w] = g->q[k];
            memcpy(g->z + w * m, g->z + k * m, m * sizeof(float));
        }
        w++;
    }
    g->cnt = w;
    if (!w) group_free(g);
}

int fovea_kcenter(const float *x, i64 n, i64 d, const float *z, const float *rest, i64 m, double eps,
                  i64 n_select, i64 start, i64 *selected, double *min_d, progress_fn progress, i64 every) {
    int rc_code = -1;
    groups_t G;
    memset(&G, 0, sizeof(G));
    G.cap = n_select; G.m = m; G.d = d;
    G.crow = malloc(n_select * d * sizeof(float)); G.czr = malloc(n_select * m * sizeof(float) + 1);
    G.g = calloc(n_select, sizeof(group_t));
    G.ridx = calloc(n_select, sizeof(i64));
    G.cidx = calloc(n_select, sizeof(i64)); G.rad = calloc(n_select, sizeof(double));
    G.thr = calloc(n_select, sizeof(float)); G.cz = calloc(m * n_select + 1, sizeof(float));
    G.crest = calloc(n_select, sizeof(float));
    i32 *pos = malloc(n * sizeof(i32));
    i32 *ids = malloc(n * sizeof(i32));
    i32 *mov_id = malloc(n * sizeof(i32));
    double *mov_v = malloc(n * sizeof(double));
    double *dist = malloc(n * sizeof(double));
    vi_t *scratch = malloc(n * sizeof(vi_t));
    float *buf = malloc(512 * sizeof(float));
    float *bz = malloc((m + 1) * sizeof(float));
    i64 *cand = malloc(n_select * sizeof(i64));
    double *dcg = malloc(n_select * sizeof(double));
    if (!G.crow || !G.czr || !G.g || !G.ridx || !G.cidx || !G.rad || !G.thr || !G.cz || !G.crest
        || !pos || !ids || !mov_id
        || !mov_v || !dist || !scratch || !buf || !bz || !cand || !dcg)
        goto done;
    float epsf = (float)(eps * (1.0 + 1e-6));

    /* step 0: every point to the first centre */
    i64 c = start;
    selected[0] = c;
    for (i64 i = 0; i < n; i++) ids[i] = (i32)i;
    exact_list(x, d, x + c * d, ids, n, min_d);
    if (!group_fill(&G.g[0], ids, min_d, n, z, z + c * m, m, eps, scratch)) goto done;
    add_centre(&G, 0, c, x, z, rest);
    group_radius(&G, 0, eps);

    for (i64 t = 1; t < n_select; t++) {
        /* next centre: largest radius, smallest index on ties */
        i64 bg = 0;
        for (i64 g = 1; g < t; g++)
            if (G.rad[g] > G.rad[bg] || (G.rad[g] == G.rad[bg] && G.ridx[g] < G.ridx[bg])) bg = g;
        c = G.ridx[bg];
        selected[t] = c;
        if (progress && every > 0 && t % every == 0 && progress(t, n_select)) { rc_code = 1; goto done; }
        const float *xc = x + c * d;
        const float *zc = z + c * m;
        i64 nc = scan_centres(&G, t, zc, rest[c], epsf, buf, cand);
        fovea_kcenter_stats[0] += nc;
        /* centre distances (prefetching a few centres ahead); keep the groups the triangle test cannot skip */
        i64 nk = 0;
        for (i64 a = 0; a < nc; a++) {
            if (a + 4 < nc) prefetch_row(G.crow + cand[a + 4] * d, d * (i64)sizeof(float));
            if (a + 8 < nc) { __builtin_prefetch(&G.rad[cand[a + 8]]); __builtin_prefetch(&G.g[cand[a + 8]]); }
            i64 g = cand[a];
            double dcg2 = fast_d(G.crow + g * d, xc, d);
            if (dcg2 / (4.0 * REL_POINT) * (1.0 - 1e-12) >= G.rad[g]) continue;
            cand[nk] = g; dcg[nk] = dcg2; nk++;
        }
        fovea_kcenter_stats[2] += nk;
        i64 nmov = 0;
        for (i64 a = 0; a < nk; a++) {
            if (a + 2 < nk) {
                const group_t *ng = &G.g[cand[a + 2]];
                __builtin_prefetch(ng->v); __builtin_prefetch(ng->q);
                prefetch_row(ng->z, (ng->cnt < 4 ? ng->cnt : 4) * m * (i64)sizeof(float));
            }
            if (a + 4 < nk) { __builtin_prefetch(&G.g[cand[a + 4]]); __builtin_prefetch(G.czr + cand[a + 4] * m); }
            i64 g = cand[a];
            group_t *gr = &G.g[g];
            double dcg2 = dcg[a];
            i64 nl = group_candidates(gr, G.czr + g * m, zc, dcg2, m, eps, bz, pos);
            fovea_kcenter_stats[1] += nl;
            if (!nl) continue;
            for (i64 k = 0; k < nl; k++) ids[k] = gr->id[pos[k]];
            exact_list(x, d, xc, ids, nl, dist);
            i64 moved = 0;
            for (i64 k = 0; k < nl; k++) {
                if (dist[k] < gr->v[pos[k]]) {
                    i32 i = ids[k];
                    min_d[i] = dist[k];
                    mov_id[nmov] = i; mov_v[nmov] = dist[k]; nmov++;
                    gr->v[pos[k]] = -1.0;
                    moved++;
                }
            }
            fovea_kcenter_stats[4] += moved;
            if (!moved) continue;
            group_compact(gr, m);
            group_radius(&G, g, eps);
        }
        add_centre(&G, t, c, x, z, rest);
        if (nmov && !group_fill(&G.g[t], mov_id, mov_v, nmov, z, zc, m, eps, scratch)) goto done;
        group_radius(&G, t, eps);
    }
    if (progress && every > 0) progress(n_select, n_select);
    rc_code = 0;
done:
    if (G.g) for (i64 g = 0; g < n_select; g++) group_free(&G.g[g]);
    free(G.g); free(G.ridx); free(G.cidx); free(G.rad); free(G.thr); free(G.cz); free(G.crest);
    free(G.crow); free(G.czr); free(pos); free(ids); free(mov_id); free(mov_v); free(dist); free(scratch);
    free(buf); free(bz); free(cand); free(dcg);
    return rc_code;
}
"""

# No -ffast-math (it would let the compiler reorder the exact float64 sums) and no FMA contraction.
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC", "-std=c99"]
FALLBACK_FLAGS = ["-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=c99"]

_LIB = None
_P = ctypes.c_void_p
_I = ctypes.c_int64
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def _build() -> Path:
    """Compile C_SOURCE (once per source/flags/compiler/CPU) and return the .so path."""
    return build_shared(C_SOURCE, "kcenter", (FLAGS, FALLBACK_FLAGS), "kcenter")


def load():
    """Build (if needed) and load the library; raises RuntimeError when impossible."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(_build()))
        lib.fovea_kcenter.argtypes = [_P, _I, _I, _P, _P, _I, ctypes.c_double, _I, _I, _P, _P,
                                      PROGRESS_FN, _I]
        lib.fovea_kcenter.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def greedy_k_center_native(x: torch.Tensor, n_select: int, start: int, z: torch.Tensor, rest: torch.Tensor,
                           eps: float, progress: Callable[[int, int], None] | None = None,
                           every: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the C loop. x (N, D) float32, z (N, M) float32 principal coordinates, rest (N,) float32 norm of
    the rest, eps: absolute margin (squared-distance units) covering the float32 error of the z bound.
    Returns (selected (n_select,) int64, min_d (N,) float64 squared distance to the nearest selected centre).
    """
    lib = load()
    x, z, rest = x.contiguous(), z.contiguous(), rest.contiguous()
    n, d = x.shape
    selected = torch.empty(n_select, dtype=torch.long)
    min_d = torch.empty(n, dtype=torch.float64)
    raised: list[BaseException] = []

    def report(step: int, total: int) -> int:
        try:
            if progress is not None:
                progress(int(step), int(total))
            return 0
        except BaseException as exc:  # noqa: BLE001  (KeyboardInterrupt too: stop the C loop, re-raise below)
            raised.append(exc)
            return 1

    callback = PROGRESS_FN(report)
    code = lib.fovea_kcenter(x.data_ptr(), n, d, z.data_ptr(), rest.data_ptr(), z.shape[1], float(eps),
                             n_select,
                             int(start), selected.data_ptr(), min_d.data_ptr(), callback,
                             every if progress is not None else 0)
    if raised:
        raise raised[0]
    if code != 0:
        raise MemoryError(f"greedy k-center kernel: out of memory for N={n}, k={n_select} (code {code})")
    return selected, min_d
