/* normscope._kernels.quantize / dequantize / qtypes: whole rows through the type table, GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "qmeasure.h"
#include "qpy.h"
#include "qtypes.h"

/* Types whose tables are set up (init run once, with the GIL held). */
static unsigned char inited[128];

static const ns_qtype *lookup(const char *name, int *index, int need_init) {
    for (int i = 0; i < NS_N_QTYPES; i++) {
        if (strcmp(NS_QTYPES[i]->name, name) == 0) {
            const ns_qtype *t = NS_QTYPES[i];
            if (t->init && !inited[i] && need_init) {
                PyErr_Format(PyExc_RuntimeError, "%s: its grid is not loaded (call _kernels.init_type first; "
                             "normscope.quant does)", name);
                return NULL;
            }
            if (index)
                *index = i;
            return t;
        }
    }
    for (int i = 0; i < NS_N_ACT_QTYPES; i++) {  /* activation types: no tables to set up */
        if (strcmp(NS_ACT_QTYPES[i]->name, name) == 0) {
            if (index)
                *index = -1;
            return NS_ACT_QTYPES[i];
        }
    }
    PyObject *names = PyList_New(0);
    for (int i = 0; names && i < NS_N_QTYPES; i++) {
        PyObject *s = PyUnicode_FromString(NS_QTYPES[i]->name);
        if (s)
            PyList_Append(names, s);
        Py_XDECREF(s);
    }
    PyErr_Format(PyExc_KeyError, "no ggml type %s in the kernel table (it has %S)", name, names);
    Py_XDECREF(names);
    return NULL;
}

/* Float32 input of n values in rows of n_per_row, a whole number of blocks per row. */
static int float_rows(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t n_per_row, int block,
                      int writable) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (strcmp(f, "f") != 0 || view->itemsize != 4) {
        PyErr_Format(PyExc_TypeError, "%s: need a C-contiguous float32 buffer", what);
        PyBuffer_Release(view);
        return -1;
    }
    Py_ssize_t n = view->len / 4;
    if (n_per_row <= 0 || n_per_row % block || n % n_per_row) {
        PyErr_Format(PyExc_ValueError, "%s: %zd values are not rows of %zd (a multiple of the block, %d)", what,
                     n, n_per_row, block);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int byte_rows(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t need, int writable) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->len != need) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd bytes, got %zd", what, need, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

const char ns_py_init_type_doc[] =
    "init_type(name, data) -> bool\n--\n\n"
    "Set up a lattice type's tables from its published grid `data` (bytes-like); a no-op returning\n"
    "False for a type without tables or one already set up. Raises ValueError when `data` is not the\n"
    "grid the type expects.";

PyObject *ns_py_init_type(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "sy*", &name, &data))
        return NULL;
    int i;
    const ns_qtype *t = lookup(name, &i, 0);
    PyObject *result = NULL;
    if (!t)
        goto done;
    if (!t->init || inited[i]) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    if (t->init((const uint8_t *)data.buf, data.len) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes are not its grid", name, data.len);
        goto done;
    }
    inited[i] = 1;
    result = Py_NewRef(Py_True);
done:
    PyBuffer_Release(&data);
    return result;
}

const char ns_py_qtypes_doc[] =
    "qtypes() -> list[tuple]\n--\n\n"
    "The kernel table: (name, ggml type number, values per block, bytes per block, importance matrix\n"
    "(0 ignored, 1 used, 2 required), byte offset of the fp16 block scale or -1, whether it needs\n"
    "`init_type` with its grid first) per type.";

static PyObject *table_rows(const ns_qtype *const *table, int n) {
    PyObject *out = PyList_New(n);
    for (int i = 0; out && i < n; i++) {
        const ns_qtype *t = table[i];
        PyObject *row = Py_BuildValue("(siiiiii)", t->name, t->ggml_type, t->block_size, t->type_size, t->imatrix,
                                      t->scale_offset, t->init != NULL);
        if (!row) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, row);
    }
    return out;
}

PyObject *ns_py_qtypes(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return table_rows(NS_QTYPES, NS_N_QTYPES);
}

const char ns_py_act_qtypes_doc[] =
    "act_qtypes() -> list[tuple]\n--\n\n"
    "The activation types (Q8_1, Q8_K), rows as qtypes(): what ggml-cpu quantizes a matmul's input to for\n"
    "some weight types' dot products. `quantize` and `dequantize` take them; no weight is stored in them.";

PyObject *ns_py_act_qtypes(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return table_rows(NS_ACT_QTYPES, NS_N_ACT_QTYPES);
}

const char ns_py_quantize_doc[] =
    "quantize(name, x, out, n_per_row, imatrix=None) -> None\n--\n\n"
    "ggml's bytes of the float32 rows `x` (C-contiguous, rows of `n_per_row` values) in type `name`,\n"
    "written to `out` (bytes per row = n_per_row / block * type size): what ggml_quantize_chunk writes\n"
    "for these rows. `imatrix`: n_per_row float32 importance weights, or None. Releases the GIL.";

PyObject *ns_py_quantize(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kw[] = {"name", "x", "out", "n_per_row", "imatrix", NULL};
    const char *name;
    PyObject *x_obj, *out_obj, *qw_obj = Py_None;
    Py_ssize_t n_per_row;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sOOn|O", kw, &name, &x_obj, &out_obj, &n_per_row, &qw_obj))
        return NULL;
    const ns_qtype *t = lookup(name, NULL, 1);
    if (!t)
        return NULL;
    Py_buffer xb, ob, qb;
    if (float_rows(x_obj, &xb, "x", n_per_row, t->block_size, 0) < 0)
        return NULL;
    Py_ssize_t rows = xb.len / 4 / n_per_row, row_bytes = n_per_row / t->block_size * t->type_size;
    if (byte_rows(out_obj, &ob, "out", rows * row_bytes, 1) < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    const float *qw = NULL;
    int have_qw = qw_obj != Py_None;
    if (have_qw) {
        if (float_rows(qw_obj, &qb, "imatrix", 1, 1, 0) < 0) {
            PyBuffer_Release(&xb);
            PyBuffer_Release(&ob);
            return NULL;
        }
        if (qb.len / 4 != n_per_row) {
            PyErr_Format(PyExc_ValueError, "imatrix: need %zd float32 weights (one per column), got %zd", n_per_row,
                         qb.len / 4);
            PyBuffer_Release(&qb);
            PyBuffer_Release(&xb);
            PyBuffer_Release(&ob);
            return NULL;
        }
        qw = qb.buf;
    }
    if (t->imatrix == NS_IMATRIX_REQUIRED && !qw) {
        PyBuffer_Release(&xb);
        PyBuffer_Release(&ob);
        return PyErr_Format(PyExc_ValueError, "%s needs an importance matrix", name);
    }
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows && status == 0; r++)
        status = t->quantize((const float *)xb.buf + r * n_per_row, (uint8_t *)ob.buf + r * row_bytes, n_per_row,
                             t->imatrix == NS_IMATRIX_IGNORED ? NULL : qw);
    Py_END_ALLOW_THREADS
    if (have_qw)
        PyBuffer_Release(&qb);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&ob);
    if (status != 0)
        return PyErr_Format(PyExc_ValueError, "%s needs an importance matrix", name);
    Py_RETURN_NONE;
}

const char ns_py_dequantize_doc[] =
    "dequantize(name, raw, out, n_per_row) -> None\n--\n\n"
    "float32 values into `out` (C-contiguous, rows of `n_per_row`) from ggml bytes `raw` of type\n"
    "`name`, as ggml's dequantize_row reads them. Releases the GIL.";

PyObject *ns_py_dequantize(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    PyObject *raw_obj, *out_obj;
    Py_ssize_t n_per_row;
    if (!PyArg_ParseTuple(args, "sOOn", &name, &raw_obj, &out_obj, &n_per_row))
        return NULL;
    const ns_qtype *t = lookup(name, NULL, 1);
    if (!t)
        return NULL;
    Py_buffer yb, rb;
    if (float_rows(out_obj, &yb, "out", n_per_row, t->block_size, 1) < 0)
        return NULL;
    Py_ssize_t rows = yb.len / 4 / n_per_row, row_bytes = n_per_row / t->block_size * t->type_size;
    if (byte_rows(raw_obj, &rb, "raw", rows * row_bytes, 0) < 0) {
        PyBuffer_Release(&yb);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++)
        t->dequantize((const uint8_t *)rb.buf + r * row_bytes, (float *)yb.buf + r * n_per_row, n_per_row);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&yb);
    PyBuffer_Release(&rb);
    Py_RETURN_NONE;
}

/* ---- measure: quantize, read back and measure in one pass ------------------------------------------ */

/* A C-contiguous buffer of `need` items whose struct code is one of `codes` and whose items are `itemsize`
 * bytes (need < 0: at least -need items). None is allowed when `optional`, and leaves view->buf NULL. */
static int typed(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t need, const char *codes,
                 Py_ssize_t itemsize, int writable, int optional) {
    memset(view, 0, sizeof *view);
    if (obj == Py_None) {
        if (optional)
            return 0;
        PyErr_Format(PyExc_TypeError, "%s: a buffer is required", what);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    Py_ssize_t items = view->len / (view->itemsize ? view->itemsize : 1);
    int ok = f[0] && !f[1] && strchr(codes, f[0]) && view->itemsize == itemsize;
    ok = ok && (need >= 0 ? items == need : items >= -need);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: need %s%zd C-contiguous items of %zd bytes (%s), got %zd of format %s",
                     what, need >= 0 ? "" : "at least ", need >= 0 ? need : -need, itemsize, codes, items, f);
        PyBuffer_Release(view);
        view->buf = NULL;
        return -1;
    }
    return 0;
}

const char ns_py_measure_doc[] =
    "measure(name, x, y, n_per_row, imatrix, col2, row2, keep, kept, hist, stats, health, group, y_out=None,\n"
    "        raw_out=None) -> int\n--\n\n"
    "Quantize the float32 rows `x` to ggml type `name` (or, with name None, take `y` as what a format read\n"
    "back), read them back and measure the error in the same pass (normscope/kernels/qmeasure.c): float64\n"
    "sums into `stats` (10 float64: d2, x2, y2, xy, weighted d2, weighted x2, max |d|, non-finite |d|, |d| == 0,\n"
    "non-finite x),\n"
    "|d| histogram added to `hist` (32768 int64), the nonzero |d| whose bin `keep` (32768 uint8 or bool, None:\n"
    "all) marks copied to `kept` (float32, room for every value), block health added to `health` (7 int64: blocks,\n"
    "dominated, scale underflow, subnormal, overflow, nonzero, read back as zero; None: not measured) per\n"
    "`group` values. col2: n_per_row float64 squared column gains or None; row2: one float64 squared gain\n"
    "per row or None. y_out: float32 room for the read-back rows; raw_out: uint8 room for the bytes. Returns\n"
    "the number of values copied to `kept`. Releases the GIL.";

PyObject *ns_py_measure(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kw[] = {"name", "x", "y", "n_per_row", "imatrix", "col2", "row2", "keep", "kept", "hist",
                         "stats", "health", "group", "y_out", "raw_out", NULL};
    const char *name;
    PyObject *x_o, *y_o, *qw_o, *c2_o, *r2_o, *keep_o, *kept_o, *hist_o, *stats_o, *health_o;
    PyObject *yout_o = Py_None, *raw_o = Py_None;
    Py_ssize_t n, group;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "zOOnOOOOOOOOn|OO", kw, &name, &x_o, &y_o, &n, &qw_o, &c2_o,
                                     &r2_o, &keep_o, &kept_o, &hist_o, &stats_o, &health_o, &group, &yout_o, &raw_o))
        return NULL;
    const ns_qtype *t = NULL;
    if (name && !(t = lookup(name, NULL, 1)))
        return NULL;
    Py_buffer b[12];
    int got = 0;
    PyObject *result = NULL;
    if (typed(x_o, &b[0], "x", -1, "f", 4, 0, 0) < 0)
        return NULL;
    got = 1;
    Py_ssize_t total = b[0].len / 4;
    int block = t ? t->block_size : 1;
    if (n <= 0 || n % block || total % n) {
        PyErr_Format(PyExc_ValueError, "x: %zd values are not rows of %zd (a multiple of the block, %d)", total, n,
                     block);
        goto done;
    }
    Py_ssize_t rows = total / n;
    if (group <= 0 || n % group) {
        PyErr_Format(PyExc_ValueError, "group %zd does not divide rows of %zd", group, n);
        goto done;
    }
    struct {
        PyObject *o;
        const char *what, *codes;
        Py_ssize_t need, size;
        int writable, optional;
    } spec[11] = {
        {y_o, "y", "f", total, 4, 0, t != NULL},
        {qw_o, "imatrix", "f", n, 4, 0, 1},
        {c2_o, "col2", "d", n, 8, 0, 1},
        {r2_o, "row2", "d", rows, 8, 0, 1},
        {keep_o, "keep", "B?", NS_BINS, 1, 0, 1},
        {kept_o, "kept", "f", -total, 4, 1, 0},
        {hist_o, "hist", "lq", NS_BINS, 8, 1, 0},
        {stats_o, "stats", "d", NS_STATS, 8, 1, 0},
        {health_o, "health", "lq", NS_HEALTH, 8, 1, 1},
        {yout_o, "y_out", "f", total, 4, 1, 1},
        {raw_o, "raw_out", "B", t ? rows * (n / t->block_size) * t->type_size : 0, 1, 1, 1},
    };
    for (int i = 0; i < 11; i++, got++) {
        if (typed(spec[i].o, &b[1 + i], spec[i].what, spec[i].need, spec[i].codes, spec[i].size, spec[i].writable,
                  spec[i].optional) < 0)
            goto done;
    }
    if (!t && !b[1].buf) {
        PyErr_SetString(PyExc_TypeError, "y: a buffer is required without a type name");
        goto done;
    }
    if (t && t->imatrix == NS_IMATRIX_REQUIRED && !b[2].buf) {
        PyErr_Format(PyExc_ValueError, "%s needs an importance matrix", name);
        goto done;
    }
    ns_measure_args a = {t, b[0].buf, b[1].buf, n, b[2].buf, b[3].buf, b[4].buf, b[5].buf, b[6].buf, b[7].buf,
                         b[8].buf, b[9].buf, group, b[10].buf, b[11].buf};
    float *yrow = malloc((size_t)n * sizeof(float));
    uint8_t *rawrow = malloc(t ? (size_t)(n / t->block_size * t->type_size) : 1);
    int64_t *hist2 = calloc(2 * NS_BINS, sizeof(int64_t));
    if (!yrow || !rawrow || !hist2) {
        free(yrow);
        free(rawrow);
        free(hist2);
        PyErr_NoMemory();
        goto done;
    }
    int64_t kept;
    Py_BEGIN_ALLOW_THREADS
    kept = ns_measure_rows(&a, rows, yrow, rawrow, hist2);
    Py_END_ALLOW_THREADS
    free(yrow);
    free(rawrow);
    free(hist2);
    if (kept < 0)
        PyErr_Format(PyExc_ValueError, "%s needs an importance matrix", name);
    else
        result = PyLong_FromLongLong(kept);
done:
    for (int i = 0; i < got; i++)
        if (b[i].buf)
            PyBuffer_Release(&b[i]);
    return result;
}
