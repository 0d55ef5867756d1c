/*
 * prune.h — `shardline prune`: structured pruning of a BERT-family encoder (attention heads and
 * FFN columns with the least importance on calibration rows), written as a smaller Hugging
 * Face model directory that shardline and transformers both load.
 */
#ifndef SL_PRUNE_H
#define SL_PRUNE_H

int sl_prune_main(int argc, char **argv);

#endif
