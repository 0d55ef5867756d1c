/*
 * sl_hash.h — FNV-1a hashes: the 64-bit one for model fingerprints, job hashes and part-file
 * names, the 32-bit one for the tokenizers' vocabulary tables. Not cryptographic: they detect
 * changed inputs and models and spread keys over buckets, they do not authenticate anything.
 */
#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SL_HASH_INIT 0xcbf29ce484222325ULL

static inline uint64_t sl_hash_bytes(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static inline uint64_t sl_hash_u64(uint64_t h, uint64_t v)
{
    return sl_hash_bytes(h, &v, sizeof v);
}

static inline uint64_t sl_hash_str(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return sl_hash_u64(h, 0xff); /* terminator, so ("ab","c") != ("a","bc") */
}

/* 32-bit FNV-1a of s[0..n): the key hash of the tokenizers' open-addressing tables. */
static inline uint32_t sl_hash32(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

#endif
