/*
 * calibrate.h — `shardline calibrate`: records each linear layer's input range over a sample of
 * rows and writes the static activation scales of --precision w8a8 (cli/calibrate.c).
 */
#ifndef SL_CALIBRATE_H
#define SL_CALIBRATE_H

/* argv[0] is "calibrate"; MPI is initialised (one rank). Returns the exit status. */
int sl_calibrate_main(int argc, char **argv);

#endif
