/*
 * main.c — the `shardline` program: subcommand dispatch. `run` initialises MPI (launch it
 * under mpirun or srun for several ranks; a plain start is one rank); `inspect` does not.
 */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "common/sl_error.h"
#include "kernels/backend.h"
#include "cli/calibrate.h"
#include "cli/compare.h"
#include "cli/convert.h"
#include "cli/inspect.h"
#include "cli/lifecycle.h"
#include "cli/manpage.h"
#include "cli/prune.h"
#include "runner/report.h"
#include "cli/submit.h"
#include "runner/run.h"
#include "runner/signals.h"

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline <command> [options]\n\n"
        "Runs trained neural networks over HDF5 datasets in batch, on MPI ranks with GPUs\n"
        "or CPUs; predictions are committed unit by unit, so an interrupted job resumes.\n\n"
        "commands:\n"
        "  run [JOB.ini] [options]   run a job (see shardline run --help)\n"
        "  inspect MODEL|FILE.h5     show a model's architecture (a directory or a GGUF file) or "
        "an\n"
        "                            HDF5 file's datasets\n"
        "  submit JOB.ini [options]  write an sbatch script beside the job's output and submit it\n"
        "                            (see shardline submit --help)\n"
        "  status OUTPUT_DIR         units committed/pending, rows, throughput (also while "
        "running)\n"
        "  merge OUTPUT_DIR          write predictions.h5 once every unit is committed (job "
        "arrays)\n"
        "  report OUTPUT_DIR         (re)write OUTPUT_DIR/report.html from its report.json\n"
        "  --man                     print the manual page shardline(1) (roff)\n"
        "  convert IN... --to DIR    JSONL, CSV, TSV or text files into HDF5 input shards\n"
        "                            (see shardline convert --help)\n"
        "  export OUTPUT_DIR --to F  a finished job's predictions as JSONL or CSV, one record per\n"
        "                            row (see shardline export --help)\n"
        "  compare OUT_A OUT_B       how closely two jobs' outputs over the same rows agree\n"
        "                            (see shardline compare --help)\n"
        "  prune --model DIR ...     remove the least important attention heads and FFN\n"
        "                            columns of a BERT encoder (see shardline prune --help)\n"
        "  calibrate [options]       record each linear layer's input range over N rows (mlp,\n"
        "                            bert, decoders) for --precision w8a8 (see shardline\n"
        "                            calibrate --help)\n"
        "  --version                 print the version\n"
        "  --help                    this help\n\n"
        "example:\n"
        "  mpirun -np 4 shardline run --model examples/mlp --input 'data/*.h5' \\\n"
        "         --input-dataset features --output out/ --tp 2\n");
}

static void abort_all(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return SL_EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("shardline %s (%s backend%s)\n", SL_VERSION,
               sl_cuda_compiled() ? "cpu + cuda" : "cpu", sl_cuda_compiled() ? "s" : "");
        return SL_EXIT_OK;
    }
    if (!strcmp(cmd, "--man")) {
        sl_manpage_write(stdout, usage);
        return SL_EXIT_OK;
    }
    if (!strcmp(cmd, "report"))
        return sl_report_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect"))
        return sl_inspect_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "submit"))
        return sl_submit_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "status"))
        return sl_status_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "merge"))
        return sl_merge_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert"))
        return sl_convert_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "export"))
        return sl_export_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "compare"))
        return sl_compare_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "prune"))
        return sl_prune_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "calibrate")) {
        int provided = 0;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        sl_log_set_abort(abort_all);
        int status = sl_calibrate_main(argc - 1, argv + 1);
        MPI_Finalize();
        return status;
    }
    if (!strcmp(cmd, "run")) {
        sl_signals_watch_launcher();
        /* Only the main thread calls MPI; the I/O thread makes HDF5 calls only. */
        int provided = 0;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        sl_log_set_abort(abort_all);
        int status = sl_run_main(argc - 1, argv + 1);
        MPI_Finalize();
        return status;
    }
    fprintf(stderr, "shardline: error: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return SL_EXIT_USAGE;
}
