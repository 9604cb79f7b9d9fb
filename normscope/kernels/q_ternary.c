/* The ternary types (BitNet b1.58, TriLM): 256 values a block, each round(x / max|x|) in {-1, 0, 1},
 * with d = max|x| as fp16. TQ1_0 packs 5 trits a byte (1.6875 bits a value), TQ2_0 2 bits a value.
 * Both ignore importance weights (quantize_tq*_0 pass none to the _ref functions).
 *
 * ref: ggml/src/ggml-quants.c quantize_row_tq1_0_ref, quantize_row_tq2_0_ref, quantize_tq1_0,
 *      quantize_tq2_0, dequantize_row_tq1_0, dequantize_row_tq2_0; ggml-common.h block_tq1_0, block_tq2_0.
 */
#include "qtypes.h"

#define QK_K 256
#define TQ1_QS 48   /* bytes of 5 trits: 32 (values 0..159 in rows of 32) + 16 (values 160..239) */
#define TQ1_QH 4    /* bytes of 4 trits: values 240..255 */
#define TQ1_SIZE (TQ1_QS + TQ1_QH + 2)
#define TQ2_SIZE (QK_K / 4 + 2)

/* max|x| over the block as ggml's MAX(amax, fabsf(v)) macro takes it (a NaN resets it to the next |x|). */
static float block_amax(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < QK_K; j++) {
        const float v = fabsf(x[j]);
        amax = amax > v ? amax : v;
    }
    return amax;
}

/* The block's trits t[j] = lroundf(x[j] * id) + 1 (0, 1, 2 for -1, 0, 1), as ggml takes them. With id =
 * 1 / max|x| every |x * id| is below 1.5 and lroundf is two compares, which the compiler runs over several
 * values at once; a block where that fails (a NaN resetting ggml's running max, id = inf from a subnormal
 * max) goes through lroundf itself, its long result cut to int as ggml's `int xi = lroundf(..) + 1` does. */
static void block_trits(const float *x, float id, int8_t *t) {
    int ok = 1;
    for (int j = 0; j < QK_K; j++) {
        const float v = x[j] * id;
        ok &= fabsf(v) < 1.5f;
        t[j] = (int8_t)((v >= 0.5f) - (v <= -0.5f) + 1);
    }
    if (!ok)
        for (int j = 0; j < QK_K; j++)
            t[j] = (int8_t)(int)(lroundf(x[j] * id) + 1);
}

/* n trits t[0], t[stride], ... (most significant first) as a byte: the base-3 number scaled to 256 / 243,
 * rounded up, so that the trit k is the top byte of (q * 3^k mod 256) * 3. */
static inline uint8_t pack_trits(const int8_t *t, int stride, int n) {
    uint8_t q = 0;
    for (int k = 0; k < n; k++)
        q = (uint8_t)(q * 3 + t[k * stride]);
    if (n == 4)
        q = (uint8_t)(q * 3); /* the qh bytes: first value to the most significant trit */
    return (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
}

/* TQ1_0 block (54 bytes): qs[48], qh[4], fp16 d. qs[m] (m < 32) holds values m + 32k, k = 0..4;
 * qs[32 + m] (m < 16) values 160 + m + 16k; qh[j] values 240 + j + 4k, k = 0..3. */
static int quantize_tq1_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += TQ1_SIZE) {
        const float d = block_amax(x), id = d ? 1.0f / d : 0.0f;
        int8_t t[QK_K];
        ns_put_fp16(y + TQ1_QS + TQ1_QH, d);
        block_trits(x, id, t);
        for (int m = 0; m < 32; m++)
            y[m] = pack_trits(t + m, 32, 5);
        for (int m = 0; m < 16; m++)
            y[32 + m] = pack_trits(t + 160 + m, 16, 5);
        for (int j = 0; j < TQ1_QH; j++)
            y[TQ1_QS + j] = pack_trits(t + 240 + j, TQ1_QH, 4);
    }
    return 0;
}

/* Trit k (0 = most significant) of a packed byte, as -1, 0, 1. */
static inline int unpack_trit(uint8_t byte, uint8_t pow3) {
    const uint8_t q = (uint8_t)(byte * pow3);
    return (((uint16_t)q * 3) >> 8) - 1;
}

static void dequantize_tq1_0(const uint8_t *x, float *y, int64_t n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int64_t b = 0; b < n / QK_K; b++, x += TQ1_SIZE) {
        const float d = ns_get_fp16(x + TQ1_QS + TQ1_QH);
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 32; m++)
                *y++ = (float)unpack_trit(x[m], pow3[k]) * d;
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 16; m++)
                *y++ = (float)unpack_trit(x[32 + m], pow3[k]) * d;
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < TQ1_QH; j++)
                *y++ = (float)unpack_trit(x[TQ1_QS + j], pow3[k]) * d;
    }
}

/* TQ2_0 block (66 bytes): qs[64], fp16 d. Byte 32h + m holds values 128h + m + 32k in bits 2k, 2k+1. */
static int quantize_tq2_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += TQ2_SIZE) {
        const float d = block_amax(x), id = d ? 1.0f / d : 0.0f;
        int8_t t[QK_K];
        ns_put_fp16(y + QK_K / 4, d);
        block_trits(x, id, t);
        for (int h = 0; h < 2; h++)
            for (int m = 0; m < 32; m++) {
                uint8_t q = 0;
                for (int k = 0; k < 4; k++)
                    q = (uint8_t)(q + ((t[128 * h + m + 32 * k] & 3) << 2 * k));
                y[32 * h + m] = q;
            }
    }
    return 0;
}

static void dequantize_tq2_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += TQ2_SIZE) {
        const float d = ns_get_fp16(x + QK_K / 4);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int m = 0; m < 32; m++)
                    *y++ = (float)(((x[32 * h + m] >> 2 * k) & 3) - 1) * d;
    }
}

const ns_qtype NS_QTYPE_TQ1_0 = {"TQ1_0", 34, QK_K, TQ1_SIZE, NS_IMATRIX_IGNORED, TQ1_QS + TQ1_QH,
                                 quantize_tq1_0, dequantize_tq1_0, NULL};
const ns_qtype NS_QTYPE_TQ2_0 = {"TQ2_0", 35, QK_K, TQ2_SIZE, NS_IMATRIX_IGNORED, QK_K / 4,
                                 quantize_tq2_0, dequantize_tq2_0, NULL};
