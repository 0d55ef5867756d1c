/*
 * elementwise.h — per-element math shared by the CPU (C11) and CUDA backends, so both compute
 * exactly the same formulas. Marked host+device under nvcc.
 */
#ifndef SL_ELEMENTWISE_H
#define SL_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SL_HD __host__ __device__ __forceinline__
#else
#define SL_HD static inline
#endif

/* NaN in gives NaN out, in every activation: a NaN weight or input must reach the output, where
 * it is seen (a NaN row fails), rather than turn into a plausible finite answer. The smooth
 * activations below propagate NaN by themselves (erff, expf, tanhf of NaN are NaN). ReLU is
 * where it got lost: `x > 0 ? x : 0` and fmaxf(x, 0) (IEEE maxNum: a NaN operand is dropped)
 * both return 0 for NaN. So ReLU tests for NaN explicitly (x != x), like torch.relu; for every
 * other input it is bit for bit what it was (-0 -> +0, Inf -> Inf, -Inf -> 0). */
SL_HD float sl_relu(float x) { return (x > 0.0f || x != x) ? x : 0.0f; }
/* Exact GELU: 0.5 x (1 + erf(x / sqrt(2))), as torch.nn.GELU() and BERT. */
SL_HD float sl_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
SL_HD float sl_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
SL_HD float sl_silu(float x) { return x / (1.0f + expf(-x)); }
SL_HD float sl_tanh(float x) { return tanhf(x); }

/* act: an sl_act_t value (0 none, 1 relu, 2 gelu, 3 silu, 4 tanh, 5 sigmoid). */
SL_HD float sl_apply_act(int act, float x)
{
    switch (act) {
    case 1: return sl_relu(x);
    case 2: return sl_gelu(x);
    case 3: return sl_silu(x);
    case 4: return sl_tanh(x);
    case 5: return sl_sigmoid(x);
    default: return x;
    }
}

/* The order of sl_topk_rows as an unsigned key: a larger value has a larger key; -0 and +0 get
 * the same key (they are equal values), every NaN the largest key (above +Inf, as torch.topk). */
SL_HD uint32_t sl_order_key(float v)
{
    if (v != v)
        return 0xffffffffu;
    if (v == 0.0f)
        v = 0.0f; /* -0 -> +0 */
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* IEEE half <-> float, round to nearest even; handles subnormals, Inf and NaN. */
SL_HD float sl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

SL_HD uint16_t sl_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx + 0x0fffu + ((absx >> 13) & 1u); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

SL_HD float sl_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

SL_HD uint16_t sl_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN stays a (quiet) NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

#endif
