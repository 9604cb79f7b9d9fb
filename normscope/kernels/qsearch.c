/* ggml's scale searches (see qsearch.h), bit for bit.
 *
 * Each search tries a list of candidate scales. ggml tries them one after the other; here several run
 * side by side in "lanes": an outer loop over the values, an inner loop over the candidates, each lane
 * adding its own terms in ggml's order (the compiler vectorizes the inner loop; no sum is reassociated),
 * then one scan in ggml's order picks the winner by ggml's test.
 *   make_qx_quants: a candidate depends only on x and the weights, so all 19 run at once.
 *   make_qkx2/3_quants: a candidate depends on the min of the best fit so far, so 8 run at once with
 *     the current min, and after a winner that moves the min the search resumes right after it.
 *   make_q3_quants: sequential within a block, so the lanes are blocks (Q3_K's 16 sub-blocks), each
 *     running ggml's loop with its updates masked by its own tests.
 *   make_qp_quants (once per super-block) follows ggml's loops.
 *
 * ref: ggml/src/ggml-quants.c make_qx_quants, make_q3_quants, make_qkx2_quants, make_qkx3_quants,
 *      make_qp_quants, nearest_int.
 */
#include "qsearch.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b)) /* ggml-impl.h's, NaN behaviour included */
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))
/* On a loop over lanes: keep it a loop (GCC would unroll it into scalar code), so it is vectorized. */
#define LANE_LOOP _Pragma("GCC unroll 1")

/* ---- make_qx_quants ---------------------------------------------------------------------------------- */

/* ggml's weight of value x for rmse_type 1..4 when no importance weights are given. */
static float qx_weight(float x, int rmse_type) {
    return rmse_type == 1 ? x * x : rmse_type == 2 ? 1.0f : rmse_type == 3 ? fabsf(x) : sqrtf(fabsf(x));
}

/* The 19 candidates (lane 0: ggml's first pass, -nmax/max; lanes 1..18: is = -9..-1, 1..9) of a block
 * with weights w: per lane sum of w*x*l and of w*l*l, and the lane's levels l (as float, [i*NL + k]). */
#define QX_LANES 19
#define QX_NL 20 /* QX_LANES rounded up to whole vectors; lane 19 repeats lane 18 */
INLINE void qx_lanes(int n, int nmax, float max, const float *x, const float *w, float *sumlx, float *suml2,
                     float *lf) {
    float iscale[QX_NL];
    iscale[0] = -nmax / max;
    for (int k = 1; k < QX_NL; k++) {
        const int is = k < 10 ? k - 10 : k < QX_LANES ? k - 9 : 9;
        iscale[k] = -(nmax + 0.1f * is) / max;
    }
    for (int k = 0; k < QX_NL; k++)
        sumlx[k] = suml2[k] = 0.0f;
    const float lo = (float)-nmax, hi = (float)(nmax - 1);
    for (int i = 0; i < n; i++) {
        const float xi = x[i], wi = w[i], wx = wi * xi;
        float *li = lf + i * QX_NL;
        LANE_LOOP
        for (int k = 0; k < QX_NL; k++) {
            const float fl = ns_clamp_level(ns_nearest_int(iscale[k] * xi), lo, hi);
            li[k] = fl;
            sumlx[k] += wx * fl;
            suml2[k] += wi * fl * fl;
        }
    }
}

INLINE float qx_search(int n, int nmax, const float *x, int8_t *L, const float *w, float max) {
    float sumlx[QX_NL], suml2[QX_NL], lf[NS_QSEARCH_MAX_N * QX_NL];
    qx_lanes(n, nmax, max, x, w, sumlx, suml2, lf);
    float scale = suml2[0] != 0.0f ? sumlx[0] / suml2[0] : 0.0f;
    float best = scale * sumlx[0];
    int pick = 0;
    for (int k = 1; k < QX_LANES; k++) {
        if (suml2[k] > 0 && sumlx[k] * sumlx[k] > best * suml2[k]) {
            scale = sumlx[k] / suml2[k];
            best = scale * sumlx[k];
            pick = k;
        }
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(nmax + (int)lf[i * QX_NL + pick]);
    return scale;
}

float ns_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw) {
    float amax;
    const float max = ns_signed_absmax(n, x, &amax);
    if (amax < NS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; i++) {
            const int l = ns_nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + MAX(-nmax, MIN(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    const int return_early = rmse_type < 0;
    if (rmse_type < 0)
        rmse_type = -rmse_type;
    float w[NS_QSEARCH_MAX_N];
    for (int i = 0; i < n; i++)
        w[i] = qw ? qw[i] : qx_weight(x[i], rmse_type);
    if (return_early) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = ns_nearest_int(iscale * x[i]);
            l = MAX(-nmax, MIN(nmax - 1, l));
            L[i] = (int8_t)(l + nmax);
            sumlx += w[i] * x[i] * l;
            suml2 += w[i] * l * l;
        }
        const float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
        return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    }
    /* the common shapes get constant trip counts */
    if (n == 16)
        return qx_search(16, nmax, x, L, w, max);
    if (n == 32)
        return qx_search(32, nmax, x, L, w, max);
    return qx_search(n, nmax, x, L, w, max);
}

/* ---- make_q3_quants ---------------------------------------------------------------------------------- */

/* make_q3_quants with do_rmse on up to Q3_LANES blocks at once, one block per lane: each lane runs ggml's
 * sequential algorithm on its own block (the first pass; then rounds over the values, each value moved
 * to the level that best fits the others if that improves the x^2-weighted fit, until a round changes
 * nothing, at most five), every update masked by the lane's own conditions, so each block sees exactly
 * its own sequence of float operations. Levels are kept as floats (small integers, exact). x[i][b]:
 * value i of block b, transposed so a lane's values are a vector's elements. */
#define Q3_LANES 16
#define Q3_MAX_N 32

/* The result of lane b (block blk): levels + nmax and the fitted scale. */
static void q3_put(int n, int nmax, float (*lt)[Q3_LANES], int b, float sumlx, float suml2, int8_t *L,
                   float *scale) {
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)((int)lt[i][b] + nmax);
    *scale = suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void q3_lanes(int nb, int n, int nmax, const float *x, int8_t *L, float *scales) {
    float xt[Q3_MAX_N][Q3_LANES], w[Q3_MAX_N][Q3_LANES], wx[Q3_MAX_N][Q3_LANES], lt[Q3_MAX_N][Q3_LANES];
    float iscale[Q3_LANES], sumlx[Q3_LANES], suml2[Q3_LANES];
    int blk[Q3_LANES];  /* the block lane b holds (lanes are compacted as blocks finish) */
    int live[Q3_LANES]; /* lane b holds a block still searching */
    const float lo = (float)-nmax, hi = (float)(nmax - 1);
    for (int b = 0; b < Q3_LANES; b++)
        for (int i = 0; i < n; i++)
            xt[i][b] = b < nb ? x[b * n + i] : 0.0f;
    float max[Q3_LANES] = {0}, amax[Q3_LANES] = {0};
    for (int i = 0; i < n; i++) {
        LANE_LOOP
        for (int b = 0; b < Q3_LANES; b++) { /* ggml: if (ax > amax) { amax = ax; max = x; } */
            const float v = xt[i][b], ax = fabsf(v);
            const int gt = ax > amax[b];
            max[b] = ns_pick(gt, v, max[b]);
            amax[b] = ns_pick(gt, ax, amax[b]);
        }
    }
    for (int b = 0; b < Q3_LANES; b++) {
        const int zero = amax[b] < NS_GROUP_MAX_EPS; /* all |x| tiny: levels 0, scale 0 */
        if (zero && b < nb) {
            memset(L + b * n, 0, (size_t)n);
            scales[b] = 0.0f;
        }
        blk[b] = b;
        live[b] = !zero && b < nb;
        iscale[b] = zero ? 0.0f : -nmax / max[b];
        sumlx[b] = suml2[b] = 0.0f;
    }
    for (int i = 0; i < n; i++) {
        LANE_LOOP
        for (int b = 0; b < Q3_LANES; b++) {
            const float l = ns_clamp_level(ns_nearest_int(iscale[b] * xt[i][b]), lo, hi);
            lt[i][b] = l;
            w[i][b] = xt[i][b] * xt[i][b];
            wx[i][b] = w[i][b] * xt[i][b];
            sumlx[b] += wx[i][b] * l;
            suml2[b] += w[i][b] * l * l;
        }
    }
    int lanes = Q3_LANES; /* in use: a multiple of 4, the live ones first */
    for (int itry = 0; itry < 5 && lanes; itry++) {
        int changed[Q3_LANES] = {0};
        for (int i = 0; i < n; i++) {
            LANE_LOOP
            for (int b = 0; b < lanes; b++) {
                const float l = lt[i][b];
                float slx = sumlx[b] - wx[i][b] * l;
                float sl2 = suml2[b] - w[i][b] * l * l;
                const float new_l = ns_clamp_level(ns_nearest_int(xt[i][b] * sl2 / slx), lo, hi);
                slx += wx[i][b] * new_l;
                sl2 += w[i][b] * new_l * new_l;
                /* ggml: if (slx > 0) { ...; if (new_l != L) { ...; if (sl2 > 0 && better) accept } } */
                const int take = live[b] & (sumlx[b] - wx[i][b] * l > 0) & (new_l != l) & (sl2 > 0) &
                                 (slx * slx * suml2[b] > sumlx[b] * sumlx[b] * sl2);
                lt[i][b] = take ? new_l : l;
                sumlx[b] = take ? slx : sumlx[b];
                suml2[b] = take ? sl2 : suml2[b];
                changed[b] += take;
            }
        }
        /* ggml: if (!n_changed) break; a block that changed nothing is done: its result out, its lane
         * freed; the others move down so the next round runs on fewer vectors */
        int k = 0;
        for (int b = 0; b < lanes; b++) {
            if (!live[b])
                continue;
            if (!changed[b]) {
                q3_put(n, nmax, lt, b, sumlx[b], suml2[b], L + blk[b] * n, scales + blk[b]);
                continue;
            }
            if (k != b) {
                for (int i = 0; i < n; i++) {
                    xt[i][k] = xt[i][b];
                    w[i][k] = w[i][b];
                    wx[i][k] = wx[i][b];
                    lt[i][k] = lt[i][b];
                }
                sumlx[k] = sumlx[b];
                suml2[k] = suml2[b];
                blk[k] = blk[b];
            }
            live[k++] = 1;
        }
        lanes = (k + 3) & ~3;
        for (int b = k; b < lanes; b++)
            live[b] = 0;
    }
    for (int b = 0; b < lanes; b++) /* still changing after five rounds */
        if (live[b])
            q3_put(n, nmax, lt, b, sumlx[b], suml2[b], L + blk[b] * n, scales + blk[b]);
}

void ns_make_q3_quants_blocks(int nb, int n, int nmax, const float *x, int8_t *L, float *scales) {
    for (int b = 0; b < nb; b += Q3_LANES)
        q3_lanes(MIN(Q3_LANES, nb - b), n, nmax, x + (size_t)b * n, L + (size_t)b * n, scales + b);
}

float ns_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse) {
    if (do_rmse) {
        float scale;
        q3_lanes(1, n, nmax, x, L, &scale);
        return scale;
    }
    float amax;
    const float max = ns_signed_absmax(n, x, &amax);
    if (amax < NS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = -nmax / max;
    for (int i = 0; i < n; i++) {
        const int l = ns_nearest_int(iscale * x[i]);
        L[i] = (int8_t)(MAX(-nmax, MIN(nmax - 1, l)) + nmax);
    }
    return 1 / iscale;
}

/* ---- make_qkx2_quants / make_qkx3_quants ---------------------------------------------------------------- */

/* Unlike make_qx_quants' candidates, these depend on the search's state: candidate is takes its levels
 * round(iscale_is * (x - min)), iscale_is = (rmin + rdelta*is + nmax) / (max - min), from the min of the
 * best fit so far. So the candidates go QKX_W at a time with the current min, and when one wins and
 * moves the min, the search restarts right after it (the lanes beyond are discarded; on real weights a
 * search moves its min about once in 20-37 candidates). */
#define QKX_W 8

/* Candidates first..first+nl-1 (nl <= QKX_W) side by side, all with the current min: per lane the
 * weighted least-squares scale and min (ok[k] = 0 where ggml skips the candidate, D <= 0), the weighted
 * error of its levels, and the levels as floats in lf[i*QKX_W + k]. */
INLINE void qkx_lanes(int n, int nmax, const float *x, const float *w, float min, float max, float sum_w,
                      float sum_x, float rmin, float rdelta, int first, int nl, int use_mad, float *scale,
                      float *mn, float *err, int *ok, float *lf) {
    float iscale[QKX_W], sum_l[QKX_W], sum_l2[QKX_W], sum_xl[QKX_W];
    for (int k = 0; k < QKX_W; k++) {
        const int is = first + (k < nl ? k : nl - 1);
        iscale[k] = (rmin + rdelta * is + nmax) / (max - min);
        sum_l[k] = sum_l2[k] = sum_xl[k] = 0.0f;
    }
    const float top = (float)nmax;
    for (int i = 0; i < n; i++) {
        const float xi = x[i], xm = x[i] - min, wi = w[i];
        float *li = lf + i * QKX_W;
        LANE_LOOP
        for (int k = 0; k < QKX_W; k++) {
            const float fl = ns_clamp_level(ns_nearest_int(iscale[k] * xm), 0.0f, top);
            const float wl = wi * fl;
            li[k] = fl;
            sum_l[k] += wl;
            sum_l2[k] += wl * fl;
            sum_xl[k] += wl * xi;
        }
    }
    for (int k = 0; k < QKX_W; k++) {
        const float D = sum_w * sum_l2[k] - sum_l[k] * sum_l[k];
        ok[k] = D > 0;
        float s = (sum_w * sum_xl[k] - sum_x * sum_l[k]) / D;
        float m = (sum_l2[k] * sum_x - sum_l[k] * sum_xl[k]) / D;
        if (m > 0) {
            m = 0;
            s = sum_xl[k] / sum_l2[k];
        }
        scale[k] = s;
        mn[k] = m;
        err[k] = 0.0f;
    }
    for (int i = 0; i < n; i++) {
        const float xi = x[i], wi = w[i];
        const float *li = lf + i * QKX_W;
        if (use_mad) {
            LANE_LOOP
            for (int k = 0; k < QKX_W; k++)
                err[k] += wi * fabsf(scale[k] * li[k] + mn[k] - xi);
        } else {
            LANE_LOOP
            for (int k = 0; k < QKX_W; k++) {
                const float diff = scale[k] * li[k] + mn[k] - xi;
                err[k] += wi * (diff * diff);
            }
        }
    }
}

INLINE float qkx_search(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, float rmin,
                        float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) { /* ggml's qkx3 tests max <= min: the same, max < min cannot happen */
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        const int l = ns_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best += w[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    float lf[NS_QSEARCH_MAX_N * QKX_W], lscale[QKX_W], lmin[QKX_W], err[QKX_W];
    int ok[QKX_W];
    for (int first = 0; first <= nstep;) {
        const int nl = MIN(QKX_W, nstep + 1 - first);
        qkx_lanes(n, nmax, x, w, min, max, sum_w, sum_x, rmin, rdelta, first, nl, use_mad, lscale, lmin, err, ok,
                  lf);
        int next = first + nl;
        for (int k = 0; k < nl; k++) {
            if (!(ok[k] && err[k] < best))
                continue;
            best = err[k];
            scale = lscale[k];
            for (int i = 0; i < n; i++)
                L[i] = (uint8_t)lf[i * QKX_W + k];
            const int moved = ns_bits(lmin[k]) != ns_bits(min);
            min = lmin[k];
            if (moved) { /* the later lanes used the old min */
                next = first + k + 1;
                break;
            }
        }
        first = next;
    }
    *the_min = -min;
    return scale;
}

/* ggml's callers: (n, nmax, nstep, use_mad) = (16, 3, 15, 1) Q2_K, (16, 3, 36, 0) Q2_K imatrix, (32, 15 or
 * 31, 20/15/36, 0) Q4_K, Q5_K, Q4_1, Q5_1: those n get constant trip counts. */
static float qkx(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, float rmin,
                 float rdelta, int nstep, int use_mad) {
    if (n == 32 && !use_mad)
        return qkx_search(32, nmax, x, w, L, the_min, rmin, rdelta, nstep, 0);
    if (n == 16 && use_mad)
        return qkx_search(16, nmax, x, w, L, the_min, rmin, rdelta, nstep, 1);
    if (n == 16)
        return qkx_search(16, nmax, x, w, L, the_min, rmin, rdelta, nstep, 0);
    return qkx_search(n, nmax, x, w, L, the_min, rmin, rdelta, nstep, use_mad);
}

float ns_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          float rmin, float rdelta, int nstep, int use_mad) {
    return qkx(n, nmax, x, weights, L, the_min, rmin, rdelta, nstep, use_mad);
}

float ns_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          float rmin, float rdelta, int nstep, int use_mad) {
    if (weights)
        return qkx(n, nmax, x, weights, L, the_min, rmin, rdelta, nstep, use_mad);
    float w[NS_QSEARCH_MAX_N];
    for (int i = 0; i < n; i++)
        w[i] = x[i] * x[i];
    return qkx(n, nmax, x, w, L, the_min, rmin, rdelta, nstep, use_mad);
}

/* ---- make_qp_quants ---------------------------------------------------------------------------------- */

float ns_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
    const float *qw = quant_weights;
    float max = 0;
    for (int i = 0; i < n; i++)
        max = MAX(max, x[i]);
    if (max < NS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++)
        L[i] = (uint8_t)ns_nearest_int(iscale * x[i]); /* no clamp: a negative x wraps, as in ggml */
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0)
            continue;
        const float iscale_is = (0.1f * is + nmax) / max, scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            const int l = MIN(nmax, ns_nearest_int(iscale_is * x[i]));
            const float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = MIN(nmax, ns_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        sumlx += qw[i] * x[i] * l;
        suml2 += qw[i] * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                const int new_l = MIN(nmax, ns_nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}
