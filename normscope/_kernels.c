/* normscope._kernels: the statistics of a tensor's sub-blocks in one fused pass.
 *
 * numpy needs seven passes over each sub-block for what `analysis.metrics.stats` accumulates (the square,
 * the sums of d, d^2, d^3, d^4, the minimum and the maximum); this loop reads each value once, from
 * float32 or straight from bfloat16 bit patterns (a bfloat16 is the top half of a float32: widening
 * is exact, so both give the same numbers for the same values).
 *
 * Determinism: the loop exists three times, with AVX-512 intrinsics for the float64 half and AVX2
 * for the rest (picked at import when the CPU has AVX-512F; about 0.24 ns a value on the CI
 * machine), with AVX2 intrinsics (about 0.27 ns), and in plain C over 8 lanes (every other CPU;
 * several times slower on x86-64, where GCC keeps the lanes in memory), and all do exactly the IEEE
 * operations written here, in the same order; FMA contraction is off (-ffp-contract=off in the build). A
 * sub-block gives the same sums on every machine, so a tensor gives the same report whatever --jobs.
 * `use(name)` switches between them (the tests check they agree bit for bit).
 *
 * Per sub-block of `block` values (the last may be shorter), with d = (float)(x - shift) and the
 * sums kept in float64 over 8 lanes (lane j takes values j, j + 8, ...; the lanes are added 0..7 to
 * a zero, then the tail of fewer than 8 values in order):
 *     sums[4b .. 4b+3] = sum d, sum d^2, sum d^3, sum d^4;  mins[b], maxs[b] = min x, max x.
 * min and max are taken as (x < lo ? x : lo) and (x > hi ? x : hi), lane by lane, then over lanes.
 * Outlier candidates: the values with float32(d * d) > tau2, copied out in order with their positions
 * (a 64-value group is looked at again only when one of its values passed the vector test).
 * A NaN or an Inf in a sub-block makes its sums non-finite (the caller then takes that sub-block
 * through its exact path); its min/max are then meaningless.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "kernels/qpy.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

/* Where a sub-block's values are: float32, or bfloat16 bit patterns. */
typedef struct {
    const void *p;
    int bf16;
} Values;

static inline float value_at(Values v, int64_t j) {
    if (!v.bf16)
        return ((const float *)v.p)[j];
    uint32_t u = (uint32_t)((const uint16_t *)v.p)[j] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* What one sub-block's loop hands to `finish`: the 8 lanes of each sum, of the minimum and maximum. */
typedef struct {
    double lanes[4][8];
    float lo[8], hi[8];
} Lanes;

/* Where the outputs of one sub-block go. */
typedef struct {
    float shift, tau2;
    double *sums;
    float *vmin, *vmax, *cand;
    int64_t *pos, base; /* candidate positions: base + index in the sub-block */
} Out;

/* Append the values of [from, to) with float32 (x - shift)^2 > tau2, and their positions, in order. */
static __attribute__((noinline)) int64_t copy_beyond(Values v, int64_t from, int64_t to, const Out *o, int64_t nc) {
    for (int64_t j = from; j < to; j++) {
        float x = value_at(v, j), d = x - o->shift;
        if (d * d > o->tau2) {
            o->cand[nc] = x;
            o->pos[nc++] = o->base + j;
        }
    }
    return nc;
}

/* The end of a sub-block, the same for both loops: lanes added in order, then the tail from i to m. */
static int64_t finish(Values v, int64_t i, int64_t m, const Lanes *a, const Out *o, int64_t nc) {
    double s[4] = {0, 0, 0, 0};
    float l = 0, u = 0;
    if (m >= 8) {
        l = a->lo[0];
        u = a->hi[0];
        for (int j = 0; j < 8; j++) {
            l = a->lo[j] < l ? a->lo[j] : l;
            u = a->hi[j] > u ? a->hi[j] : u;
            for (int k = 0; k < 4; k++)
                s[k] += a->lanes[k][j];
        }
    } else if (m > 0) {
        l = u = value_at(v, 0);
    }
    for (; i < m; i++) { /* the tail of fewer than 8 values, in order */
        float x = value_at(v, i), d32 = x - o->shift;
        if (d32 * d32 > o->tau2) {
            o->cand[nc] = x;
            o->pos[nc++] = o->base + i;
        }
        l = x < l ? x : l;
        u = x > u ? x : u;
        double d = d32, q = d * d;
        s[0] += d;
        s[1] += q;
        s[2] += q * d;
        s[3] += q * q;
    }
    memcpy(o->sums, s, sizeof s);
    *o->vmin = l;
    *o->vmax = u;
    return nc;
}

/* ---- the portable loop: plain C over 8 lanes (the compiler vectorizes it for the CPU at hand) ---- */

static inline __attribute__((always_inline)) int64_t portable(Values v, int64_t m, const Out *o) {
    const float shift = o->shift, tau2 = o->tau2;
    double s1[8] = {0}, s2[8] = {0}, s3[8] = {0}, s4[8] = {0};
    float lo[8] = {0}, hi[8] = {0};
    int64_t i = 0, nc = 0;
    int beyond = 0;
    for (int j = 0; j < 8 && m >= 8; j++)
        lo[j] = hi[j] = value_at(v, j);
    for (; i + 8 <= m; i += 8) {
        for (int j = 0; j < 8; j++) {
            float x = value_at(v, i + j), d32 = x - shift;
            lo[j] = x < lo[j] ? x : lo[j];
            hi[j] = x > hi[j] ? x : hi[j];
            beyond |= d32 * d32 > tau2;
            double d = d32, q = d * d;
            s1[j] += d;
            s2[j] += q;
            s3[j] += q * d;
            s4[j] += q * q;
        }
        if ((i & 63) == 56) { /* every 64 values: copy out the candidates, if any passed */
            if (beyond)
                nc = copy_beyond(v, i - 56, i + 8, o, nc);
            beyond = 0;
        }
    }
    if (beyond) /* the last, partial group of 64 */
        nc = copy_beyond(v, i & ~(int64_t)63, i, o, nc);
    Lanes a;
    memcpy(a.lanes[0], s1, sizeof s1);
    memcpy(a.lanes[1], s2, sizeof s2);
    memcpy(a.lanes[2], s3, sizeof s3);
    memcpy(a.lanes[3], s4, sizeof s4);
    memcpy(a.lo, lo, sizeof lo);
    memcpy(a.hi, hi, sizeof hi);
    return finish(v, i, m, &a, o, nc);
}

static int64_t portable_f32(Values v, int64_t m, const Out *o) { return portable((Values){v.p, 0}, m, o); }

static int64_t portable_bf16(Values v, int64_t m, const Out *o) { return portable((Values){v.p, 1}, m, o); }

/* ---- the AVX2 loop: the same operations with intrinsics (GCC's vector extensions spill here) ----- */

#ifdef HAVE_AVX2_PATH
static inline __attribute__((always_inline, target("avx2"))) __m256 load8_avx2(Values v, int64_t i) {
    if (v.bf16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)v.p + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)v.p + i);
}

/* copy_beyond for a group of whole 8-value vectors: the same test, then only the lanes that passed */
static inline __attribute__((always_inline, target("avx2"))) int64_t copy_beyond_avx2(Values v, int64_t from, int64_t to,
                                                                                  const Out *o, int64_t nc) {
    const __m256 k = _mm256_set1_ps(o->shift), t2 = _mm256_set1_ps(o->tau2);
    float *cand = o->cand;
    int64_t *pos = o->pos;
    for (int64_t i = from; i < to; i += 8) {
        __m256 x = load8_avx2(v, i), d = _mm256_sub_ps(x, k);
        unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_mul_ps(d, d), t2, _CMP_GT_OQ));
        if (!mask)
            continue;
        float xs[8];
        _mm256_storeu_ps(xs, x);
        for (; mask; mask &= mask - 1) {
            int j = __builtin_ctz(mask);
            cand[nc] = xs[j];
            pos[nc++] = o->base + i + j;
        }
    }
    return nc;
}

/* The float32 half of both vector loops, 8 values a step: min, max, d = x - K and the candidate test
 * (with the rescan of each 64-value group that had a candidate). The AVX2 and AVX-512 loops differ
 * only in how they keep the float64 sums of d. */
typedef struct {
    __m256 k, t2, lo, hi, beyond;
    int64_t nc;
} Half32;

static inline __attribute__((always_inline, target("avx2"))) Half32 half32_start(Values v, int64_t m, const Out *o) {
    Half32 h = {_mm256_set1_ps(o->shift), _mm256_set1_ps(o->tau2), _mm256_setzero_ps(), _mm256_setzero_ps(),
                _mm256_setzero_ps(), 0};
    if (m >= 8)
        h.lo = h.hi = load8_avx2(v, 0);
    return h;
}

/* One step at value i; returns d. */
static inline __attribute__((always_inline, target("avx2"))) __m256 half32_step(Half32 *h, Values v, int64_t i,
                                                                                const Out *o) {
    __m256 x = load8_avx2(v, i);
    h->lo = _mm256_min_ps(x, h->lo); /* MINPS(a, b) is a < b ? a : b, as in the portable loop */
    h->hi = _mm256_max_ps(x, h->hi);
    __m256 d = _mm256_sub_ps(x, h->k);
    h->beyond = _mm256_or_ps(h->beyond, _mm256_cmp_ps(_mm256_mul_ps(d, d), h->t2, _CMP_GT_OQ));
    if ((i & 63) == 56) { /* every 64 values: copy out the candidates, if any passed */
        if (_mm256_movemask_ps(h->beyond))
            h->nc = copy_beyond_avx2(v, i - 56, i + 8, o, h->nc);
        h->beyond = _mm256_setzero_ps();
    }
    return d;
}

/* After the last whole step (i values done): the last, partial group of 64, then `finish`. */
static inline __attribute__((always_inline, target("avx2"))) int64_t half32_end(Half32 *h, Values v, int64_t i,
                                                                               int64_t m, Lanes *a, const Out *o) {
    if (_mm256_movemask_ps(h->beyond))
        h->nc = copy_beyond_avx2(v, i & ~(int64_t)63, i, o, h->nc);
    _mm256_storeu_ps(a->lo, h->lo);
    _mm256_storeu_ps(a->hi, h->hi);
    return finish(v, i, m, a, o, h->nc);
}

static inline __attribute__((always_inline, target("avx2"))) int64_t avx2(Values v, int64_t m, const Out *o) {
    Half32 h = half32_start(v, m, o);
    __m256d s1a = _mm256_setzero_pd(), s1b = s1a, s2a = s1a, s2b = s1a, s3a = s1a, s3b = s1a, s4a = s1a, s4b = s1a;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m256 d = half32_step(&h, v, i, o);
        __m256d da = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), db = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
        __m256d qa = _mm256_mul_pd(da, da), qb = _mm256_mul_pd(db, db);
        s1a = _mm256_add_pd(s1a, da);
        s1b = _mm256_add_pd(s1b, db);
        s2a = _mm256_add_pd(s2a, qa);
        s2b = _mm256_add_pd(s2b, qb);
        s3a = _mm256_add_pd(s3a, _mm256_mul_pd(qa, da));
        s3b = _mm256_add_pd(s3b, _mm256_mul_pd(qb, db));
        s4a = _mm256_add_pd(s4a, _mm256_mul_pd(qa, qa));
        s4b = _mm256_add_pd(s4b, _mm256_mul_pd(qb, qb));
    }
    Lanes a;
    __m256d sums[4][2] = {{s1a, s1b}, {s2a, s2b}, {s3a, s3b}, {s4a, s4b}};
    for (int j = 0; j < 4; j++)
        for (int k = 0; k < 2; k++)
            _mm256_storeu_pd(&a.lanes[j][4 * k], sums[j][k]);
    return half32_end(&h, v, i, m, &a, o);
}

__attribute__((target("avx2"))) static int64_t avx2_f32(Values v, int64_t m, const Out *o) {
    return avx2((Values){v.p, 0}, m, o);
}

__attribute__((target("avx2"))) static int64_t avx2_bf16(Values v, int64_t m, const Out *o) {
    return avx2((Values){v.p, 1}, m, o);
}

/* ---- the AVX-512 loop: the AVX2 loop with the float64 half in 8-lane registers ------------------ */
/* Lane j of each 512-bit sum is lane j of the AVX2 loop's two 256-bit ones (values j, j + 8, ...), and
 * it sees the same operations in the same order: the same sums, with half the float64 instructions. */

static inline __attribute__((always_inline, target("avx512f,avx2"))) int64_t avx512(Values v, int64_t m,
                                                                                 const Out *o) {
    Half32 h = half32_start(v, m, o);
    __m512d s1 = _mm512_setzero_pd(), s2 = s1, s3 = s1, s4 = s1;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m512d dd = _mm512_cvtps_pd(half32_step(&h, v, i, o)), q = _mm512_mul_pd(dd, dd);
        s1 = _mm512_add_pd(s1, dd);
        s2 = _mm512_add_pd(s2, q);
        s3 = _mm512_add_pd(s3, _mm512_mul_pd(q, dd));
        s4 = _mm512_add_pd(s4, _mm512_mul_pd(q, q));
    }
    Lanes a;
    _mm512_storeu_pd(a.lanes[0], s1);
    _mm512_storeu_pd(a.lanes[1], s2);
    _mm512_storeu_pd(a.lanes[2], s3);
    _mm512_storeu_pd(a.lanes[3], s4);
    return half32_end(&h, v, i, m, &a, o);
}

__attribute__((target("avx512f,avx2"))) static int64_t avx512_f32(Values v, int64_t m, const Out *o) {
    return avx512((Values){v.p, 0}, m, o);
}

__attribute__((target("avx512f,avx2"))) static int64_t avx512_bf16(Values v, int64_t m, const Out *o) {
    return avx512((Values){v.p, 1}, m, o);
}
#endif

typedef int64_t (*SubBlockFn)(Values, int64_t, const Out *);

static const struct {
    const char *name;
    SubBlockFn f32, bf16;
} PATHS[] = {
#ifdef HAVE_AVX2_PATH
    {"avx512", avx512_f32, avx512_bf16},
    {"avx2", avx2_f32, avx2_bf16},
#endif
    {"portable", portable_f32, portable_bf16},
};
#define N_PATHS ((int)(sizeof PATHS / sizeof PATHS[0]))

static int path = N_PATHS - 1; /* index into PATHS: set at import to the fastest this CPU runs */

static int path_runs(int j) {
#ifdef HAVE_AVX2_PATH
    if (PATHS[j].f32 == avx512_f32)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2");
    if (PATHS[j].f32 == avx2_f32)
        return __builtin_cpu_supports("avx2");
#endif
    (void)j;
    return 1;
}

/* ---- Python ---------------------------------------------------------------------------------------- */

/* A writable C-contiguous buffer of at least `need` items of one of the struct codes in `codes`
 * (native byte order), each `itemsize` bytes: "d" float64, "f" float32, "lq" int64. */
static int writable(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t need, const char *codes,
                    Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=')
        f++;
    int ok = f[0] && !f[1] && strchr(codes, f[0]) && view->itemsize == itemsize;
    if (!ok || view->len < need * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd writable items of %s", what, need,
                     itemsize == 8 ? (codes[0] == 'd' ? "float64" : "int64") : "float32");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *run(PyObject *args, int bf16) {
    PyObject *values_obj, *sums_obj, *mins_obj, *maxs_obj, *cand_obj, *pos_obj, *counts_obj;
    float shift, tau2;
    Py_ssize_t block;
    if (!PyArg_ParseTuple(args, "OffnOOOOOO", &values_obj, &shift, &tau2, &block, &sums_obj, &mins_obj,
                          &maxs_obj, &cand_obj, &pos_obj, &counts_obj))
        return NULL;
    if (block <= 0)
        return PyErr_Format(PyExc_ValueError, "block must be positive, got %zd", block);
    Py_buffer bufs[7];
    int got = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(values_obj, &bufs[0], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    got = 1;
    const char *want = bf16 ? "H" : "f";
    if (bufs[0].itemsize != (bf16 ? 2 : 4) || !bufs[0].format || strcmp(bufs[0].format, want) != 0) {
        PyErr_SetString(PyExc_TypeError, bf16 ? "values: need a C-contiguous uint16 buffer of bfloat16 bits"
                                              : "values: need a C-contiguous float32 buffer");
        goto done;
    }
    Py_ssize_t n = bufs[0].len / bufs[0].itemsize, nb = (n + block - 1) / block;
    PyObject *outs[6] = {sums_obj, mins_obj, maxs_obj, cand_obj, pos_obj, counts_obj};
    const char *names[6] = {"sums", "mins", "maxs", "cand", "positions", "counts"};
    Py_ssize_t need[6] = {4 * nb, nb, nb, n, n, nb}, sizes[6] = {8, 4, 4, 4, 8, 8};
    const char *codes[6] = {"d", "f", "f", "f", "lq", "lq"};
    for (int j = 0; j < 6; j++, got++) {
        if (writable(outs[j], &bufs[1 + j], names[j], need[j], codes[j], sizes[j]) < 0)
            goto done;
    }
    int64_t total = 0;
    int64_t *counts = bufs[6].buf;
    SubBlockFn fn = bf16 ? PATHS[path].bf16 : PATHS[path].f32;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < nb; b++) {
        Py_ssize_t m = b == nb - 1 ? n - b * block : block;
        Values v = {(const char *)bufs[0].buf + b * block * bufs[0].itemsize, bf16};
        Out o = {shift, tau2, (double *)bufs[1].buf + 4 * b, (float *)bufs[2].buf + b, (float *)bufs[3].buf + b,
                 (float *)bufs[4].buf + total, (int64_t *)bufs[5].buf + total, b * block};
        counts[b] = fn(v, m, &o);
        total += counts[b];
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(total);
done:
    for (int j = 0; j < got; j++)
        PyBuffer_Release(&bufs[j]);
    return result;
}

PyDoc_STRVAR(block_stats_doc,
"block_stats(values, shift, tau2, block, sums, mins, maxs, cand, positions, counts) -> int\n--\n\n"
"Statistics of each `block`-value sub-block of `values` (a C-contiguous float32 buffer), with\n"
"d = float32(x - shift):\n"
"sums[b] = (sum d, sum d^2, sum d^3, sum d^4) summed in float64; mins[b], maxs[b] = min and max\n"
"of x; the values x with float32(d * d) > tau2 are appended to `cand` in order and their indices in\n"
"`values` to `positions`, counts[b] of them from sub-block b. Outputs are writable buffers: float64\n"
"(4 per block), float32 (1 per block), float32 and int64 (room for every value), int64 (1 per\n"
"block). Returns the number of candidates written. Releases the GIL.");

static PyObject *block_stats(PyObject *self, PyObject *args) { return run(args, 0); }

PyDoc_STRVAR(block_stats_bf16_doc,
"block_stats_bf16(values, shift, tau2, block, sums, mins, maxs, cand, positions, counts) -> int\n--\n\n"
"`block_stats` of bfloat16 values given as their bit patterns (a uint16 buffer, numpy's\n"
"`.view(np.uint16)` of an ml_dtypes bfloat16 array): the same numbers as `block_stats` of the\n"
"values widened to float32, without the widened copy.");

static PyObject *block_stats_bf16(PyObject *self, PyObject *args) { return run(args, 1); }

PyDoc_STRVAR(use_doc, "use(name) -> str\n--\n\n"
"Run the loop named `name` (one of `paths()`) from now on; returns the previous name.");

static PyObject *use(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    for (int j = 0; j < N_PATHS; j++) {
        if (strcmp(name, PATHS[j].name) == 0 && path_runs(j)) {
            const char *before = PATHS[path].name;
            path = j;
            return PyUnicode_FromString(before);
        }
    }
    return PyErr_Format(PyExc_ValueError, "no loop %R on this CPU", arg);
}

PyDoc_STRVAR(paths_doc, "paths() -> list[str]\n--\n\nThe loops this CPU runs, the one in use first.");

static PyObject *paths(PyObject *self, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    for (int j = -1; j < N_PATHS; j++) {
        int k = j < 0 ? path : j;
        if ((j >= 0 && k == path) || !path_runs(k))
            continue;
        PyObject *s = PyUnicode_FromString(PATHS[k].name);
        if (!s || PyList_Append(out, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(s);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"block_stats", block_stats, METH_VARARGS, block_stats_doc},
    {"block_stats_bf16", block_stats_bf16, METH_VARARGS, block_stats_bf16_doc},
    {"use", use, METH_O, use_doc},
    {"paths", paths, METH_NOARGS, paths_doc},
    NS_QUANT_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "normscope's compiled kernels: fused per-sub-block statistics and ggml's quantizers.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
#endif
    for (int j = 0; j < N_PATHS; j++) {
        if (path_runs(j)) {
            path = j;
            break;
        }
    }
    return PyModule_Create(&module);
}
