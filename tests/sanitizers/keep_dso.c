/*
 * keep_dso.c — an LD_PRELOAD shim for the ASan end-to-end runs (run.sh asan): dlclose() does
 * nothing, so the plug-ins Open MPI and PMIx load with dlopen (mca_*.so) stay mapped until the
 * process exits. LeakSanitizer reports at exit; by then an unloaded plug-in's frames read
 * "<unknown module>", which no suppression can match (a PMIx plug-in's allocation on its own
 * event thread has no other frame to name), so its leaks could not be told from shardline's.
 */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
