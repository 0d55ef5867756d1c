/*
 * report_html.c — report.html: one self-contained page (no script, no network: inline CSS and
 * SVG charts drawn here) from a job's report.json and manifest.json, and the failed rows of
 * predictions.h5's /errors when the job is complete. Sections: summary, throughput over time
 * per data-parallel group, time per stage and rank, forward-pass sizes and padding, failed
 * rows, GPU metrics (when sampled), configuration. Every string that comes from the job (paths,
 * host names, reasons, attribute values) is HTML-escaped. Written beside report.json by rank
 * 0 at the end of a job, and by `shardline report OUTPUT_DIR`.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/sl_json.h"
#include "jobs/h5util.h"
#include "runner/report.h"

#define MAX_ERRORS_SHOWN 1000

/* ---- text ------------------------------------------------------------------------------------ */

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static int has(const cJSON *o, const char *key)
{
    return cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A JSON value as text for the configuration table (arrays joined with ", "). */
static void value_text(FILE *f, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        esc(f, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        fprintf(f, "%.15g", v->valuedouble);
    } else if (cJSON_IsBool(v)) {
        fputs(cJSON_IsTrue(v) ? "true" : "false", f);
    } else if (cJSON_IsArray(v)) {
        const cJSON *it;
        int i = 0;
        cJSON_ArrayForEach(it, v)
        {
            if (i++)
                fputs(", ", f);
            value_text(f, it);
        }
    } else if (cJSON_IsObject(v)) {
        char *t = cJSON_PrintUnformatted(v);
        esc(f, t);
        free(t);
    }
}

/* "rank R (host)" */
static void rank_name(FILE *f, int rank, const cJSON *per_rank)
{
    const cJSON *it;
    fprintf(f, "rank %d", rank);
    cJSON_ArrayForEach(it, per_rank)
    {
        if ((int)num(it, "rank") == rank && str(it, "host")[0]) {
            fputs(" (", f);
            esc(f, str(it, "host"));
            fputc(')', f);
        }
    }
}

/* ---- charts ---------------------------------------------------------------------------------- */

static const char *palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define NPALETTE ((int)(sizeof palette / sizeof palette[0]))

/* A step of 1, 2 or 5 x 10^k giving about `want` ticks over [0, max]. */
static double nice_step(double max, int want)
{
    if (!(max > 0))
        return 1;
    double raw = max / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

enum { CW = 760, CH = 280, ML = 70, MR = 20, MT = 30, MB = 50 };

typedef struct {
    double xmax, ymax;
} frame_t;

/* The axes, grid, tick labels, title and axis labels of a chart; returns the scaled frame. */
static frame_t axes(FILE *f, const char *title, const char *xlabel, const char *ylabel, double xmax,
                    double ymax, int xticks)
{
    double xs = nice_step(xmax, 8), ys = nice_step(ymax, 5);
    if (!xticks && ys < 1)
        ys = 1; /* bar charts count things */
    frame_t fr = {xticks ? ceil(xmax / xs) * xs : xmax, ceil(ymax / ys) * ys};
    if (!(fr.xmax > 0))
        fr.xmax = 1;
    if (!(fr.ymax > 0))
        fr.ymax = 1;
    fprintf(f,
            "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"",
            CW, CH, CW, CH);
    esc(f, title);
    fputs("\">\n", f);
    fprintf(f, "<text class=\"title\" x=\"%d\" y=\"18\">", ML);
    esc(f, title);
    fputs("</text>\n", f);
    int pw = CW - ML - MR, ph = CH - MT - MB;
    for (double y = 0; y <= fr.ymax * 1.0000001; y += ys) {
        double py = MT + ph - y / fr.ymax * ph;
        fprintf(f,
                "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
                "<text class=\"tick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, py, ML + pw, py, ML - 6, py + 4, y);
    }
    if (xticks)
        for (double x = 0; x <= fr.xmax * 1.0000001; x += xs) {
            double px = ML + x / fr.xmax * pw;
            fprintf(f,
                    "<line class=\"grid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>"
                    "<text class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                    px, MT, px, MT + ph, px, MT + ph + 16, x);
        }
    fprintf(f,
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>"
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n",
            ML, MT, ML, MT + ph, ML, MT + ph, ML + pw, MT + ph);
    fprintf(f, "<text class=\"axis-label\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2,
            CH - 8);
    esc(f, xlabel);
    fprintf(f,
            "</text>\n<text class=\"axis-label\" x=\"14\" y=\"%d\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %d)\">",
            MT + ph / 2, MT + ph / 2);
    esc(f, ylabel);
    fputs("</text>\n", f);
    return fr;
}

typedef struct {
    char name[160];
    double *x, *y;
    int n;
} series_t;

static void line_chart(FILE *f, const char *title, const char *xlabel, const char *ylabel,
                       const series_t *s, int ns)
{
    double xmax = 0, ymax = 0;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            xmax = fmax(xmax, s[i].x[k]);
            ymax = fmax(ymax, s[i].y[k]);
        }
    frame_t fr = axes(f, title, xlabel, ylabel, xmax, ymax, 1);
    int pw = CW - ML - MR, ph = CH - MT - MB;
    for (int i = 0; i < ns; i++) {
        fprintf(f,
                "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                "points=\"",
                palette[i % NPALETTE]);
        for (int k = 0; k < s[i].n; k++)
            fprintf(f, "%.1f,%.1f ", ML + s[i].x[k] / fr.xmax * pw,
                    MT + ph - fmax(s[i].y[k], 0) / fr.ymax * ph);
        fputs("\"><title>", f);
        esc(f, s[i].name);
        fputs("</title></polyline>\n", f);
    }
    fputs("</svg>\n<div class=\"legend\">", f);
    for (int i = 0; i < ns; i++) {
        fprintf(f, "<span><i style=\"background:%s\"></i>", palette[i % NPALETTE]);
        esc(f, s[i].name);
        fputs("</span> ", f);
    }
    fputs("</div>\n", f);
}

static void bar_chart(FILE *f, const char *title, const char *xlabel, const char *ylabel,
                      char (*labels)[32], const double *v, int n)
{
    double ymax = 0;
    for (int i = 0; i < n; i++)
        ymax = fmax(ymax, v[i]);
    frame_t fr = axes(f, title, xlabel, ylabel, 1, ymax, 0);
    int pw = CW - ML - MR, ph = CH - MT - MB;
    double bw = (double)pw / (n > 0 ? n : 1);
    for (int i = 0; i < n; i++) {
        double h = v[i] / fr.ymax * ph;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"%s\"><title>%s: %g</title></rect>\n"
                "<text class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                ML + i * bw + bw * 0.1, MT + ph - h, bw * 0.8, h, palette[0], labels[i], v[i],
                ML + i * bw + bw / 2, MT + ph + 16, labels[i]);
    }
    fputs("</svg>\n", f);
}

/* ---- sections -------------------------------------------------------------------------------- */

static void summary(FILE *f, const cJSON *rep, const cJSON *man)
{
    fputs("<h2 id=\"summary\">Summary</h2>\n<table class=\"kv\">\n", f);
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(man, "attributes");
    fputs("<tr><th>model</th><td>", f);
    esc(f, str(attrs, "model")[0] ? str(attrs, "model")
                                  : str(cJSON_GetObjectItemCaseSensitive(man, "model"), "path"));
    fputs("</td></tr>\n<tr><th>task</th><td>", f);
    esc(f, str(rep, "task"));
    fprintf(f, "</td></tr>\n<tr><th>complete</th><td>%s%s</td></tr>\n",
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "complete")) ? "yes" : "no",
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "stopped"))
                ? " (stopped by a signal)"
                : "");
    fprintf(f,
            "<tr><th>rows</th><td class=\"rows\">%.0f</td></tr>\n"
            "<tr><th>rows computed</th><td class=\"rows-computed\">%.0f</td></tr>\n"
            "<tr><th>failed rows</th><td class=\"failed-rows\">%.0f</td></tr>\n"
            "<tr><th>units</th><td>%.0f (%.0f computed, %.0f already committed)</td></tr>\n"
            "<tr><th>seconds</th><td>%.2f</td></tr>\n"
            "<tr><th>rows/s</th><td>%.1f</td></tr>\n",
            num(rep, "rows"), num(rep, "rows_computed"), num(rep, "failed_rows"),
            num(rep, "units_total"), num(rep, "units_computed"), num(rep, "units_skipped"),
            num(rep, "seconds"), num(rep, "rows_per_second"));
    if (has(rep, "tokens"))
        fprintf(f, "<tr><th>tokens</th><td>%.0f (%.1f/s, %.0f rows truncated)</td></tr>\n",
                num(rep, "tokens"), num(rep, "tokens_per_second"), num(rep, "truncated_rows"));
    if (has(rep, "generated_tokens"))
        fprintf(f, "<tr><th>generated tokens</th><td>%.0f (%.1f/s)</td></tr>\n",
                num(rep, "generated_tokens"), num(rep, "generated_tokens_per_second"));
    fprintf(
        f,
        "<tr><th>ranks</th><td>%.0f (TP %.0f &times; DP %.0f)</td></tr>\n<tr><th>device</th><td>",
        num(rep, "ranks"), num(rep, "tp"), num(rep, "dp"));
    esc(f, str(rep, "device"));
    fputs("</td></tr>\n<tr><th>all-reduce</th><td>", f);
    esc(f, str(rep, "all_reduce"));
    fputs("</td></tr>\n</table>\n", f);
}

static void throughput(FILE *f, const cJSON *rep)
{
    fputs("<h2 id=\"throughput\">Throughput over time per DP group</h2>\n", f);
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(rep, "timeline"), "groups");
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(rep, "per_rank");
    int ng = cJSON_GetArraySize(groups);
    double tend = 0;
    const cJSON *g, *u;
    cJSON_ArrayForEach(g, groups)
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(g, "units")) tend =
            fmax(tend, cJSON_GetArrayItem(u, 1)->valuedouble);
    if (ng == 0 || !(tend > 0)) {
        fputs("<p>No unit timeline in report.json: this run computed no unit (all were "
              "committed before), or report.json comes from an older shardline.</p>\n",
              f);
        return;
    }
    /* Rows per second in NB bins: each unit's rows spread evenly over its [start, end]. */
    enum { NB = 40 };
    double bw = tend / NB;
    series_t *s = sl_xcalloc((size_t)ng, sizeof *s);
    int i = 0;
    cJSON_ArrayForEach(g, groups)
    {
        s[i].x = sl_xcalloc(2 * NB, sizeof(double));
        s[i].y = sl_xcalloc(2 * NB, sizeof(double));
        double rows[NB] = {0};
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(g, "units"))
        {
            double t0 = cJSON_GetArrayItem(u, 0)->valuedouble,
                   t1 = cJSON_GetArrayItem(u, 1)->valuedouble;
            double r = cJSON_GetArrayItem(u, 2)->valuedouble;
            if (!(t1 > t0)) {
                int b = (int)fmin(NB - 1, floor(t1 / bw));
                rows[b] += r;
                continue;
            }
            for (int b = 0; b < NB; b++) {
                double lo = fmax(t0, b * bw), hi = fmin(t1, (b + 1) * bw);
                if (hi > lo)
                    rows[b] += r * (hi - lo) / (t1 - t0);
            }
        }
        /* a step line: flat over each bin */
        for (int b = 0; b < NB; b++) {
            s[i].x[2 * b] = b * bw;
            s[i].x[2 * b + 1] = (b + 1) * bw;
            s[i].y[2 * b] = s[i].y[2 * b + 1] = rows[b] / bw;
        }
        s[i].n = 2 * NB;
        char *name = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&name, &len);
        fprintf(m, "DP group %d: ", (int)num(g, "dp"));
        rank_name(m, (int)num(g, "rank"), per);
        fclose(m);
        snprintf(s[i].name, sizeof s[i].name, "%s", name);
        free(name);
        i++;
    }
    line_chart(f, "Rows per second, per data-parallel group",
               "seconds since the job started computing", "rows/s", s, ng);
    fputs("<table><tr><th>DP group</th><th>leader</th><th>units</th><th>rows</th><th>busy "
          "seconds</th></tr>\n",
          f);
    i = 0;
    cJSON_ArrayForEach(g, groups)
    {
        double rows = 0, busy = 0;
        int n = 0;
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(g, "units"))
        {
            rows += cJSON_GetArrayItem(u, 2)->valuedouble;
            busy += cJSON_GetArrayItem(u, 1)->valuedouble - cJSON_GetArrayItem(u, 0)->valuedouble;
            n++;
        }
        fprintf(f, "<tr><td>%d</td><td>", (int)num(g, "dp"));
        rank_name(f, (int)num(g, "rank"), per);
        fprintf(f, "</td><td>%d</td><td class=\"group-rows\">%.0f</td><td>%.2f</td></tr>\n", n,
                rows, busy);
        free(s[i].x);
        free(s[i].y);
        i++;
    }
    fputs("</table>\n", f);
    free(s);
}

static void stages(FILE *f, const cJSON *rep)
{
    fputs("<h2 id=\"stages\">Time per stage and rank</h2>\n"
          "<p>Each rank runs two threads side by side: the compute thread (GEMM, the rest of the "
          "model, communication, waiting for input) and the I/O thread (reading, tokenizing, "
          "writing part files). Idle: the rest of the job's wall time.</p>\n",
          f);
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(rep, "per_rank");
    int n = cJSON_GetArraySize(per);
    double total = num(rep, "seconds");
    enum { NS = 6 };
    const char *cnames[NS] = {
        "load", "GEMM", "compute (other)", "communication", "waiting for input", "idle"};
    const char *inames[NS] = {"load", "read", "tokenize", "write", "idle", NULL};
    const char *ccol[NS] = {"#7f7f7f", "#d62728", "#ff7f0e", "#9467bd", "#bcbd22", "#e0e0e0"};
    const char *icol[NS] = {"#7f7f7f", "#1f77b4", "#17becf", "#2ca02c", "#e0e0e0", NULL};
    int rowh = 18, gap = 10, top = 40, left = 230, width = 440;
    int height = top + n * (2 * rowh + gap) + 30;
    fprintf(f,
            "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Time per stage and rank\">\n"
            "<text class=\"title\" x=\"%d\" y=\"18\">Seconds per stage, per rank</text>\n",
            CW, height, CW, height, left);
    double scale = total > 0 ? width / total : 0;
    double step = nice_step(total, 6);
    for (double x = 0; total > 0 && x <= total * 1.0000001; x += step)
        fprintf(f,
                "<line class=\"grid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>"
                "<text class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                left + x * scale, top - 6, left + x * scale, height - 26, left + x * scale,
                height - 12, x);
    fprintf(f, "<text class=\"axis-label\" x=\"%d\" y=\"%d\">seconds</text>\n", left + width + 14,
            height - 12);
    const cJSON *r;
    int i = 0;
    cJSON_ArrayForEach(r, per)
    {
        double tok = num(r, "tokenize_seconds"), gemm = num(r, "gemm_seconds");
        double comp = num(r, "compute_seconds");
        double c[NS] = {num(r, "load_seconds"),      gemm,
                        fmax(comp - gemm, 0),        num(r, "comm_seconds"),
                        num(r, "read_wait_seconds"), 0};
        double io[NS] = {num(r, "load_seconds"),
                         fmax(num(r, "read_seconds") - tok, 0),
                         tok,
                         num(r, "write_seconds"),
                         0,
                         0};
        double sc = 0, si = 0;
        for (int k = 0; k < 5; k++)
            sc += c[k];
        for (int k = 0; k < 4; k++)
            si += io[k];
        c[5] = fmax(total - sc, 0);
        io[4] = fmax(total - si, 0);
        int y = top + i * (2 * rowh + gap);
        fprintf(f, "<text class=\"rank-name\" x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 62,
                y + rowh + 4);
        rank_name(f, (int)num(r, "rank"), per);
        fprintf(f,
                "</text>\n<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"end\">compute</text>"
                "<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"end\">I/O</text>\n",
                left - 6, y + rowh - 5, left - 6, y + 2 * rowh - 5);
        for (int t = 0; t < 2; t++) {
            const double *v = t ? io : c;
            const char **names = t ? inames : cnames, **cols = t ? icol : ccol;
            double x = left;
            for (int k = 0; k < NS && names[k]; k++) {
                double w = v[k] * scale;
                fprintf(f,
                        "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\">"
                        "<title>rank %d %s thread: %s %.3f s</title></rect>\n",
                        x, y + t * rowh, w, rowh - 2, cols[k], (int)num(r, "rank"),
                        t ? "I/O" : "compute", names[k], v[k]);
                x += w;
            }
        }
        i++;
    }
    fputs("</svg>\n<div class=\"legend\">compute thread: ", f);
    for (int k = 0; k < NS; k++)
        fprintf(f, "<span><i style=\"background:%s\"></i>%s</span> ", ccol[k], cnames[k]);
    fputs("<br>I/O thread: ", f);
    for (int k = 0; k < NS && inames[k]; k++)
        fprintf(f, "<span><i style=\"background:%s\"></i>%s</span> ", icol[k], inames[k]);
    fputs(
        "</div>\n<table><tr><th>rank</th><th>rows</th><th>failed</th><th>units</th><th>load s</th>"
        "<th>read s</th><th>tokenize s</th><th>compute s</th><th>GEMM s</th><th>comm s</th>"
        "<th>wait s</th><th>write s</th><th>peak memory MiB</th></tr>\n",
        f);
    cJSON_ArrayForEach(r, per)
    {
        fputs("<tr><td>", f);
        rank_name(f, (int)num(r, "rank"), per);
        fprintf(f,
                "</td><td "
                "class=\"rank-rows\">%.0f</td><td>%.0f</td><td>%.0f</td><td>%.3f</td><td>%.3f</td>"
                "<td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td>"
                "<td>%.1f</td></tr>\n",
                num(r, "rows"), num(r, "failed_rows"), num(r, "units"), num(r, "load_seconds"),
                num(r, "read_seconds"), num(r, "tokenize_seconds"), num(r, "compute_seconds"),
                num(r, "gemm_seconds"), num(r, "comm_seconds"), num(r, "read_wait_seconds"),
                num(r, "write_seconds"), num(r, "peak_memory_bytes") / 1048576.0);
    }
    fputs("</table>\n", f);
}

static void batches(FILE *f, const cJSON *rep)
{
    fputs("<h2 id=\"batches\">Forward passes: batch sizes and padding</h2>\n", f);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(rep, "batches");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(b, "rows");
    int n = cJSON_GetArraySize(rows), lo = n, hi = -1;
    for (int k = 0; k < n; k++)
        if (cJSON_GetArrayItem(rows, k)->valuedouble > 0) {
            lo = k < lo ? k : lo;
            hi = k;
        }
    if (hi < 0) {
        fputs("<p>No forward pass was recorded (decoder tasks batch tokens inside their own loop "
              "and record nothing here; or nothing was computed).</p>\n",
              f);
        return;
    }
    char labels[32][32];
    double v[32];
    int m = 0;
    for (int k = lo; k <= hi && m < 32; k++, m++) {
        long long a = 1LL << k, z = (1LL << (k + 1)) - 1;
        if (a == z)
            snprintf(labels[m], sizeof labels[m], "%lld", a);
        else
            snprintf(labels[m], sizeof labels[m], "%lld-%lld", a, z);
        v[m] = cJSON_GetArrayItem(rows, k)->valuedouble;
    }
    bar_chart(f, "Forward passes by rows per pass", "rows per forward pass", "forward passes",
              labels, v, m);
    double real = num(b, "real_tokens"), padded = num(b, "padded_tokens");
    if (padded > 0) {
        const cJSON *pad = cJSON_GetObjectItemCaseSensitive(b, "padding");
        for (int k = 0; k < 10; k++) {
            snprintf(labels[k], sizeof labels[k], "%d-%d%%", 10 * k, 10 * (k + 1));
            v[k] = cJSON_GetArrayItem(pad, k) ? cJSON_GetArrayItem(pad, k)->valuedouble : 0;
        }
        bar_chart(f, "Forward passes by padding", "padding of the [batch, length] token grid",
                  "forward passes", labels, v, 10);
        fprintf(f,
                "<p>%.0f real tokens in %.0f padded positions: %.1f%% padding (the encoder "
                "runs over the real tokens only; padding costs attention buffers).</p>\n",
                real, padded, 100.0 * (padded - real) / padded);
    }
}

/* predictions.h5's /errors: (row, reason); the first MAX_ERRORS_SHOWN. */
typedef struct {
    int64_t row;
    char *reason;
} err_rec_t;

static void failed_rows(FILE *f, const char *dir, const cJSON *rep)
{
    fprintf(f, "<h2 id=\"failed\">Failed rows</h2>\n<p>%.0f failed row(s).</p>\n",
            num(rep, "failed_rows"));
    char path[4200];
    snprintf(path, sizeof path, "%s/predictions.h5", dir);
    if (access(path, R_OK) != 0) {
        fputs("<p>predictions.h5 is not written yet (the job is not complete): the failed rows "
              "are in the part files (datasets failed_rows, failed_reasons).</p>\n",
              f);
        return;
    }
    hid_t file = sl_h5_open_ro(path, NULL);
    hid_t d = file >= 0 ? H5Dopen2(file, "errors", H5P_DEFAULT) : -1;
    if (d < 0) {
        fputs("<p>predictions.h5 has no /errors dataset.</p>\n", f);
        if (file >= 0)
            H5Fclose(file);
        return;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(sp, &n, NULL);
    hsize_t take = n < MAX_ERRORS_SHOWN ? n : MAX_ERRORS_SHOWN, start = 0;
    hid_t st = sl_h5_vlen_str_type();
    hid_t ct = H5Tcreate(H5T_COMPOUND, sizeof(err_rec_t));
    H5Tinsert(ct, "row", HOFFSET(err_rec_t, row), H5T_NATIVE_INT64);
    H5Tinsert(ct, "reason", HOFFSET(err_rec_t, reason), st);
    err_rec_t *recs = sl_xcalloc((size_t)take + 1, sizeof *recs);
    int ok = 1;
    hid_t ms = H5Screate_simple(1, take > 0 ? &take : &(hsize_t){1}, NULL);
    if (take > 0) {
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, &start, NULL, &take, NULL);
        ok = H5Dread(d, ct, ms, sp, H5P_DEFAULT, recs) >= 0;
    }
    if (!ok) {
        fputs("<p>predictions.h5: /errors cannot be read.</p>\n", f);
    } else if (take > 0) {
        if (take < n)
            fprintf(f,
                    "<p>The first %llu of %llu (all are in predictions.h5, dataset /errors).</p>\n",
                    (unsigned long long)take, (unsigned long long)n);
        fputs("<table class=\"errors\"><tr><th>row</th><th>reason</th></tr>\n", f);
        for (hsize_t i = 0; i < take; i++) {
            fprintf(f, "<tr><td>%lld</td><td>", (long long)recs[i].row);
            esc(f, recs[i].reason);
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    if (ok && take > 0)
        H5Dvlen_reclaim(ct, ms, H5P_DEFAULT, recs); /* the reason strings HDF5 allocated */
    H5Sclose(ms);
    free(recs);
    H5Tclose(ct);
    H5Tclose(st);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(file);
}

static void gpu(FILE *f, const cJSON *rep)
{
    fputs("<h2 id=\"gpu\">GPU metrics</h2>\n", f);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(rep, "gpu");
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(g, "ranks");
    int n = cJSON_GetArraySize(ranks);
    if (n == 0) {
        fputs("<p>No GPU metrics were recorded (CPU backend, or no NVML: libnvidia-ml.so.1 "
              "comes with the NVIDIA driver).</p>\n",
              f);
        return;
    }
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(rep, "per_rank");
    const struct {
        const char *key, *title, *unit;
        double scale;
    } charts[] = {
        {"util_gpu_percent", "GPU utilisation", "percent of time a kernel ran", 1},
        {"memory_used_bytes", "GPU memory used", "GiB", 1.0 / 1073741824.0},
        {"power_watts", "Power", "watts", 1},
        {"temperature_c", "Temperature", "degrees Celsius", 1},
        {"sm_clock_mhz", "SM clock", "MHz", 1},
    };
    series_t *s = sl_xcalloc((size_t)n, sizeof *s);
    for (size_t c = 0; c < sizeof charts / sizeof charts[0]; c++) {
        int i = 0;
        const cJSON *r;
        cJSON_ArrayForEach(r, ranks)
        {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "t");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, charts[c].key);
            int m = cJSON_GetArraySize(t) < cJSON_GetArraySize(v) ? cJSON_GetArraySize(t)
                                                                  : cJSON_GetArraySize(v);
            s[i].x = sl_xcalloc((size_t)m + 1, sizeof(double));
            s[i].y = sl_xcalloc((size_t)m + 1, sizeof(double));
            s[i].n = 0;
            for (int k = 0; k < m; k++) {
                double y = cJSON_GetArrayItem(v, k)->valuedouble;
                if (y < 0)
                    continue; /* not supported by the device */
                s[i].x[s[i].n] = cJSON_GetArrayItem(t, k)->valuedouble;
                s[i].y[s[i].n++] = y * charts[c].scale;
            }
            char *name = NULL;
            size_t len = 0;
            FILE *mm = open_memstream(&name, &len);
            rank_name(mm, (int)num(r, "rank"), per);
            fprintf(mm, ", NVML device %d", (int)num(r, "nvml_index"));
            fclose(mm);
            snprintf(s[i].name, sizeof s[i].name, "%s", name);
            free(name);
            i++;
        }
        line_chart(f, charts[c].title, "seconds since the job started computing", charts[c].unit, s,
                   n);
        for (int k = 0; k < n; k++) {
            free(s[k].x);
            free(s[k].y);
        }
    }
    free(s);
}

static void config(FILE *f, const cJSON *man)
{
    fputs("<h2 id=\"config\">Configuration</h2>\n<table class=\"kv config\">\n", f);
    fputs("<tr><th>shardline version</th><td>", f);
    esc(f, str(man, "shardline_version"));
    fputs("</td></tr>\n<tr><th>job hash</th><td>", f);
    esc(f, str(man, "job_hash"));
    fputs("</td></tr>\n", f);
    const char *groups[] = {"attributes", "options", "model"};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(man, groups[g]), *it;
        cJSON_ArrayForEach(it, o)
        {
            if (!strcmp(groups[g], "attributes") && !strcmp(it->string, "inputs"))
                continue; /* listed below */
            fprintf(f, "<tr><th>%s: ", groups[g]);
            esc(f, it->string);
            fputs("</th><td>", f);
            value_text(f, it);
            fputs("</td></tr>\n", f);
        }
    }
    fputs("</table>\n", f);
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(man, "inputs"), *it;
    int n = cJSON_GetArraySize(inputs), i = 0;
    fprintf(f,
            "<h3>Inputs (%d shard%s)</h3>\n<table><tr><th>path</th><th>first row</th><th>rows</th>"
            "<th>bytes</th></tr>\n",
            n, n == 1 ? "" : "s");
    cJSON_ArrayForEach(it, inputs)
    {
        if (i++ == 200) {
            fprintf(f, "<tr><td colspan=\"4\">... and %d more (manifest.json)</td></tr>\n",
                    n - 200);
            break;
        }
        fputs("<tr><td>", f);
        esc(f, str(it, "path"));
        fprintf(f, "</td><td>%.0f</td><td>%.0f</td><td>%.0f</td></tr>\n", num(it, "first_row"),
                num(it, "rows"), num(it, "size"));
    }
    fputs("</table>\n", f);
}

static const char css[] =
    "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;margin:8px 0;font-size:13px}"
    "th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
    "table.kv th{background:#f4f4f4;white-space:nowrap}td{overflow-wrap:anywhere}"
    "svg.chart{display:block;margin:8px 0;background:#fff}"
    ".grid{stroke:#e6e6e6}.axis{stroke:#333}"
    ".tick{font-size:11px;fill:#444}.axis-label{font-size:12px;fill:#222}"
    ".title{font-size:13px;font-weight:bold;fill:#222}.rank-name{font-size:12px;fill:#222}"
    ".legend{font-size:12px}.legend span{margin-right:14px}"
    ".legend i{display:inline-block;width:10px;height:10px;margin-right:4px}";

int sl_report_html_write(const char *out_dir, sl_error_t *err)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/report.json", out_dir);
    cJSON *rep = sl_json_read(path, (size_t)1 << 30, 0, err);
    if (!rep)
        return -1;
    snprintf(path, sizeof path, "%s/manifest.json", out_dir);
    cJSON *man = sl_json_read(path, (size_t)1 << 30, 0, err);
    if (!man) {
        cJSON_Delete(rep);
        return -1;
    }
    snprintf(path, sizeof path, "%s/report.html", out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (f) {
        fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta "
              "charset=\"utf-8\">\n<title>shardline report: ",
              f);
        esc(f, out_dir);
        fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>shardline report: ", css);
        esc(f, out_dir);
        fputs("</h1>\n<p><a href=\"#summary\">summary</a> &middot; <a "
              "href=\"#throughput\">throughput</a> "
              "&middot; <a href=\"#stages\">stages</a> &middot; <a href=\"#batches\">batches</a> "
              "&middot; "
              "<a href=\"#failed\">failed rows</a> &middot; <a href=\"#gpu\">GPU</a> &middot; "
              "<a href=\"#config\">configuration</a></p>\n",
              f);
        summary(f, rep, man);
        throughput(f, rep);
        stages(f, rep);
        batches(f, rep);
        failed_rows(f, out_dir, rep);
        gpu(f, rep);
        config(f, man);
        fputs("</body>\n</html>\n", f);
        ok = !ferror(f);
        ok = (fclose(f) == 0) && ok;
    }
    cJSON_Delete(rep);
    cJSON_Delete(man);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return sl_errorf(err, "%s: cannot write", path);
    }
    return 0;
}

int sl_report_main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: shardline report OUTPUT_DIR\n\n"
               "(Re)writes OUTPUT_DIR/report.html from the job's report.json and manifest.json:\n"
               "throughput over time per DP group, time per stage and rank, batch sizes and\n"
               "padding, failed rows, GPU metrics, configuration. One self-contained file.\n");
        return SL_EXIT_OK;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: shardline report OUTPUT_DIR\n");
        return SL_EXIT_USAGE;
    }
    sl_h5_quiet();
    sl_error_t err = {{0}};
    if (sl_report_html_write(argv[1], &err) != 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        return SL_EXIT_INPUT;
    }
    printf("%s/report.html\n", argv[1]);
    return SL_EXIT_OK;
}
