/*
 * manpage.h — `shardline --man`: the manual page shardline(1) in roff, made from the same
 * texts as the help: the program's usage (its commands) and the option table of `shardline
 * run` (jobs/spec.c). The build runs it to make share/man/man1/shardline.1.
 */
#ifndef SL_MANPAGE_H
#define SL_MANPAGE_H

#include <stdio.h>

/* usage: prints the program's help (main.c's usage) to its argument. */
void sl_manpage_write(FILE *out, void (*usage)(FILE *));

#endif
