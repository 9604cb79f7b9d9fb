/* The 1-bit lattice types IQ1_S and IQ1_M: 256-value super-blocks, groups of 8 values on a grid of
 * 2048 points in {-1, 0, 1}^8 (iqgrid.h), shifted by +-1/8 per sub-block, 3-bit sub-block scales.
 * IQ1_S: one fp16 d per super-block, a shift and scale per 32 values. IQ1_M: per 16 values a scale,
 * per 8 a shift, and the fp16 d spread over the top nibbles of the four u16 scale words.
 *
 * ref: ggml/src/ggml-quants.c iq1_find_best_neighbour2, iq1_sort_helper, quantize_row_iq1_s_impl,
 *      quantize_row_iq1_m_impl, quantize_iq1_s / _m, dequantize_row_iq1_s / _m;
 *      ggml-common.h block_iq1_s, block_iq1_m, iq1m_scale_t, IQ1S_DELTA, IQ1M_DELTA.
 */
#include <float.h>

#include "iqgrid.h"
#include "qtypes.h"

#define QK_K 256
#define DELTA 0.125f  /* IQ1S_DELTA = IQ1M_DELTA */
#define GROUP_MAX_EPS_IQ1_S 1e-12f
#define GROUP_MAX_EPS_IQ1_M 1e-7f

static const int8_t IQ1_LEVELS[3] = {-1, 0, 1};
static const float X_P[3] = {-1 + DELTA, DELTA, 1 + DELTA}, X_M[3] = {-1 - DELTA, -DELTA, 1 - DELTA};

static inline float maxf(float a, float b) { return a > b ? a : b; }  /* ggml's MAX */

typedef struct {
    float v;
    int i;
} pair;

/* glibc's qsort for these small arrays: its merge sort (msort.c: halves of n/2 and n - n/2, the left
 * element first unless it compares greater), so equal values keep their order, as ggml's qsort of
 * (x, index) pairs by x (iq1_sort_helper) leaves them. */
static void sort_pairs(pair *b, int n, pair *tmp) {
    if (n <= 1)
        return;
    int n1 = n / 2, n2 = n - n1;
    pair *b1 = b, *b2 = b + n1, *t = tmp;
    sort_pairs(b1, n1, tmp);
    sort_pairs(b2, n2, tmp);
    while (n1 > 0 && n2 > 0) {
        if (!(b1->v > b2->v))
            *t++ = *b1++, --n1;
        else
            *t++ = *b2++, --n2;
    }
    if (n1 > 0)
        memcpy(t, b1, (size_t)n1 * sizeof *t);
    memcpy(b, tmp, (size_t)(n - n2) * sizeof *b);
}

/* ggml's iq1_find_best_neighbour2: of the grid points listed for an off-grid point, the first nearest to
 * x/scale in the weighted distance, the levels read as xg; L gets its levels. As in q_iq2.c, the terms
 * w (scale xg[l] - x)^2 per coordinate and level are computed once and each listed point adds its 8.
 * (ggml then scans the whole grid when no distance is below FLT_MAX, reading past x: never for finite x;
 * here the first is taken.) */
static int best_neighbour(const ns_iqgrid *g, int u, const float *x, const float *w, float scale, const float *xg,
                          int8_t *L) {
    float e[24];
    for (int l = 0; l < 3; ++l)
        for (int i = 0; i < 8; ++i) {
            const float q = xg[l], diff = scale * q - x[i];
            e[8 * l + i] = w[i] * diff * diff;
        }
    const uint16_t *nb = g->neighbours - g->map[u] - 1;
    float best = FLT_MAX;
    int gi = nb[1];
    for (int j = 1; j <= nb[0]; ++j) {
        const uint8_t *s = g->slot + 8 * nb[j];
        float d2 = 0;
        for (int i = 0; i < 8; ++i)
            d2 += e[s[i]];
        if (d2 < best)
            best = d2, gi = nb[j];
    }
    for (int i = 0; i < 8; ++i)
        L[i] = (int8_t)(g->slot[8 * gi + i] >> 3);
    return gi;
}

/* Grid indices of the n/8 groups of levels L (searching the neighbours of off-grid groups at `scale`,
 * xx[k]: group k's shifted levels); when some were off the grid, the refitted scale. */
static float to_grid(const ns_iqgrid *g, int n, const float *xb, const float *weight, float scale,
                     const float *const *xx, int8_t *L, uint16_t *index) {
    int all_on_grid = 1;
    for (int k = 0; k < n / 8; ++k) {
        int u = 0;
        for (int j = 0; j < 8; ++j)
            u |= L[8 * k + j] << 2 * j;
        int gi = g->map[u];
        if (gi < 0) {
            all_on_grid = 0;
            gi = best_neighbour(g, u, xb + 8 * k, weight + 8 * k, scale, xx[k], L + 8 * k);
        }
        index[k] = (uint16_t)gi;
    }
    if (!all_on_grid) {
        float sumqx = 0, sumq2 = 0;
        for (int k = 0; k < n / 8; ++k) {
            const int8_t *pg = (const int8_t *)(g->grid + index[k]);
            for (int j = 0; j < 8; ++j) {
                const float w = weight[8 * k + j], q = xx[k][(pg[j] - 1) / 2];
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
        if (sumqx > 0 && sumq2 > 0)
            scale = sumqx / sumq2;
    }
    return scale;
}

/* The values of a sub-block sorted ascending (ties in index order), as (value, index) pairs. */
static void sorted(const float *xb, int n, pair *p) {
    pair tmp[32];
    for (int j = 0; j < n; ++j)
        p[j].v = xb[j], p[j].i = j;
    sort_pairs(p, n, tmp);
}

/* Levels from the best split: the sorted values below i1 at 0, up to i2 at 1, the rest at 2. */
static void split_levels(const pair *p, int n, int i1, int i2, int8_t *L) {
    for (int j = 0; j < n; ++j)
        L[p[j].i] = (int8_t)(j < i1 ? 0 : j < i2 ? 1 : 2);
}

/* ---- IQ1_S: 50 bytes = d, 32 bytes of low grid index bits, per 32 values a u16 of 4 x 3 high index
 * bits, the 3-bit scale (bits 12-14) and the shift sign (bit 15). Importance weights required. ------- */

/* One 32-value sub-block: its scale, or -1 when it is empty; shift +-1, the four grid indices. */
static float iq1s_block(const ns_iqgrid *g, const float *xb, const float *qw, float sigma2, int *shift,
                        uint16_t *index) {
    float weight[32], sumx[33], sumw[33];
    int8_t L[32];
    pair p[32];
    for (int i = 0; i < 32; ++i)
        weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    float max = fabsf(xb[0]);
    for (int i = 1; i < 32; ++i)
        max = maxf(max, fabsf(xb[i]));
    if (max < GROUP_MAX_EPS_IQ1_S)
        return -1;
    sorted(xb, 32, p);
    sumx[0] = sumw[0] = 0;
    for (int j = 0; j < 32; ++j) {
        const int i = p[j].i;
        sumx[j + 1] = sumx[j] + weight[i] * xb[i];
        sumw[j + 1] = sumw[j] + weight[i];
    }
    /* every split (i1, i2) of the sorted values into levels 0 | 1 | 2, shift +1 then -1, in ggml's order:
     * a candidate replaces the best when sumq2 > 0 and sumqx^2 > best sumq2. The terms of i1 alone and of
     * i2 alone are computed once per split point, and the candidates of one i1 in a loop of their own
     * (vectorized): the float operations of ggml's sums, on the same operands, in its order. */
    static const float *const XS[2] = {X_P, X_M};
    float ax[2][33], aw[2][33], cx[2][33], cw[2][33];
    for (int s = 0; s < 2; ++s)
        for (int t = 0; t <= 32; ++t) {
            ax[s][t] = (sumx[t] - sumx[0]) * XS[s][0];
            aw[s][t] = (sumw[t] - sumw[0]) * XS[s][0] * XS[s][0];
            cx[s][t] = (sumx[32] - sumx[t]) * XS[s][2];
            cw[s][t] = (sumw[32] - sumw[t]) * XS[s][2] * XS[s][2];
        }
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_shift = 0;
    for (int i1 = 0; i1 <= 32; ++i1) {
        float qx[2][33], q2[2][33];
        for (int s = 0; s < 2; ++s) {
            const float a = ax[s][i1], b = aw[s][i1], x1 = XS[s][1], sx1 = sumx[i1], sw1 = sumw[i1];
            for (int i2 = i1; i2 <= 32; ++i2) {
                qx[s][i2] = a + (sumx[i2] - sx1) * x1 + cx[s][i2];
                q2[s][i2] = b + (sumw[i2] - sw1) * x1 * x1 + cw[s][i2];
            }
        }
        for (int i2 = i1; i2 <= 32; ++i2)
            for (int s = 0; s < 2; ++s)
                if (q2[s][i2] > 0 && qx[s][i2] * qx[s][i2] > best_score * q2[s][i2]) {
                    scale = qx[s][i2] / q2[s][i2], best_score = scale * qx[s][i2];
                    besti1 = i1, besti2 = i2, best_shift = s ? -1 : 1;
                }
    }
    if (besti1 < 0 || besti2 < 0 || best_shift == 0)
        return -1;
    split_levels(p, 32, besti1, besti2, L);
    if (scale < 0) {
        for (int j = 0; j < 32; ++j)
            L[j] = (int8_t)(2 - L[j]);
        scale = -scale, best_shift = -best_shift;
    }
    const float *xx = best_shift == 1 ? X_P : X_M;
    const float *const xs[4] = {xx, xx, xx, xx};
    *shift = best_shift;
    return to_grid(g, 32, xb, weight, scale, xs, L, index);
}

static int quantize_iq1_s(const float *x, uint8_t *y, int64_t n, const float *qw) {
    if (!qw)
        return -1;
    const ns_iqgrid *g = &NS_IQGRID_2048;
    for (int64_t ibl = 0; ibl < n / QK_K; ++ibl, x += QK_K, qw += QK_K, y += 50) {
        float scales[QK_K / 32], max_scale = 0, sumx2 = 0;
        int shifts[QK_K / 32];
        uint16_t qh[QK_K / 32] = {0};
        memset(y, 0, 50);
        for (int i = 0; i < QK_K; ++i)
            sumx2 += x[i] * x[i];
        const float sigma2 = 2 * sumx2 / QK_K;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            uint16_t index[4];
            const float scale = iq1s_block(g, x + 32 * ib, qw + 32 * ib, sigma2, &shifts[ib], index);
            if (scale < 0) {  /* empty: scale 0, shift +1, nothing written */
                scales[ib] = 0, shifts[ib] = 1;
                continue;
            }
            for (int k = 0; k < 4; ++k) {
                y[2 + 4 * ib + k] = (uint8_t)(index[k] & 255);
                qh[ib] |= (uint16_t)((index[k] >> 8) << 3 * k);
            }
            scales[ib] = scale;
            max_scale = maxf(max_scale, scale);
        }
        if (max_scale) {
            const float d = max_scale / 15, id = 1 / d;
            ns_put_fp16(y, d * 1.125f);
            for (int ib = 0; ib < QK_K / 32; ++ib) {
                int l = ns_nearest_int(0.5f * (id * scales[ib] - 1));
                l = l < 7 ? (l > 0 ? l : 0) : 7;
                if (shifts[ib] == -1)
                    l |= 8;
                qh[ib] |= (uint16_t)(l << 12);
            }
        }
        for (int ib = 0; ib < QK_K / 32; ++ib)
            memcpy(y + 34 + 2 * ib, &qh[ib], 2);
    }
    return 0;
}

/* ---- IQ1_M: 56 bytes = 32 bytes of low grid index bits; per 16 values a byte of 2 x (3 high index
 * bits, shift sign bit); 4 u16 of 4 x 3-bit scales, their top nibbles the fp16 d. ------------------- */

/* One 16-value sub-block: its scale, or -1 when it is empty; shifts k (0..3: bit 1 the first 8 values
 * shifted down, bit 0 the second), the two grid indices. */
static float iq1m_block(const ns_iqgrid *g, const float *xb, const float *weight, int *shift, uint16_t *index) {
    float px[2][17], pw[2][17];
    int8_t L[16];
    pair p[16];
    float max = fabsf(xb[0]);
    for (int i = 1; i < 16; ++i)
        max = maxf(max, fabsf(xb[i]));
    if (max < GROUP_MAX_EPS_IQ1_M)
        return -1;
    sorted(xb, 16, p);
    /* prefix sums per half (each half has its own shift): a split's sums are T v2 - p[i1] - p[i2] */
    px[0][0] = px[1][0] = pw[0][0] = pw[1][0] = 0;
    for (int j = 0; j < 16; ++j) {
        const int i = p[j].i, h = i < 8 ? 0 : 1;
        px[h][j + 1] = px[h][j] + weight[i] * xb[i];
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = pw[h][j] + weight[i];
        pw[1 - h][j + 1] = pw[1 - h][j];
    }
    const float txs[2] = {px[0][16], px[1][16]}, tws[2] = {pw[0][16], pw[1][16]};
    const float p2 = X_P[2], m2 = X_M[2];
    const float cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1], cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
    const float cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1], cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
    /* as in iq1s_block: the sums of one i1's candidates in a loop of their own, the (i1, i2) and k
     * order of the scan and every float operation ggml's */
    float tp[2], tm[2], txp[2], txm[2];
    for (int h = 0; h < 2; ++h) {
        tp[h] = tws[h] * p2 * p2, tm[h] = tws[h] * m2 * m2;
        txp[h] = txs[h] * p2, txm[h] = txs[h] * m2;
    }
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_k = -1;
    for (int i1 = 0; i1 <= 16; ++i1) {
        float qx[4][17], q2[4][17];
        const float x0 = px[0][i1], x1 = px[1][i1];
        const float ap0 = tp[0] + pw[0][i1] * cp1, ap1 = tp[1] + pw[1][i1] * cp1;
        const float am0 = tm[0] + pw[0][i1] * cm1, am1 = tm[1] + pw[1][i1] * cm1;
        for (int i2 = i1; i2 <= 16; ++i2) {
            const float sx0 = x0 + px[0][i2], sx1 = x1 + px[1][i2];
            const float qx_p0 = txp[0] - sx0, qx_p1 = txp[1] - sx1, qx_m0 = txm[0] - sx0, qx_m1 = txm[1] - sx1;
            const float q2_p0 = ap0 + pw[0][i2] * cp2, q2_p1 = ap1 + pw[1][i2] * cp2;
            const float q2_m0 = am0 + pw[0][i2] * cm2, q2_m1 = am1 + pw[1][i2] * cm2;
            qx[0][i2] = qx_p0 + qx_p1, qx[1][i2] = qx_p0 + qx_m1;
            qx[2][i2] = qx_m0 + qx_p1, qx[3][i2] = qx_m0 + qx_m1;
            q2[0][i2] = q2_p0 + q2_p1, q2[1][i2] = q2_p0 + q2_m1;
            q2[2][i2] = q2_m0 + q2_p1, q2[3][i2] = q2_m0 + q2_m1;
        }
        for (int i2 = i1; i2 <= 16; ++i2)
            for (int k = 0; k < 4; ++k)
                if (q2[k][i2] > 0 && qx[k][i2] * qx[k][i2] > best_score * q2[k][i2]) {
                    scale = qx[k][i2] / q2[k][i2], best_score = scale * qx[k][i2];
                    besti1 = i1, besti2 = i2, best_k = k;
                }
    }
    if (besti1 < 0 || besti2 < 0 || best_k < 0)
        return -1;
    split_levels(p, 16, besti1, besti2, L);
    if (scale < 0) {
        for (int j = 0; j < 16; ++j)
            L[j] = (int8_t)(2 - L[j]);
        scale = -scale, best_k = 3 - best_k;
    }
    const float *const xs[2] = {best_k < 2 ? X_P : X_M, best_k % 2 == 0 ? X_P : X_M};
    *shift = best_k;
    return to_grid(g, 16, xb, weight, scale, xs, L, index);
}

/* IQ1_M's weights of 16 values: the importance weights' sqrt(sigma^2 + x^2) form, or x^2 without. */
static inline void iq1m_weights(const float *xb, const float *qw, float sigma2, float *weight) {
    if (qw)
        for (int i = 0; i < 16; ++i)
            weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    else
        for (int i = 0; i < 16; ++i)
            weight[i] = xb[i] * xb[i];
}

static int quantize_iq1_m(const float *x, uint8_t *y, int64_t n, const float *qw) {
    static const uint8_t masks[4] = {0x00, 0x80, 0x08, 0x88};
    const ns_iqgrid *g = &NS_IQGRID_2048;
    for (int64_t ibl = 0; ibl < n / QK_K; ++ibl, x += QK_K, y += 56) {
        const float *qwb = qw ? qw + QK_K * ibl : NULL;
        float scales[QK_K / 16], weight[16], max_scale = 0, sumx2 = 0;
        int shifts[QK_K / 16];
        uint8_t *qs = y, *qh = y + 32;
        uint16_t sc[4] = {0};
        memset(y, 0, 56);
        for (int i = 0; i < QK_K; ++i)
            sumx2 += x[i] * x[i];
        const float sigma2 = 2 * sumx2 / QK_K;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            uint16_t index[2];
            iq1m_weights(x + 16 * ib, qwb ? qwb + 16 * ib : NULL, sigma2, weight);
            const float scale = iq1m_block(g, x + 16 * ib, weight, &shifts[ib], index);
            if (scale < 0) {  /* empty: scale 0, shifts 0, indices 0 */
                scales[ib] = 0, shifts[ib] = 0;
                continue;
            }
            qs[2 * ib + 0] = (uint8_t)(index[0] & 255);
            qs[2 * ib + 1] = (uint8_t)(index[1] & 255);
            qh[ib] = (uint8_t)((index[0] >> 8) | ((index[1] >> 8) << 4));
            scales[ib] = scale;
            max_scale = maxf(max_scale, scale);
        }
        if (!max_scale)
            continue;
        /* the sub-block scales at d = max/15, then d refitted to the whole super-block */
        float d = max_scale / 15, sumqx = 0, sumq2 = 0;
        const float id = 1 / d;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            int l = ns_nearest_int(0.5f * (id * scales[ib] - 1));
            l = l < 7 ? (l > 0 ? l : 0) : 7;
            sc[ib / 4] |= (uint16_t)(l << 3 * (ib % 4));
            qh[ib] |= masks[shifts[ib]];
            const float *xb = x + 16 * ib;
            iq1m_weights(xb, qwb ? qwb + 16 * ib : NULL, sigma2, weight);
            for (int k = 0; k < 2; ++k) {
                const float *xx = (k == 0 ? shifts[ib] < 2 : shifts[ib] % 2 == 0) ? X_P : X_M;
                const int8_t *pg = (const int8_t *)(g->grid + (qs[2 * ib + k] + ((qh[ib] << (8 - 4 * k)) & 0x700)));
                for (int j = 0; j < 8; ++j) {
                    const float w = weight[8 * k + j], q = xx[(pg[j] - 1) / 2] * (2 * l + 1);
                    sumqx += w * q * xb[8 * k + j];
                    sumq2 += w * q * q;
                }
            }
        }
        if (sumq2 > 0)
            d = sumqx / sumq2;
        const uint16_t s = ns_fp16(d * 1.1125f);
        sc[0] |= (uint16_t)((s & 0x000f) << 12);
        sc[1] |= (uint16_t)((s & 0x00f0) << 8);
        sc[2] |= (uint16_t)((s & 0x0f00) << 4);
        sc[3] |= (uint16_t)(s & 0xf000);
        memcpy(y + 48, sc, 8);
    }
    return 0;
}

/* ---- dequantization: d * (2 scale + 1) * (grid value + shift) --------------------------------------- */

static void dequantize_iq1_s(const uint8_t *x, float *y, int64_t n) {
    const int8_t *grid = NS_IQGRID_2048.values;
    for (int64_t b = 0; b < n / QK_K; ++b, x += 50) {
        const float d = ns_get_fp16(x);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            uint16_t qh;
            memcpy(&qh, x + 34 + 2 * ib, 2);
            const float dl = d * (2 * ((qh >> 12) & 7) + 1), delta = qh & 0x8000 ? -DELTA : DELTA;
            for (int l = 0; l < 4; ++l, y += 8) {
                const int8_t *gp = grid + 8 * (x[2 + 4 * ib + l] | (((qh >> 3 * l) & 7) << 8));
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * (gp[j] + delta);
            }
        }
    }
}

static void dequantize_iq1_m(const uint8_t *x, float *y, int64_t n) {
    const int8_t *grid = NS_IQGRID_2048.values;
    for (int64_t b = 0; b < n / QK_K; ++b, x += 56) {
        uint16_t sc[4];
        memcpy(sc, x + 48, 8);
        const uint16_t s = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
        const float d = ns_half(s);
        const uint8_t *qs = x, *qh = x + 32;
        for (int ib = 0; ib < QK_K / 32; ++ib, qs += 4, qh += 2) {
            const float dl[2] = {d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1),
                                 d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1)};
            for (int l = 0; l < 4; ++l, y += 8) {
                const int h = qh[l / 2] >> 4 * (l % 2);
                const int8_t *gp = grid + 8 * (qs[l] | ((h & 7) << 8));
                const float delta = h & 0x08 ? -DELTA : DELTA;
                for (int j = 0; j < 8; ++j)
                    y[j] = dl[l / 2] * (gp[j] + delta);
            }
        }
    }
}

static int init_iq1(const uint8_t *data, int64_t nbytes) {
    return ns_iqgrid_init(&NS_IQGRID_2048, data, nbytes, 2048, 3, IQ1_LEVELS);
}

const ns_qtype NS_QTYPE_IQ1_S = {"IQ1_S", 19, QK_K, 50, NS_IMATRIX_REQUIRED, 0, quantize_iq1_s, dequantize_iq1_s,
                                 init_iq1};
const ns_qtype NS_QTYPE_IQ1_M = {"IQ1_M", 29, QK_K, 56, NS_IMATRIX_USED, -1, quantize_iq1_m, dequantize_iq1_m,
                                 init_iq1};
