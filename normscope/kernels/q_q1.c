/* Q1_0: 128 values a block, one sign bit each and one fp16 scale d = mean |x|. Importance weights are
 * ignored: quantize_q1_0 calls quantize_row_q1_0_ref row by row whether or not it is given any.
 *
 * ref: ggml/src/ggml-quants.c quantize_row_q1_0_ref, quantize_q1_0, dequantize_row_q1_0;
 *      ggml-common.h block_q1_0.
 */
#include "qtypes.h"

#define QK1_0 128
#define Q1_0_SIZE (2 + QK1_0 / 8)

/* Block (18 bytes): fp16 d, then bit j of byte j/8 (LSB first) set when x[j] >= 0 (so -0 is +, NaN -). */
static int quantize_q1_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK1_0; b++, x += QK1_0, y += Q1_0_SIZE) {
        float sum_abs = 0.0f;
        for (int j = 0; j < QK1_0; j++)
            sum_abs += fabsf(x[j]);
        ns_put_fp16(y, sum_abs / QK1_0);
        for (int i = 0; i < QK1_0 / 8; i++) {
            uint8_t bits = 0;
            for (int k = 0; k < 8; k++)
                bits |= (uint8_t)((x[8 * i + k] >= 0.0f) << k);
            y[2 + i] = bits;
        }
    }
    return 0;
}

static void dequantize_q1_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK1_0; b++, x += Q1_0_SIZE, y += QK1_0) {
        const float d = ns_get_fp16(x), neg_d = -d;
        for (int j = 0; j < QK1_0; j++)
            y[j] = (x[2 + j / 8] >> (j % 8)) & 1 ? d : neg_d;
    }
}

const ns_qtype NS_QTYPE_Q1_0 = {"Q1_0", 41, QK1_0, Q1_0_SIZE, NS_IMATRIX_IGNORED, 0, quantize_q1_0, dequantize_q1_0,
                                NULL};
