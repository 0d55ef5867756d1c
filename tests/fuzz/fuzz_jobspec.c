/*
 * fuzz_jobspec.c — libFuzzer target for the INI job file of `shardline run job.ini`
 * (jobs/spec.c over libinih): the input is the file, parsed exactly as the command line
 * `shardline run <file>` would, then freed. A refusal must name the job file.
 */
#include "fuzz_common.h"
#include "jobs/spec.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* the array options resolve from these when set; the target must not depend on them */
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    unsetenv("SLURM_ARRAY_TASK_MAX");
    unsetenv("SLURM_ARRAY_TASK_STEP");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    sl_fuzz_write("job.ini", data, size, path, sizeof path);
    char *argv[] = {"run", path, NULL};
    sl_job_t job;
    sl_error_t err;
    err.msg[0] = '\0';
    int rc = sl_job_parse(&job, 2, argv, &err);
    sl_job_free(&job);
    if (rc < 0 && !err.msg[0])
        abort(); /* a refusal always says why */
    return 0;
}
