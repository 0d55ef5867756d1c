/*
 * test_utf8.c — sl_utf8_check (common/sl_utf8.c: the UTF-8 validation of the tokenizers, `shardline
 * convert` and `export`): the classic malformed sequences (overlong forms, surrogates, code points
 * above U+10FFFF, lone continuation bytes, truncated sequences) and, as an independent reference,
 * glibc's iconv (UTF-8 -> UTF-32LE) on many random byte strings built from UTF-8-like pieces.
 */
#include <iconv.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_utf8.h"
#include "sl_test.h"

/* iconv's answer: the offset of the first byte it refuses, or n when it converts everything. */
static size_t iconv_check(iconv_t cd, const unsigned char *s, size_t n)
{
    iconv(cd, NULL, NULL, NULL, NULL);
    char out[4 * 64 + 16];
    char *in = (char *)s, *o = out;
    size_t inleft = n, outleft = sizeof out;
    size_t r = iconv(cd, &in, &inleft, &o, &outleft);
    return r == (size_t)-1 ? n - inleft : n;
}

int main(void)
{
    static const struct {
        const char *s;
        size_t bad; /* offset of the first invalid byte; (size_t)-1: valid */
    } cases[] = {
        {"plain ascii", (size_t)-1},
        {"caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x98\x80", (size_t)-1},
        {"\xc0\xaf", 0},                  /* overlong '/' */
        {"\xe0\x80\xaf", 0},              /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 0},          /* overlong, 4 bytes */
        {"ab\xed\xa0\x80", 2},            /* surrogate U+D800 */
        {"\xed\x9f\xbf", (size_t)-1},     /* U+D7FF */
        {"\xf4\x8f\xbf\xbf", (size_t)-1}, /* U+10FFFF */
        {"\xf4\x90\x80\x80", 0},          /* above U+10FFFF */
        {"x\x80", 1},                     /* lone continuation byte */
        {"\xe2\x82", 0},                  /* truncated */
        {"ok\xff", 2},
        {"\xf5\x80\x80\x80", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].s);
        size_t want = cases[i].bad == (size_t)-1 ? n : cases[i].bad;
        size_t got = sl_utf8_check((const unsigned char *)cases[i].s, n);
        CHECKF(got == want, "case %zu: got %zu, expected %zu", i, got, want);
    }
    iconv_t cd = iconv_open("UTF-32LE", "UTF-8");
    CHECK(cd != (iconv_t)-1);
    /* random strings of pieces that are often almost UTF-8 */
    static const unsigned char pieces[] = {'a',  0x7f, 0x80, 0xbf, 0xc2, 0xc1, 0xdf,
                                           0xe0, 0xa0, 0xed, 0x9f, 0xa0, 0xef, 0xf0,
                                           0x90, 0xf4, 0x8f, 0xf5, 0xff};
    srand(12345);
    int agree = 0, total = 20000;
    for (int k = 0; k < total; k++) {
        unsigned char s[48];
        size_t n = (size_t)(rand() % 12);
        for (size_t i = 0; i < n; i++)
            s[i] = pieces[rand() % (int)sizeof pieces];
        size_t a = sl_utf8_check(s, n), b = iconv_check(cd, s, n);
        if (a == b)
            agree++;
        else if (total - agree < 5)
            fprintf(stderr, "differ: n %zu ours %zu iconv %zu\n", n, a, b);
    }
    CHECKF(agree == total, "sl_utf8_check agrees with iconv on %d of %d random strings", agree,
           total);
    iconv_close(cd);
    return sl_test_finish("test_utf8");
}
