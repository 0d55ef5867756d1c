/*
 * inspect.h — `shardline inspect MODEL_DIR | FILE.h5`: what is inside, without running.
 */
#ifndef SL_INSPECT_H
#define SL_INSPECT_H

int sl_inspect_main(int argc, char **argv);

#endif
