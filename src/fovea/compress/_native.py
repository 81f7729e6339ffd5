"""Packed-ternary x int8 matrix product: C source compiled on first use, loaded with ctypes.

The same route as `fovea.nn._scan_native`: a plain C shared library (no PyTorch headers) built with
the system compiler (`CC`, else gcc/cc/clang) with -march=native, cached under `$FOVEA_CACHE_DIR`
(default `~/.cache/fovea/compress`), keyed by source, flags, compiler and CPU. The kernel returns the
exact int32 sums acc[m, n] = sum_k w[n, k] * x[m, k]; scaling happens in `kernel.py`.

Inner loop (weights in the HF layout of `packing.py`: byte P[r, k] holds rows r, r+R, r+2R, r+3R):
the 2-bit codes c = w + 1 are unsigned bytes 0..2 and the activations signed int8, so one
u8 x s8 dot instruction does the products -- AVX512-VNNI `vpdpbusd` (64 bytes, 4 products summed
into each int32 lane) or AVX2 `vpmaddubsw` + `vpmaddwd` (as bitnet.cpp's I2_S kernel) -- and
sum_k c*x - sum_k x = sum_k w*x removes the +1 offset (bitnet.cpp's correction term). Products of
codes <= 2 with |x| <= 128 cannot saturate the int16 pairs of vpmaddubsw (|2*2*128| = 512).
Tokens are processed 4 (VNNI) or 2 (AVX2) at a time so that one decoded code vector feeds several
accumulators.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from fovea.errors import ConfigError, HardwareError
from fovea.nn._cbuild import build_shared, thread_pool, compiler as _compiler  # noqa: F401  (tests call _compiler)

C_SOURCE = r"""/* fovea packed ternary GEMM: int32 acc[m, i*R + r] = sum_k w[i*R + r, k] * x[m, k]. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define FOVEA_VNNI 1
#elif defined(__AVX2__)
#include <immintrin.h>
#define FOVEA_AVX2 1
#endif

typedef int64_t i64;

/* Scalar tail: columns [k0, K) of packed row p for one token x; adds code*x into s[4]. */
static void tail(const uint8_t *p, const int8_t *x, i64 k0, i64 K, int32_t s[4]) {
    for (i64 k = k0; k < K; k++) {
        int32_t b = p[k], xv = x[k];
        s[0] += (b & 3) * xv; s[1] += ((b >> 2) & 3) * xv;
        s[2] += ((b >> 4) & 3) * xv; s[3] += ((b >> 6) & 3) * xv;
    }
}

#if FOVEA_VNNI
#define VB 64  /* bytes per vector */
#define MB 4   /* tokens per block */
/* The four lane sums of a, b, c, d as one (sum a, sum b, sum c, sum d) vector: halve each to
 * 128 bits, then two rounds of horizontal adds (cheaper than four full reductions). */
static inline __m128i half4(__m512i v) {
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
static inline __m128i hsum4(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m128i ab = _mm_hadd_epi32(half4(a), half4(b)), cd = _mm_hadd_epi32(half4(c), half4(d));
    return _mm_hadd_epi32(ab, cd);
}
static i64 body(const uint8_t *p, const int8_t *const *x, int nt, i64 K, int32_t s[MB][4]) {
    const __m512i three = _mm512_set1_epi8(3);
    __m512i acc[4][MB];
    for (int i = 0; i < 4; i++) for (int j = 0; j < MB; j++) acc[i][j] = _mm512_setzero_si512();
    i64 k = 0;
    for (; k + VB <= K; k += VB) {
        __m512i v = _mm512_loadu_si512((const void *)(p + k));
        __m512i c0 = _mm512_and_si512(v, three);
        __m512i c1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), three);
        __m512i c2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), three);
        __m512i c3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), three);
        for (int j = 0; j < nt; j++) {
            __m512i xv = _mm512_loadu_si512((const void *)(x[j] + k));
            acc[0][j] = _mm512_dpbusd_epi32(acc[0][j], c0, xv);
            acc[1][j] = _mm512_dpbusd_epi32(acc[1][j], c1, xv);
            acc[2][j] = _mm512_dpbusd_epi32(acc[2][j], c2, xv);
            acc[3][j] = _mm512_dpbusd_epi32(acc[3][j], c3, xv);
        }
    }
    for (int j = 0; j < nt; j++) _mm_storeu_si128((__m128i *)s[j], hsum4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]));
    return k;
}
#elif FOVEA_AVX2
#define VB 32
#define MB 2
static inline int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
static i64 body(const uint8_t *p, const int8_t *const *x, int nt, i64 K, int32_t s[MB][4]) {
    const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc[4][MB];
    for (int i = 0; i < 4; i++) for (int j = 0; j < MB; j++) acc[i][j] = _mm256_setzero_si256();
    i64 k = 0;
    for (; k + VB <= K; k += VB) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + k));
        __m256i c[4];
        c[0] = _mm256_and_si256(v, three);
        c[1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), three);
        c[2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), three);
        c[3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), three);
        for (int j = 0; j < nt; j++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(x[j] + k));
            for (int i = 0; i < 4; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(_mm256_maddubs_epi16(c[i], xv), ones));
        }
    }
    for (int j = 0; j < nt; j++)
        for (int i = 0; i < 4; i++) s[j][i] = hsum8(acc[i][j]);
    return k;
}
#else
#define MB 1
static i64 body(const uint8_t *p, const int8_t *const *x, int nt, i64 K, int32_t s[MB][4]) {
    (void)p; (void)x; (void)nt; (void)K;
    memset(s, 0, sizeof(int32_t) * MB * 4);
    return 0;  /* everything goes through the scalar tail */
}
#endif

/* Report which inner loop was compiled in: 2 = AVX512-VNNI, 1 = AVX2, 0 = scalar. */
int fovea_ternary_isa(void) {
#if FOVEA_VNNI
    return 2;
#elif FOVEA_AVX2
    return 1;
#else
    return 0;
#endif
}

/* The 4 x MB int32 sums of packed row r for tokens m .. m + nt - 1 (Sum w*x, offset removed). */
static inline int block_sums(const uint8_t *P, const int8_t *X, const int32_t *sumx, i64 K, i64 M, i64 r, i64 m,
                             int32_t s[MB][4]) {
    const uint8_t *p = P + r * K;
    int nt = (int)(M - m < MB ? M - m : MB);
    const int8_t *xs[MB];
    for (int j = 0; j < nt; j++) xs[j] = X + (m + j) * K;
    i64 k0 = body(p, xs, nt, K, s);
    for (int j = 0; j < nt; j++) {
        if (k0 < K) tail(p, xs[j], k0, K, s[j]);
        for (int i = 0; i < 4; i++) s[j][i] -= sumx[m + j];
    }
    return nt;
}

/* Packed rows [r0, r1) for all M tokens. P (R, K) uint8, X (M, K) int8, sumx (M) int32 = sum_k x,
 * acc (M, 4R) int32. */
void fovea_ternary_gemm(const uint8_t *P, const int8_t *X, const int32_t *sumx, int32_t *acc,
                        i64 R, i64 K, i64 M, i64 r0, i64 r1) {
    int32_t s[MB][4];
    for (i64 r = r0; r < r1; r++)
        for (i64 m = 0; m < M; m += MB) {
            int nt = block_sums(P, X, sumx, K, M, r, m, s);
            for (int j = 0; j < nt; j++)
                for (int i = 0; i < 4; i++) acc[(m + j) * 4 * R + i * R + r] = s[j][i];
        }
}

/* Per-token int8 quantisation exactly as fovea.nn.ternary.absmax_int8 (fp32, ties to even):
 * s = 127 * (1 / max(max_k |x|, 1e-5)); q = clamp(rint(x * s), -128, 127). The max is exact in any order
 * and every element is rounded on its own, so the vector loops give the scalar loop's bits. */
static float row_absmax(const float *x, i64 K) {
    float amax = 0.0f;
    i64 k = 0;
#if FOVEA_VNNI
    __m512 vmax = _mm512_setzero_ps();
    for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    amax = _mm512_reduce_max_ps(vmax);
#elif FOVEA_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    for (int i = 0; i < 8; i++) amax = fmaxf(amax, lanes[i]);
#endif
    for (; k < K; k++) amax = fmaxf(amax, fabsf(x[k]));
    return amax;
}

/* q[k] = clamp(rint(x[k] * s), -128, 127) for one row; returns sum_k q[k]. */
static int32_t quantize_row(const float *x, i64 K, float s, int8_t *q) {
    int32_t sum = 0;
    i64 k = 0;
#if FOVEA_VNNI
    const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    __m512i vsum = _mm512_setzero_si512();
    for (; k + 16 <= K; k += 16) {
        __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + k), vs),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i iv = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
        vsum = _mm512_add_epi32(vsum, iv);
        _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtepi32_epi8(iv));
    }
    sum = _mm512_reduce_add_epi32(vsum);
#elif FOVEA_AVX2
    const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    __m256i vsum = _mm256_setzero_si256();
    for (; k + 8 <= K; k += 8) {
        __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k), vs),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i iv = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
        vsum = _mm256_add_epi32(vsum, iv);
        __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
        _mm_storel_epi64((__m128i *)(q + k), _mm_packs_epi16(p16, p16));
    }
    sum = hsum8(vsum);
#endif
    for (; k < K; k++) {
        float v = fminf(fmaxf(nearbyintf(x[k] * s), -128.0f), 127.0f);
        q[k] = (int8_t)v;
        sum += (int32_t)v;
    }
    return sum;
}

/* Writes XQ (M, K) int8, sumx (M) = sum_k q, sx (M) = s for X (M, K) fp32. */
void fovea_quantize_rows(const float *X, i64 M, i64 K, int8_t *XQ, int32_t *sumx, float *sx) {
    for (i64 m = 0; m < M; m++) {
        const float *x = X + m * K;
        float s = 127.0f * (1.0f / fmaxf(row_absmax(x, K), 1e-5f)); /* torch's 127 / t is 127 * reciprocal(t) */
        sumx[m] = quantize_row(x, K, s, XQ + m * K);
        sx[m] = s;
    }
}

/* Float output for packed rows [r0, r1): Y[m, n] = acc * (w_scale / sx[m]) (+ bias[n]), Y (M, N). */
void fovea_ternary_linear_rows(const uint8_t *P, const int8_t *XQ, const int32_t *sumx, const float *sx,
                               float w_scale, const float *bias, float *Y, i64 R, i64 K, i64 M, i64 N,
                               i64 r0, i64 r1) {
    int32_t s[MB][4];
    for (i64 r = r0; r < r1; r++)
        for (i64 m = 0; m < M; m += MB) {
            int nt = block_sums(P, XQ, sumx, K, M, r, m, s);
            for (int j = 0; j < nt; j++) {
                float f = w_scale / sx[m + j];
                for (int i = 0; i < 4; i++) {
                    i64 n = i * R + r;
                    if (n >= N) continue;
                    float y = (float)s[j][i] * f;
                    Y[(m + j) * N + n] = bias ? y + bias[n] : y;
                }
            }
        }
}

/* Single-threaded whole layer: quantise X (M, K) float, multiply, rescale into Y (M, N). 0 = ok. */
int fovea_ternary_linear(const float *X, const uint8_t *P, float w_scale, const float *bias, float *Y,
                         i64 R, i64 K, i64 M, i64 N) {
    int8_t *xq = malloc((size_t)(M * K));
    int32_t *sumx = malloc(sizeof(int32_t) * (size_t)M);
    float *sx = malloc(sizeof(float) * (size_t)M);
    if (!xq || !sumx || !sx) { free(xq); free(sumx); free(sx); return 1; }
    fovea_quantize_rows(X, M, K, xq, sumx, sx);
    fovea_ternary_linear_rows(P, xq, sumx, sx, w_scale, bias, Y, R, K, M, N, 0, R);
    free(xq); free(sumx); free(sx);
    return 0;
}

/* ---- Tiled layout (AVX512-VNNI only): no horizontal sums. A tile = 64 bytes = 16 output rows x 16
 * input columns: byte 4*o + t holds, in bits 2i..2i+1, the code of row ob*16 + o, column
 * kb*16 + 4*i + t. vpdpbusd with the broadcast int32 of x[kb*16 + 4i .. + 3] then adds
 * sum_t code * x into lane o: 16 outputs accumulate in one register over all K. Tiles of one
 * row block are contiguous (kb = 0 .. KB-1). XQ rows have stride KB*16 (zero padded). */
int fovea_ternary_has_tiles(void) {
#if FOVEA_VNNI
    return 1;
#else
    return 0;
#endif
}

void fovea_quantize_rows_padded(const float *X, i64 M, i64 K, i64 Kp, int8_t *XQ, int32_t *sumx, float *sx) {
    for (i64 m = 0; m < M; m++) {
        fovea_quantize_rows(X + m * K, 1, K, XQ + m * Kp, sumx + m, sx + m);
        for (i64 k = K; k < Kp; k++) XQ[m * Kp + k] = 0;
    }
}

void fovea_ternary_tiles_rows(const uint8_t *T, const int8_t *XQ, const int32_t *sumx, const float *sx,
                              float w_scale, const float *bias, float *Y, i64 KB, i64 M, i64 N,
                              i64 ob0, i64 ob1) {
#if FOVEA_VNNI
    const __m512i three = _mm512_set1_epi8(3);
    const i64 Kp = KB * 16;
    for (i64 ob = ob0; ob < ob1; ob++) {
        const uint8_t *tb = T + ob * KB * 64;
        i64 n0 = ob * 16;
        int valid = (int)(N - n0 < 16 ? N - n0 : 16);
        __mmask16 mask = (__mmask16)((1u << valid) - 1u);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
        for (i64 m = 0; m < M; m += 4) {
            int nt = (int)(M - m < 4 ? M - m : 4);
            __m512i acc[4][4]; /* [plane][token]: 16 independent dependency chains */
            for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_si512();
            for (i64 kb = 0; kb < KB; kb++) {
                __m512i v = _mm512_loadu_si512((const void *)(tb + kb * 64));
                __m512i c0 = _mm512_and_si512(v, three);
                __m512i c1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), three);
                __m512i c2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), three);
                __m512i c3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), three);
                for (int j = 0; j < nt; j++) {
                    const int32_t *xk = (const int32_t *)(XQ + (m + j) * Kp + kb * 16);
                    acc[0][j] = _mm512_dpbusd_epi32(acc[0][j], c0, _mm512_set1_epi32(xk[0]));
                    acc[1][j] = _mm512_dpbusd_epi32(acc[1][j], c1, _mm512_set1_epi32(xk[1]));
                    acc[2][j] = _mm512_dpbusd_epi32(acc[2][j], c2, _mm512_set1_epi32(xk[2]));
                    acc[3][j] = _mm512_dpbusd_epi32(acc[3][j], c3, _mm512_set1_epi32(xk[3]));
                }
            }
            for (int j = 0; j < nt; j++) {
                __m512i a = _mm512_add_epi32(_mm512_add_epi32(acc[0][j], acc[1][j]),
                                             _mm512_add_epi32(acc[2][j], acc[3][j]));
                __m512i w = _mm512_sub_epi32(a, _mm512_set1_epi32(sumx[m + j]));
                __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(w), _mm512_set1_ps(w_scale / sx[m + j]));
                if (bias) y = _mm512_add_ps(y, bv);
                _mm512_mask_storeu_ps(Y + (m + j) * N + n0, mask, y);
            }
        }
    }
#else
    (void)T; (void)XQ; (void)sumx; (void)sx; (void)w_scale; (void)bias; (void)Y; (void)KB; (void)M; (void)N;
    (void)ob0; (void)ob1;
#endif
}

/* Single-threaded whole layer on tiles: quantise (padded), multiply, rescale. 0 = ok. */
int fovea_ternary_tiles_linear(const float *X, const uint8_t *T, float w_scale, const float *bias, float *Y,
                               i64 NB, i64 KB, i64 K, i64 M, i64 N) {
    i64 Kp = KB * 16;
    int8_t *xq = malloc((size_t)(M * Kp));
    int32_t *sumx = malloc(sizeof(int32_t) * (size_t)M);
    float *sx = malloc(sizeof(float) * (size_t)M);
    if (!xq || !sumx || !sx) { free(xq); free(sumx); free(sx); return 1; }
    fovea_quantize_rows_padded(X, M, K, Kp, xq, sumx, sx);
    fovea_ternary_tiles_rows(T, xq, sumx, sx, w_scale, bias, Y, KB, M, N, 0, NB);
    free(xq); free(sumx); free(sx);
    return 0;
}
"""

FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC", "-std=c99"]
FALLBACK_FLAGS = ["-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=c99"]

_LIB = None
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _build(flag_sets=(FLAGS, FALLBACK_FLAGS)) -> Path:
    """Compile C_SOURCE once per source/flags/compiler/CPU (first flag set that works); the .so path."""
    return build_shared(C_SOURCE, "ternary", flag_sets, "compress")


def _open(path: Path):
    lib = ctypes.CDLL(str(path))
    lib.fovea_ternary_gemm.argtypes = [_P] * 4 + [_I] * 5
    lib.fovea_ternary_gemm.restype = None
    lib.fovea_quantize_rows.argtypes = [_P, _I, _I, _P, _P, _P]
    lib.fovea_quantize_rows.restype = None
    lib.fovea_ternary_linear_rows.argtypes = [_P] * 4 + [ctypes.c_float, _P, _P] + [_I] * 6
    lib.fovea_ternary_linear_rows.restype = None
    lib.fovea_ternary_linear.argtypes = [_P, _P, ctypes.c_float, _P, _P] + [_I] * 4
    lib.fovea_ternary_linear.restype = ctypes.c_int
    lib.fovea_quantize_rows_padded.argtypes = [_P, _I, _I, _I, _P, _P, _P]
    lib.fovea_quantize_rows_padded.restype = None
    lib.fovea_ternary_tiles_rows.argtypes = [_P] * 4 + [ctypes.c_float, _P, _P] + [_I] * 5
    lib.fovea_ternary_tiles_rows.restype = None
    lib.fovea_ternary_tiles_linear.argtypes = [_P, _P, ctypes.c_float, _P, _P] + [_I] * 5
    lib.fovea_ternary_tiles_linear.restype = ctypes.c_int
    lib.fovea_ternary_has_tiles.argtypes = []
    lib.fovea_ternary_has_tiles.restype = ctypes.c_int
    lib.fovea_ternary_isa.argtypes = []
    lib.fovea_ternary_isa.restype = ctypes.c_int
    return lib


ISA_ENV = "FOVEA_TERNARY_ISA"  # native (default) | avx512-vnni | avx2 | scalar
ISA_FLAGS = {  # forced builds: FALLBACK_FLAGS + these; the CPU must have the /proc/cpuinfo flags listed
    "avx512-vnni": (["-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vnni"], ("avx2", "avx512f", "avx512bw", "avx512_vnni")),
    "avx2": (["-mavx2"], ("avx2",)),
    "scalar": ([], ()),
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def requested_isa() -> str:
    """The inner loop $FOVEA_TERNARY_ISA asks for ('native' when unset: the compiler picks for this CPU)."""
    want = os.environ.get(ISA_ENV, "native").strip().lower() or "native"
    if want != "native" and want not in ISA_FLAGS:
        raise ConfigError(f"{ISA_ENV}={want!r} is not a ternary kernel ISA; use one of native, "
                          f"{', '.join(ISA_FLAGS)} (or unset it)")
    return want


def load():
    """Build (if needed) and load the kernel library; raises RuntimeError when impossible.

    Dispatch happens at run time, on the machine that runs fovea: by default the source is compiled
    with -march=native, so an AVX2-only CPU gets the AVX2 loop and a VNNI CPU the VNNI loop (the cache
    key holds the CPU flags). $FOVEA_TERNARY_ISA=avx2 / scalar / avx512-vnni forces one loop, e.g. to
    run the AVX2 path on a VNNI machine; a loop the CPU cannot run is a HardwareError.
    """
    global _LIB
    if _LIB is None:
        want = requested_isa()
        if want == "native":
            _LIB = _open(_build())
        else:
            flags, needs = ISA_FLAGS[want]
            missing = [f for f in needs if f not in _cpu_flags()]
            if missing:
                raise HardwareError(f"{ISA_ENV}={want}: this CPU lacks {', '.join(missing)} (/proc/cpuinfo); "
                                    "unset it to let the compiler pick the loop for this CPU")
            _LIB = _open(_build(([*FALLBACK_FLAGS, *flags],)))
    return _LIB


def load_variant(extra_flags: list[str]):
    """The library built with FALLBACK_FLAGS + extra_flags (e.g. ["-mavx2"]): tests every inner loop."""
    return _open(_build(([*FALLBACK_FLAGS, *extra_flags],)))


def isa(lib=None) -> str:
    """Which inner loop a compiled library uses: 'avx512-vnni', 'avx2' or 'scalar'."""
    return {2: "avx512-vnni", 1: "avx2", 0: "scalar"}[(lib or load()).fovea_ternary_isa()]


def ternary_gemm_int32(packed: torch.Tensor, x_codes: torch.Tensor, lib=None) -> torch.Tensor:
    """Exact int32 sums (M, 4R): acc[m, n] = sum_k w[n, k] x[m, k] for packed (R, K) uint8, x (M, K) int8.

    Rows n >= N (the padding of the last packed row) hold -sum_k x[m, k]; callers slice [:, :N].
    """
    lib = lib or load()
    packed = packed.contiguous()
    x_codes = x_codes.contiguous()
    rows, k = packed.shape
    m = x_codes.shape[0]
    sumx = x_codes.sum(dim=1, dtype=torch.int32).contiguous()
    acc = torch.empty(m, 4 * rows, dtype=torch.int32)
    args = [packed.data_ptr(), x_codes.data_ptr(), sumx.data_ptr(), acc.data_ptr(), rows, k, m]
    parts = max(1, min(rows, torch.get_num_threads()))
    if parts == 1:
        lib.fovea_ternary_gemm(*args, 0, rows)
        return acc
    bounds = [rows * i // parts for i in range(parts + 1)]
    futures = [_pool(parts).submit(lib.fovea_ternary_gemm, *args, bounds[i], bounds[i + 1]) for i in range(parts)]
    for f in futures:
        f.result()
    return acc


def _pool(parts: int) -> ThreadPoolExecutor:
    return thread_pool("ternary", parts)


def ternary_linear(x: torch.Tensor, packed: torch.Tensor, scale: float, out_features: int,
                   bias: torch.Tensor | None, lib=None) -> torch.Tensor:
    """y (M, N) fp32 = BitLinear inference for x (M, K) fp32: quantise, multiply, rescale, all in C."""
    lib = lib or load()
    x = x.contiguous()
    packed = packed.contiguous()
    rows, k = packed.shape
    m = x.shape[0]
    y = torch.empty(m, out_features, dtype=torch.float32)
    b = 0 if bias is None else bias.contiguous().data_ptr()
    parts = max(1, min(rows, torch.get_num_threads()))
    if parts == 1:
        if lib.fovea_ternary_linear(x.data_ptr(), packed.data_ptr(), scale, b, y.data_ptr(), rows, k, m, out_features):
            raise MemoryError("fovea ternary kernel: out of memory for the quantised activations")
        return y
    xq = torch.empty(m, k, dtype=torch.int8)
    sumx = torch.empty(m, dtype=torch.int32)
    sx = torch.empty(m, dtype=torch.float32)
    lib.fovea_quantize_rows(x.data_ptr(), m, k, xq.data_ptr(), sumx.data_ptr(), sx.data_ptr())
    args = [packed.data_ptr(), xq.data_ptr(), sumx.data_ptr(), sx.data_ptr(), scale, b, y.data_ptr(),
            rows, k, m, out_features]
    bounds = [rows * i // parts for i in range(parts + 1)]
    futures = [_pool(parts).submit(lib.fovea_ternary_linear_rows, *args, bounds[i], bounds[i + 1])
               for i in range(parts)]
    for f in futures:
        f.result()
    return y


def make_tiles(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The VNNI tile layout (NB, KB, 64) uint8 of HF-packed weights (R, K); see the C comment."""
    from fovea.compress.packing import unpack_ternary

    codes = unpack_ternary(packed, out_features).to(torch.uint8) + 1  # (N, K) in {0, 1, 2}
    n, k = codes.shape
    nb, kb = -(-n // 16), -(-k // 16)
    padded = torch.ones(nb * 16, kb * 16, dtype=torch.uint8)  # code 1 = weight 0
    padded[:n, :k] = codes
    blocks = padded.reshape(nb, 16, kb, 4, 4).permute(0, 2, 1, 4, 3)  # (ob, kb, o, t, i)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)
    tiles = (blocks << shifts).sum(dim=-1, dtype=torch.uint8)  # disjoint bits: the sum is an OR
    return tiles.reshape(nb, kb, 64).contiguous()


def has_tiles(lib=None) -> bool:
    """True when the loaded library has the VNNI tile kernel."""
    return bool((lib or load()).fovea_ternary_has_tiles())


def ternary_linear_tiles(x: torch.Tensor, tiles: torch.Tensor, scale: float, out_features: int,
                         bias: torch.Tensor | None, lib=None) -> torch.Tensor:
    """As `ternary_linear`, from `make_tiles` weights (VNNI libraries only): y (M, N) fp32."""
    lib = lib or load()
    x = x.contiguous()
    nb, kb, _ = tiles.shape
    m, k = x.shape
    b = 0 if bias is None else bias.contiguous().data_ptr()
    parts = max(1, min(nb, torch.get_num_threads()))
    if parts == 1:  # one C call: no scratch tensors
        y = torch.empty(m, out_features, dtype=torch.float32)
        if lib.fovea_ternary_tiles_linear(x.data_ptr(), tiles.data_ptr(), scale, b, y.data_ptr(), nb, kb, k, m,
                                          out_features):
            raise MemoryError("fovea ternary kernel: out of memory for the quantised activations")
        return y
    xq = torch.empty(m, kb * 16, dtype=torch.int8)
    sumx = torch.empty(m, dtype=torch.int32)
    sx = torch.empty(m, dtype=torch.float32)
    lib.fovea_quantize_rows_padded(x.data_ptr(), m, k, kb * 16, xq.data_ptr(), sumx.data_ptr(), sx.data_ptr())
    y = torch.empty(m, out_features, dtype=torch.float32)
    args = [tiles.data_ptr(), xq.data_ptr(), sumx.data_ptr(), sx.data_ptr(), scale, b, y.data_ptr(), kb, m,
            out_features]
    bounds = [nb * i // parts for i in range(parts + 1)]
    futures = [_pool(parts).submit(lib.fovea_ternary_tiles_rows, *args, bounds[i], bounds[i + 1])
               for i in range(parts)]
    for f in futures:
        f.result()
    return y


TILE_MIN_TOKENS = 4  # tokens 2 and 3 run the row loop: faster there for wide K (benchmarks/compress.py)


class LinearPlan:
    """One packed layer prepared for the single-threaded C call: y (..., N) = plan(x (..., K) fp32 contiguous).

    Holds the HF-packed weights (and, on VNNI libraries, their tile layout), the scale as a C float and
    the bias pointer, so a call costs one torch.empty and one ctypes call (quantise + product + rescale
    all in C). Tiles run for 1 token and from TILE_MIN_TOKENS on, the row loop for 2-3 tokens.
    """

    def __init__(self, packed: torch.Tensor, scale, out_features: int, bias: torch.Tensor | None, lib=None):
        self.lib = lib or load()
        self.sources = (packed, scale, bias)  # pinned: callers key the plan on these objects' ids
        self.packed = packed.contiguous()
        self.tiles = make_tiles(self.packed, out_features) if has_tiles(self.lib) else None
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.rows, self.k = self.packed.shape
        self.n = out_features
        self.scale = ctypes.c_float(float(scale))
        self._bias_ptr = 0 if self.bias is None else self.bias.data_ptr()
        self._rows_fn, self._tiles_fn = self.lib.fovea_ternary_linear, self.lib.fovea_ternary_tiles_linear
        if self.tiles is not None:
            self._nb, self._kb = self.tiles.shape[0], self.tiles.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = x.numel() // self.k if self.k else 0
        y = torch.empty(m, self.n) if x.dim() == 2 else torch.empty(*x.shape[:-1], self.n)
        if m == 0:
            return y
        if self.tiles is not None and (m == 1 or m >= TILE_MIN_TOKENS):
            rc = self._tiles_fn(x.data_ptr(), self.tiles.data_ptr(), self.scale, self._bias_ptr, y.data_ptr(),
                                self._nb, self._kb, self.k, m, self.n)
        else:
            rc = self._rows_fn(x.data_ptr(), self.packed.data_ptr(), self.scale, self._bias_ptr, y.data_ptr(),
                               self.rows, self.k, m, self.n)
        if rc:
            raise MemoryError("fovea ternary kernel: out of memory for the quantised activations")
        return y
