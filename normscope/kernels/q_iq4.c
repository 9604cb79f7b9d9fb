/* The 4-bit non-linear types: IQ4_NL (32-value blocks, one fp16 scale) and IQ4_XS (256-value super-blocks,
 * an fp16 scale and eight 6-bit sub-block scales). Both map x / scale to the nearest of 16 fixed levels.
 *
 * ref: ggml/src/ggml-quants.c quantize_row_iq4_nl_impl, quantize_iq4_nl, quantize_iq4_xs,
 *      quantize_row_iq4_nl_ref, dequantize_row_iq4_nl, dequantize_row_iq4_xs; ggml-common.h kvalues_iq4nl.
 *
 * The path matters for IQ4_NL. ggml_quantize_chunk (quantize_iq4_nl) searches 15 scales (ntry = 7) and
 * re-picks every level with the final scale. quantize_row_iq4_nl_ref (ggml's from_float_ref; the CPU
 * backend's from_float when a graph writes IQ4_NL at run time) passes ntry = -1: start at max / -127 (a
 * negative scale), one least-squares scale, no search, the levels of that first pass. llama-quantize calls
 * ggml_quantize_chunk, so published IQ4_NL files hold the ntry = 7 bytes, which are the ones made here.
 * IQ4_XS has one path (its _ref calls quantize_iq4_xs with no weights), also ntry = 7.
 * Importance weights are used when given (policy USED): weight = qw * sqrt(sigma2 + x^2), else x^2.
 */
#include "qsearch.h"
#include "qtypes.h"

#define QK4_NL 32
#define QK_K 256
#define IQ4_NTRY 7                 /* what quantize_iq4_nl / quantize_iq4_xs pass */
#define GROUP_MAX_EPS 1e-15f

/* The 16 levels (ggml-common.h kvalues_iq4nl; gguf-py IQ4_NL.kvalues). */
static const int8_t IQ4NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Midpoints of neighbouring levels, (v[i] + v[i+1]) / 2, all exact in float32. */
static const float IQ4NL_MIDS[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                     7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};

/* Index of the level nearest x, equal to ggml's best_index_int8 for every float x (NaN included: 15).
 * ggml bisects to v[i] <= x < v[i+1] and takes i when fl(x - v[i]) < fl(v[i+1] - x). Both roundings are
 * monotone in x, so that choice flips once, and for these levels it flips exactly at the midpoint (the
 * float just below it still picks i; tests/quant/test_qkernels_simple.py checks this for all 15).
 * Hence: the number of midpoints not above x, a branch-free count the compiler vectorizes. */
static inline int best_index(float x) {
    int l = 0;
    for (int i = 0; i < 15; i++)
        l += !(x < IQ4NL_MIDS[i]);
    return l;
}

/* Sums of w*q*x and w*q*q over one 32-value block quantized with inverse scale id. The float order is
 * the reference's: (w*q)*x and (w*q)*q added left to right; the levels are picked first, apart. */
static inline void fit(const float *xb, const float *w, float id, float *sumqx, float *sumq2) {
    uint8_t idx[32];
    for (int j = 0; j < 32; j++)
        idx[j] = (uint8_t)best_index(id * xb[j]);
    float sx = 0, s2 = 0;
    for (int j = 0; j < 32; j++) {
        const float q = IQ4NL_VALUES[idx[j]];
        sx += w[j] * q * xb[j];
        s2 += w[j] * q * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* One super-block of nsb 32-value blocks (nsb = 1: IQ4_NL, 8: IQ4_XS). Writes the fp16 d at dh, the
 * packed levels at q4 (16 bytes a block: low nibble value j, high nibble value j + 16) and, for nsb > 1,
 * the 6-bit sub-block scales (low 4 bits in scales_l, high 2 in the little-endian uint16 at scales_h). */
static void quantize_superblock(const float *x, int nsb, const float *qw, uint8_t *dh, uint8_t *q4,
                                uint8_t *scales_h, uint8_t *scales_l) {
    const int n = 32 * nsb;
    float scales[QK_K / 32], weight[32];
    uint8_t L[QK_K];

    float sigma2 = 0;
    for (int j = 0; j < n; j++)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / n;

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nsb; ib++) {
        const float *xb = x + 32 * ib;
        if (qw)
            for (int j = 0; j < 32; j++)
                weight[j] = qw[32 * ib + j] * sqrtf(sigma2 + xb[j] * xb[j]);
        else
            for (int j = 0; j < 32; j++)
                weight[j] = xb[j] * xb[j];
        float amax;
        const float max = ns_signed_absmax(32, xb, &amax);
        if (amax < GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        /* start at d = max / 127 (written -max / -127 as ggml does), then try id = (k - 127) / max for
         * k = -7 .. 7, keeping the least-squares scale of the best sumqx^2 / sumq2. The levels of these
         * passes are not kept: with ntry > 0 every level is picked again below from the final scale. */
        float d = -max / (float)IQ4NL_VALUES[0];
        float sumqx, sumq2;
        fit(xb, weight, 1 / d, &sumqx, &sumq2);
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry++) {
            const float id = (float)(itry + IQ4NL_VALUES[0]) / max;
            fit(xb, weight, id, &sumqx, &sumq2);
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        const float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if (nsb > 1) {
        /* 6-bit signed sub-block scales l in [-32, 31] of d = -max_scale / 32, stored as l + 32. */
        const float d = -max_scale / 32;
        ns_put_fp16(dh, d);
        const float id = d ? 1 / d : 0.f;
        uint16_t sh = 0;
        for (int ib = 0; ib < nsb; ib++) {
            int l = ns_nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const float dl = d * (float)l;
            const float idl = dl ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++)
                L[32 * ib + j] = (uint8_t)best_index(idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0)
                scales_l[ib / 2] = (uint8_t)(l & 0xf);
            else
                scales_l[ib / 2] |= (uint8_t)((l & 0xf) << 4);
            sh |= (uint16_t)((l >> 4) << 2 * (ib % 8));
        }
        scales_h[0] = (uint8_t)sh;
        scales_h[1] = (uint8_t)(sh >> 8);
    } else {
        ns_put_fp16(dh, scales[0]);
        const float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < 32; j++)
            L[j] = (uint8_t)best_index(id * x[j]);
    }

    for (int i = 0; i < nsb; i++)
        for (int j = 0; j < 16; j++)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

/* IQ4_NL block (18 bytes): fp16 d, 16 bytes of levels. */
static int quantize_iq4_nl(const float *x, uint8_t *y, int64_t n, const float *qw) {
    for (int64_t b = 0; b < n / QK4_NL; b++)
        quantize_superblock(x + QK4_NL * b, 1, qw ? qw + QK4_NL * b : NULL, y + 18 * b, y + 18 * b + 2, NULL, NULL);
    return 0;
}

static void dequantize_iq4_nl(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK4_NL; b++, x += 18, y += QK4_NL) {
        const float d = ns_get_fp16(x);
        for (int j = 0; j < 16; j++) {
            y[j] = d * IQ4NL_VALUES[x[2 + j] & 0xf];
            y[j + 16] = d * IQ4NL_VALUES[x[2 + j] >> 4];
        }
    }
}

/* IQ4_XS block (136 bytes): fp16 d, uint16 scales_h, 4 bytes scales_l, 128 bytes of levels. */
static int quantize_iq4_xs(const float *x, uint8_t *y, int64_t n, const float *qw) {
    for (int64_t b = 0; b < n / QK_K; b++) {
        uint8_t *blk = y + 136 * b;
        quantize_superblock(x + QK_K * b, QK_K / 32, qw ? qw + QK_K * b : NULL, blk, blk + 8, blk + 2, blk + 4);
    }
    return 0;
}

static void dequantize_iq4_xs(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 136) {
        const float d = ns_get_fp16(x);
        const unsigned scales_h = x[2] | (unsigned)x[3] << 8;
        const uint8_t *qs = x + 8;
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32, qs += 16) {
            const int ls = ((x[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; j++) {
                y[j] = dl * IQ4NL_VALUES[qs[j] & 0xf];
                y[j + 16] = dl * IQ4NL_VALUES[qs[j] >> 4];
            }
        }
    }
}

const ns_qtype NS_QTYPE_IQ4_NL = {"IQ4_NL", 20, QK4_NL, 18, NS_IMATRIX_USED, 0, quantize_iq4_nl, dequantize_iq4_nl,
                                  NULL};
const ns_qtype NS_QTYPE_IQ4_XS = {"IQ4_XS", 23, QK_K, 136, NS_IMATRIX_USED, 0, quantize_iq4_xs, dequantize_iq4_xs,
                                  NULL};
