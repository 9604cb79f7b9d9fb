/* The Python face of the ggml quantizers (qpy.c), added to normscope._kernels' method table. */
#ifndef NORMSCOPE_QPY_H
#define NORMSCOPE_QPY_H
#include <Python.h>

PyObject *ns_py_qtypes(PyObject *self, PyObject *unused);
PyObject *ns_py_act_qtypes(PyObject *self, PyObject *unused);
PyObject *ns_py_quantize(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *ns_py_dequantize(PyObject *self, PyObject *args);
PyObject *ns_py_init_type(PyObject *self, PyObject *args);
PyObject *ns_py_measure(PyObject *self, PyObject *args, PyObject *kwargs);
extern const char ns_py_qtypes_doc[], ns_py_act_qtypes_doc[], ns_py_quantize_doc[], ns_py_dequantize_doc[],
    ns_py_init_type_doc[], ns_py_measure_doc[];

#define NS_QUANT_METHODS                                                                                   \
    {"qtypes", ns_py_qtypes, METH_NOARGS, ns_py_qtypes_doc},                                               \
    {"act_qtypes", ns_py_act_qtypes, METH_NOARGS, ns_py_act_qtypes_doc},                                   \
    {"quantize", (PyCFunction)(void (*)(void))ns_py_quantize, METH_VARARGS | METH_KEYWORDS,               \
     ns_py_quantize_doc},                                                                                  \
    {"dequantize", ns_py_dequantize, METH_VARARGS, ns_py_dequantize_doc},                                 \
    {"init_type", ns_py_init_type, METH_VARARGS, ns_py_init_type_doc},                                   \
    {"measure", (PyCFunction)(void (*)(void))ns_py_measure, METH_VARARGS | METH_KEYWORDS, ns_py_measure_doc},

#endif
