/* The legacy 32-value block types: Q8_0 (and, to come, Q4_0, Q4_1, Q5_0, Q5_1 with their weighted paths).
 *
 * ref: ggml/src/ggml-quants.c quantize_row_q8_0_ref, dequantize_row_q8_0.
 */
#include "qtypes.h"

#define QK8_0 32

/* Q8_0: d = max|x| / 127 stored as fp16, q = round(x / d) (roundf: half away from zero), with the
 * float32 reciprocal of the unrounded d. Ignores importance weights, as ggml does. */
static int quantize_q8_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0, y += 2 + QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        ns_put_fp16(y, d);
        for (int j = 0; j < QK8_0; j++)
            y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
    return 0;
}

static void dequantize_q8_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; b++, x += 2 + QK8_0, y += QK8_0) {
        const float d = ns_get_fp16(x);
        for (int j = 0; j < QK8_0; j++)
            y[j] = (float)(int8_t)x[2 + j] * d;
    }
}

const ns_qtype NS_QTYPE_Q8_0 = {"Q8_0", 8, QK8_0, 2 + QK8_0, NS_IMATRIX_IGNORED, 0, quantize_q8_0, dequantize_q8_0,
                                NULL};
