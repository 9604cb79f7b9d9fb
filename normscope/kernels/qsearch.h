/* The scale searches ggml's k-quants, weighted legacy quantizers and IQ types share (ggml-quants.c's
 * make_*_quants), with the reference's float32 operations in its order: the same L and the same
 * returned scale for every input, NaN, infinities and subnormals included.
 *
 * Common shapes: x holds the n values of one (sub-)block, 1 <= n <= NS_QSEARCH_MAX_N; L receives n
 * quantized levels. Weights, where taken, are n floats.
 */
#ifndef NORMSCOPE_QSEARCH_H
#define NORMSCOPE_QSEARCH_H

#include <stdint.h>

#include "qtypes.h"

#define NS_QSEARCH_MAX_N 256
#define NS_GROUP_MAX_EPS 1e-15f /* ggml's GROUP_MAX_EPS: a block whose max |x| is below is all zero */

/* Symmetric levels L[i] = l + nmax, l in [-nmax, nmax-1]; returns the scale d (x ~ d * l).
 * rmse_type 0: l = round(x * -nmax/max) only; 1..4: least squares with weights qw (or, when qw is NULL,
 * x^2, 1, |x|, sqrt|x|) over the 19 candidate scales -(nmax + 0.1*is)/max, is = 0, -9..9; negative:
 * the first candidate only, returning the mean of its fitted and its nominal scale.
 * ref: make_qx_quants. */
float ns_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);

/* Q3_K's symmetric levels L[i] = l + nmax (l in [-nmax, nmax-1]) with, if do_rmse, up to five rounds of
 * one-level-at-a-time improvement of the x^2-weighted fit. Here n <= 32. ref: make_q3_quants. */
float ns_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse);

/* ns_make_q3_quants(n, nmax, x + b*n, L + b*n, 1) for the nb consecutive blocks b (n <= 32), the scale of
 * block b in scales[b]: the same results, the blocks run side by side (faster than one at a time). */
void ns_make_q3_quants_blocks(int nb, int n, int nmax, const float *x, int8_t *L, float *scales);

/* Affine levels x ~ scale * L[i] - the_min, L in [0, nmax], min clamped to <= 0 (*the_min >= 0): from
 * the plain fit over [min(x, 0), max x], the candidates is = 0..nstep with inverse scales
 * (rmin + rdelta*is + nmax) / (max - min) (min: that of the best fit so far), each refitted by weighted
 * least squares, the first of least weighted error (|.| if use_mad, else squared) kept.
 * ref: make_qkx2_quants. weights: n floats, not NULL. */
float ns_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          float rmin, float rdelta, int nstep, int use_mad);

/* make_qkx2_quants with weights x^2 when `weights` is NULL. ref: make_qkx3_quants. */
float ns_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          float rmin, float rdelta, int nstep, int use_mad);

/* Non-negative levels L[i] in [0, nmax] of a block of (mostly) non-negative values, such as the scales
 * of a super-block: the best of 9 candidate scales (nmax + 0.1*is)/max, is = -4..4, by weighted squared
 * error, then up to five rounds of one-level improvement. quant_weights: n floats, not NULL.
 * A negative x[i] gives what ggml gives: a level wrapped to uint8. ref: make_qp_quants. */
float ns_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

/* ---- small helpers the quantizers share ---------------------------------------------------------------- */

/* c ? a : b for c in {0, 1}, through the bits: GCC vectorizes this select where it keeps `?:` on a float
 * comparison as a branch. */
static inline float ns_pick(int c, float a, float b) {
    const uint32_t m = -(uint32_t)c;
    return ns_float((ns_bits(a) & m) | (ns_bits(b) & ~m));
}

/* ggml's scan for the value of largest magnitude: the first one wins a tie, and its sign is kept (the scale
 * divides by it, so the largest value maps to -nmax). Returns it and stores its magnitude in *amax. */
static inline float ns_signed_absmax(int n, const float *x, float *amax) {
    float max = 0, a = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > a) {
            a = ax;
            max = x[i];
        }
    }
    *amax = a;
    return max;
}

/* MAX(lo, MIN(hi, l)) of an int level (ggml's clamps), as a float: l converts exactly (|l| <= 2^22 for a
 * ns_nearest_int result), so this is the float of the clamped int, in a form the compiler vectorizes. */
static inline float ns_clamp_level(int l, float lo, float hi) {
    float f = (float)l;
    f = f < lo ? lo : f;
    return f > hi ? hi : f;
}

#endif
