/* normscope's ggml quantizers: one table of types, one row quantizer and dequantizer per type.
 *
 * Every quantizer writes exactly the bytes of llama.cpp's `ggml_quantize_chunk` for one row: without
 * importance weights the `*_ref` algorithm llama-quantize uses, with them (`qw`, one float per value of
 * the row, what ggml_quantize_chunk takes as `imatrix`) the weighted path. The code is normscope's own,
 * written from the algorithms in ggml/src/ggml-quants.c; the float operations are those of the reference,
 * in its order, and the build turns FMA contraction off, so the bytes are the same on every CPU.
 *
 * Adding a type: write its two row functions in the family's file, add one line to NS_QTYPES in
 * qtable.c, and the Python side (normscope.quant) and the tests against ggml pick it up.
 */
#ifndef NORMSCOPE_QTYPES_H
#define NORMSCOPE_QTYPES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* One row of n values (a whole number of blocks) to ggml's bytes; qw: n importance weights or NULL.
 * Returns 0, or -1 when the type needs importance weights and qw is NULL. */
typedef int (*ns_quantize_row_fn)(const float *x, uint8_t *y, int64_t n, const float *qw);
/* ggml's bytes of n values back to float32, as ggml's dequantize_row_* reads them. */
typedef void (*ns_dequantize_row_fn)(const uint8_t *x, float *y, int64_t n);
/* One-time set-up of a type's tables (a lattice type's grid and its neighbour tables) from `data`, the
 * published grid as normscope.quant hands it over (from gguf-py); 0 on success, -1 when `data` is not the
 * expected grid. Called with the GIL held, before any quantize or dequantize of the type. */
typedef int (*ns_init_fn)(const uint8_t *data, int64_t nbytes);

enum { NS_IMATRIX_IGNORED = 0, NS_IMATRIX_USED = 1, NS_IMATRIX_REQUIRED = 2 };

typedef struct {
    const char *name;   /* as gguf.GGMLQuantizationType spells it */
    int ggml_type;      /* its number in ggml.h */
    int block_size;     /* values per block */
    int type_size;      /* bytes per block */
    int imatrix;        /* NS_IMATRIX_*: what ggml_quantize_chunk does with an importance matrix */
    int scale_offset;   /* byte offset of the block's fp16 scale d (block health), -1 when there is none */
    ns_quantize_row_fn quantize;
    ns_dequantize_row_fn dequantize;
    ns_init_fn init;    /* NULL: nothing to set up; else `_kernels.init_type(name, data)` must run first */
} ns_qtype;

extern const ns_qtype *const NS_QTYPES[];
extern const int NS_N_QTYPES;
extern const ns_qtype *const NS_ACT_QTYPES[]; /* activation types (Q8_1, Q8_K): quantize/dequantize only */
extern const int NS_N_ACT_QTYPES;
const ns_qtype *ns_qtype_find(const char *name);

/* ---- helpers every family uses (ggml-impl.h's conversions, bit for bit) ---------------------------- */

static inline uint32_t ns_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float ns_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float32 -> fp16 bits, round to nearest even; every NaN becomes 0x7E00 with its sign (ggml's software
 * conversion: the same result as F16C's for every non-NaN input). */
static inline uint16_t ns_fp16(float f) {
    const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = ns_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u)
        bias = 0x71000000u;
    base = ns_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = ns_bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

/* fp16 bits -> float32 (exact). */
static inline float ns_half(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float exp_scale = 0x1.0p-112f;
    const float normalized = ns_float((two_w >> 4) + (0xE0u << 23)) * exp_scale;
    const float denormalized = ns_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t result = sign | (two_w < (1u << 27) ? ns_bits(denormalized) : ns_bits(normalized));
    return ns_float(result);
}

/* fp16 round trip: the value a stored block scale reads back as. */
static inline float ns_round_fp16(float f) { return ns_half(ns_fp16(f)); }

static inline void ns_put_fp16(uint8_t *p, float f) {
    uint16_t h = ns_fp16(f);
    memcpy(p, &h, 2);
}

static inline float ns_get_fp16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ns_half(h);
}

/* float32 -> bfloat16 bits, round to nearest even, NaN kept quiet (ggml_compute_fp32_to_bf16). */
static inline uint16_t ns_bf16(float f) {
    const uint32_t u = ns_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* ggml's nearest_int: round half to even through the float32 mantissa, for |v| < 2^22. */
static inline int ns_nearest_int(float v) {
    const float val = v + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#endif
