/* The 3-bit lattice types IQ3_XXS and IQ3_S: 256 values per block, groups of 4 values quantized to a
 * point of a grid in {1, 3, ..., 15}^4 (IQ3_XXS: 256 points, IQ3_S: 512), 32-value sub-blocks with a
 * 4-bit scale under one fp16 d.
 *
 * The grids come at run time from gguf-py's published points (init_iq3_*). From them init builds what
 * ggml's iq3xs_init_impl builds from its own copy: the points as levels 0..7, the map from a point of the
 * 8^4 level space to its grid index (or, off the grid, to its neighbour list), and for each point off the
 * grid the grid points at its `nwant` smallest squared distances (IQ3_XXS 2, IQ3_S 3), ordered by
 * (distance, grid index) -- the order ggml's qsort gives, its keys being unique -- which
 * iq3_find_best_neighbour scans, the first minimum winning. The sign tables are computed (ksigns).
 * tests/quant/test_qkernels_iq3.py compares these tables with the ones in ggml's memory. Both types use
 * an importance matrix when given one and weigh by x^2 without.
 *
 * ref: ggml/src/ggml-quants.c iq3xs_init_impl, iq3_find_best_neighbour, quantize_row_iq3_xxs_impl,
 *      quantize_row_iq3_s_impl, quantize_iq3_xxs, quantize_iq3_s, dequantize_row_iq3_xxs,
 *      dequantize_row_iq3_s; ggml-common.h block_iq3_xxs, block_iq3_s, ksigns_iq2xs, kmask_iq2xs.
 */
#include <float.h>
#include <stdlib.h>

#include "qtypes.h"

#define QK_K 256
#define KMAP_SIZE 4096 /* the 8^4 level space; a point's index is l0 | l1 << 3 | l2 << 6 | l3 << 9 */

/* GCC's generic vectors (SSE2 on x86-64, NEON on arm64): 4 neighbours' distances at once, each lane the
 * float operations of ggml's scalar loop in its order. */
typedef float v4sf __attribute__((vector_size(16)));
typedef int32_t v4si __attribute__((vector_size(16)));

typedef struct {
    int n_points;
    uint8_t *value;       /* n_points x 4: the published coordinates, what dequantization multiplies */
    uint8_t *level;       /* n_points x 4: the levels l, 0..7 */
    float *q;             /* n_points x 4: 2l+1, the coordinates the quantizer searches with */
    int32_t *map;         /* KMAP_SIZE: the grid index of a point, or -(offset + 1) into neighbours */
    uint16_t *neighbours; /* per point off the grid: count, then that many grid indices */
    int64_t n_neighbours;
    /* the same lists for the search: a point's neighbours 4 at a time, one v4sf per coordinate (4 v4sf
     * a chunk), NaN past the end (a NaN distance is never the smallest) */
    v4sf *chunks;
    int32_t *chunk_at; /* KMAP_SIZE: a point off the grid's first chunk */
} iq3_grid;

static iq3_grid grids[2]; /* [0] IQ3_XXS (256 points), [1] IQ3_S (512) */

/* ksigns_iq2xs[i]: 7 sign bits plus an eighth that makes the number of set bits even. */
static inline uint8_t ksigns(unsigned i) { return (uint8_t)(i | ((unsigned)__builtin_parity(i) << 7)); }

/* ---- tables ------------------------------------------------------------------------------------------ */

/* A point's neighbour list from its squared distance d2[j] to each grid point j: the grid points at the
 * nwant smallest distinct distances (fewer if there are fewer), ascending, each distance's points by
 * index -- the order of ggml's qsort on (d2, index), whose keys are unique so its instability does not
 * matter. Writes them to out (if not NULL); returns their number. */
static int nearest_points(const int *d2, int n_points, int nwant, uint16_t *out) {
    int count = 0, below = -1;
    for (int have = 0; have < nwant; have++) {
        int next = INT32_MAX;
        for (int j = 0; j < n_points; j++)
            if (d2[j] > below && d2[j] < next)
                next = d2[j];
        if (next == INT32_MAX)
            break;
        for (int j = 0; j < n_points; j++)
            if (d2[j] == next) {
                if (out)
                    out[count] = (uint16_t)j;
                count++;
            }
        below = next;
    }
    return count;
}

/* g from `data`: n_points x 4 int8 published coordinates, each one of `values` (the published value of
 * levels 0..7). -1 when the bytes are not such a grid (wrong size, another value, a point twice). */
static int build_grid(iq3_grid *g, const uint8_t *data, int64_t nbytes, int n_points, int nwant,
                      const uint8_t values[8]) {
    if (nbytes != 4 * (int64_t)n_points)
        return -1;
    uint8_t *value = malloc(4 * (size_t)n_points);
    uint8_t *level = malloc(4 * (size_t)n_points);
    float *q = malloc(4 * sizeof(float) * (size_t)n_points);
    int32_t *map = malloc(KMAP_SIZE * sizeof(int32_t));
    int *d2 = malloc(sizeof(int) * (size_t)n_points);
    int32_t *chunk_at = malloc(KMAP_SIZE * sizeof(int32_t));
    uint16_t *neighbours = NULL;
    v4sf *chunks = NULL;
    if (!value || !level || !q || !map || !d2 || !chunk_at)
        goto fail;
    memcpy(value, data, 4 * (size_t)n_points);
    for (int i = 0; i < KMAP_SIZE; i++)
        map[i] = -1;
    for (int j = 0; j < n_points; j++) {
        int index = 0;
        for (int k = 0; k < 4; k++) {
            int l = 0;
            while (l < 8 && values[l] != data[4 * j + k])
                l++;
            if (l == 8)
                goto fail;
            level[4 * j + k] = (uint8_t)l;
            q[4 * j + k] = (float)(2 * l + 1);
            index |= l << 3 * k;
        }
        if (map[index] >= 0)
            goto fail;
        map[index] = j;
    }
    /* ggml's layout: in increasing order of the points off the grid, at `offset`: count, then the list;
     * map[i] = -(offset + 1). First the sizes, then the lists. */
    int64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !(neighbours = malloc(sizeof(uint16_t) * (size_t)total)))
            goto fail;
        int64_t offset = 0;
        for (int i = 0; i < KMAP_SIZE; i++) {
            if (map[i] >= 0)
                continue;
            for (int j = 0; j < n_points; j++) {
                int s = 0;
                for (int k = 0; k < 4; k++) {
                    const int diff = (int)q[4 * j + k] - (2 * ((i >> 3 * k) & 7) + 1);
                    s += diff * diff;
                }
                d2[j] = s;
            }
            const int count = nearest_points(d2, n_points, nwant, pass ? neighbours + offset + 1 : NULL);
            if (pass == 1) {
                neighbours[offset] = (uint16_t)count;
                map[i] = -(int32_t)(offset + 1);
            }
            offset += 1 + count;
        }
        total = offset;
    }
    /* the chunked copy */
    int64_t n_chunks = 0;
    for (int i = 0; i < KMAP_SIZE; i++)
        if (map[i] < 0) {
            chunk_at[i] = (int32_t)n_chunks;
            n_chunks += (neighbours[-map[i] - 1] + 3) / 4;
        }
    if (!(chunks = aligned_alloc(sizeof(v4sf), sizeof(v4sf) * 4 * (size_t)n_chunks)))
        goto fail;
    for (int i = 0; i < KMAP_SIZE; i++) {
        if (map[i] >= 0)
            continue;
        const uint16_t *nb = neighbours - map[i] - 1;
        v4sf *c = chunks + 4 * chunk_at[i];
        for (int j = 0; j < (nb[0] + 3) / 4 * 4; j++)
            for (int k = 0; k < 4; k++)
                c[4 * (j / 4) + k][j % 4] = j < nb[0] ? q[4 * nb[1 + j] + k] : NAN;
    }
    free(d2);
    *g = (iq3_grid){n_points, value, level, q, map, neighbours, total, chunks, chunk_at};
    return 0;
fail:
    free(value), free(level), free(q), free(map), free(d2), free(neighbours), free(chunks), free(chunk_at);
    return -1;
}

static const uint8_t XXS_VALUES[8] = {4, 12, 20, 28, 36, 44, 52, 62}; /* gguf-py IQ3_XXS.grid_map */
static const uint8_t S_VALUES[8] = {1, 3, 5, 7, 9, 11, 13, 15};       /* gguf-py IQ3_S.grid_map */

static int init_iq3_xxs(const uint8_t *data, int64_t nbytes) {
    return build_grid(&grids[0], data, nbytes, 256, 2, XXS_VALUES);
}

static int init_iq3_s(const uint8_t *data, int64_t nbytes) {
    return build_grid(&grids[1], data, nbytes, 512, 3, S_VALUES);
}

/* ---- the search -------------------------------------------------------------------------------------- */

/* The neighbour of point u (off the grid) nearest to xval (4 values) at `scale`, in the weighted squared
 * error d2 = sum_i w_i (scale q_i - x_i)^2, the first of equal ones in the list's order; its levels to L.
 * Each lane keeps its first smallest d2 below FLT_MAX (as ggml's scan starts), then the lanes' smallest,
 * on a tie the earliest in the list, is the one ggml's scan finds. */
static inline __attribute__((always_inline)) void best_neighbour(const iq3_grid *g, int u, const float *xval,
                                                                 const float *w, float scale, int8_t *L) {
    const uint16_t *nb = g->neighbours - g->map[u] - 1;
    const v4sf *c = g->chunks + 4 * g->chunk_at[u];
    const v4sf s = {scale, scale, scale, scale};
    const v4sf x0 = {xval[0], xval[0], xval[0], xval[0]}, x1 = {xval[1], xval[1], xval[1], xval[1]},
               x2 = {xval[2], xval[2], xval[2], xval[2]}, x3 = {xval[3], xval[3], xval[3], xval[3]};
    const v4sf w0 = {w[0], w[0], w[0], w[0]}, w1 = {w[1], w[1], w[1], w[1]}, w2 = {w[2], w[2], w[2], w[2]},
               w3 = {w[3], w[3], w[3], w[3]};
    v4sf best = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
    v4si at = {-1, -1, -1, -1}, pos = {0, 1, 2, 3};
    for (int j = 0; j < nb[0]; j += 4, c += 4, pos += 4) {
        v4sf d2 = {0, 0, 0, 0}, diff;
        diff = s * c[0] - x0;
        d2 += w0 * diff * diff;
        diff = s * c[1] - x1;
        d2 += w1 * diff * diff;
        diff = s * c[2] - x2;
        d2 += w2 * diff * diff;
        diff = s * c[3] - x3;
        d2 += w3 * diff * diff;
        const v4si lt = d2 < best;
        best = (v4sf)(((v4si)d2 & lt) | ((v4si)best & ~lt));
        at = (pos & lt) | (at & ~lt);
    }
    int first = -1;
    float min = FLT_MAX;
    for (int l = 0; l < 4; l++)
        if (at[l] >= 0 && (first < 0 || best[l] < min || (best[l] == min && at[l] < first)))
            first = at[l], min = best[l];
    /* every distance NaN or not below FLT_MAX: ggml aborts there; take the first neighbour */
    const int grid_index = nb[1 + (first < 0 ? 0 : first)];
    for (int i = 0; i < 4; i++)
        L[i] = (int8_t)(((int)g->q[4 * grid_index + i] - 1) / 2);
}

/* n values' levels at inverse scale id, nearest_int(0.5 (id x - 1)) clamped to 0..7 (a loop the compiler
 * vectorizes). */
static inline void levels(const float *xval, float id, int8_t *L, int n) {
    for (int i = 0; i < n; i++) {
        int l = ns_nearest_int(0.5f * (id * xval[i] - 1));
        l = l < 7 ? l : 7;
        l = l > 0 ? l : 0;
        L[i] = (int8_t)l;
    }
}

/* the index of 4 levels in the level space */
static inline int level_index(const int8_t *L) { return L[0] | L[1] << 3 | L[2] << 6 | L[3] << 9; }

/* sum w x q and sum w q^2 over a group, q = 2l+1, in ggml's order; wx[i] = w[i] x[i], the first product of
 * ggml's w*x*q. */
static inline void fit_sums(const float *wx, const float *weight, const int8_t *L, float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int i = 0; i < 32; i++) {
        const float w = weight[i], q = 2 * L[i] + 1;
        sx += wx[i] * q;
        s2 += w * q * q;
    }
    *sumqx = sx, *sumq2 = s2;
}

/* One 32-value group (xval >= 0 but for IQ3_XXS's one flipped value, max > 0): the best scale among
 * 1 / ((15 + 0.2 is) / max), is = -n_is..n_is, by sum(w x q)^2 / sum(w q^2) with each 4-value piece
 * rounded and put on the grid; then the pieces off the grid (IQ3_XXS) or all (IQ3_S) searched again at
 * that scale and the scale refit. Levels to L; returns the scale. */
static float search_group(const iq3_grid *g, const float *xval, const float *weight, const float *waux, float max,
                          int n_is, int xxs, int8_t L[32]) {
    int8_t Laux[32];
    int on_grid[8], on_grid_aux[8];
    float wx[32], sumqx, sumq2;
    for (int i = 0; i < 32; i++)
        wx[i] = weight[i] * xval[i];
    float best = 0, scale = max / 15;
    memset(L, 0, 32);
    for (int k = 0; k < 8; k++)
        on_grid[k] = xxs;
    for (int is = -n_is; is <= n_is; is++) {
        const float id = (15 + is * 0.2f) / max, this_scale = 1 / id;
        levels(xval, id, Laux, 32);
        for (int k = 0; k < 8; k++) {
            const int u = level_index(Laux + 4 * k);
            on_grid_aux[k] = g->map[u] >= 0;
            if (!on_grid_aux[k])
                best_neighbour(g, u, xval + 4 * k, waux + 4 * k, this_scale, Laux + 4 * k);
        }
        fit_sums(wx, weight, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(L, Laux, 32);
            memcpy(on_grid, on_grid_aux, sizeof on_grid);
        }
    }
    int n_off = 0;
    for (int k = 0; k < 8; k++)
        n_off += !on_grid[k];
    if (n_off > 0 && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 8; k++) {
            if (xxs && on_grid[k])
                continue;
            levels(xval + 4 * k, id, L + 4 * k, 4);
            const int u = level_index(L + 4 * k);
            if (g->map[u] < 0)
                best_neighbour(g, u, xval + 4 * k, waux + 4 * k, scale, L + 4 * k);
        }
        fit_sums(wx, weight, L, &sumqx, &sumq2);
        if (sumq2 > 0)
            scale = sumqx / sumq2;
    }
    return scale;
}

/* The importance of each value of a 32-value group: qw * sqrt(sigma2 + x^2) with an importance matrix,
 * else x^2; and its square root, the weight of the neighbour search. */
static void group_weights(const float *xb, const float *qw, float sigma2, float *weight, float *waux) {
    if (qw)
        for (int i = 0; i < 32; i++)
            weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    else
        for (int i = 0; i < 32; i++)
            weight[i] = xb[i] * xb[i];
    for (int i = 0; i < 32; i++)
        waux[i] = sqrtf(weight[i]);
}

static float block_sigma2(const float *xbl) {
    float sumx2 = 0;
    for (int i = 0; i < QK_K; i++)
        sumx2 += xbl[i] * xbl[i];
    return 2 * sumx2 / QK_K;
}

/* the grid index of 4 levels known to be on the grid */
static inline int grid_index(const iq3_grid *g, const int8_t *L) { return g->map[level_index(L)]; }

static inline float fmax_ggml(float a, float b) { return a > b ? a : b; } /* ggml's MAX, NaN order included */

/* ---- IQ3_XXS ----------------------------------------------------------------------------------------- */

/* block_iq3_xxs (98 bytes): d (fp16) | 64 grid indices | 8 x uint32: 4 x 7 sign bits (an even number of
 * minus signs per 8, the eighth implied), scale in the top 4 bits. */
#define IQ3_XXS_SIZE 98

static int quantize_iq3_xxs(const float *x, uint8_t *y, int64_t n, const float *qw) {
    const iq3_grid *g = &grids[0];
    float scales[8], weight[32], waux[32], xval[32];
    int8_t L[32];
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++, y += IQ3_XXS_SIZE) {
        const float *xbl = x + QK_K * ibl;
        uint8_t *qs = y + 2;
        uint32_t signs_scales[8] = {0};
        memset(y, 0, IQ3_XXS_SIZE); /* d = fp16(0) is 0 */
        float max_scale = 0;
        const float sigma2 = block_sigma2(xbl);
        for (int ib = 0; ib < 8; ib++) {
            const float *xb = xbl + 32 * ib;
            group_weights(xb, qw ? qw + QK_K * ibl + 32 * ib : NULL, sigma2, weight, waux);
            uint32_t block_signs[4];
            for (int k = 0; k < 4; k++) {
                int nflip = 0;
                unsigned s = 0;
                for (int i = 0; i < 8; i++) {
                    if (xb[8 * k + i] >= 0) {
                        xval[8 * k + i] = xb[8 * k + i];
                    } else {
                        xval[8 * k + i] = -xb[8 * k + i];
                        nflip++;
                        s |= 1u << i;
                    }
                }
                if (nflip % 2) { /* an odd count: flip the least important value back */
                    int imin = 0;
                    float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
                    for (int i = 1; i < 8; i++) {
                        const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                        if (ax < min) {
                            min = ax;
                            imin = i;
                        }
                    }
                    xval[8 * k + imin] = -xval[8 * k + imin];
                    s ^= 1u << imin;
                }
                block_signs[k] = s & 127;
            }
            float max = xval[0];
            for (int i = 1; i < 32; i++)
                max = fmax_ggml(max, xval[i]);
            if (max < 1e-8f) { /* GROUP_MAX_EPS_IQ3_XXS: indices 0, signs 0 */
                scales[ib] = 0;
                continue;
            }
            float scale = search_group(g, xval, weight, waux, max, 15, 1, L);
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 4; k++)
                    block_signs[k] = ~block_signs[k] & 127;
            }
            for (int k = 0; k < 8; k++)
                qs[8 * ib + k] = (uint8_t)grid_index(g, L + 4 * k);
            signs_scales[ib] = block_signs[0] | block_signs[1] << 7 | block_signs[2] << 14 | block_signs[3] << 21;
            scales[ib] = scale;
            max_scale = fmax_ggml(max_scale, scale);
        }
        if (!max_scale) {
            memset(qs, 0, IQ3_XXS_SIZE - 2);
            continue;
        }
        const float d = max_scale / 31;
        ns_put_fp16(y, d * 1.0125f);
        const float id = 1 / d;
        for (int ib = 0; ib < 8; ib++) {
            int l = ns_nearest_int(0.5f * (id * scales[ib] - 1));
            l = l < 15 ? l : 15;
            l = l > 0 ? l : 0;
            signs_scales[ib] |= (uint32_t)l << 28;
        }
        memcpy(qs + 64, signs_scales, sizeof signs_scales);
    }
    return 0;
}

static void dequantize_iq3_xxs(const uint8_t *x, float *y, int64_t n) {
    const uint8_t *grid = grids[0].value;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++, x += IQ3_XXS_SIZE) {
        const float d = ns_get_fp16(x);
        const uint8_t *qs = x + 2;
        for (int ib = 0; ib < 8; ib++, qs += 8) {
            uint32_t aux;
            memcpy(&aux, x + 2 + 64 + 4 * ib, 4);
            const float db = d * (0.5f + (aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++, y += 8) {
                const uint8_t signs = ksigns((aux >> 7 * l) & 127);
                const uint8_t *g1 = grid + 4 * qs[2 * l], *g2 = grid + 4 * qs[2 * l + 1];
                for (int j = 0; j < 4; j++) {
                    y[j] = db * g1[j] * (signs & 1u << j ? -1.f : 1.f);
                    y[j + 4] = db * g2[j] * (signs & 1u << (j + 4) ? -1.f : 1.f);
                }
            }
        }
    }
}

/* ---- IQ3_S ------------------------------------------------------------------------------------------- */

/* block_iq3_s (110 bytes): d (fp16) | 64 grid indices' low bytes | 8 bytes of their ninth bits | 32 bytes
 * of signs (one bit per value) | 4 bytes of 2 x 4-bit scales. */
#define IQ3_S_SIZE 110

static int quantize_iq3_s(const float *x, uint8_t *y, int64_t n, const float *qw) {
    const iq3_grid *g = &grids[1];
    float scales[8], weight[32], waux[32], xval[32];
    int8_t L[32];
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++, y += IQ3_S_SIZE) {
        const float *xbl = x + QK_K * ibl;
        memset(y, 0, IQ3_S_SIZE);
        /* ggml advances qs and signs only past groups it quantizes: after an all-zero group the next
         * group's indices and signs land in its place. */
        uint8_t *qs = y + 2, *qh = y + 66, *signs = y + 74;
        float max_scale = 0;
        const float sigma2 = block_sigma2(xbl);
        for (int ib = 0; ib < 8; ib++) {
            const float *xb = xbl + 32 * ib;
            group_weights(xb, qw ? qw + QK_K * ibl + 32 * ib : NULL, sigma2, weight, waux);
            uint8_t block_signs[4];
            for (int k = 0; k < 4; k++) {
                unsigned s = 0;
                for (int i = 0; i < 8; i++) {
                    if (xb[8 * k + i] >= 0) {
                        xval[8 * k + i] = xb[8 * k + i];
                    } else {
                        xval[8 * k + i] = -xb[8 * k + i];
                        s |= 1u << i;
                    }
                }
                block_signs[k] = (uint8_t)s;
            }
            float max = xval[0];
            for (int i = 1; i < 32; i++)
                max = fmax_ggml(max, xval[i]);
            if (!max) {
                scales[ib] = 0;
                continue;
            }
            float scale = search_group(g, xval, weight, waux, max, 9, 0, L);
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 4; k++)
                    block_signs[k] = (uint8_t)~block_signs[k];
            }
            for (int k = 0; k < 8; k++) {
                const int index = grid_index(g, L + 4 * k);
                qs[k] = (uint8_t)(index & 255);
                qh[ib] |= (uint8_t)((index >> 8) << k);
            }
            qs += 8;
            memcpy(signs, block_signs, 4);
            signs += 4;
            scales[ib] = scale;
            max_scale = fmax_ggml(max_scale, scale);
        }
        if (!max_scale)
            continue;
        const float d = max_scale / 31;
        ns_put_fp16(y, d * 1.033f);
        const float id = 1 / d;
        for (int ib = 0; ib < 8; ib += 2) {
            int l1 = ns_nearest_int(0.5f * (id * scales[ib] - 1));
            l1 = l1 < 15 ? l1 : 15;
            l1 = l1 > 0 ? l1 : 0;
            int l2 = ns_nearest_int(0.5f * (id * scales[ib + 1] - 1));
            l2 = l2 < 15 ? l2 : 15;
            l2 = l2 > 0 ? l2 : 0;
            y[106 + ib / 2] = (uint8_t)(l1 | l2 << 4);
        }
    }
    return 0;
}

static void dequantize_iq3_s(const uint8_t *x, float *y, int64_t n) {
    const uint8_t *grid = grids[1].value;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++, x += IQ3_S_SIZE) {
        const float d = ns_get_fp16(x);
        const uint8_t *qs = x + 2, *qh = x + 66, *signs = x + 74, *sc = x + 106;
        for (int ib = 0; ib < 8; ib++, qs += 8, signs += 4) {
            const float db = d * (1 + 2 * (ib % 2 ? sc[ib / 2] >> 4 : sc[ib / 2] & 0xf));
            for (int l = 0; l < 4; l++, y += 8) {
                const uint8_t *g1 = grid + 4 * (qs[2 * l] | ((qh[ib] << (8 - 2 * l)) & 256));
                const uint8_t *g2 = grid + 4 * (qs[2 * l + 1] | ((qh[ib] << (7 - 2 * l)) & 256));
                for (int j = 0; j < 4; j++) {
                    y[j] = db * g1[j] * (signs[l] & 1u << j ? -1.f : 1.f);
                    y[j + 4] = db * g2[j] * (signs[l] & 1u << (j + 4) ? -1.f : 1.f);
                }
            }
        }
    }
}

/* Both use an importance matrix when given one (ggml_quantize_chunk passes it to quantize_iq3_*) and,
 * without one, weigh each value by x^2. */
const ns_qtype NS_QTYPE_IQ3_XXS = {"IQ3_XXS", 18, QK_K, IQ3_XXS_SIZE, NS_IMATRIX_USED, 0, quantize_iq3_xxs,
                                   dequantize_iq3_xxs, init_iq3_xxs};
const ns_qtype NS_QTYPE_IQ3_S = {"IQ3_S", 21, QK_K, IQ3_S_SIZE, NS_IMATRIX_USED, 0, quantize_iq3_s,
                                 dequantize_iq3_s, init_iq3_s};
