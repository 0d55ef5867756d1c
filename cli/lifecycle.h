/*
 * lifecycle.h — commands that read a job's output directory without running the model:
 *   shardline status OUT   units committed / pending, rows, failed rows, throughput, last
 *                          update; safe while the job runs (it only reads committed files)
 *   shardline merge OUT    writes OUT/predictions.h5 once every unit is committed (job arrays,
 *                          or a job whose last task died before writing it)
 * Both read OUT/manifest.json, which `shardline run` writes when it starts.
 */
#ifndef SL_LIFECYCLE_H
#define SL_LIFECYCLE_H

int sl_status_main(int argc, char **argv);
int sl_merge_main(int argc, char **argv);

#endif
