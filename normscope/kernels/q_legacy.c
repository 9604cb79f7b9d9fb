/* The legacy 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and Q8_1, the activation partner of
 * Q4_1/Q5_1 in ggml-cpu's dot products (an activation type: NS_ACT_QTYPES, never a weight type).
 *
 * Without importance weights the quantize_row_*_ref algorithms; with them (all but Q8_0, which ignores
 * them) quantize_row_*_impl: value j of the row weighs qw[j] * sqrt(sigma2 + x[j]^2), sigma2 the mean of
 * x^2 over the whole row; the symmetric types (Q4_0, Q5_0) search with make_qx_quants, the affine ones
 * (Q4_1, Q5_1) with make_qkx3_quants.
 *
 * Block layouts (bytes): Q4_0 18: d, qs[16]; Q4_1 20: d, m, qs[16]; Q5_0 22: d, qh[4], qs[16];
 * Q5_1 24: d, m, qh[4], qs[16]; Q8_0 34: d, qs[32]; Q8_1 36: d, s (fp16 of d * the sum of qs), qs[32].
 * qs byte j holds value j (low nibble) and j + 16;
 * qh is a little-endian uint32 whose bit j is bit 4 of value j.
 *
 * ref: ggml/src/ggml-quants.c quantize_row_q{4_0,4_1,5_0,5_1,8_0,8_1}_ref, quantize_row_q{4_0,4_1,5_0,5_1}_impl,
 *      quantize_q{4_0,4_1,5_0,5_1,8_0}, dequantize_row_q{4_0,4_1,5_0,5_1,8_0}.
 */
#include <float.h>

#include "qsearch.h"
#include "qtypes.h"

#define QK 32 /* QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
/* On a loop over lanes: keep it a loop (GCC would unroll it into scalar code), so it is vectorized. */
#define LANE_LOOP _Pragma("GCC unroll 1")

/* ---- shared pieces ------------------------------------------------------------------------------------ */

/* The value of largest |x| in the block, the first on ties, +0 when all are 0: what ggml's
 * `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` leaves. The largest and smallest values (from 0,
 * NaN skipped) are exact in any order, so they run in 8 independent lanes; amax is the larger of max
 * and -min, and max is +-amax, with the sign of the first value of that magnitude when both occur. */
static inline float signed_absmax(const float *x) {
    float hi[8] = {0}, lo[8] = {0};
    for (int j = 0; j < QK; j += 8)
        LANE_LOOP
        for (int k = 0; k < 8; k++) {
            hi[k] = x[j + k] > hi[k] ? x[j + k] : hi[k];
            lo[k] = x[j + k] < lo[k] ? x[j + k] : lo[k];
        }
    float max = 0.0f, min = 0.0f;
    for (int k = 0; k < 8; k++) {
        max = hi[k] > max ? hi[k] : max;
        min = lo[k] < min ? lo[k] : min;
    }
    const float amax = max > -min ? max : -min;
    if (amax == 0.0f)
        return 0.0f;
    const int pos = max == amax, neg = -min == amax;
    if (pos != neg)
        return pos ? amax : -amax;
    int j = 0;
    while (fabsf(x[j]) != amax)
        j++;
    return x[j];
}

/* The first zero of the block (+0 or -0): a running min or max that ends at 0 stopped at the first one. */
static inline float first_zero(const float *x) {
    int j = 0;
    while (x[j] != 0.0f)
        j++;
    return x[j];
}

/* min and max as ggml's `if (v < min) min = v; if (v > max) max = v;` from FLT_MAX, -FLT_MAX find them:
 * exact in any order (NaN skipped either way) but for the sign of a zero result, taken from the first
 * zero as the sequential loop does. */
static inline void min_max(const float *x, float *lo, float *hi) {
    float mn[8], mx[8];
    for (int k = 0; k < 8; k++) {
        mn[k] = FLT_MAX;
        mx[k] = -FLT_MAX;
    }
    for (int j = 0; j < QK; j += 8)
        LANE_LOOP
        for (int k = 0; k < 8; k++) {
            mn[k] = x[j + k] < mn[k] ? x[j + k] : mn[k];
            mx[k] = x[j + k] > mx[k] ? x[j + k] : mx[k];
        }
    float min = FLT_MAX, max = -FLT_MAX;
    for (int k = 0; k < 8; k++) {
        min = mn[k] < min ? mn[k] : min;
        max = mx[k] > max ? mx[k] : max;
    }
    *lo = min == 0.0f ? first_zero(x) : min;
    *hi = max == 0.0f ? first_zero(x) : max;
}

/* 32 levels to qs[16] (value j low nibble, j + 16 high) and, for 5-bit types, bit 4 of each into qh.
 * mask: 0x0F for 5-bit levels; 4-bit levels go in unmasked, as ggml ORs them. */
static inline void pack_nibbles(const uint8_t *q, uint8_t *qs, unsigned mask) {
    for (int j = 0; j < QK / 2; j++)
        qs[j] = (uint8_t)((q[j] & mask) | ((q[j + QK / 2] & mask) << 4));
}

static inline void put_high_bits(const uint8_t *q, uint8_t *qh) {
    for (int g = 0; g < 4; g++) {
        uint64_t v = 0; /* bytes 8g..8g+7, little-endian */
        for (int k = 0; k < 8; k++)
            v |= (uint64_t)q[8 * g + k] << (8 * k);
        /* bit 4 of byte k to bit 8k, then the multiply gathers bit 8k at bit 56 + k (no carries reach) */
        qh[g] = (uint8_t)((((v >> 4) & 0x0101010101010101u) * 0x0102040810204080u) >> 56);
    }
}

/* The weighted paths' sigma2: mean of x^2 over the whole row, summed in order. */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++)
        sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static inline void block_weights(const float *x, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < QK; j++)
        w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* The ref paths go CHUNK blocks at a time: first every block's scale (a chain of dependent steps: extremes,
 * a division for d, another for 1/d), then every block's levels, so the scale chains of consecutive
 * blocks overlap instead of each waiting for the previous block's levels. */
#define CHUNK 64
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Levels 0..top of 32 values to the block's bytes at q (qh, then qs, for 5-bit types). */
ALWAYS_INLINE void put_levels(const uint8_t *l, uint8_t *q, int bits) {
    if (bits == 5) {
        put_high_bits(l, q);
        pack_nibbles(l, q + 4, 0x0F);
    } else {
        pack_nibbles(l, q, 0xFF);
    }
}

/* ---- Q4_0 and Q5_0: symmetric, d = max / -(2^(bits-1)) ------------------------------------------------ */

/* ref: d = max / -2^(bits-1) (max: the value of largest |x|); levels (int8_t)(x * id + 2^(bits-1) + 0.5)
 * capped at 2^bits - 1 (truncation toward zero, as the cast does; a NaN or infinite product is whatever
 * the conversion gives, as in ggml). size: bytes per block. */
ALWAYS_INLINE void ref_symmetric(const float *x, uint8_t *y, int64_t nb, int bits, int size) {
    const float bias = bits == 4 ? 8.5f : 16.5f;
    const int top = (1 << bits) - 1;
    for (int64_t c = 0; c < nb; c += CHUNK) {
        const int m = (int)MIN(CHUNK, nb - c);
        float id[CHUNK];
        for (int b = 0; b < m; b++) {
            const float d = signed_absmax(x + QK * (c + b)) / (bits == 4 ? -8 : -16);
            id[b] = d ? 1.0f / d : 0.0f;
            ns_put_fp16(y + size * (c + b), d);
        }
        for (int b = 0; b < m; b++) {
            const float *xb = x + QK * (c + b);
            uint8_t l[QK];
            for (int j = 0; j < QK; j++)
                l[j] = (uint8_t)MIN(top, (int8_t)(xb[j] * id[b] + bias));
            put_levels(l, y + size * (c + b) + 2, bits);
        }
    }
}

/* weighted: make_qx_quants with weights qw * sqrt(sigma2 + x^2) */
ALWAYS_INLINE void impl_symmetric(const float *x, uint8_t *y, int64_t nb, const float *qw, int bits, int size) {
    const float sigma2 = row_sigma2(x, nb * QK);
    for (int64_t b = 0; b < nb; b++, x += QK, y += size, qw += QK) {
        float w[QK];
        int8_t L[QK];
        block_weights(x, qw, sigma2, w);
        ns_put_fp16(y, ns_make_qx_quants(QK, 1 << (bits - 1), x, L, 1, w));
        put_levels((const uint8_t *)L, y + 2, bits);
    }
}

static int quantize_q4_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (qw)
        impl_symmetric(x, y, n / QK, qw, 4, 18);
    else
        ref_symmetric(x, y, n / QK, 4, 18);
    return 0;
}

static int quantize_q5_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (qw)
        impl_symmetric(x, y, n / QK, qw, 5, 22);
    else
        ref_symmetric(x, y, n / QK, 5, 22);
    return 0;
}

/* ---- Q4_1 and Q5_1: affine, d = (max - min) / (2^bits - 1), m = min -------------------------------------- */

/* ref: levels (x - min) * id + 0.5 truncated: through int8_t and capped at 15 for Q4_1, straight to
 * uint8_t for Q5_1 (as ggml writes them). */
ALWAYS_INLINE void ref_affine(const float *x, uint8_t *y, int64_t nb, int bits, int size) {
    for (int64_t c = 0; c < nb; c += CHUNK) {
        const int m = (int)MIN(CHUNK, nb - c);
        float id[CHUNK], lo[CHUNK];
        for (int b = 0; b < m; b++) {
            float min, max;
            min_max(x + QK * (c + b), &min, &max);
            const float d = (max - min) / ((1 << bits) - 1);
            id[b] = d ? 1.0f / d : 0.0f;
            lo[b] = min;
            ns_put_fp16(y + size * (c + b), d);
            ns_put_fp16(y + size * (c + b) + 2, min);
        }
        for (int b = 0; b < m; b++) {
            const float *xb = x + QK * (c + b);
            uint8_t l[QK];
            if (bits == 4)
                for (int j = 0; j < QK; j++)
                    l[j] = (uint8_t)MIN(15, (int8_t)((xb[j] - lo[b]) * id[b] + 0.5f));
            else
                for (int j = 0; j < QK; j++)
                    l[j] = (uint8_t)((xb[j] - lo[b]) * id[b] + 0.5f);
            put_levels(l, y + size * (c + b) + 4, bits);
        }
    }
}

/* weighted: make_qkx3_quants with weights qw * sqrt(sigma2 + x^2); m = -(the fit's min) */
ALWAYS_INLINE void impl_affine(const float *x, uint8_t *y, int64_t nb, const float *qw, int bits, int size) {
    const float sigma2 = row_sigma2(x, nb * QK);
    for (int64_t b = 0; b < nb; b++, x += QK, y += size, qw += QK) {
        float w[QK], min;
        uint8_t L[QK];
        block_weights(x, qw, sigma2, w);
        const float d = ns_make_qkx3_quants(QK, (1 << bits) - 1, x, w, L, &min, -0.9f, 0.05f, 36, 0);
        ns_put_fp16(y, d);
        ns_put_fp16(y + 2, -min);
        put_levels(L, y + 4, bits);
    }
}

static int quantize_q4_1(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (qw)
        impl_affine(x, y, n / QK, qw, 4, 20);
    else
        ref_affine(x, y, n / QK, 4, 20);
    return 0;
}

static int quantize_q5_1(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (qw)
        impl_affine(x, y, n / QK, qw, 5, 24);
    else
        ref_affine(x, y, n / QK, 5, 24);
    return 0;
}

/* ---- Q8_0: d = amax / 127, levels roundf(x / d) --------------------------------------------------------- */

/* ggml's running `amax = MAX(amax, fabsf(v))` from 0, with MAX(a, b) = a > b ? a : b: a NaN makes the
 * running value NaN and the next value replaces it, so amax is the largest |x| after the block's last
 * NaN (NaN when that is the last value). Without a NaN, the largest |x| in 8 lanes (exact in any order). */
static inline float q8_amax(const float *x) {
    int nan = 0;
    for (int j = 0; j < QK; j++)
        nan |= x[j] != x[j];
    float amax = 0.0f;
    if (nan) {
        for (int j = 0; j < QK; j++)
            amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        return amax;
    }
    float lane[8] = {0};
    for (int j = 0; j < QK; j += 8)
        LANE_LOOP
        for (int k = 0; k < 8; k++)
            lane[k] = fabsf(x[j + k]) > lane[k] ? fabsf(x[j + k]) : lane[k];
    for (int k = 0; k < 8; k++)
        amax = lane[k] > amax ? lane[k] : amax;
    return amax;
}

/* roundf(v) (half away from zero) as the integer its conversion gives: for |v| < 2^23 the truncation and
 * the fraction v - trunc(v) are exact, so adding the carry is exact; otherwise v is integral, infinite
 * or NaN and roundf returns it unchanged. Unlike a roundf call the compiler vectorizes this. */
static inline float round_away(float v) {
    const int small = fabsf(v) < 8388608.0f;
    const float t = (float)(int)ns_pick(small, v, 0.0f), f = v - t;
    const float r = t + (float)((f >= 0.5f) - (f <= -0.5f));
    return ns_pick(small, r, v);
}

/* Ignores importance weights, as ggml does. The level's conversion to int8_t is ggml's (what the cast
 * gives for a NaN or infinite product: the low byte of the x86 conversion's 0x80000000). */
static int quantize_q8_0(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK; b++, x += QK, y += 2 + QK) {
        const float d = q8_amax(x) / 127.0f, id = d ? 1.0f / d : 0.0f;
        int8_t q[QK];
        for (int j = 0; j < QK; j++)
            q[j] = (int8_t)round_away(x[j] * id);
        ns_put_fp16(y, d);
        memcpy(y + 2, q, QK);
    }
    return 0;
}

/* ---- Q8_1: Q8_0's levels, plus s = fp16(d * sum of the levels) (quantize_row_q8_1_ref) --------------- */

static int quantize_q8_1(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK; b++, x += QK, y += 4 + QK) {
        const float d = q8_amax(x) / 127.0f, id = d ? 1.0f / d : 0.0f;
        int8_t q[QK];
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            q[j] = (int8_t)round_away(x[j] * id);
            sum += q[j];
        }
        ns_put_fp16(y, d);
        ns_put_fp16(y + 2, (float)sum * d);
        memcpy(y + 4, q, QK);
    }
    return 0;
}

/* ---- dequantize --------------------------------------------------------------------------------------- */

/* The 32 levels of a block: qs byte j holds levels j (low nibble) and j + 16 (high); bit j of the
 * little-endian qh, for 5-bit types, is bit 4 of level j. */
static inline void get_levels(const uint8_t *qs, const uint8_t *qh, int *l) {
    for (int j = 0; j < QK / 2; j++) {
        l[j] = qs[j] & 0x0F;
        l[j + QK / 2] = qs[j] >> 4;
    }
    if (qh)
        for (int j = 0; j < QK; j++)
            l[j] |= ((qh[j / 8] >> (j % 8)) & 1) << 4;
}

static void dequantize_q4_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 18, y += QK) {
        const float d = ns_get_fp16(x);
        int l[QK];
        get_levels(x + 2, NULL, l);
        for (int j = 0; j < QK; j++)
            y[j] = (l[j] - 8) * d;
    }
}

static void dequantize_q4_1(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 20, y += QK) {
        const float d = ns_get_fp16(x), m = ns_get_fp16(x + 2);
        int l[QK];
        get_levels(x + 4, NULL, l);
        for (int j = 0; j < QK; j++)
            y[j] = l[j] * d + m;
    }
}

static void dequantize_q5_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 22, y += QK) {
        const float d = ns_get_fp16(x);
        int l[QK];
        get_levels(x + 6, x + 2, l);
        for (int j = 0; j < QK; j++)
            y[j] = (l[j] - 16) * d;
    }
}

static void dequantize_q5_1(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 24, y += QK) {
        const float d = ns_get_fp16(x), m = ns_get_fp16(x + 2);
        int l[QK];
        get_levels(x + 8, x + 4, l);
        for (int j = 0; j < QK; j++)
            y[j] = l[j] * d + m;
    }
}

static void dequantize_q8_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 2 + QK, y += QK) {
        const float d = ns_get_fp16(x);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)x[2 + j] * d;
    }
}

/* ggml's dequantize for Q8_1 is d * qs (s only serves the dot product's min term). */
static void dequantize_q8_1(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 4 + QK, y += QK) {
        const float d = ns_get_fp16(x);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)x[4 + j] * d;
    }
}

const ns_qtype NS_QTYPE_Q4_0 = {"Q4_0", 2, QK, 18, NS_IMATRIX_USED, 0, quantize_q4_0, dequantize_q4_0, NULL};
const ns_qtype NS_QTYPE_Q4_1 = {"Q4_1", 3, QK, 20, NS_IMATRIX_USED, 0, quantize_q4_1, dequantize_q4_1, NULL};
const ns_qtype NS_QTYPE_Q5_0 = {"Q5_0", 6, QK, 22, NS_IMATRIX_USED, 0, quantize_q5_0, dequantize_q5_0, NULL};
const ns_qtype NS_QTYPE_Q5_1 = {"Q5_1", 7, QK, 24, NS_IMATRIX_USED, 0, quantize_q5_1, dequantize_q5_1, NULL};
const ns_qtype NS_QTYPE_Q8_0 = {"Q8_0", 8, QK, 2 + QK, NS_IMATRIX_IGNORED, 0, quantize_q8_0, dequantize_q8_0, NULL};
const ns_qtype NS_QTYPE_Q8_1 = {"Q8_1", 9, QK, 4 + QK, NS_IMATRIX_IGNORED, 0, quantize_q8_1, dequantize_q8_1, NULL};
