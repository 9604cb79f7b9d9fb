/* The error a format leaves, measured in the pass that makes it: rows of x quantized to ggml's bytes,
 * read back, and compared with x value by value, with no tensor-sized temporary.
 *
 * Per row (x the original, y what the format stores and reads back, d = y - x):
 *   float64 sums d^2, x^2, y^2, x*y (each value widened to float64 before the product), and, when norm gains
 *   weigh the error, sum_j c2_j d^2 and sum_j c2_j x^2 times the row's r2; a row's sums run over 4
 *   interleaved lanes in a fixed order (row_sums) and the rows' sums are added in row order, so a chunk's
 *   sums depend only on its values;
 *   |d| in float32 (numpy's np.abs(y - x) on float32 arrays): its maximum (NaN left out and counted), its
 *   histogram over the top 16 bits of the float32 pattern (the bins of analysis/metrics/quantiles.py), and
 *   the nonzero values whose bin `keep` marks copied out in order (all of them when keep is NULL; zeros
 *   are only counted); a NaN or infinite
 *   |d| is counted apart and left out of the maximum;
 *   block health per group of `group` values: the blocks, those dominated by one value (peak > 10 x the
 *   mean |x| of the rest, the rest summed in float64), the stored fp16 scale d of a ggml block read from its
 *   bytes (zero while the block holds a nonzero value, subnormal, infinite or NaN), the nonzero values and
 *   those read back as exactly zero.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "qmeasure.h"

#define LANES 4 /* interleaved float64 partial sums: their order is fixed here, whatever the CPU */
#define DOMINANCE 10.0
#define FP16_MIN_NORMAL 6.103515625e-05 /* 2^-14 */

static void health_of_row(const float *x, const float *y, int64_t n, int64_t group, const uint8_t *raw,
                          const ns_qtype *t, int64_t *h) {
    const int64_t nblocks = n / group;
    for (int64_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * group;
        float peak = 0.0f;
        double lane[LANES] = {0}, sum = 0.0;
        int64_t j = 0;
        for (; j + LANES <= group; j += LANES) {
            for (int k = 0; k < LANES; k++) {
                const float a = fabsf(xb[j + k]);
                peak = a > peak ? a : peak;
                lane[k] += (double)a;
            }
        }
        for (int k = 0; k < LANES; k++)
            sum += lane[k];
        for (; j < group; j++) {
            const float a = fabsf(xb[j]);
            peak = a > peak ? a : peak;
            sum += (double)a;
        }
        h[NS_H_BLOCKS]++;
        if (group > 1) {
            const double rest = (sum - (double)peak) / (double)(group - 1);
            h[NS_H_DOMINATED] += (double)peak > DOMINANCE * rest;
        }
        if (raw && t->scale_offset >= 0 && t->block_size == group) {
            const float d = fabsf(ns_get_fp16(raw + b * t->type_size + t->scale_offset));
            h[NS_H_UNDERFLOW] += peak > 0 && d == 0;
            h[NS_H_SUBNORMAL] += d > 0 && d < FP16_MIN_NORMAL;
            h[NS_H_OVERFLOW] += !isfinite(d);
        }
    }
    for (int64_t j = 0; j < n; j++) {
        const int nz = x[j] != 0;
        h[NS_H_NONZERO] += nz;
        h[NS_H_ZEROED] += nz && y[j] == 0;
    }
}

/* A row's float64 sums over LANES interleaved lanes (lane k takes values k, k + LANES, ...), the lanes added
 * 0..LANES-1 at the end and the tail in order: independent chains the CPU overlaps, in an order fixed here. */
static void row_sums(const float *x, const float *y, int64_t n, const double *col2, double *d2, double *x2,
                     double *y2, double *xy, double *wd, double *wx) {
    double a[LANES] = {0}, b[LANES] = {0}, c[LANES] = {0}, e[LANES] = {0}, f[LANES] = {0}, g[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        for (int k = 0; k < LANES; k++) {
            const double xd = (double)x[j + k], yd = (double)y[j + k], dd = yd - xd;
            a[k] += dd * dd;
            b[k] += xd * xd;
            c[k] += yd * yd;
            e[k] += xd * yd;
        }
    }
    if (wd) {
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            for (int k = 0; k < LANES; k++) {
                const double xd = (double)x[i + k], dd = (double)y[i + k] - xd, w = col2 ? col2[i + k] : 1.0;
                f[k] += w * (dd * dd);
                g[k] += w * (xd * xd);
            }
        }
    }
    double sa = 0, sb = 0, sc = 0, se = 0, sf = 0, sg = 0;
    for (int k = 0; k < LANES; k++) {
        sa += a[k];
        sb += b[k];
        sc += c[k];
        se += e[k];
        sf += f[k];
        sg += g[k];
    }
    for (int64_t t = j; t < n; t++) {  /* the tail of fewer than LANES values, in order */
        const double xd = (double)x[t], yd = (double)y[t], dd = yd - xd, w = col2 ? col2[t] : 1.0;
        sa += dd * dd;
        sb += xd * xd;
        sc += yd * yd;
        se += xd * yd;
        if (wd) {
            sf += w * (dd * dd);
            sg += w * (xd * xd);
        }
    }
    *d2 = sa, *x2 = sb, *y2 = sc, *xy = se;
    if (wd)
        *wd = sf, *wx = sg;
}

/* |d| of a row: histogram (two interleaved copies, so that runs of values in one bin do not wait on each
 * other's increments; hist2 holds NS_BINS pairs), zeros counted, the others copied out when their bin is kept
 * (a branch-free store: kept has room for every value), the largest finite |d| and the count of the others. */
static int64_t abs_errors(const float *x, const float *y, int64_t n, const uint8_t *keep, float *kept,
                          int64_t nkept, int64_t *hist2, float *maxd, double *s) {
    float m = *maxd;
    int64_t zeros = 0, nonfinite = 0, xbad = 0;
    for (int64_t j = 0; j < n; j++) {
        xbad += !(fabsf(x[j]) <= FLT_MAX);
        const float ad = fabsf(y[j] - x[j]);
        uint32_t bits;
        memcpy(&bits, &ad, sizeof bits);
        const uint32_t bin = bits >> 16;
        hist2[2 * bin + (j & 1)]++;
        const int zero = ad == 0, finite = ad <= FLT_MAX;
        zeros += zero;
        nonfinite += !finite;
        m = finite && ad > m ? ad : m;
        kept[nkept] = ad;
        nkept += (!zero) & (keep ? keep[bin] != 0 : 1);
    }
    *maxd = m;
    s[NS_S_ZEROS] += (double)zeros;
    s[NS_S_NONFINITE] += (double)nonfinite;
    s[NS_S_XNONFINITE] += (double)xbad;
    return nkept;
}

int64_t ns_measure_rows(const ns_measure_args *a, int64_t rows, float *yrow, uint8_t *rawrow, int64_t *hist2) {
    const int64_t n = a->n_per_row;
    const int64_t row_bytes = a->type ? n / a->type->block_size * a->type->type_size : 0;
    int64_t nkept = 0;
    double *s = a->stats;
    for (int k = 0; k < NS_STATS; k++)
        s[k] = 0.0;
    float maxd = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = a->x + r * n;
        const float *y;
        if (a->type) {
            uint8_t *raw = a->raw_out ? a->raw_out + r * row_bytes : rawrow;
            if (a->type->quantize(x, raw, n, a->type->imatrix == NS_IMATRIX_IGNORED ? NULL : a->imatrix) != 0)
                return -1;
            float *dst = a->y_out ? a->y_out + r * n : yrow;
            a->type->dequantize(raw, dst, n);
            y = dst;
            if (a->health)
                health_of_row(x, y, n, a->group, raw, a->type, a->health);
        } else {
            y = a->y + r * n;
            if (a->y_out && a->y_out != a->y)
                memcpy(a->y_out + r * n, y, (size_t)n * sizeof(float));
            if (a->health)
                health_of_row(x, y, n, a->group, NULL, NULL, a->health);
        }
        double d2 = 0, x2 = 0, y2 = 0, xy = 0, wd = 0, wx = 0;
        row_sums(x, y, n, a->col2, &d2, &x2, &y2, &xy, a->col2 || a->row2 ? &wd : NULL, &wx);
        if (a->row2) {
            wd *= a->row2[r];
            wx *= a->row2[r];
        }
        s[NS_S_D2] += d2;
        s[NS_S_X2] += x2;
        s[NS_S_Y2] += y2;
        s[NS_S_XY] += xy;
        s[NS_S_WD2] += wd;
        s[NS_S_WX2] += wx;
        nkept = abs_errors(x, y, n, a->keep, a->kept, nkept, hist2, &maxd, s);
    }
    s[NS_S_MAXABS] = (double)maxd;
    for (int64_t b = 0; b < NS_BINS; b++)
        a->hist[b] += hist2[2 * b] + hist2[2 * b + 1];
    return nkept;
}
