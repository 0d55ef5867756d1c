/*
 * compare.h — `shardline compare OUT_A OUT_B`: how closely two jobs' outputs over the same
 * rows agree (cosine and largest difference of float outputs, label agreement, perplexity
 * ratio and per-token log-probability differences, exact matches of generated tokens and
 * texts), with optional thresholds that make it usable as a gate in scripts and tests.
 */
#ifndef SL_COMPARE_H
#define SL_COMPARE_H

/* Exit status of `shardline compare` when the outputs are comparable but a threshold given
 * with --min-cosine, --max-ppl-ratio or --min-agreement is not met. */
#define SL_COMPARE_EXIT_BELOW 6

#include <stdint.h>

int sl_compare_main(int argc, char **argv);

/* Agreement of rows of two float matrices, accumulated over calls: rows compared, rows with a
 * NaN/Inf (skipped), the smallest cosine and its row, the sum of cosines, the largest and the
 * summed |a - b| over `elems` values. */
typedef struct {
    int64_t rows, nonfinite, elems, cos_min_row;
    double cos_min, cos_sum, max_abs, sum_abs;
} sl_rows_diff_t;
void sl_rows_diff_init(sl_rows_diff_t *d);
/* a, b: f32 [n, w]; row0: the global index of their first row (for cos_min_row). */
void sl_compare_rows(const float *a, const float *b, int64_t n, int64_t w, int64_t row0,
                     sl_rows_diff_t *d);

#endif
