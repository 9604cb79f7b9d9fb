/* The fused quantize -> read back -> error statistics pass (qmeasure.c) and what it fills. */
#ifndef NORMSCOPE_QMEASURE_H
#define NORMSCOPE_QMEASURE_H

#include "qtypes.h"

#define NS_BINS 32768 /* |d| bins: the top 16 bits of a non-negative float32 */

/* stats[]: float64 sums of a chunk (overwritten), then the largest finite |d|, the count of non-finite |d|, the
 * count of |d| == 0 (zeros are counted, never copied out: an exact copy would otherwise keep every value) and the
 * count of non-finite x (a damaged checkpoint, as opposed to a format whose scale overflowed). */
enum { NS_S_D2, NS_S_X2, NS_S_Y2, NS_S_XY, NS_S_WD2, NS_S_WX2, NS_S_MAXABS, NS_S_NONFINITE, NS_S_ZEROS, NS_S_XNONFINITE,
       NS_STATS };
/* health[]: block health counts (added to). */
enum { NS_H_BLOCKS, NS_H_DOMINATED, NS_H_UNDERFLOW, NS_H_SUBNORMAL, NS_H_OVERFLOW, NS_H_NONZERO, NS_H_ZEROED,
       NS_HEALTH };

typedef struct {
    const ns_qtype *type;  /* a ggml type to quantize x with, or NULL: y holds what the format read back */
    const float *x;        /* rows x n_per_row */
    const float *y;        /* when type is NULL */
    int64_t n_per_row;
    const float *imatrix;  /* n_per_row importance weights or NULL */
    const double *col2;    /* n_per_row squared column gains or NULL */
    const double *row2;    /* one squared row gain per row or NULL */
    const uint8_t *keep;   /* NS_BINS flags: which |d| to copy out; NULL: all */
    float *kept;           /* room for rows x n_per_row values */
    int64_t *hist;         /* NS_BINS counts, added to */
    double *stats;         /* NS_STATS */
    int64_t *health;       /* NS_HEALTH counts, added to; NULL: not measured */
    int64_t group;         /* values per health block (divides n_per_row) */
    float *y_out;          /* rows x n_per_row read-back values, or NULL */
    uint8_t *raw_out;      /* the ggml bytes of every row, or NULL */
} ns_measure_args;

/* Measure `rows` rows; yrow (n_per_row floats), rawrow (a row's bytes) and hist2 (2 x NS_BINS zeroed counts)
 * are scratch. Returns the number of values copied to `kept`, or -1 when the type needs an importance matrix
 * and none was given. */
int64_t ns_measure_rows(const ns_measure_args *a, int64_t rows, float *yrow, uint8_t *rawrow, int64_t *hist2);

#endif
