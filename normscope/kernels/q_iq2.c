/* The 2-bit lattice types IQ2_XXS, IQ2_XS, IQ2_S: 256-value super-blocks, groups of 8 magnitudes on a
 * grid of points in {8, 25, 43}^8 (iqgrid.h), 7 or 8 sign bits per group, a 4-bit scale per 32 or 16
 * values and one fp16 d per super-block.
 *
 * ref: ggml/src/ggml-quants.c iq2_find_best_neighbour, quantize_row_iq2_xxs_impl,
 *      quantize_row_iq2_xs_impl, quantize_row_iq2_s_impl, quantize_iq2_xxs / _xs / _s,
 *      dequantize_row_iq2_xxs / _xs / _s; ggml-common.h block_iq2_xxs / _xs / _s.
 */
#include <float.h>

#include "iqgrid.h"
#include "qsearch.h"
#include "qtypes.h"

#define QK_K 256
#define GROUP_MAX_EPS 1e-15f
#define GROUP_MAX_EPS_IQ2_S 1e-8f
#define KMAXQ 3

static const int8_t IQ2_LEVELS[3] = {8, 25, 43};

static inline float maxf(float a, float b) { return a > b ? a : b; }  /* ggml's MAX, NaN order included */

/* Levels (0..2) of 8 values at inverse scale id, and their index in the map. */
static inline int levels8(const float *xval, float id, int8_t *L) {
    int u = 0;
    for (int i = 0; i < 8; ++i) {
        int l = ns_nearest_int(0.5f * (id * xval[i] - 1));
        l = l < KMAXQ - 1 ? l : KMAXQ - 1;
        L[i] = (int8_t)(l > 0 ? l : 0);
        u |= L[i] << 2 * i;
    }
    return u;
}

/* ggml's iq2_find_best_neighbour: of the grid points listed for an off-grid point, the first nearest to
 * xval/scale in the sqrt-weighted distance; L gets its levels. A point's distance is the sum, in
 * coordinate order, of terms w (scale q - x)^2 that depend only on the coordinate and its level q = 1, 3,
 * 5: they are computed once (e), with ggml's operations, and each listed point adds its 8. (ggml asserts
 * a point is found; with NaN distances the first is taken here.) */
static int best_neighbour(const ns_iqgrid *g, int u, const float *xval, const float *w, float scale, int8_t *L) {
    float e[24];
    for (int l = 0; l < 3; ++l)
        for (int i = 0; i < 8; ++i) {
            const float q = 2 * l + 1, diff = scale * q - xval[i];
            e[8 * l + i] = w[i] * diff * diff;
        }
    const uint16_t *nb = g->neighbours - g->map[u] - 1;
    float best_d2 = FLT_MAX;
    int gi = nb[1];
    for (int j = 1; j <= nb[0]; ++j) {
        const uint8_t *s = g->slot + 8 * nb[j];
        float d2 = 0;
        for (int i = 0; i < 8; ++i)
            d2 += e[s[i]];
        if (d2 < best_d2)
            best_d2 = d2, gi = nb[j];
    }
    for (int i = 0; i < 8; ++i)
        L[i] = (int8_t)(g->slot[8 * gi + i] >> 3);
    return gi;
}

/* The grid index of 8 levels that are on the grid (ggml aborts when they are not; never for finite x). */
static inline int on_grid(const ns_iqgrid *g, const int8_t *L) {
    int u = 0;
    for (int i = 0; i < 8; ++i)
        u |= L[i] << 2 * i;
    return g->map[u] >= 0 ? g->map[u] : 0;
}

/* sum w x q and sum w q^2 over n values at levels L (q = 2L + 1), in ggml's order. */
static inline void sums(int n, const float *w, const float *xval, const int8_t *L, float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
        const float q = 2 * L[i] + 1;
        sx += w[i] * xval[i] * q;
        s2 += w[i] * q * q;
    }
    *sumqx = sx, *sumq2 = s2;
}

/* Magnitudes and sign bits of a group of 8. With `even` (IQ2_XXS, IQ2_XS: 7 stored bits, the 8th by
 * parity), an odd count of negatives toggles the sign bit of the value of least w x^2 and negates its
 * magnitude in xval instead. */
static inline uint8_t group_signs(const float *xb, const float *w, float *xval, int even) {
    int nflip = 0;
    uint8_t s = 0;
    for (int i = 0; i < 8; ++i) {
        if (xb[i] >= 0)
            xval[i] = xb[i];
        else
            xval[i] = -xb[i], ++nflip, s |= (uint8_t)(1 << i);
    }
    if (even && nflip % 2) {
        int imin = 0;
        float min = w[0] * xb[0] * xb[0];
        for (int i = 1; i < 8; ++i) {
            const float ax = w[i] * xb[i] * xb[i];
            if (ax < min)
                min = ax, imin = i;
        }
        xval[imin] = -xval[imin];
        s ^= (uint8_t)(1 << imin);
    }
    return even ? s & 127 : s;
}

/* Sum of squares of a super-block, in ggml's order. */
static inline float sum_x2(const float *x) {
    float s = 0;
    for (int i = 0; i < QK_K; ++i)
        s += x[i] * x[i];
    return s;
}

static inline void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ---- IQ2_XXS: 66 bytes = d, then per 32 values a u32 of 4 grid indices and a u32 of 4 x 7 sign bits
 * and a 4-bit scale (top nibble). 256-point grid; importance weights required. ---------------------- */

/* One 32-value group: its scale, or -1 when it is empty (scale 0, nothing written); its two u32 words. */
static float iq2_xxs_group(const ns_iqgrid *g, const float *xb, const float *qw, float sigma2, uint32_t *q2) {
    float weight[32], waux[32], xval[32];
    int8_t L[32], Laux[32];
    uint8_t block_signs[4];
    for (int i = 0; i < 32; ++i)
        weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    for (int i = 0; i < 32; ++i)
        waux[i] = sqrtf(weight[i]);
    for (int k = 0; k < 4; ++k)
        block_signs[k] = group_signs(xb + 8 * k, weight + 8 * k, xval + 8 * k, 1);
    float max = xval[0];
    for (int i = 1; i < 32; ++i)
        max = maxf(max, xval[i]);
    if (max < GROUP_MAX_EPS)
        return -1;
    float scale = ns_make_qp_quants(32, KMAXQ + 1, xval, (uint8_t *)L, weight);
    const float eff_max = scale * KMAXQ;
    if (eff_max <= 0)
        return -1;
    float best = 0;
    for (int is = -6; is <= 6; ++is) {
        const float id = (2 * KMAXQ - 1 + is * 0.1f) / eff_max, this_scale = 1 / id;
        for (int k = 0; k < 4; ++k) {
            const int u = levels8(xval + 8 * k, id, Laux + 8 * k);
            if (g->map[u] < 0)
                best_neighbour(g, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
        }
        float sumqx, sumq2;
        sums(32, weight, xval, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2, best = scale * sumqx;
            memcpy(L, Laux, 32);
        }
    }
    if (scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 4; ++k) {
            const int u = levels8(xval + 8 * k, id, L + 8 * k);
            if (g->map[u] < 0)
                best_neighbour(g, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
        }
        float sumqx, sumq2;
        sums(32, weight, xval, L, &sumqx, &sumq2);
        if (sumq2 > 0)
            scale = sumqx / sumq2;
    }
    if (scale < 0) {  /* ggml: "should never happen"; the signs flip with the scale */
        scale = -scale;
        for (int k = 0; k < 4; ++k)
            block_signs[k] = (uint8_t)(~block_signs[k] & 127);
    }
    for (int k = 0; k < 4; ++k) {
        q2[0] |= (uint32_t)on_grid(g, L + 8 * k) << 8 * k;
        q2[1] |= (uint32_t)block_signs[k] << 7 * k;
    }
    return scale;
}

static int quantize_iq2_xxs(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (!qw)
        return -1;
    const ns_iqgrid *g = &NS_IQGRID_256;
    for (int64_t ibl = 0; ibl < n / QK_K; ++ibl, x += QK_K, qw += QK_K, y += 66) {
        uint32_t q2[16] = {0};
        float scales[QK_K / 32], max_scale = 0;
        const float sigma2 = sum_x2(x) / QK_K;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const float scale = iq2_xxs_group(g, x + 32 * ib, qw + 32 * ib, sigma2, q2 + 2 * ib);
            scales[ib] = scale < 0 ? 0 : scale;
            if (!(scale < 0))  /* NaN included, as in ggml */
                max_scale = maxf(max_scale, scale);
        }
        memset(y, 0, 66);
        if (!max_scale)
            continue;
        const float d = max_scale / 31, id = 1 / d;
        ns_put_fp16(y, d);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            int l = ns_nearest_int(0.5f * (id * scales[ib] - 1));
            l = l < 15 ? (l > 0 ? l : 0) : 15;
            q2[2 * ib + 1] |= (uint32_t)l << 28;
        }
        for (int i = 0; i < 16; ++i)
            put_u32(y + 2 + 4 * i, q2[i]);
    }
    return 0;
}

/* ---- IQ2_XS and IQ2_S: per 16 values two grid groups and a 4-bit scale ------------------------------ */

/* One 16-value group of IQ2_XS (`iq2s` 0: 512-point grid, 7 sign bits) or IQ2_S (1: 1024 points, 8 sign
 * bits, weights without an imatrix too). Returns its scale; idx, signs: the two groups' grid indices and
 * sign bytes. */
static float iq2_16(const ns_iqgrid *g, int iq2s, const float *xb, const float *qw, float sigma2, int *idx,
                    uint8_t *signs) {
    float weight[16], waux[16], xval[16];
    int8_t L[16], Laux[16];
    int on[2], on_aux[2];
    if (qw)
        for (int i = 0; i < 16; ++i)
            weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    else
        for (int i = 0; i < 16; ++i)
            weight[i] = 0.25f * sigma2 + xb[i] * xb[i];
    for (int i = 0; i < 16; ++i)
        waux[i] = sqrtf(weight[i]);
    for (int k = 0; k < 2; ++k)
        signs[k] = group_signs(xb + 8 * k, weight + 8 * k, xval + 8 * k, !iq2s);
    float max = xval[0];
    for (int i = 1; i < 16; ++i)
        max = maxf(max, xval[i]);
    memset(L, 0, 16);
    idx[0] = idx[1] = 0;
    if (max < (iq2s ? GROUP_MAX_EPS_IQ2_S : GROUP_MAX_EPS))
        return -1;  /* empty: nothing is written for the group */
    float best = 0, scale = max / (2 * KMAXQ - 1);
    on[0] = on[1] = 1;
    for (int is = -9; is <= 9; ++is) {
        const float id = (2 * KMAXQ - 1 + is * 0.1f) / max, this_scale = 1 / id;
        for (int k = 0; k < 2; ++k) {
            const int u = levels8(xval + 8 * k, id, Laux + 8 * k);
            on_aux[k] = g->map[u] >= 0;
            if (!on_aux[k])
                best_neighbour(g, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
        }
        float sumqx, sumq2;
        sums(16, weight, xval, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2, best = scale * sumqx;
            memcpy(L, Laux, 16);
            on[0] = on_aux[0], on[1] = on_aux[1];
        }
    }
    if ((!on[0] || !on[1]) && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 2; ++k) {
            if (on[k])
                continue;
            const int u = levels8(xval + 8 * k, id, L + 8 * k);
            if (g->map[u] < 0)
                best_neighbour(g, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
        }
        float sumqx, sumq2;
        sums(16, weight, xval, L, &sumqx, &sumq2);
        if (sumq2 > 0)
            scale = sumqx / sumq2;
    }
    if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k)
            signs[k] = (uint8_t)(iq2s ? ~signs[k] : ~signs[k] & 127);
    }
    for (int k = 0; k < 2; ++k)
        idx[k] = on_grid(g, L + 8 * k);
    return scale;
}

/* The 4-bit scales of 16 groups, two to a byte (a group of scale 0 or empty gets level 0). */
static void put_scales16(uint8_t *out, const float *scales, float id) {
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        int l = ns_nearest_int(0.5f * (id * scales[ib] - 1));
        l = l < 15 ? (l > 0 ? l : 0) : 15;
        if (ib % 2 == 0)
            out[ib / 2] = (uint8_t)l;
        else
            out[ib / 2] |= (uint8_t)(l << 4);
    }
}

/* IQ2_XS: 74 bytes = d, 32 u16 (9-bit grid index | 7 sign bits << 9), 8 bytes of scales. */
static int quantize_iq2_xs(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (!qw)
        return -1;
    const ns_iqgrid *g = &NS_IQGRID_512;
    for (int64_t ibl = 0; ibl < n / QK_K; ++ibl, x += QK_K, qw += QK_K, y += 74) {
        float scales[QK_K / 16], max_scale = 0;
        const float sigma2 = sum_x2(x) / QK_K;
        memset(y, 0, 74);
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            int idx[2];
            uint8_t signs[2];
            const float scale = iq2_16(g, 0, x + 16 * ib, qw + 16 * ib, sigma2, idx, signs);
            scales[ib] = scale < 0 ? 0 : scale;
            if (scale < 0)
                continue;
            for (int k = 0; k < 2; ++k)
                put_u16(y + 2 + 4 * ib + 2 * k, (uint16_t)(idx[k] | signs[k] << 9));
            max_scale = maxf(max_scale, scale);
        }
        if (!max_scale) {
            memset(y, 0, 74);
            continue;
        }
        const float d = max_scale / 31;
        ns_put_fp16(y, d);
        put_scales16(y + 66, scales, 1 / d);
    }
    return 0;
}

/* IQ2_S: 82 bytes = d, 32 bytes of low grid index bits, 32 sign bytes, 8 bytes of 2-bit high index
 * bits, 8 bytes of scales. Without importance weights, w = sigma^2/4 + x^2. */
static int quantize_iq2_s(const float *x, uint8_t *y, int64_t n, const float *qw) {
    const ns_iqgrid *g = &NS_IQGRID_1024;
    for (int64_t ibl = 0; ibl < n / QK_K; ++ibl, x += QK_K, y += 82) {
        float scales[QK_K / 16], max_scale = 0;
        const float sigma2 = 2 * sum_x2(x) / QK_K;
        uint8_t *qs = y + 2, *qh = y + 66;
        memset(y, 0, 82);
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            int idx[2];
            uint8_t signs[2];
            const float scale = iq2_16(g, 1, x + 16 * ib, qw ? qw + QK_K * ibl + 16 * ib : NULL, sigma2, idx, signs);
            scales[ib] = scale < 0 ? 0 : scale;
            if (scale < 0)
                continue;
            for (int k = 0; k < 2; ++k) {
                const int i8 = 2 * ib + k;
                qs[i8] = (uint8_t)(idx[k] & 255);
                qh[i8 / 4] |= (uint8_t)((idx[k] >> 8) << 2 * (i8 % 4));
                qs[QK_K / 8 + i8] = signs[k];
            }
            max_scale = maxf(max_scale, scale);
        }
        if (!max_scale)
            continue;
        const float d = max_scale / 31;
        ns_put_fp16(y, d * 0.9875f);
        put_scales16(y + 74, scales, 1 / d);
    }
    return 0;
}

/* ---- dequantization: d * (0.5 + scale) * 0.25 * grid value, signed ---------------------------------- */

static inline void put8(float *y, float db, const int8_t *grid, uint8_t signs) {
    for (int j = 0; j < 8; ++j)
        y[j] = db * (float)(uint8_t)grid[j] * (signs >> j & 1 ? -1.f : 1.f);
}

static void dequantize_iq2_xxs(const uint8_t *x, float *y, int64_t n) {
    const int8_t *grid = NS_IQGRID_256.values;
    for (int64_t b = 0; b < n / QK_K; ++b, x += 66) {
        const float d = ns_get_fp16(x);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            uint32_t aux[2];
            memcpy(aux, x + 2 + 8 * ib, 8);
            const float db = d * (0.5f + (aux[1] >> 28)) * 0.25f;
            for (int l = 0; l < 4; ++l, y += 8)
                put8(y, db, grid + 8 * (aux[0] >> 8 * l & 255), ns_iq_signs(aux[1] >> 7 * l));
        }
    }
}

static void dequantize_iq2_xs(const uint8_t *x, float *y, int64_t n) {
    const int8_t *grid = NS_IQGRID_512.values;
    for (int64_t b = 0; b < n / QK_K; ++b, x += 74) {
        const float d = ns_get_fp16(x);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const uint8_t sc = x[66 + ib];
            const float db[2] = {d * (0.5f + (sc & 0xf)) * 0.25f, d * (0.5f + (sc >> 4)) * 0.25f};
            for (int l = 0; l < 4; ++l, y += 8) {
                uint16_t q;
                memcpy(&q, x + 2 + 8 * ib + 2 * l, 2);
                put8(y, db[l / 2], grid + 8 * (q & 511), ns_iq_signs(q >> 9));
            }
        }
    }
}

static void dequantize_iq2_s(const uint8_t *x, float *y, int64_t n) {
    const int8_t *grid = NS_IQGRID_1024.values;
    for (int64_t b = 0; b < n / QK_K; ++b, x += 82) {
        const float d = ns_get_fp16(x);
        const uint8_t *qs = x + 2, *signs = x + 34, *qh = x + 66, *sc = x + 74;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const float db[2] = {d * (0.5f + (sc[ib] & 0xf)) * 0.25f, d * (0.5f + (sc[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; ++l, y += 8)
                put8(y, db[l / 2], grid + 8 * (qs[4 * ib + l] | (qh[ib] << (8 - 2 * l) & 0x300)),
                     signs[4 * ib + l]);
        }
    }
}

static int init_iq2_xxs(const uint8_t *data, int64_t nbytes) {
    return ns_iqgrid_init(&NS_IQGRID_256, data, nbytes, 256, 2, IQ2_LEVELS);
}
static int init_iq2_xs(const uint8_t *data, int64_t nbytes) {
    return ns_iqgrid_init(&NS_IQGRID_512, data, nbytes, 512, 2, IQ2_LEVELS);
}
static int init_iq2_s(const uint8_t *data, int64_t nbytes) {
    return ns_iqgrid_init(&NS_IQGRID_1024, data, nbytes, 1024, 1, IQ2_LEVELS);
}

const ns_qtype NS_QTYPE_IQ2_XXS = {"IQ2_XXS", 16, QK_K, 66, NS_IMATRIX_REQUIRED, 0, quantize_iq2_xxs,
                                   dequantize_iq2_xxs, init_iq2_xxs};
const ns_qtype NS_QTYPE_IQ2_XS = {"IQ2_XS", 17, QK_K, 74, NS_IMATRIX_REQUIRED, 0, quantize_iq2_xs,
                                  dequantize_iq2_xs, init_iq2_xs};
const ns_qtype NS_QTYPE_IQ2_S = {"IQ2_S", 22, QK_K, 82, NS_IMATRIX_USED, 0, quantize_iq2_s, dequantize_iq2_s,
                                 init_iq2_s};
