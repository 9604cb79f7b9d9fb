/* The lattice grids of ggml's 2-bit and 1-bit IQ types (IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M) and the
 * search tables their quantizers use, built from the published grid points at init_type time.
 *
 * A grid is a set of points in {0,1,2}^8 (three levels per coordinate: 8, 25, 43 for IQ2, -1, 0, 1 for
 * IQ1). The quantizers round 8 values to levels l_k, look the point sum_k l_k << 2k up in `map`, and
 * when it is not a grid point, search its listed nearest grid points.
 *
 * ref: ggml/src/ggml-quants.c iq2xs_init_impl (grid, map, neighbours), iq2_data_index, iq2_grid_size;
 *      ggml-common.h ksigns_iq2xs, kmask_iq2xs (computed here: the parity rule).
 */
#ifndef NORMSCOPE_IQGRID_H
#define NORMSCOPE_IQGRID_H

#include <stdint.h>

/* Indices the map covers: 2 bits per coordinate up to 0xAAAB (every point of {0,1,2}^8, 0xAAAA, and the
 * indices below it with a 3 in some coordinate, for which ggml builds neighbour lists too). */
#define NS_IQ_MAP_SIZE 43692

typedef struct {
    int n;                  /* grid points */
    int nwant;              /* neighbours kept: every grid point at the nwant smallest distances */
    uint64_t *grid;         /* n points packed as ggml's search packs them: byte k = 2*l_k + 1 */
    int32_t *map;           /* NS_IQ_MAP_SIZE: grid index of point i, or -(o + 1): its list at neighbours + o */
    uint16_t *neighbours;   /* per off-grid i, ascending: count, then grid indices by (distance, index) */
    int64_t n_neighbours;   /* length of `neighbours` */
    int8_t *values;         /* n x 8 published coordinate values (what dequantization multiplies) */
    uint8_t *slot;          /* n x 8: 8*l_k + k, where point j's coordinate k sits in a [3][8] table of
                             * per-(level, coordinate) terms (the neighbour searches' distance terms) */
} ns_iqgrid;

/* The four grids (ggml's iq2_data[4]): 256 points IQ2_XXS, 512 IQ2_XS, 1024 IQ2_S, 2048 IQ1_S and IQ1_M. */
extern ns_iqgrid NS_IQGRID_256, NS_IQGRID_512, NS_IQGRID_1024, NS_IQGRID_2048;

/* Builds `g` (n points, nwant) from `data`, the published grid as int8 (n, 8) coordinate values, each one
 * of levels[0..2]. 0 on success or when `g` is already built from the same points; -1 when `data` is not
 * such a grid (size, a value off the levels, a repeated point) or memory runs out. */
int ns_iqgrid_init(ns_iqgrid *g, const uint8_t *data, int64_t nbytes, int n, int nwant, const int8_t levels[3]);

/* ggml's ksigns_iq2xs[s]: the 7 stored sign bits s and an 8th making the count of minus signs even. */
static inline uint8_t ns_iq_signs(unsigned s) {
    s &= 127;
    unsigned p = s ^ (s >> 4);
    p ^= p >> 2;
    p ^= p >> 1;
    return (uint8_t)(s | (p & 1) << 7);
}

/* For checking the derived tables against ggml's (tests, through ctypes): the grid of n points. */
int ns_iqgrid_tables(int n, const uint64_t **grid, const int32_t **map, const uint16_t **neighbours,
                     int64_t *n_neighbours);

#endif
