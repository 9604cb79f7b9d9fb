/* The FP4 (E2M1) types: MXFP4 (32 values, a power-of-two E8M0 scale) and NVFP4 (64 values in four
 * sub-blocks of 16, each with an unsigned E4M3 scale). Each value is the nearest of the 16 E2M1 levels
 * times the scale. Neither has an fp16 scale (scale_offset -1) and both ignore importance weights
 * (quantize_mxfp4 / quantize_nvfp4 call the _ref functions).
 *
 * ref: ggml/src/ggml-quants.c best_index_mxfp4, quantize_row_mxfp4_ref, quantize_row_nvfp4_ref,
 *      dequantize_row_mxfp4, dequantize_row_nvfp4; ggml-impl.h ggml_e8m0_to_fp32_half, ggml_fp32_to_ue4m3,
 *      ggml_ue4m3_to_fp32; ggml-common.h kvalues_fp4, block_mxfp4, block_nvfp4.
 */
#include "qtypes.h"

#define QK_MXFP4 32
#define QK_NVFP4 64
#define QK_NVFP4_SUB 16

/* E2M1 levels doubled (ggml's kvalues_fp4): the scales below are halved to match. */
static const int8_t FP4_VALUES[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Index of the level whose value * e is nearest x: ggml's best_index_mxfp4, a scan of the 16 in order
 * keeping the first of equal errors (0 before -0), NaN errors never taken. */
static inline int best_index_scan(float x, float e) {
    int best = 0;
    float best_err = fabsf(FP4_VALUES[0] * e - x);
    for (int i = 1; i < 16; i++) {
        const float err = fabsf(FP4_VALUES[i] * e - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return best;
}

/* best_index_scan of n values. For finite x no error is NaN (at worst +inf when 12e overflows), so the
 * scan's answer is the first index whose error equals the smallest. Only levels of x's sign can win: the
 * others' errors k*e + |x| are >= |x|, level 0's, which comes first. And level -k's error at x < 0 is
 * level k's at |x| (negation is exact). So: the first smallest of 8 errors at |x|, moved to 9..15 for
 * x < 0 (the sign bit: -0 has |x| = 0, level 0). Branch-free (integer ops for the sign, as a compare
 * there makes the compiler branch), it runs over several values at once; non-finite x (where
 * |inf - inf| is NaN) take the scan. */
static inline void best_indices_fp4(const float *x, uint8_t *idx, int n, float e) {
    for (int j = 0; j < n; j++) {
        const float ax = fabsf(x[j]);
        float err[8], m;
        for (int i = 0; i < 8; i++)
            err[i] = fabsf(FP4_VALUES[i] * e - ax);
        m = err[0];
        for (int i = 1; i < 8; i++)
            m = err[i] < m ? err[i] : m;
        int best = 0;
        for (int i = 7; i >= 0; i--)
            best = err[i] == m ? i : best;
        const int neg = (int)(ns_bits(x[j]) >> 31), nonzero = (best + 7) >> 3; /* best is 0 .. 7 */
        idx[j] = (uint8_t)(best | (neg & nonzero) << 3);
    }
    for (int j = 0; j < n; j++)
        if (!(fabsf(x[j]) <= 3.40282347e38f))
            idx[j] = (uint8_t)best_index_scan(x[j], e);
}

/* E8M0 exponent byte e -> 2^(e - 128), i.e. half of 2^(e - 127) (subnormal for e < 2). */
static inline float e8m0_half(uint8_t e) { return ns_float(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23); }

/* UE4M3 byte (bias 7, 3 mantissa bits, no sign) -> half its value; 0 and 0x7F read as 0. */
static inline float ue4m3_half(uint8_t u) {
    if (u == 0 || u == 0x7F)
        return 0.0f;
    const int exp = (u >> 3) & 0xF, man = u & 0x7;
    const float raw = exp == 0 ? ldexpf((float)man, -9) : ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return raw * 0.5f;
}

/* float32 -> UE4M3 as ggml rounds it: not > 0 -> 0; capped at 448; subnormals by (int)(x*512 + 0.5)
 * clamped to 1..7 (below 1: 0); normals round half up on the fourth mantissa bit; exponents past the
 * range give 0x7E (448). */
static inline uint8_t ue4m3(float x) {
    if (!(x > 0.0f))
        return 0;
    if (x > 448.0f)
        x = 448.0f;
    const uint32_t bits = ns_bits(x);
    int exp = (int)((bits >> 23) & 0xFF) - 127 + 7;
    int man = (int)((bits >> 20) & 0x7);
    if (exp <= 0) {
        const int sub = (int)(x * 512.0f + 0.5f);
        if (sub < 1)
            return 0;
        return (uint8_t)(sub > 7 ? 7 : sub);
    }
    if (exp >= 15)
        return 0x7E;
    man += (bits >> 19) & 1;
    if (man > 7) {
        man = 0;
        if (++exp >= 15)
            return 0x7E;
    }
    return (uint8_t)((exp << 3) | man);
}

/* Nibbles of n (<= 32) values at scale d: byte j holds value j (low) and value j + n/2 (high). */
static inline void pack_fp4(const float *x, uint8_t *qs, int n, float d) {
    uint8_t idx[32];
    best_indices_fp4(x, idx, n, d);
    for (int j = 0; j < n / 2; j++)
        qs[j] = (uint8_t)(idx[j] | idx[n / 2 + j] << 4);
}

/* MXFP4 block (17 bytes): E8M0 e = floor(log2 max|x|) - 2 + 127 (0 when max|x| is 0), 16 bytes of
 * nibbles. The float-to-byte cast goes through int as x86 does it (ggml's (uint8_t) of a float): a
 * subnormal max gives a negative exponent that wraps (e.g. -8 -> 248). */
static int quantize_mxfp4(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK_MXFP4; b++, x += QK_MXFP4, y += 1 + QK_MXFP4 / 2) {
        float amax = 0.0f;
        for (int j = 0; j < QK_MXFP4; j++)
            if (amax < fabsf(x[j]))
                amax = fabsf(x[j]);
        const uint8_t e = amax > 0.0f ? (uint8_t)(int)(floorf(log2f(amax)) - 2 + 127) : 0;
        y[0] = e;
        pack_fp4(x, y + 1, QK_MXFP4, e8m0_half(e));
    }
    return 0;
}

static void dequantize_mxfp4(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_MXFP4; b++, x += 1 + QK_MXFP4 / 2, y += QK_MXFP4) {
        const float d = e8m0_half(x[0]);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            y[j] = FP4_VALUES[x[1 + j] & 0x0F] * d;
            y[j + QK_MXFP4 / 2] = FP4_VALUES[x[1 + j] >> 4] * d;
        }
    }
}

/* NVFP4 block (36 bytes): 4 UE4M3 scales (max|x| / 6 of each 16-value sub-block), then 4 x 8 bytes of
 * nibbles, sub-block s at bytes 4 + 8s. */
static int quantize_nvfp4(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    const int nsub = QK_NVFP4 / QK_NVFP4_SUB;
    for (int64_t b = 0; b < n / QK_NVFP4; b++, y += nsub + QK_NVFP4 / 2)
        for (int s = 0; s < nsub; s++, x += QK_NVFP4_SUB) {
            float amax = 0.0f;
            for (int j = 0; j < QK_NVFP4_SUB; j++)
                if (amax < fabsf(x[j]))
                    amax = fabsf(x[j]);
            const uint8_t u = ue4m3(amax / 6.0f);
            y[s] = u;
            pack_fp4(x, y + nsub + s * (QK_NVFP4_SUB / 2), QK_NVFP4_SUB, ue4m3_half(u));
        }
    return 0;
}

static void dequantize_nvfp4(const uint8_t *x, float *y, int64_t n) {
    const int nsub = QK_NVFP4 / QK_NVFP4_SUB;
    for (int64_t b = 0; b < n / QK_NVFP4; b++, x += nsub + QK_NVFP4 / 2)
        for (int s = 0; s < nsub; s++, y += QK_NVFP4_SUB) {
            const float d = ue4m3_half(x[s]);
            const uint8_t *qs = x + nsub + s * (QK_NVFP4_SUB / 2);
            for (int j = 0; j < QK_NVFP4_SUB / 2; j++) {
                y[j] = FP4_VALUES[qs[j] & 0x0F] * d;
                y[j + QK_NVFP4_SUB / 2] = FP4_VALUES[qs[j] >> 4] * d;
            }
        }
}

const ns_qtype NS_QTYPE_MXFP4 = {"MXFP4", 39, QK_MXFP4, 1 + QK_MXFP4 / 2, NS_IMATRIX_IGNORED, -1, quantize_mxfp4,
                                 dequantize_mxfp4, NULL};
const ns_qtype NS_QTYPE_NVFP4 = {"NVFP4", 40, QK_NVFP4, QK_NVFP4 / QK_NVFP4_SUB + QK_NVFP4 / 2, NS_IMATRIX_IGNORED,
                                 -1, quantize_nvfp4, dequantize_nvfp4, NULL};
