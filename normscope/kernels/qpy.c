/* normscope._kernels.quantize / dequantize / qtypes: whole rows through the type table, GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

PyObject *ns_py_qtypes(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    PyObject *out = PyList_New(NS_N_QTYPES);
    for (int i = 0; out && i < NS_N_QTYPES; i++) {
        const ns_qtype *t = NS_QTYPES[i];
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
