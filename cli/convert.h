/*
 * convert.h — `shardline convert` (JSONL, CSV, TSV or plain text files into HDF5 input shards)
 * and `shardline export` (a finished job's predictions.h5, joined with the inputs' ids, into
 * JSONL or CSV). Both stream: memory does not grow with the files.
 */
#ifndef SL_CONVERT_H
#define SL_CONVERT_H

/* argv[0] is "convert"; returns an SL_EXIT_* status. */
int sl_convert_main(int argc, char **argv);
/* argv[0] is "export"; returns an SL_EXIT_* status. */
int sl_export_main(int argc, char **argv);

#endif
