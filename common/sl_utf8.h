/*
 * sl_utf8.h — strict UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF), shared by the tokenizers (vocabularies, input rows) and by convert/export
 * (text fields), so that every part of shardline accepts exactly the same strings.
 */
#ifndef SL_UTF8_H
#define SL_UTF8_H

#include <stddef.h>

/* Offset of the first byte of s[0..n) that is not part of valid UTF-8, or n when all of it is
 * valid. */
size_t sl_utf8_check(const unsigned char *s, size_t n);

#endif
