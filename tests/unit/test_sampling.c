/*
 * test_sampling.c — the decoder's next-token choice (runner/decoder.c): greedy argmax with ties
 * to the lowest id; temperature sampling whose empirical frequencies match softmax(l / T) over
 * 200k draws (within 5 standard errors); top-k and top-p keep exactly the tokens they should;
 * the counter-based uniforms are in [0, 1), reproducible, and differ between rows and steps.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/decoder.h"
#include "sl_test.h"

#define V 10
#define DRAWS 200000

static const float logits[V] = {1.0f, 2.5f, -1.0f, 0.3f, 2.5f, 0.0f, 1.7f, -3.0f, 0.9f, 2.0f};

/* softmax(l / t) restricted to `keep` (all when NULL), in double. */
static void softmax_ref(double t, const int *keep, double *p)
{
    double mx = -1e300, z = 0;
    for (int v = 0; v < V; v++)
        if (!keep || keep[v])
            mx = fmax(mx, logits[v] / t);
    for (int v = 0; v < V; v++) {
        p[v] = (!keep || keep[v]) ? exp(logits[v] / t - mx) : 0;
        z += p[v];
    }
    for (int v = 0; v < V; v++)
        p[v] /= z;
}

/* Draws with the row's generator; checks every frequency against p within 5 standard errors
 * and that tokens with p = 0 never appear. */
static void check_freqs(const char *what, double t, int k, double top_p, const double *p)
{
    static float scratch[2 * V + 8];
    long count[V] = {0}, bad = 0;
    for (long i = 0; i < DRAWS; i++) {
        double u = sl_sample_uniform(42, 7, (uint64_t)i);
        int32_t id = sl_sample_token(logits, V, t, k, top_p, u, scratch);
        if (id >= 0 && id < V)
            count[id]++;
        else
            bad++;
    }
    CHECKF(bad == 0, "%s: %ld ids out of range", what, bad);
    for (int v = 0; v < V; v++) {
        double f = (double)count[v] / DRAWS, se = sqrt(p[v] * (1 - p[v]) / DRAWS);
        if (p[v] == 0)
            CHECKF(count[v] == 0, "%s: token %d (excluded) never drawn (%ld times)", what, v,
                   count[v]);
        else
            CHECKF(fabs(f - p[v]) <= 5 * se + 1e-12, "%s: token %d frequency %.5f vs %.5f", what, v,
                   f, p[v]);
    }
}

int main(void)
{
    static float scratch[2 * V + 8];
    /* greedy: the argmax, the lowest id among equal maxima (1 and 4 tie at 2.5) */
    CHECK(sl_sample_token(logits, V, 0.0, 0, 1.0, 0.99, scratch) == 1);
    /* top-k 1 is greedy whatever the draw */
    for (int i = 0; i < 100; i++)
        CHECK(sl_sample_token(logits, V, 1.3, 1, 1.0, i / 100.0, scratch) == 1);

    double p[V];
    softmax_ref(0.7, NULL, p);
    check_freqs("temperature 0.7", 0.7, 0, 1.0, p);

    /* top-k 3: the three most likely (ids 1, 4 at 2.5, then 9 at 2.0) */
    int keep3[V] = {0};
    keep3[1] = keep3[4] = keep3[9] = 1;
    softmax_ref(1.0, keep3, p);
    check_freqs("top-k 3", 1.0, 3, 1.0, p);

    /* top-p: the smallest most-likely prefix whose probability reaches top_p */
    double full[V];
    softmax_ref(1.0, NULL, full);
    int order[V];
    for (int v = 0; v < V; v++)
        order[v] = v;
    for (int a = 0; a < V; a++) /* by probability, ties by id */
        for (int b = a + 1; b < V; b++)
            if (full[order[b]] > full[order[a]] ||
                (full[order[b]] == full[order[a]] && order[b] < order[a])) {
                int tmp = order[a];
                order[a] = order[b];
                order[b] = tmp;
            }
    double top_p = 0.6, cum = 0;
    int keepp[V] = {0};
    for (int i = 0; i < V && cum < top_p; i++) {
        keepp[order[i]] = 1;
        cum += full[order[i]];
    }
    softmax_ref(1.0, keepp, p);
    check_freqs("top-p 0.6", 1.0, 0, top_p, p);

    /* uniforms: in [0, 1), reproducible, different across rows and steps, mean about 1/2 */
    double sum = 0;
    int in_range = 1;
    for (int i = 0; i < 100000; i++) {
        double u = sl_sample_uniform(3, (uint64_t)i, 5);
        in_range &= u >= 0 && u < 1;
        sum += u;
    }
    CHECK(in_range);
    CHECKF(fabs(sum / 100000 - 0.5) < 0.005, "mean of uniforms %.4f", sum / 100000);
    CHECK(sl_sample_uniform(3, 9, 5) == sl_sample_uniform(3, 9, 5));
    CHECK(sl_sample_uniform(3, 9, 5) != sl_sample_uniform(3, 10, 5));
    CHECK(sl_sample_uniform(3, 9, 5) != sl_sample_uniform(3, 9, 6));
    CHECK(sl_sample_uniform(3, 9, 5) != sl_sample_uniform(4, 9, 5));
    return sl_test_finish("test_sampling");
}
