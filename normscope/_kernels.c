/* normscope._kernels: the statistics of a tensor's sub-blocks in one fused pass.
 *
 * numpy needs seven passes over each sub-block for what `analysis.stats` accumulates (the square,
 * the sums of d, d^2, d^3, d^4, the minimum and the maximum); this loop reads each value once.
 *
 * Determinism: the arithmetic is written with GCC/clang vector extensions, so every lane does
 * exactly the IEEE operations written here, in this order, whatever the instruction set the
 * compiler picks (SSE2, or AVX2 through target_clones on x86-64 GCC); FMA contraction is off
 * (-ffp-contract=off in the build). A sub-block gives the same sums on every machine, so a
 * tensor gives the same report whatever --jobs, and the same on every x86-64 CPU.
 *
 * Per sub-block of `block` values (the last may be shorter), with d = (float)(x - shift) and the
 * sums kept in float64 over 8 lanes (lane j takes values j, j + 8, ...; the lanes are added 0..7 to
 * a zero, then the tail of fewer than 8 values in order):
 *     sums[4b .. 4b+3] = sum d, sum d^2, sum d^3, sum d^4;  mins[b], maxs[b] = min x, max x.
 * Outlier candidates: the values with float32(d * d) > tau2, copied out in order (a 64-value group
 * is looked at again only when one of its values passed the vector test).
 * A NaN or an Inf in a sub-block makes its sums non-finite (the caller then takes that sub-block
 * through its exact path); its min/max are then meaningless.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

static inline v8f select8(v8i mask, v8f a, v8f b) { return (v8f)((mask & (v8i)a) | (~mask & (v8i)b)); }

static inline int any8(v8i m) { return (m[0] | m[1] | m[2] | m[3] | m[4] | m[5] | m[6] | m[7]) != 0; }

static inline v8f load8(const float *p) {
    v8f f;
    memcpy(&f, p, sizeof f);
    return f;
}

/* Append the values x of p[from, to) with float32 (x - shift)^2 > tau2 to cand[nc...], in order. */
static int64_t copy_beyond(const float *p, int64_t from, int64_t to, float shift, float tau2, float *cand,
                           int64_t nc) {
    for (int64_t j = from; j < to; j++) {
        float d = p[j] - shift;
        if (d * d > tau2)
            cand[nc++] = p[j];
    }
    return nc;
}

/* One sub-block of m values, 8 lanes at a time; returns the number of candidates written. */
CLONES static int64_t sub_block(const float *p, int64_t m, float shift, float tau2, double *out, float *vmin,
                                float *vmax, float *cand) {
    const v8f k = {shift, shift, shift, shift, shift, shift, shift, shift};
    const v8f t2 = {tau2, tau2, tau2, tau2, tau2, tau2, tau2, tau2};
    v4d s1a = {0}, s1b = {0}, s2a = {0}, s2b = {0}, s3a = {0}, s3b = {0}, s4a = {0}, s4b = {0};
    v8f lo = {0}, hi = {0};
    v8i beyond = {0};
    int64_t i = 0, nc = 0;
    if (m >= 8)
        lo = hi = load8(p);
    for (; i + 8 <= m; i += 8) {
        v8f x = load8(p + i);
        lo = select8(x < lo, x, lo);
        hi = select8(x > hi, x, hi);
        v8f d = x - k;
        beyond |= d * d > t2;
        if ((i & 63) == 56) { /* every 64 values: copy out the candidates, if any passed */
            if (any8(beyond))
                nc = copy_beyond(p, i - 56, i + 8, shift, tau2, cand, nc);
            beyond = (v8i){0};
        }
        v4d da = __builtin_convertvector(__builtin_shufflevector(d, d, 0, 1, 2, 3), v4d);
        v4d db = __builtin_convertvector(__builtin_shufflevector(d, d, 4, 5, 6, 7), v4d);
        v4d qa = da * da, qb = db * db;
        s1a += da;
        s1b += db;
        s2a += qa;
        s2b += qb;
        s3a += qa * da;
        s3b += qb * db;
        s4a += qa * qa;
        s4b += qb * qb;
    }
    if (any8(beyond)) /* the last, partial group of 64 */
        nc = copy_beyond(p, i & ~(int64_t)63, i, shift, tau2, cand, nc);
    double s[4] = {0, 0, 0, 0};
    float l = 0, u = 0;
    if (m >= 8) {
        l = lo[0];
        u = hi[0];
        for (int j = 0; j < 8; j++) {
            l = lo[j] < l ? lo[j] : l;
            u = hi[j] > u ? hi[j] : u;
        }
        for (int j = 0; j < 4; j++) {
            s[0] += s1a[j];
            s[1] += s2a[j];
            s[2] += s3a[j];
            s[3] += s4a[j];
        }
        for (int j = 0; j < 4; j++) {
            s[0] += s1b[j];
            s[1] += s2b[j];
            s[2] += s3b[j];
            s[3] += s4b[j];
        }
    } else if (m > 0) {
        l = u = p[0];
    }
    for (; i < m; i++) { /* the tail of fewer than 8 values, in order */
        float x = p[i], d32 = x - shift;
        if (d32 * d32 > tau2)
            cand[nc++] = x;
        l = x < l ? x : l;
        u = x > u ? x : u;
        double d = d32, q = d * d;
        s[0] += d;
        s[1] += q;
        s[2] += q * d;
        s[3] += q * q;
    }
    memcpy(out, s, sizeof s);
    *vmin = l;
    *vmax = u;
    return nc;
}

static int writable(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t need, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != itemsize || view->len < need * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd writable items of %zd bytes", what, need, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(block_stats_doc,
"block_stats(values, shift, tau2, block, sums, mins, maxs, cand, counts) -> int\n--\n\n"
"Statistics of each `block`-value sub-block of `values` (a C-contiguous float32 buffer), with\n"
"d = float32(x - shift):\n"
"sums[b] = (sum d, sum d^2, sum d^3, sum d^4) summed in float64; mins[b], maxs[b] = min and max\n"
"of x; the values x with float32(d * d) > tau2 are appended to `cand` in order, counts[b] of them\n"
"from sub-block b. Outputs are writable buffers: float64 (4 per block), float32 (1 per block),\n"
"float32 (room for every value), int64 (1 per block). Returns the number of candidates written.\n"
"Releases the GIL.");

static PyObject *block_stats(PyObject *self, PyObject *args) {
    PyObject *values_obj, *sums_obj, *mins_obj, *maxs_obj, *cand_obj, *counts_obj;
    float shift, tau2;
    Py_ssize_t block;
    if (!PyArg_ParseTuple(args, "OffnOOOOO:block_stats", &values_obj, &shift, &tau2, &block, &sums_obj,
                          &mins_obj, &maxs_obj, &cand_obj, &counts_obj))
        return NULL;
    if (block <= 0)
        return PyErr_Format(PyExc_ValueError, "block must be positive, got %zd", block);
    Py_buffer bufs[6];
    int got = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(values_obj, &bufs[0], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    got = 1;
    if (bufs[0].itemsize != 4 || !bufs[0].format || strcmp(bufs[0].format, "f") != 0) {
        PyErr_SetString(PyExc_TypeError, "values: need a C-contiguous float32 buffer");
        goto done;
    }
    Py_ssize_t n = bufs[0].len / 4, nb = (n + block - 1) / block;
    PyObject *outs[5] = {sums_obj, mins_obj, maxs_obj, cand_obj, counts_obj};
    const char *names[5] = {"sums", "mins", "maxs", "cand", "counts"};
    Py_ssize_t need[5] = {4 * nb, nb, nb, n, nb}, sizes[5] = {8, 4, 4, 4, 8};
    for (int j = 0; j < 5; j++, got++) {
        if (writable(outs[j], &bufs[1 + j], names[j], need[j], sizes[j]) < 0)
            goto done;
    }
    int64_t total = 0;
    double *sums = bufs[1].buf;
    float *mins = bufs[2].buf, *maxs = bufs[3].buf, *cand = bufs[4].buf;
    int64_t *counts = bufs[5].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < nb; b++) {
        Py_ssize_t m = b == nb - 1 ? n - b * block : block;
        counts[b] = sub_block((const float *)bufs[0].buf + b * block, m, shift, tau2, sums + 4 * b, mins + b,
                              maxs + b, cand + total);
        total += counts[b];
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(total);
done:
    for (int j = 0; j < got; j++)
        PyBuffer_Release(&bufs[j]);
    return result;
}

static PyMethodDef methods[] = {
    {"block_stats", block_stats, METH_VARARGS, block_stats_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "normscope's compiled kernels: fused per-sub-block statistics.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
