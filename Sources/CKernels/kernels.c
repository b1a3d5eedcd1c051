#include "CKernels.h"
#include "clones.h"

#include <string.h>

static inline uint32_t bits_of(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float float_of(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}


MOE_CLONES
float moe_block_amax(const float *x, size_t rows, size_t cols, size_t stride, size_t *nonfinite) {
    /* Non-negative floats order like their bit patterns: an integer max vectorizes without fast-math. */
    uint32_t amax = 0;
    size_t bad = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * stride;
        uint32_t m = 0;
        uint32_t b = 0;
        for (size_t c = 0; c < cols; c++) {
            uint32_t a = bits_of(row[c]) & 0x7fffffffu;
            uint32_t finite = a < 0x7f800000u;
            b += 1u - finite;
            a = finite ? a : 0u;
            m = a > m ? a : m;
        }
        amax = m > amax ? m : amax;
        bad += b;
    }
    *nonfinite += bad;
    return float_of(amax);
}

/* float32 -> E4M3FN, round to nearest even, saturating; see FloatEncoding.e4m3 in Swift. */
static inline uint8_t e4m3(float f) {
    uint32_t b = bits_of(f);
    uint32_t sign = (b >> 24) & 0x80u;
    uint32_t a = b & 0x7fffffffu;
    /* Normal range: round the mantissa to 3 bits at bit 20, then rebias the exponent from 127 to 7. */
    uint32_t rounded = a + 0x7ffffu + ((a >> 20) & 1u);
    uint32_t code = (rounded >> 20) - 0x3c0u;
    /* Below 2^-6: multiples of 2^-9; adding 1.5 * 2^23 leaves the rounded integer in the low bits. */
    uint32_t sub = bits_of(float_of(a) * 512.0f + 12582912.0f) & 0xfu;
    code = a < 0x3c800000u ? sub : code;
    code = a >= 0x43e00000u ? 0x7eu : code;   /* |x| >= 448, infinities included */
    code = a > 0x7f800000u ? 0x7fu : code;    /* NaN */
    return (uint8_t)(code | sign);
}

MOE_CLONES
void moe_block_encode_e4m3(const float *x, size_t rows, size_t cols, size_t stride, float s,
                           uint8_t *out, size_t out_stride) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * stride;
        uint8_t *dst = out + r * out_stride;
        for (size_t c = 0; c < cols; c++) dst[c] = e4m3(row[c] / s);
    }
}

static inline uint16_t load16(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return h;
}

/* BF16 bands are read row by row, front to back (the order the hardware prefetches in): reading a
   128x128 block of a wide row-major weight straight from memory touches 128 pages 256 bytes at a time. */
MOE_CLONES
void moe_band_amax_bf16(const void *x, size_t rows, size_t cols, size_t stride, size_t block,
                        uint16_t *amax_bits, size_t *nonfinite) {
    /* |x| of a BF16 orders like its low 15 bits, as in moe_block_amax. */
    const unsigned char *base = (const unsigned char *)x;
    size_t blocks = (cols + block - 1) / block;
    for (size_t b = 0; b < blocks; b++) {
        amax_bits[b] = 0;
        nonfinite[b] = 0;
    }
    for (size_t r = 0; r < rows; r++) {
        const unsigned char *row = base + 2 * r * stride;
        for (size_t b = 0; b < blocks; b++) {
            size_t c0 = b * block, c1 = c0 + block < cols ? c0 + block : cols;
            /* 16-bit lanes throughout, so that it vectorizes (32 values per AVX-512 step). */
            const unsigned char *p = row + 2 * c0;
            size_t n = c1 - c0;
            unsigned m = 0, bad = 0;
            for (size_t c = 0; c < n; c++) {
                unsigned a = load16(p + 2 * c) & 0x7fffu;
                unsigned finite = a < 0x7f80u;
                bad += finite ^ 1u;
                a &= 0u - finite;
                m = a > m ? a : m;
            }
            amax_bits[b] = m > amax_bits[b] ? m : amax_bits[b];
            nonfinite[b] += bad;
        }
    }
}

MOE_CLONES
void moe_band_encode_e4m3_bf16(const void *x, size_t rows, size_t cols, size_t stride, size_t block,
                               const float *scales, uint8_t *out, size_t out_stride) {
    const unsigned char *base = (const unsigned char *)x;
    size_t blocks = (cols + block - 1) / block;
    for (size_t r = 0; r < rows; r++) {
        const unsigned char *row = base + 2 * r * stride;
        uint8_t *dst = out + r * out_stride;
        for (size_t b = 0; b < blocks; b++) {
            size_t c0 = b * block, c1 = c0 + block < cols ? c0 + block : cols;
            float s = scales[b];
            for (size_t c = c0; c < c1; c++) dst[c] = e4m3(float_of((uint32_t)load16(row + 2 * c) << 16) / s);
        }
    }
}

MOE_CLONES
void moe_bf16_to_f32(const void *in, float *out, size_t n) {
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, sizeof h);
        out[i] = float_of((uint32_t)h << 16);
    }
}

MOE_CLONES
void moe_decode_e4m3_to_bf16(const uint8_t *codes, size_t n, float s, const float *table, uint16_t *out) {
    for (size_t i = 0; i < n; i++) {
        float v = table[codes[i]] * s;
        uint32_t b = bits_of(v);
        /* Round to nearest even; NaN stays NaN (quiet). */
        uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
        uint32_t nan = ((b >> 16) | 0x40u) & 0xffffu;
        out[i] = (uint16_t)(((b & 0x7fffffffu) > 0x7f800000u) ? nan : rounded);
    }
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void moe_keep_large_buffers(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

MOE_CLONES
void moe_decode_e4m3_to_f32(const uint8_t *codes, size_t n, float s, const float *table, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = table[codes[i]] * s;
}

MOE_CLONES
void moe_dot_rows(const float *row, const float *x, size_t n, size_t tokens, size_t x_stride, float *out, size_t out_stride) {
    for (size_t t = 0; t < tokens; t++) {
        const float *xt = x + t * x_stride;
        float acc[16] = {0};
        size_t i = 0;
        for (; i + 16 <= n; i += 16)
            for (size_t j = 0; j < 16; j++) acc[j] += row[i + j] * xt[i + j];
        float s = 0;
        for (size_t j = 0; j < 16; j++) s += acc[j];
        for (; i < n; i++) s += row[i] * xt[i];
        out[t * out_stride] = s;
    }
}

MOE_CLONES
void moe_decode_band_e4m3_to_bf16(const uint8_t *codes, size_t rows, size_t cols, size_t stride, size_t block,
                                  const float *scales, const float *table, uint16_t *lut, uint16_t *out,
                                  size_t out_stride) {
    /* Every element of a block shares its scale, so its 256 possible results are computed once, by
       the same arithmetic as moe_decode_e4m3_to_bf16, and looked up; rows are then read front to
       back (the order the hardware prefetches in), each block of a row through its own table. */
    size_t blocks = (cols + block - 1) / block;
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    for (size_t b = 0; b < blocks; b++) moe_decode_e4m3_to_bf16(all, 256, scales[b], table, lut + 256 * b);
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *src = codes + r * stride;
        uint16_t *dst = out + r * out_stride;
        for (size_t b = 0; b < blocks; b++) {
            const uint16_t *t = lut + 256 * b;
            size_t c1 = (b + 1) * block < cols ? (b + 1) * block : cols;
            for (size_t c = b * block; c < c1; c++) dst[c] = t[src[c]];
        }
    }
}

MOE_CLONES
size_t moe_count_nonfinite_bf16(const uint16_t *v, size_t n) {
    /* All-ones exponent: infinity or NaN. Counted without a branch so the loop vectorizes. */
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += (v[i] & 0x7f80u) == 0x7f80u;
    return count;
}

static inline uint16_t bf16_rne(float v) {
    uint32_t b = bits_of(v);
    uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    uint32_t nan = ((b >> 16) | 0x40u) & 0xffffu;
    return (uint16_t)(((b & 0x7fffffffu) > 0x7f800000u) ? nan : rounded);
}

#if defined(__x86_64__) && defined(__linux__) && !defined(MOE_NO_CLONES)
#include <immintrin.h>
#define MOE_NIBBLES_AVX512 1
/* 16 bytes (32 nibbles; element 2j is the low nibble of byte j) looked up in a 16-entry table that fits one
   register: vpermps picks table[index] for 16 indices at once (the low nibbles, then the high ones), and two
   two-source permutes put them back in element order. Each value is the table's, bit for bit, as the scalar
   lookup gives it. */
__attribute__((target("avx512f")))
static void lookup32_avx512(const uint8_t *src, const float *table, float *dst) {
    __m512 t = _mm512_loadu_ps(table);
    __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)src));
    __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)), t);
    __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), t);
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(lo, first, hi));
    _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(lo, second, hi));
}
#endif

MOE_CLONES
void moe_decode_nibbles(const uint8_t *codes, size_t rows, size_t cols, size_t row_bytes, const float *levels,
                        const float *offsets, const float *multipliers, size_t groups, size_t group_size,
                        int round_to_bf16, float *out_f32, uint16_t *out_bf16) {
    /* Every element of a group has one of 16 values, (levels[c] - offset) * multiplier: they are computed
       once per group (the same float32 operations the scalar rule does, then one rounding to BF16), and each
       nibble (element j: low nibble of byte j/2 when j is even, high when odd) looks its value up. */
#ifdef MOE_NIBBLES_AVX512
    const int wide = out_f32 && __builtin_cpu_supports("avx512f");
#endif
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *src = codes + r * row_bytes;
        for (size_t g = 0; g < groups; g++) {
            float m = multipliers[r * groups + g];
            float off = offsets ? offsets[r * groups + g] : 0.0f;
            float tf[16];
            uint16_t tb[16];
            for (int c = 0; c < 16; c++) {
                float v = (levels[c] - off) * m;
                tb[c] = bf16_rne(v);
                tf[c] = round_to_bf16 ? float_of((uint32_t)tb[c] << 16) : v;
            }
            size_t c0 = g * group_size, c1 = c0 + group_size < cols ? c0 + group_size : cols;
            if (out_bf16) {
                uint16_t *dst = out_bf16 + r * cols;
                size_t c = c0;
                if (c & 1) { dst[c] = tb[src[c >> 1] >> 4]; c++; }
                /* A byte at a time: its low nibble, then its high one. */
                for (; c + 1 < c1; c += 2) {
                    uint8_t b = src[c >> 1];
                    dst[c] = tb[b & 15];
                    dst[c + 1] = tb[b >> 4];
                }
                if (c < c1) dst[c] = tb[src[c >> 1] & 15];
            }
            if (out_f32) {
                /* As for BF16: a byte at a time, so that no shift depends on the column. */
                float *dst = out_f32 + r * cols;
                size_t c = c0;
#ifdef MOE_NIBBLES_AVX512
                if (wide && !(c & 1)) for (; c + 32 <= c1; c += 32) lookup32_avx512(src + (c >> 1), tf, dst + c);
#endif
                if (c & 1) { dst[c] = tf[src[c >> 1] >> 4]; c++; }
                for (; c + 1 < c1; c += 2) {
                    uint8_t b = src[c >> 1];
                    dst[c] = tf[b & 15];
                    dst[c + 1] = tf[b >> 4];
                }
                if (c < c1) dst[c] = tf[src[c >> 1] & 15];
            }
        }
    }
}

MOE_CLONES
void moe_transpose_band_f32(const float *src, size_t rows, size_t cols, float *dst, size_t dst_stride) {
    /* dst[c * dst_stride + r] = src[r * cols + c] for a band of at most a few dozen rows: the band's rows are as
       many pages (the first level of the TLB holds them), and each dst row receives `rows` consecutive floats. */
    enum { TC = 64 };
    for (size_t c0 = 0; c0 < cols; c0 += TC) {
        size_t c1 = c0 + TC < cols ? c0 + TC : cols;
        for (size_t c = c0; c < c1; c++) {
            float *d = dst + c * dst_stride;
            for (size_t r = 0; r < rows; r++) d[r] = src[r * cols + c];
        }
    }
}

MOE_CLONES
void moe_transpose_u16_into(const uint16_t *src, size_t rows, size_t cols, uint16_t *dst, size_t dst_stride) {
    /* dst[c * dst_stride + r] = src[r * cols + c] in tiles of TR rows x TC columns: TR rows of src are TR pages at
       most (the first level of the TLB holds them all) and stay in L1 while each row of the dst tile is written in
       one run. */
    enum { TR = 16, TC = 256 };
    for (size_t r0 = 0; r0 < rows; r0 += TR) {
        size_t r1 = r0 + TR < rows ? r0 + TR : rows;
        for (size_t c0 = 0; c0 < cols; c0 += TC) {
            size_t c1 = c0 + TC < cols ? c0 + TC : cols;
            for (size_t c = c0; c < c1; c++) {
                uint16_t *d = dst + c * dst_stride;
                for (size_t r = r0; r < r1; r++) d[r] = src[r * cols + c];
            }
        }
    }
}

void moe_transpose_u16(const uint16_t *src, size_t rows, size_t cols, uint16_t *dst) {
    moe_transpose_u16_into(src, rows, cols, dst, rows);
}
