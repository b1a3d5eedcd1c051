#include "CKernels.h"
#include "clones.h"

#include <string.h>

/* The inner loops of compressed-tensors' 4-bit encoders (FourBitQuantization in Swift states the rules and picks
   scales). Plain float32 operations, each rounding written out and no contraction (-ffp-contract=off), so the
   vector clones give the scalar rule's bits. */

static inline float round_bf16(float f) {
    /* Round to nearest even at bit 16 of the pattern; callers pass finite values (checked before). */
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint8_t fp4_code(float q) {
    /* Clamp to E2M1's range, then count the thresholds between neighbouring values that |q| passes: each tie
       goes to the even code, so the comparisons alternate between > and >=. A value below zero keeps its sign
       bit even when it rounds to zero (compressed-tensors multiplies the magnitude by sign(q)). */
    q = q < -6.0f ? -6.0f : (q > 6.0f ? 6.0f : q);
    float a = q < 0.0f ? -q : q;
    uint8_t m = (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
    return (uint8_t)(m | ((q < 0.0f) << 3));
}

MOE_CLONES
void moe_fp4_pack_divided(const float *x, size_t n, float divisor, uint8_t *out) {
    /* NVFP4: q = x / divisor in float32. */
    for (size_t j = 0; j < n / 2; j++) {
        uint8_t lo = fp4_code(x[2 * j] / divisor);
        uint8_t hi = fp4_code(x[2 * j + 1] / divisor);
        out[j] = (uint8_t)(lo | (hi << 4));
    }
}

MOE_CLONES
void moe_fp4_pack_multiplied(const float *x, size_t n, float multiplier, int to_bf16, uint8_t *out) {
    /* MXFP4: q = x * multiplier (the exact inverse of a power-of-two scale, so the same as dividing), rounded
       to BF16 when the weights are BF16 (torch rounds a BF16 division's result). */
    if (to_bf16) {
        for (size_t j = 0; j < n / 2; j++) {
            uint8_t lo = fp4_code(round_bf16(x[2 * j] * multiplier));
            uint8_t hi = fp4_code(round_bf16(x[2 * j + 1] * multiplier));
            out[j] = (uint8_t)(lo | (hi << 4));
        }
    } else {
        for (size_t j = 0; j < n / 2; j++) {
            uint8_t lo = fp4_code(x[2 * j] * multiplier);
            uint8_t hi = fp4_code(x[2 * j + 1] * multiplier);
            out[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

MOE_CLONES
void moe_int4_pack(const float *x, size_t n, float scale, int to_bf16, uint32_t *words) {
    /* int4: q = round-half-even(clamp(x / scale [rounded to BF16], -8, 7)) stored as q + 8, element j in bits
       4 (j % 8) of word j / 8; n is a multiple of 8. rint rounds half to even in the default rounding mode. */
    uint8_t nib[256];
    for (size_t c0 = 0; c0 < n; c0 += 256) {
        size_t m = n - c0 < 256 ? n - c0 : 256;
        for (size_t k = 0; k < m; k++) {
            float q = x[c0 + k] / scale;
            if (to_bf16) q = round_bf16(q);
            q = q < -8.0f ? -8.0f : (q > 7.0f ? 7.0f : q);
            nib[k] = (uint8_t)((int)__builtin_rintf(q) + 8);
        }
        for (size_t w = 0; w < m / 8; w++) {
            uint32_t word = 0;
            for (int k = 0; k < 8; k++) word |= (uint32_t)nib[w * 8 + k] << (4 * k);
            words[(c0 / 8) + w] = word;
        }
    }
}

MOE_CLONES
void moe_fp4_pack_ocp(const float *x, size_t n, float multiplier, uint8_t *out) {
    /* OpenAI's triton_kernels (gpt-oss): codes of x * multiplier in float32, rounded to nearest E2M1 with ties to
       even and saturated at 6 like fp4_code, but the sign is the sign bit (a -0.0 becomes code 8). */
    for (size_t j = 0; j < n / 2; j++) {
        float a = x[2 * j] * multiplier, b = x[2 * j + 1] * multiplier;
        uint32_t sa, sb;
        memcpy(&sa, &a, sizeof sa);
        memcpy(&sb, &b, sizeof sb);
        uint8_t lo = (uint8_t)((fp4_code(a) & 7u) | ((sa >> 28) & 8u));
        uint8_t hi = (uint8_t)((fp4_code(b) & 7u) | ((sb >> 28) & 8u));
        out[j] = (uint8_t)(lo | (hi << 4));
    }
}
