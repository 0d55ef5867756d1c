/*
 * manpage.c — shardline(1) in roff (see manpage.h). The COMMANDS section is the usage text,
 * kept verbatim in a no-fill block; the options come from the option table.
 */
#include "cli/manpage.h"

#include <stdlib.h>
#include <string.h>

#include "jobs/spec.h"

/* One line of verbatim text for a .nf block: backslashes escaped, hyphens as \-, a leading
 * dot or quote made literal. */
static void roff_line(FILE *out, const char *s, size_t n)
{
    if (n && (*s == '.' || *s == '\''))
        fputs("\\&", out);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            fputs("\\e", out);
        else if (s[i] == '-')
            fputs("\\-", out);
        else
            fputc(s[i], out);
    }
    fputc('\n', out);
}

void sl_manpage_write(FILE *out, void (*usage)(FILE *))
{
    fprintf(out, ".TH SHARDLINE 1 \"\" \"shardline %s\" \"User Commands\"\n", SL_VERSION);
    fputs(
        ".SH NAME\n"
        "shardline \\- batch inference of neural networks over HDF5 datasets on MPI ranks\n"
        ".SH SYNOPSIS\n"
        ".B shardline\n"
        ".I command\n"
        "[\\fIoptions\\fR]\n"
        ".br\n"
        ".B mpirun \\-np\n"
        ".I N\n"
        ".B shardline run\n"
        "[\\fIJOB.ini\\fR] [\\fIoptions\\fR]\n"
        ".SH DESCRIPTION\n"
        "shardline runs trained models (MLPs, BERT encoders, LLaMA decoders) over large HDF5\n"
        "datasets, on MPI ranks with GPUs or CPUs. Predictions are committed unit by unit into\n"
        "the output directory, so an interrupted job resumes where it stopped. At the end rank 0\n"
        "writes predictions.h5, manifest.json, report.json and report.html there.\n"
        ".SH COMMANDS\n"
        ".nf\n",
        out);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem) {
        usage(mem);
        fclose(mem);
        for (const char *p = text; p < text + len;) {
            const char *nl = memchr(p, '\n', (size_t)(text + len - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(text + len - p);
            roff_line(out, p, n);
            p += n + 1;
        }
    }
    free(text);
    fputs(".fi\n", out);
    sl_job_print_man(out);
    fputs(".TP\n.B \\-h, \\-\\-help\nshow the help of shardline run\n"
          ".SH EXIT STATUS\n"
          "0 done; 1 failure; 2 usage; 3 bad input; 4 some rows failed; 5 stopped by a signal\n"
          "(rerun the same command to resume).\n"
          ".SH FILES\n"
          ".TP\n.I OUTPUT_DIR/report.html\n"
          "the job's report: throughput over time per data-parallel group, time per stage and\n"
          "rank, batch sizes and padding, failed rows, GPU metrics, configuration (also\n"
          ".B shardline report\n"
          ".IR OUTPUT_DIR ).\n"
          ".TP\n.I share/shardline/slurm/shardline.sbatch\n"
          "the sbatch template that\n.B shardline submit\nfills in.\n"
          ".SH SEE ALSO\n"
          ".BR mpirun (1),\n"
          ".BR sbatch (1),\n"
          ".BR nsys (1)\n",
          out);
}
