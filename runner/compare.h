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

int sl_compare_main(int argc, char **argv);

#endif
