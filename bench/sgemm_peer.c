/*
 * sgemm_peer.c — the peer for shardline's CPU throughput: how fast a BLAS's cblas_sgemm alone
 * (OpenBLAS, or BLIS when built with -DPEER_BLIS) runs one layer shape, so bench/bench_mlp.py and
 * bench/bench_bert.py can report shardline's GFLOP/s as a fraction of what the BLAS delivers for
 * the same GEMMs on the same threads.
 *
 * Computes Y [M, N] = X [M, K] @ W^T (W [N, K], nn.Linear layout; the forward pass of one layer
 * with M rows per batch), best of R repetitions after one warm-up, and prints one JSON line:
 *   {"m": M, "n": N, "k": K, "threads": T, "reps": R, "best_seconds": s, "gflops": g,
 *    "checksum": c, "blas": "<library, version and kernel set>"}
 * where gflops = 2 M N K / best_seconds / 1e9.
 *
 * Build: cc -O2 bench/sgemm_peer.c -lopenblas -o build/sgemm_peer
 *        (add -I/usr/include/x86_64-linux-gnu/openblas-pthread if cblas.h is not found)
 *    or: cc -O2 -DPEER_BLIS -isystem /usr/include/x86_64-linux-gnu/blis-openmp bench/sgemm_peer.c
 *          -L/usr/lib/x86_64-linux-gnu/blis-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/blis-openmp
 *          -lblis -fopenmp -o build/sgemm_peer_blis
 * Run:   build/sgemm_peer M N K [threads] [reps]     (threads 0 = the library's default)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime; BLIS's headers need pthread barriers */
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef PEER_BLIS
#include <blis.h>
static void set_threads(int n) { bli_thread_set_num_threads(n); }
static int get_threads(void) { return (int)bli_thread_get_num_threads(); }
static void describe(char *buf, size_t len)
{
    snprintf(buf, len, "BLIS %s %s%s", bli_info_get_version_str(),
             bli_arch_string(bli_arch_query_id()), bli_info_get_enable_openmp() ? " OpenMP" : "");
}
#else
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
static void set_threads(int n) { openblas_set_num_threads(n); }
static int get_threads(void) { return openblas_get_num_threads(); }
static void describe(char *buf, size_t len) { snprintf(buf, len, "%s", openblas_get_config()); }
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long parse(const char *s, const char *what, long min)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min) {
        fprintf(stderr, "sgemm_peer: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s M N K [threads] [reps]\n", argv[0]);
        return 2;
    }
    long m = parse(argv[1], "M", 1), n = parse(argv[2], "N", 1), k = parse(argv[3], "K", 1);
    long threads = argc > 4 ? parse(argv[4], "threads", 0) : 0;
    long reps = argc > 5 ? parse(argv[5], "reps", 1) : 5;
    if (threads > 0)
        set_threads((int)threads);

    float *x = malloc(sizeof(float) * (size_t)m * (size_t)k); /* (M, K) */
    float *w = malloc(sizeof(float) * (size_t)n * (size_t)k); /* (N, K) */
    float *y = malloc(sizeof(float) * (size_t)m * (size_t)n); /* (M, N) */
    if (!x || !w || !y) {
        fprintf(stderr, "sgemm_peer: out of memory\n");
        return 1;
    }
    srand(1);
    for (long i = 0; i < m * k; i++)
        x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < n * k; i++)
        w[i] = (float)rand() / (float)RAND_MAX - 0.5f;

    double best = 1e30;
    for (long r = -1; r < reps; r++) { /* r = -1: warm-up (thread pool, page faults) */
        double t0 = now();
        /* X (M,K) @ W^T (K,N) -> Y (M,N) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x,
                    (int)k, w, (int)k, 0.0f, y, (int)n);
        double dt = now() - t0;
        if (r >= 0 && dt < best)
            best = dt;
    }
    double checksum = 0.0;
    for (long i = 0; i < m * n; i += 97)
        checksum += y[i];
    char blas[256];
    describe(blas, sizeof blas);
    printf("{\"m\": %ld, \"n\": %ld, \"k\": %ld, \"threads\": %d, \"reps\": %ld, "
           "\"best_seconds\": %.6g, \"gflops\": %.4g, \"checksum\": %.6g, \"blas\": \"%s\"}\n",
           m, n, k, get_threads(), reps, best, 2.0 * (double)m * (double)n * (double)k / best / 1e9,
           checksum, blas);
    free(x);
    free(w);
    free(y);
    return 0;
}
