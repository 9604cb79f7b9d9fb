/* The search tables of the 2-bit and 1-bit IQ grids, built from the published points (see iqgrid.h).
 *
 * ref: ggml/src/ggml-quants.c iq2xs_init_impl. For every index i < NS_IQ_MAP_SIZE that is not a grid
 * point, ggml computes the squared distance (an integer) from i's point (2*l_k + 1 per coordinate) to
 * every grid point, sorts (distance, index) pairs with qsort (iq2_compare_func: by distance, then index;
 * no two pairs are equal, so the order is fully determined), and keeps every point whose distance is one
 * of the nwant smallest distinct distances. The same lists come here from finding those distances and
 * taking the points at each in index order. Lists are laid out as ggml lays them out: by ascending i, count first.
 */
#include "iqgrid.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

ns_iqgrid NS_IQGRID_256, NS_IQGRID_512, NS_IQGRID_1024, NS_IQGRID_2048;

static void release(ns_iqgrid *g) {
    free(g->grid);
    free(g->map);
    free(g->neighbours);
    free(g->values);
    free(g->slot);
    memset(g, 0, sizeof *g);
}

/* Appends i's neighbour list (count, indices) to g->neighbours, growing it; -1 when memory runs out. */
static int append(ns_iqgrid *g, int64_t *cap, const uint16_t *list, int count) {
    if (g->n_neighbours + 1 + count > *cap) {
        int64_t want = *cap ? *cap : 1 << 16;
        while (want < g->n_neighbours + 1 + count)
            want *= 2;
        uint16_t *p = realloc(g->neighbours, (size_t)want * sizeof *p);
        if (!p)
            return -1;
        g->neighbours = p, *cap = want;
    }
    g->neighbours[g->n_neighbours++] = (uint16_t)count;
    memcpy(g->neighbours + g->n_neighbours, list, (size_t)count * sizeof *list);
    g->n_neighbours += count;
    return 0;
}

/* The helpers below are the vectorized inner loops of build_neighbours (kept apart: inlined into its loop
 * nest, GCC vectorizes none of them). */

/* d2[j] += (pos[j] - p)^2 over the points j of one coordinate. */
static __attribute__((noinline)) void add_squares(int16_t *restrict d2, const int16_t *restrict pos, int16_t p, int n) {
    for (int j = 0; j < n; j++)
        d2[j] = (int16_t)(d2[j] + (pos[j] - p) * (pos[j] - p));
}

/* The least of d2[0..n) above floor, INT16_MAX when there is none. */
static __attribute__((noinline)) int min_above(const int16_t *restrict d2, int n, int floor) {
    int m = INT16_MAX;  /* int, not int16_t: GCC 12 vectorizes this min only so */
    for (int j = 0; j < n; j++) {
        const int v = d2[j] > floor ? d2[j] : INT16_MAX;
        m = v < m ? v : m;
    }
    return m;
}

static __attribute__((noinline)) int count_equal(const int16_t *restrict d2, int n, int v) {
    int c = 0;
    for (int j = 0; j < n; j++)
        c += d2[j] == v;
    return c;
}

/* The neighbour lists of every off-grid index. pos: the grid's positions coordinate-major (pos[k*n + j] =
 * 2*l_k + 1 of point j), so the distance loop runs over points in the inner loop. */
static int build_neighbours(ns_iqgrid *g, const int16_t *pos) {
    const int n = g->n;
    int16_t *d2 = malloc((size_t)n * sizeof *d2);
    uint16_t *list = malloc((size_t)n * sizeof *list);
    int64_t cap = 0;
    int status = d2 && list ? 0 : -1;
    for (int i = 0; i < NS_IQ_MAP_SIZE && status == 0; i++) {
        if (g->map[i] >= 0)
            continue;
        memset(d2, 0, (size_t)n * sizeof *d2);
        for (int k = 0; k < 8; k++)
            add_squares(d2, pos + (size_t)k * n, (int16_t)(2 * ((i >> 2 * k) & 3) + 1), n);
        /* the nwant smallest distinct distances (lv), how many points are at each, then the points in
         * ascending index within each distance */
        int lv[3] = {-1, -1, -1}, kept = 0, start[3], total = 0;
        for (int floor = -1; kept < g->nwant; floor = lv[kept++]) {
            lv[kept] = min_above(d2, n, floor);
            if (lv[kept] == INT16_MAX)
                break;
        }
        for (int r = 0; r < kept; r++)
            start[r] = total, total += count_equal(d2, n, lv[r]);
        for (int j = 0; j < n; j++)
            if (d2[j] <= lv[kept - 1])
                list[start[d2[j] == lv[0] ? 0 : d2[j] == lv[1] ? 1 : 2]++] = (uint16_t)j;
        g->map[i] = (int32_t)-(g->n_neighbours + 1);
        status = append(g, &cap, list, total);
    }
    free(d2);
    free(list);
    return status;
}

int ns_iqgrid_init(ns_iqgrid *g, const uint8_t *data, int64_t nbytes, int n, int nwant, const int8_t levels[3]) {
    if (nbytes != (int64_t)n * 8)
        return -1;
    if (g->grid)  /* IQ1_S and IQ1_M share a grid: the second init only checks the points */
        return memcmp(g->values, data, (size_t)nbytes) == 0 ? 0 : -1;
    g->n = n, g->nwant = nwant;
    g->grid = malloc((size_t)n * sizeof *g->grid);
    g->map = malloc(NS_IQ_MAP_SIZE * sizeof *g->map);
    g->values = malloc((size_t)nbytes);
    g->slot = malloc((size_t)nbytes);
    int16_t *pos = malloc((size_t)nbytes * sizeof *pos);
    int status = g->grid && g->map && g->values && g->slot && pos ? 0 : -1;
    if (status == 0) {
        memcpy(g->values, data, (size_t)nbytes);
        for (int i = 0; i < NS_IQ_MAP_SIZE; i++)
            g->map[i] = -1;
    }
    for (int j = 0; j < n && status == 0; j++) {
        int index = 0;
        uint8_t packed[8];
        for (int k = 0; k < 8 && status == 0; k++) {
            const int8_t v = (int8_t)data[8 * j + k];
            int l = v == levels[0] ? 0 : v == levels[1] ? 1 : v == levels[2] ? 2 : -1;
            if (l < 0)
                status = -1;
            packed[k] = (uint8_t)(2 * l + 1);
            g->slot[8 * j + k] = (uint8_t)(8 * l + k);
            pos[(size_t)k * n + j] = (int16_t)(2 * l + 1);
            index |= l << 2 * k;
        }
        if (status == 0 && g->map[index] >= 0)
            status = -1;  /* a repeated point */
        if (status == 0) {
            memcpy(&g->grid[j], packed, 8);
            g->map[index] = j;
        }
    }
    if (status == 0)
        status = build_neighbours(g, pos);
    free(pos);
    if (status != 0)
        release(g);
    return status;
}

int ns_iqgrid_tables(int n, const uint64_t **grid, const int32_t **map, const uint16_t **neighbours,
                     int64_t *n_neighbours) {
    ns_iqgrid *g = n == 256 ? &NS_IQGRID_256 : n == 512 ? &NS_IQGRID_512 : n == 1024 ? &NS_IQGRID_1024
                 : n == 2048 ? &NS_IQGRID_2048 : NULL;
    if (!g || !g->grid)
        return -1;
    *grid = g->grid, *map = g->map, *neighbours = g->neighbours, *n_neighbours = g->n_neighbours;
    return 0;
}
