/*
 * submit.c — `shardline submit JOB.ini --nodes N --gpus-per-node G --time T ...`.
 *
 * Reads the job file (the same parser as `shardline run`, so a bad key fails here, before the
 * job waits in the queue), fills the sbatch template — slurm/shardline.sbatch, embedded at build
 * time by slurm/embed.cmake, so the binary needs no file beside it — writes it as
 * OUTPUT/shardline.sbatch and runs `sbatch --parsable` on it, printing the job id on stdout.
 * --dry-run prints the script and writes and submits nothing.
 *
 * Filling the template means: replacing the value of an `#SBATCH --key=value` line (inserting
 * the line after the last directive when the template has none), removing one (with the plain
 * comment lines directly above it, which describe it), and replacing the default in a
 * `name="${VAR:-default}"` line (the binary, the job file, extra run options). The template
 * stays a working script on its own: `sbatch slurm/shardline.sbatch job.ini`.
 */
#include "cli/submit.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/sl_error.h"
#include "common/sl_fs.h"
#include "jobs/spec.h"
#include "sl_sbatch_template.h" /* generated: sl_sbatch_template[] */

/* ---- the script as lines ----------------------------------------------------------------- */

typedef struct {
    char **v;
    int n, cap;
} lines_t;

static void lines_insert(lines_t *L, int at, const char *s)
{
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 128;
        L->v = sl_xrealloc(L->v, (size_t)L->cap * sizeof(char *));
    }
    memmove(L->v + at + 1, L->v + at, (size_t)(L->n - at) * sizeof(char *));
    L->v[at] = sl_xstrdup(s);
    L->n++;
}

static void lines_remove(lines_t *L, int at, int count)
{
    for (int i = at; i < at + count; i++)
        free(L->v[i]);
    memmove(L->v + at, L->v + at + count, (size_t)(L->n - at - count) * sizeof(char *));
    L->n -= count;
}

static void lines_from_text(lines_t *L, const char *text)
{
    memset(L, 0, sizeof *L);
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *s = sl_xmalloc(len + 1);
        memcpy(s, p, len);
        s[len] = '\0';
        lines_insert(L, L->n, s);
        free(s);
        p += len + (nl ? 1 : 0);
    }
}

static char *lines_to_text(const lines_t *L)
{
    size_t n = 1;
    for (int i = 0; i < L->n; i++)
        n += strlen(L->v[i]) + 1;
    char *s = sl_xmalloc(n), *q = s;
    for (int i = 0; i < L->n; i++) {
        size_t len = strlen(L->v[i]);
        memcpy(q, L->v[i], len);
        q[len] = '\n';
        q += len + 1;
    }
    *q = '\0';
    return s;
}

static void lines_free(lines_t *L)
{
    for (int i = 0; i < L->n; i++)
        free(L->v[i]);
    free(L->v);
    memset(L, 0, sizeof *L);
}

/* ---- editing directives and defaults ------------------------------------------------------ */

static const char DIRECTIVE[] = "#SBATCH --";

/* The line `#SBATCH --key[=| ]...`, or -1. */
static int directive_find(const lines_t *L, const char *key)
{
    size_t dl = strlen(DIRECTIVE), kl = strlen(key);
    for (int i = 0; i < L->n; i++) {
        const char *s = L->v[i];
        if (strncmp(s, DIRECTIVE, dl) == 0 && strncmp(s + dl, key, kl) == 0 &&
            (s[dl + kl] == '=' || s[dl + kl] == ' ' || s[dl + kl] == '\0'))
            return i;
    }
    return -1;
}

/* First line of the plain comment block ("# ...") directly above line i. */
static int comment_block_start(const lines_t *L, int i)
{
    while (i > 0 && strncmp(L->v[i - 1], "# ", 2) == 0)
        i--;
    return i;
}

/* Sets `#SBATCH --key=value`; when comment is not NULL, it replaces the comment above (each
 * '\n'-separated line becomes a "# " line). A missing directive goes after the last one. */
static void directive_set(lines_t *L, const char *key, const char *value, const char *comment)
{
    char line[2048];
    snprintf(line, sizeof line, "%s%s=%s", DIRECTIVE, key, value);
    int i = directive_find(L, key);
    if (i >= 0) {
        free(L->v[i]);
        L->v[i] = sl_xstrdup(line);
        if (!comment)
            return;
        int c = comment_block_start(L, i);
        lines_remove(L, c, i - c);
        i = c;
    } else {
        i = 0;
        for (int j = 0; j < L->n; j++)
            if (strncmp(L->v[j], "#SBATCH", 7) == 0)
                i = j + 1;
        lines_insert(L, i, line);
    }
    if (!comment)
        return;
    const char *p = comment;
    while (*p) { /* insert the comment lines above line i, in order */
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        snprintf(line, sizeof line, "# %.*s", (int)len, p);
        lines_insert(L, i++, line);
        p += len + (nl ? 1 : 0);
    }
}

static void directive_remove(lines_t *L, const char *key)
{
    int i = directive_find(L, key);
    if (i < 0)
        return;
    int c = comment_block_start(L, i);
    lines_remove(L, c, i - c + 1);
}

/* In the line starting with `prefix` ("name=\"${VAR:-"), replaces the default up to the
 * closing `}"` by value, escaped for a double-quoted shell word. Returns -1 when absent. */
static int default_set(lines_t *L, const char *prefix, const char *value)
{
    for (int i = 0; i < L->n; i++) {
        if (strncmp(L->v[i], prefix, strlen(prefix)) != 0)
            continue;
        const char *end = strstr(L->v[i] + strlen(prefix), "}\"");
        if (!end)
            return -1;
        size_t n = strlen(prefix) + 2 * strlen(value) + strlen(end) + 1;
        char *s = sl_xmalloc(n), *q = s;
        memcpy(q, L->v[i], strlen(prefix));
        q += strlen(prefix);
        for (const char *v = value; *v; v++) {
            if (*v == '"' || *v == '\\' || *v == '$' || *v == '`')
                *q++ = '\\';
            *q++ = *v;
        }
        strcpy(q, end);
        free(L->v[i]);
        L->v[i] = s;
        return 0;
    }
    return -1;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static int parse_count(const char *opt, const char *v, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0' || x < 1 || x > max) {
        fprintf(stderr, "shardline: error: --%s '%s': expected an integer from 1 to %ld\n", opt, v,
                max);
        return -1;
    }
    *out = x;
    return 0;
}

/* A directive value must stay one word on one line. */
static int check_word(const char *opt, const char *v, const char *allowed_extra)
{
    if (!*v)
        goto bad;
    for (const char *p = v; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              strchr(allowed_extra, *p)))
            goto bad;
    return 0;
bad:
    fprintf(stderr, "shardline: error: --%s '%s': unexpected characters\n", opt, v);
    return -1;
}

/* The absolute path of `name` on PATH, or NULL. */
static char *find_on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = sl_xstrdup(path), *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char full[PATH_MAX];
        snprintf(full, sizeof full, "%s/%s", *dir ? dir : ".", name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0) {
            free(copy);
            return sl_xstrdup(full);
        }
    }
    free(copy);
    return NULL;
}

/* Runs `sbatch --parsable script`; its stdout is captured into out (stderr passes through).
 * Returns the exit status, or -1 when it could not run. */
static int run_sbatch(const char *sbatch, const char *script, char *out, size_t outsz)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        execl(sbatch, "sbatch", "--parsable", script, (char *)NULL);
        fprintf(stderr, "shardline: error: cannot run %s: %s\n", sbatch, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0;
    for (;;) {
        char tmp[256];
        ssize_t r = read(fd[0], tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r < outsz - 1 - n ? (size_t)r : outsz - 1 - n;
        memcpy(out + n, tmp, take);
        n += take;
    }
    out[n] = '\0';
    close(fd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---- the command -------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline submit JOB.ini --gpus-per-node G [options]\n"
        "       shardline submit JOB.ini --cpu [--ntasks-per-node N] [options]\n\n"
        "Writes a Slurm batch script for the job into its output directory\n"
        "(OUTPUT/shardline.sbatch, from the template slurm/shardline.sbatch) and submits it\n"
        "with sbatch; prints the job id. The job requeues itself when stopped by its time\n"
        "limit and resumes where it stopped.\n\noptions:\n"
        "  --nodes N             nodes [default: 1]\n"
        "  --gpus-per-node G     GPUs per node, one MPI rank each (required without --cpu)\n"
        "  --ntasks-per-node N   ranks per node [default: G; with --cpu: 1]\n"
        "  --cpus-per-task N     cores per rank [default: 8; with --cpu: 1]\n"
        "  --time T              time limit, HH:MM:SS or D-HH:MM:SS [default: 04:00:00]\n"
        "  --partition P         Slurm partition\n"
        "  --account A           Slurm account\n"
        "  --array K             a job array of K tasks (0..K-1), each scoring its share\n"
        "  --cpu                 CPU-only nodes: no GPUs requested, shardline run --device cpu\n"
        "  --dry-run             print the script; write and submit nothing\n"
        "  -h, --help            this help\n\n"
        "exit status: 0 submitted; 1 sbatch missing or failing; 2 bad command line or job\n"
        "file; 3 the output directory cannot be written.\n");
}

int sl_submit_main(int argc, char **argv)
{
    enum { O_NODES = 1000, O_GPUS, O_NTASKS, O_CPT, O_TIME, O_PART, O_ACCT, O_ARRAY, O_CPU, O_DRY };
    static const struct option longopts[] = {
        {"nodes", required_argument, NULL, O_NODES},
        {"gpus-per-node", required_argument, NULL, O_GPUS},
        {"ntasks-per-node", required_argument, NULL, O_NTASKS},
        {"cpus-per-task", required_argument, NULL, O_CPT},
        {"time", required_argument, NULL, O_TIME},
        {"partition", required_argument, NULL, O_PART},
        {"account", required_argument, NULL, O_ACCT},
        {"array", required_argument, NULL, O_ARRAY},
        {"cpu", no_argument, NULL, O_CPU},
        {"dry-run", no_argument, NULL, O_DRY},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    long nodes = 1, gpus = 0, ntasks = 0, cpt = 0, array = 0;
    const char *time_limit = NULL, *partition = NULL, *account = NULL;
    int cpu = 0, dry = 0;

    optind = 1;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", longopts, NULL);
        if (c == -1)
            break;
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return SL_EXIT_OK;
        case O_NODES: bad = parse_count("nodes", optarg, 100000, &nodes); break;
        case O_GPUS: bad = parse_count("gpus-per-node", optarg, 1024, &gpus); break;
        case O_NTASKS: bad = parse_count("ntasks-per-node", optarg, 100000, &ntasks); break;
        case O_CPT: bad = parse_count("cpus-per-task", optarg, 100000, &cpt); break;
        case O_ARRAY: bad = parse_count("array", optarg, 1000000, &array); break;
        case O_TIME:
            time_limit = optarg;
            bad = check_word("time", optarg, ":-");
            break;
        case O_PART:
            partition = optarg;
            bad = check_word("partition", optarg, "_-.,");
            break;
        case O_ACCT:
            account = optarg;
            bad = check_word("account", optarg, "_-.,");
            break;
        case O_CPU: cpu = 1; break;
        case O_DRY: dry = 1; break;
        case ':':
            fprintf(stderr, "shardline: error: option '%s' needs a value\n", argv[optind - 1]);
            return SL_EXIT_USAGE;
        default:
            fprintf(stderr, "shardline: error: unknown option '%s' (see shardline submit --help)\n",
                    argv[optind - 1]);
            return SL_EXIT_USAGE;
        }
        if (bad)
            return SL_EXIT_USAGE;
    }
    if (optind >= argc) {
        fprintf(stderr,
                "shardline: error: submit needs a job file (shardline submit JOB.ini ...)\n");
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "shardline: error: unexpected argument '%s' (one job file)\n",
                argv[optind + 1]);
        return SL_EXIT_USAGE;
    }
    const char *job_arg = argv[optind];
    if (cpu && gpus) {
        fprintf(stderr, "shardline: error: --cpu and --gpus-per-node exclude each other\n");
        return SL_EXIT_USAGE;
    }
    if (!cpu && !gpus) {
        fprintf(stderr,
                "shardline: error: --gpus-per-node is required (or --cpu for CPU-only nodes)\n");
        return SL_EXIT_USAGE;
    }

    /* The job file, read as `shardline run JOB.ini` would read it. */
    if (access(job_arg, R_OK) != 0) {
        fprintf(stderr, "shardline: error: %s: cannot read the job file: %s\n", job_arg,
                strerror(errno));
        return SL_EXIT_USAGE;
    }
    sl_job_t job;
    sl_error_t err = {{0}};
    char *run_argv[] = {"run", (char *)job_arg, NULL};
    int rc = sl_job_parse(&job, 2, run_argv, &err);
    if (rc != 0) {
        fprintf(stderr, "shardline: error: %s\n",
                rc < 0 ? err.msg : "unexpected --help in the job file");
        sl_job_free(&job);
        return SL_EXIT_USAGE;
    }

    char cwd[PATH_MAX], job_abs[PATH_MAX], exe[PATH_MAX], out_abs[PATH_MAX], script[PATH_MAX + 32];
    if (!getcwd(cwd, sizeof cwd) || !realpath(job_arg, job_abs)) {
        fprintf(stderr, "shardline: error: %s: cannot resolve the path: %s\n", job_arg,
                strerror(errno));
        sl_job_free(&job);
        return SL_EXIT_FAILURE;
    }
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el <= 0)
        snprintf(exe, sizeof exe, "shardline");
    else
        exe[el] = '\0';
    /* The output directory, relative to where the job runs: the submit directory (--chdir). */
    int ol_full = job.output[0] == '/'
                      ? snprintf(out_abs, sizeof out_abs, "%s", job.output)
                      : snprintf(out_abs, sizeof out_abs, "%s/%s", cwd, job.output);
    if (ol_full >= (int)sizeof out_abs) {
        fprintf(stderr, "shardline: error: --output %s: the path is too long\n", job.output);
        sl_job_free(&job);
        return SL_EXIT_USAGE;
    }
    size_t ol = strlen(out_abs);
    while (ol > 1 && out_abs[ol - 1] == '/')
        out_abs[--ol] = '\0';
    snprintf(script, sizeof script, "%s/shardline.sbatch", out_abs);
    if (strpbrk(out_abs, " \t\n\"'") || strpbrk(cwd, " \t\n\"'")) {
        fprintf(stderr,
                "shardline: error: %s: Slurm directives cannot hold paths with spaces or "
                "quotes; use another output directory\n",
                strpbrk(out_abs, " \t\n\"'") ? out_abs : cwd);
        sl_job_free(&job);
        return SL_EXIT_USAGE;
    }

    /* Fill in the template. */
    lines_t L;
    lines_from_text(&L, sl_sbatch_template);
    char v[PATH_MAX + 64];
    const char *base = strrchr(job_abs, '/') ? strrchr(job_abs, '/') + 1 : job_abs;
    snprintf(v, sizeof v, "shardline-%.*s", (int)strcspn(base, "."), base);
    for (char *p = v; *p; p++) /* a job name is one word */
        if (*p == ' ' || *p == '\t' || *p == '"' || *p == '\'')
            *p = '_';
    directive_set(&L, "job-name", v, NULL);
    snprintf(v, sizeof v, "%ld", nodes);
    directive_set(&L, "nodes", v, NULL);
    if (cpu) {
        directive_remove(&L, "gpus-per-node");
        snprintf(v, sizeof v, "%ld", ntasks ? ntasks : 1);
        directive_set(
            &L, "ntasks-per-node", v,
            "CPU-only nodes: MPI ranks per node (for instance one per socket), each running\n"
            "the CPU backend on --cpus-per-task cores.");
        snprintf(v, sizeof v, "%ld", cpt ? cpt : 1);
        directive_set(&L, "cpus-per-task", v, NULL);
        default_set(&L, "run_options=\"${SHARDLINE_RUN_OPTIONS:-", "--device cpu");
    } else {
        snprintf(v, sizeof v, "%ld", ntasks ? ntasks : gpus);
        directive_set(&L, "ntasks-per-node", v, NULL);
        snprintf(v, sizeof v, "%ld", gpus);
        directive_set(&L, "gpus-per-node", v, NULL);
        if (cpt) {
            snprintf(v, sizeof v, "%ld", cpt);
            directive_set(&L, "cpus-per-task", v, NULL);
        }
    }
    if (time_limit)
        directive_set(&L, "time", time_limit, NULL);
    if (partition)
        directive_set(&L, "partition", partition, "The partition (queue) to run in.");
    if (account)
        directive_set(&L, "account", account, "The account charged for the job.");
    if (array) {
        snprintf(v, sizeof v, "0-%ld", array - 1);
        directive_set(
            &L, "array", v,
            "A job array: each task scores its own share of the units (unit i belongs to\n"
            "task i % SLURM_ARRAY_TASK_COUNT), all writing into the same output directory;\n"
            "the task that finds the whole job committed writes predictions.h5.");
        snprintf(v, sizeof v, "%s/slurm-%%A_%%a.out", out_abs);
    } else {
        snprintf(v, sizeof v, "%s/slurm-%%j.out", out_abs);
    }
    directive_set(&L, "output", v, NULL);
    directive_set(
        &L, "chdir", cwd,
        "Run where the job was submitted, so relative paths in the job file mean the same.");
    default_set(&L, "shardline=\"${SHARDLINE:-", exe);
    default_set(&L, "job_file=\"${1:-", job_abs);
    char *text = lines_to_text(&L);
    lines_free(&L);
    sl_job_free(&job);

    if (dry) {
        fputs(text, stdout);
        free(text);
        return SL_EXIT_OK;
    }

    /* Write OUTPUT/shardline.sbatch (atomically: a resubmission may replace it). */
    sl_error_t derr = {{0}};
    if (sl_mkdir_p(out_abs, &derr) != 0) {
        fprintf(stderr, "shardline: error: the output directory: %s\n", derr.msg);
        free(text);
        return SL_EXIT_INPUT;
    }
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", script, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int werr = !f;
    if (f) {
        werr = fputs(text, f) < 0;
        werr |= fclose(f) != 0;
    }
    free(text);
    if (werr || chmod(tmp, 0755) != 0 || rename(tmp, script) != 0) {
        fprintf(stderr, "shardline: error: %s: cannot write the batch script: %s\n", script,
                strerror(errno));
        unlink(tmp);
        return SL_EXIT_INPUT;
    }

    char *sbatch = find_on_path("sbatch");
    if (!sbatch) {
        fprintf(stderr,
                "shardline: error: sbatch not found on PATH (is Slurm installed here?); the "
                "script is %s: submit it with `sbatch %s` where Slurm is\n",
                script, script);
        return SL_EXIT_FAILURE;
    }
    char out[512];
    int st = run_sbatch(sbatch, script, out, sizeof out);
    free(sbatch);
    if (st != 0) {
        fprintf(stderr, "shardline: error: sbatch %s failed (%s %d); its message is above\n",
                script, st < 0 ? "could not start:" : "exit status", st);
        return SL_EXIT_FAILURE;
    }
    out[strcspn(out, ";\n")] = '\0'; /* --parsable: "jobid[;cluster]" */
    if (!out[0]) {
        fprintf(stderr, "shardline: error: sbatch printed no job id\n");
        return SL_EXIT_FAILURE;
    }
    printf("%s\n", out);
    fprintf(stderr, "shardline: submitted job %s; script %s, log %s/slurm-%s.out\n", out, script,
            out_abs, array ? "<array id>_<task>" : out);
    return SL_EXIT_OK;
}
