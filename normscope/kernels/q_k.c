/* The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, super-blocks of 256 values; and Q8_K, the activation type
 * ggml-cpu's dot products pair with the k-quants, IQ and ternary types (NS_ACT_QTYPES, never a weight type).
 *
 * Without importance weights each follows quantize_row_*_ref; with them quantize_row_*_impl, as
 * ggml_quantize_chunk does (quantize_q*_K picks one or the other on imatrix == NULL). The weighted
 * paths weigh value j by qw[j] * sqrt(sigma2 + x[j]^2), sigma2 the super-block's mean (Q2_K) or twice
 * its mean (Q3_K, Q4_K, Q5_K) of x^2; Q6_K uses qw as is.
 *
 * Block layouts (bytes, ggml-common.h):
 *   Q2_K  84: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits), d, dmin at 80
 *   Q3_K 110: hmask[32] (bit 2), qs[64] (bits 0-1), scales[12] (16 x 6 bits), d at 108
 *   Q4_K 144: d at 0, dmin, scales[12] (8 scales + 8 mins, 6 bits), qs[128] (4 bits)
 *   Q5_K 176: d at 0, dmin, scales[12], qh[32] (bit 4), qs[128] (bits 0-3)
 *   Q6_K 210: ql[128] (bits 0-3), qh[64] (bits 4-5), scales[16] (int8), d at 208
 *   Q8_K 292: d (float32) at 0, qs[256] (int8), bsums[16] (int16: sums of 16 levels)
 *
 * ref: ggml/src/ggml-quants.c quantize_row_q{2,3,4,5,6,8}_K_ref, quantize_row_q{2,3,4,5,6}_K_impl,
 *      quantize_q{2,3,4,5,6}_K, dequantize_row_q{2,3,4,5,6}_K, get_scale_min_k4.
 */
#include "qsearch.h"
#include "qtypes.h"

#define QK_K 256
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

enum { Q2_K_SIZE = 84, Q3_K_SIZE = 110, Q4_K_SIZE = 144, Q5_K_SIZE = 176, Q6_K_SIZE = 210 };

/* Levels L[256] (0..3) to qs[64]: byte l of each 32-byte half holds values l, l+32, l+64, l+96. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Scale j and min j (6 bits each) of Q4_K/Q5_K's 12 scale bytes. */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* The inverse of get_scale_min_k4 for 8 (scale, min) pairs, byte for byte as ggml packs them. */
static void put_scales_k4(uint8_t *s, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q3_K's 16 six-bit scales (0..63) into 12 bytes: low nibbles in bytes 0-7, top two bits in 8-11. */
static void put_scales_q3(uint8_t *s, const int *ls) {
    memset(s, 0, 12);
    for (int j = 0; j < 16; j++) {
        int l = ls[j];
        if (j < 8)
            s[j] = (uint8_t)(l & 0xF);
        else
            s[j - 8] |= (uint8_t)((l & 0xF) << 4);
        l >>= 4;
        s[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
    }
}

static inline int8_t get_scale_q3(const uint8_t *s, int j) {
    int8_t sc = (int8_t)(j < 8 ? s[j] & 0xF : s[j - 8] >> 4);
    return (int8_t)((sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

/* sum of x[0..n)^2 in order, as every weighted path starts */
static inline float sum_sq(const float *x, int64_t n) {
    float s = 0;
    for (int64_t j = 0; j < n; j++)
        s += x[j] * x[j];
    return s;
}

/* ---- Q2_K --------------------------------------------------------------------------------------------- */

/* Requantize with the stored 4-bit scales and mins (both paths): sub-blocks whose scale reads as 0 keep
 * the search's levels. */
static void q2_K_requantize(const float *x, const uint8_t *scales, float dm, float mm, uint8_t *L) {
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = dm * (scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (scales[j] >> 4);
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (uint8_t)ns_clamp_level(ns_nearest_int((x[16 * j + ii] + m) / d), 0.0f, 3.0f);
    }
}

static void q2_K_ref(const float *x, uint8_t *y) {
    uint8_t L[QK_K];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            weights[l] = fabsf(x[16 * j + l]);
        scales[j] = ns_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    uint8_t *sc = y;
    if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; j++)
            sc[j] = (uint8_t)ns_nearest_int(iscale * scales[j]);
        ns_put_fp16(y + 80, max_scale / q4scale);
    } else {
        memset(sc, 0, 16);
        ns_put_fp16(y + 80, 0.f);
    }
    if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < 16; j++)
            sc[j] |= (uint8_t)(ns_nearest_int(iscale * mins[j]) << 4);
        ns_put_fp16(y + 82, max_min / q4scale);
    } else {
        ns_put_fp16(y + 82, 0.f);
    }
    q2_K_requantize(x, sc, ns_get_fp16(y + 80), ns_get_fp16(y + 82), L);
    pack_2bit(L, y + 16);
}

static void q2_K_impl(const float *x, uint8_t *y, const float *qw) {
    uint8_t L[QK_K], Ls[16], Lm[16];
    float weight[16], mins[16], scales[16], sw[16];
    const float sigma2 = sum_sq(x, QK_K) / QK_K;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        sw[j] = 0;
        for (int l = 0; l < 16; l++)
            sw[j] += weight[l];
        scales[j] = ns_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, 0);
    }
    const float dm = ns_make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = ns_make_qp_quants(16, 15, mins, Lm, sw);
    ns_put_fp16(y + 80, dm);
    ns_put_fp16(y + 82, mm);
    for (int j = 0; j < 16; j++)
        y[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2_K_requantize(x, y, ns_get_fp16(y + 80), ns_get_fp16(y + 82), L);
    pack_2bit(L, y + 16);
}

static int quantize_q2_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q2_K_SIZE) {
        if (qw)
            q2_K_impl(x, y, qw + b * QK_K);
        else
            q2_K_ref(x, y);
    }
    return 0;
}

static void dequantize_q2_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q2_K_SIZE) {
        const float d = ns_get_fp16(x + 80), min = ns_get_fp16(x + 82);
        const uint8_t *sc = x, *q = x + 16;
        int is = 0;
        for (int h = 0; h < QK_K; h += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t s = sc[is++];
                    const float dl = d * (s & 0xF), ml = min * (s >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (int8_t)((q[16 * half + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* ---- Q3_K --------------------------------------------------------------------------------------------- */

/* Requantize with the stored scales, then levels 0..7 into hmask (bit 2; value j in byte j % 32, bit
 * j / 32) and qs (bits 0-1). Levels are always 0..7 here (the searches give l + 4, l in [-4, 3], or 0),
 * so ggml's `if (L > 3) { set the bit; L -= 4; }` is bit 2 and the low two bits. */
static void q3_K_finish(const float *x, uint8_t *y, int8_t *L) {
    const uint8_t *s = y + 96;
    const float dall = ns_get_fp16(y + 108);
    for (int j = 0; j < 16; j++) {
        const float d = dall * get_scale_q3(s, j);
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(ns_clamp_level(ns_nearest_int(x[16 * j + ii] / d), -4.0f, 3.0f) + 4.0f);
    }
    uint8_t *hmask = y, Lu[QK_K];
    for (int m = 0; m < 32; m++) {
        unsigned h = 0;
        for (int g = 0; g < 8; g++)
            h |= (unsigned)((L[32 * g + m] >> 2) & 1) << g;
        hmask[m] = (uint8_t)h;
    }
    for (int j = 0; j < QK_K; j++)
        Lu[j] = (uint8_t)(L[j] & 3);
    pack_2bit(Lu, y + 32);
}

static void q3_K_ref(const float *x, uint8_t *y) {
    int8_t L[QK_K];
    float scales[16];
    float max_scale = 0, amax = 0;
    ns_make_q3_quants_blocks(16, 16, 4, x, L, scales);
    for (int j = 0; j < 16; j++) {
        const float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale) {
        const float iscale = -32.f / max_scale;
        int ls[16];
        for (int j = 0; j < 16; j++) {
            const int8_t l = (int8_t)ns_nearest_int(iscale * scales[j]);
            ls[j] = MAX(-32, MIN(31, l)) + 32;
        }
        put_scales_q3(y + 96, ls);
        ns_put_fp16(y + 108, 1 / iscale);
    } else {
        memset(y + 96, 0, 12);
        ns_put_fp16(y + 108, 0.f);
    }
    q3_K_finish(x, y, L);
}

static void q3_K_impl(const float *x, uint8_t *y, const float *qw) {
    int8_t L[QK_K], Ls[16];
    float scales[16], weight[16], sw[16];
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; l++)
            sumw += weight[l];
        sw[j] = sumw;
        scales[j] = ns_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    const float d_block = ns_make_qx_quants(16, 32, scales, Ls, 1, sw);
    int ls[16];
    for (int j = 0; j < 16; j++)
        ls[j] = Ls[j];
    put_scales_q3(y + 96, ls);
    ns_put_fp16(y + 108, d_block);
    q3_K_finish(x, y, L);
}

static int quantize_q3_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q3_K_SIZE) {
        if (qw)
            q3_K_impl(x, y, qw + b * QK_K);
        else
            q3_K_ref(x, y);
    }
    return 0;
}

static void dequantize_q3_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q3_K_SIZE) {
        const float d_all = ns_get_fp16(x + 108);
        const uint8_t *hm = x, *q = x + 32;
        int is = 0;
        uint8_t m = 1;
        for (int h = 0; h < QK_K; h += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * get_scale_q3(x + 96, is++);
                    for (int l = 0; l < 16; l++) {
                        const int k = 16 * half + l;
                        *y++ = dl * ((int8_t)((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                    }
                }
            }
        }
    }
}

/* ---- Q4_K and Q5_K ------------------------------------------------------------------------------------ */

/* Both ref paths: per 32-value sub-block weights sqrt(mean x^2) + |x| and make_qkx2_quants; 6-bit
 * scales and mins relative to the largest; d, dmin at y[0..4), scales at y[4..16). */
static void q45_K_ref_scales(const float *x, uint8_t *y, uint8_t *L, int nmax, float rmin, int nstep) {
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = ns_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep, 0);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)MIN(63, (uint8_t)ns_nearest_int(inv_scale * scales[j]));
        lm[j] = (uint8_t)MIN(63, (uint8_t)ns_nearest_int(inv_min * mins[j]));
    }
    put_scales_k4(y + 4, ls, lm);
    ns_put_fp16(y, max_scale / 63.f);
    ns_put_fp16(y + 2, max_min / 63.f);
}

/* Both weighted paths: weights qw * sqrt(sigma2 + x^2), make_qkx3_quants per sub-block, make_qp_quants
 * for the 8 scales and the 8 mins. Q5_K clamps the levels to 63 (a no-op but for wrapped levels). */
static void q45_K_impl_scales(const float *x, uint8_t *y, uint8_t *L, int nmax, const float *qw, int clamp) {
    float weights[32], mins[8], scales[8], sw[8];
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++)
            weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; l++)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = ns_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.9f, 0.05f, 36, 0);
    }
    uint8_t ls[8], lm[8];
    const float d_block = ns_make_qp_quants(8, 63, scales, ls, sw);
    const float m_block = ns_make_qp_quants(8, 63, mins, lm, sw);
    if (clamp)
        for (int j = 0; j < 8; j++) {
            ls[j] = MIN(63, ls[j]);
            lm[j] = MIN(63, lm[j]);
        }
    put_scales_k4(y + 4, ls, lm);
    ns_put_fp16(y, d_block);
    ns_put_fp16(y + 2, m_block);
}

/* Levels 0..nmax with the stored scales and mins; sub-blocks whose scale reads as 0 keep theirs. */
static void q45_K_requantize(const float *x, const uint8_t *y, uint8_t *L, int nmax) {
    const float dall = ns_get_fp16(y), mall = ns_get_fp16(y + 2);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, y + 4, &sc, &m);
        const float d = dall * sc;
        if (!d)
            continue;
        const float dm = mall * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)ns_clamp_level(ns_nearest_int((x[32 * j + ii] + dm) / d), 0.0f, (float)nmax);
    }
}

static int quantize_q4_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q4_K_SIZE) {
        if (qw)
            q45_K_impl_scales(x, y, L, 15, qw + b * QK_K, 0);
        else
            q45_K_ref_scales(x, y, L, 15, -1.f, 20);
        q45_K_requantize(x, y, L, 15);
        uint8_t *q = y + 16;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
    return 0;
}

static void dequantize_q4_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q4_K_SIZE) {
        const float d = ns_get_fp16(x), min = ns_get_fp16(x + 2);
        const uint8_t *q = x + 16;
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x + 4, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x + 4, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static int quantize_q5_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q5_K_SIZE) {
        if (qw)
            q45_K_impl_scales(x, y, L, 31, qw + b * QK_K, 1);
        else
            q45_K_ref_scales(x, y, L, 31, -0.5f, 15);
        q45_K_requantize(x, y, L, 31);
        uint8_t *qh = y + 16, *ql = y + 48;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int h = 0; h < QK_K; h += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[h + j], l2 = L[h + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
    return 0;
}

static void dequantize_q5_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q5_K_SIZE) {
        const float d = ns_get_fp16(x), min = ns_get_fp16(x + 2);
        const uint8_t *qh = x + 16, *ql = x + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x + 4, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x + 4, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* ---- Q6_K --------------------------------------------------------------------------------------------- */

/* Both paths: make_qx_quants per 16 values (weights x^2, or qw as given), int8 scales relative to the
 * largest |scale| (its sign kept), requantize, pack. */
static void q6_K_block(const float *x, uint8_t *y, const float *qw) {
    int8_t L[QK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float scale = ns_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < NS_GROUP_MAX_EPS) {
        memset(y, 0, Q6_K_SIZE);
        ns_put_fp16(y + 208, 0.f);
        return;
    }
    int8_t *sc = (int8_t *)(y + 192);
    const float iscale = -128.f / max_scale;
    ns_put_fp16(y + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ib++)
        sc[ib] = (int8_t)MIN(127, ns_nearest_int(iscale * scales[ib]));
    const float dall = ns_get_fp16(y + 208);
    for (int j = 0; j < 16; j++) {
        const float d = dall * sc[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(ns_clamp_level(ns_nearest_int(x[16 * j + ii] / d), -32.0f, 31.0f) + 32.0f);
    }
    uint8_t *ql = y, *qh = y + 128;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

static int quantize_q6_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q6_K_SIZE)
        q6_K_block(x, y, qw ? qw + b * QK_K : NULL);
    return 0;
}

static void dequantize_q6_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q6_K_SIZE) {
        const float d = ns_get_fp16(x + 208);
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int h = 0; h < QK_K; h += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

const ns_qtype NS_QTYPE_Q2_K = {"Q2_K", 10, QK_K, Q2_K_SIZE, NS_IMATRIX_USED, 80, quantize_q2_K, dequantize_q2_K, NULL};
const ns_qtype NS_QTYPE_Q3_K = {"Q3_K", 11, QK_K, Q3_K_SIZE, NS_IMATRIX_USED, 108, quantize_q3_K, dequantize_q3_K,
                                NULL};
const ns_qtype NS_QTYPE_Q4_K = {"Q4_K", 12, QK_K, Q4_K_SIZE, NS_IMATRIX_USED, 0, quantize_q4_K, dequantize_q4_K, NULL};
const ns_qtype NS_QTYPE_Q5_K = {"Q5_K", 13, QK_K, Q5_K_SIZE, NS_IMATRIX_USED, 0, quantize_q5_K, dequantize_q5_K, NULL};
const ns_qtype NS_QTYPE_Q6_K = {"Q6_K", 14, QK_K, Q6_K_SIZE, NS_IMATRIX_USED, 208, quantize_q6_K, dequantize_q6_K,
                                NULL};

/* ---- Q8_K (quantize_row_q8_K_ref): the value of largest |x| (first on ties, NaN skipped) sets
 * iscale = -127 / max; levels MIN(127, nearest_int(iscale * x)); d = 1 / iscale as float32. An all-zero
 * block stores d = 0 and zero levels (ggml leaves its bsums unwritten; normscope writes zeros). */
enum { Q8_K_SIZE = 4 + QK_K + QK_K / 16 * 2 };

static int quantize_q8_K(const float *x, uint8_t *y, int64_t n, const float *qw) {
    (void)qw;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += Q8_K_SIZE) {
        float amax;
        const float max = ns_signed_absmax(QK_K, x, &amax);
        int8_t q[QK_K];
        int16_t bsums[QK_K / 16];
        float d = 0.0f;
        if (!amax) {
            memset(q, 0, sizeof q);
            memset(bsums, 0, sizeof bsums);
        } else {
            const float iscale = -127.0f / max;
            for (int j = 0; j < QK_K; j++)
                q[j] = (int8_t)MIN(127, ns_nearest_int(iscale * x[j]));
            for (int j = 0; j < QK_K / 16; j++) {
                int sum = 0;
                for (int i = 0; i < 16; i++)
                    sum += q[j * 16 + i];
                bsums[j] = (int16_t)sum;
            }
            d = 1.0f / iscale;
        }
        memcpy(y, &d, 4);
        memcpy(y + 4, q, QK_K);
        memcpy(y + 4 + QK_K, bsums, sizeof bsums);
    }
    return 0;
}

static void dequantize_q8_K(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += Q8_K_SIZE, y += QK_K) {
        float d;
        memcpy(&d, x, 4);
        for (int j = 0; j < QK_K; j++)
            y[j] = d * (float)(int8_t)x[4 + j];
    }
}

const ns_qtype NS_QTYPE_Q8_K = {"Q8_K", 15, QK_K, Q8_K_SIZE, NS_IMATRIX_IGNORED, -1, quantize_q8_K, dequantize_q8_K,
                                NULL};
