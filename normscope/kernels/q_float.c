/* F16 and BF16 as ggml_quantize_chunk writes them: one value per "block", rounded to nearest even. */
#include "qtypes.h"

static int quantize_f16(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t i = 0; i < n; i++)
        ns_put_fp16(y + 2 * i, x[i]);
    return 0;
}

static void dequantize_f16(const uint8_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = ns_get_fp16(x + 2 * i);
}

static int quantize_bf16(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = ns_bf16(x[i]);
        memcpy(y + 2 * i, &h, 2);
    }
    return 0;
}

static void dequantize_bf16(const uint8_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, x + 2 * i, 2);
        y[i] = ns_float((uint32_t)h << 16);
    }
}

const ns_qtype NS_QTYPE_F16 = {"F16", 1, 1, 2, NS_IMATRIX_IGNORED, -1, quantize_f16, dequantize_f16, NULL};
const ns_qtype NS_QTYPE_BF16 = {"BF16", 30, 1, 2, NS_IMATRIX_IGNORED, -1, quantize_bf16, dequantize_bf16, NULL};
