#ifndef MOETOOL_CKERNELS_H
#define MOETOOL_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Hot loops of FP8 block quantization, written in C so that the compiler
/// vectorizes them. Each has a scalar Swift twin in NumberFormats that tests
/// compare it against; the math is the same bit for bit.

/// Largest |x| over a rows x cols block (row stride `stride` floats), ignoring
/// NaN and infinities, which are counted in *nonfinite.
float moe_block_amax(const float *x, size_t rows, size_t cols, size_t stride, size_t *nonfinite);

/// out[r * out_stride + c] = E4M3FN_RNE(x[r * stride + c] / s), saturating at +-448.
void moe_block_encode_e4m3(const float *x, size_t rows, size_t cols, size_t stride, float s,
                           uint8_t *out, size_t out_stride);

/// The same two for a band of rows of BF16 values read in place (possibly unaligned; strides in
/// elements), every `block`-column block at once, row by row: amax_bits[b] gets the bits of block b's
/// largest finite |x| (its BF16 pattern), nonfinite[b] its count of NaN and infinities; the encoder
/// divides block b by scales[b]. Identical results to converting the band to float32 first.
void moe_band_amax_bf16(const void *x, size_t rows, size_t cols, size_t stride, size_t block,
                        uint16_t *amax_bits, size_t *nonfinite);
void moe_band_encode_e4m3_bf16(const void *x, size_t rows, size_t cols, size_t stride, size_t block,
                               const float *scales, uint8_t *out, size_t out_stride);

/// BF16 (possibly unaligned) to float32.
void moe_bf16_to_f32(const void *in, float *out, size_t n);



/// out[i] = BF16_RNE(table[codes[i]] * s) for n elements (table: the 256 E4M3 values as float32).
void moe_decode_e4m3_to_bf16(const uint8_t *codes, size_t n, float s, const float *table, uint16_t *out);

/// A band of rows x cols codes (row stride `stride`) to BF16 (row stride `out_stride`), block b of every
/// `block` columns with scale scales[b], every element as moe_decode_e4m3_to_bf16 computes it.
/// `lut`: room for 256 values per block.
void moe_decode_band_e4m3_to_bf16(const uint8_t *codes, size_t rows, size_t cols, size_t stride, size_t block,
                                  const float *scales, const float *table, uint16_t *lut, uint16_t *out,
                                  size_t out_stride);

/// out[i] = table[codes[i]] * s (table: the 256 E4M3 values as float32): one row of an FP8 weight.
void moe_decode_e4m3_to_f32(const uint8_t *codes, size_t n, float s, const float *table, float *out);

/// For each of `tokens` vectors x_t (stride x_stride): out[t * out_stride] = dot(row, x_t) over n
/// floats, summed in sixteen float32 lanes then across them.
void moe_dot_rows(const float *row, const float *x, size_t n, size_t tokens, size_t x_stride, float *out, size_t out_stride);

/// Keeps freed large buffers in the heap (glibc mallopt) so that repeated band-sized
/// allocations reuse memory instead of faulting in fresh zeroed pages each time.
void moe_keep_large_buffers(void);
/// Byte planes for compression. 16-bit values are rotated left by one bit (the sign moves to
/// the bottom, so BF16's high byte is its whole exponent) and split into high and low bytes.
void moe_split16(const void *in, size_t n, uint8_t *hi, uint8_t *lo);
void moe_join16(const uint8_t *hi, const uint8_t *lo, size_t n, void *out);
/// 32-bit values rotated left by one bit, split into four byte planes, most significant first.
void moe_split32(const void *in, size_t n, uint8_t *p0, uint8_t *p1, uint8_t *p2, uint8_t *p3);
void moe_join32(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3, size_t n, void *out);
/// Bytes rotated left by one bit, their high nibbles packed two per byte in `hi`, low nibbles
/// in `lo` (each (n + 1) / 2 bytes).
void moe_split_nibbles(const uint8_t *in, size_t n, uint8_t *hi, uint8_t *lo);
void moe_join_nibbles(const uint8_t *hi, const uint8_t *lo, size_t n, uint8_t *out);

/// XXH64 of `len` bytes (the xxHash specification).
uint64_t moe_xxh64(const void *data, size_t len, uint64_t seed);

/// XXH64 over data given in pieces: reset, update any number of times, digest (same result as
/// moe_xxh64 over the concatenation).
typedef struct {
    uint64_t v[4];
    uint64_t total;
    uint64_t seed;
    uint8_t buffer[32];
    uint32_t buffered;
} moe_xxh64_state;
void moe_xxh64_reset(moe_xxh64_state *s, uint64_t seed);
void moe_xxh64_update(moe_xxh64_state *s, const void *data, size_t len);
uint64_t moe_xxh64_digest(const moe_xxh64_state *s);

/// Elements of v[0..n) that are BF16 infinities or NaNs.
size_t moe_count_nonfinite_bf16(const uint16_t *v, size_t n);

/// Rows of 4-bit codes (element j of a row: the low nibble of byte j/2 when j is even, the high one when odd;
/// rows `row_bytes` apart) to values `(levels[code] - offset) * multiplier`, offset and multiplier per
/// (row, group of `group_size` elements), [rows][groups] (offsets may be NULL: 0). Into `out_bf16` (rows x cols,
/// each value rounded to nearest even) and/or `out_f32` (the float32 value, or its BF16 rounding when
/// `round_to_bf16`). compressed-tensors' INT4 (levels q - 8), NVFP4 and MX FP4 (levels E2M1) all decode so.
/// dst[c * dst_stride + r] = src[r * cols + c]: a band of `rows` float32 rows (cols each) transposed into columns
/// of a wider matrix whose rows are dst_stride apart.
void moe_transpose_band_f32(const float *src, size_t rows, size_t cols, float *dst, size_t dst_stride);
/// dst (cols x rows) = the transpose of src (rows x cols), 16-bit elements.
void moe_transpose_u16(const uint16_t *src, size_t rows, size_t cols, uint16_t *dst);
/// dst[c * dst_stride + r] = src[r * cols + c]: rows of src transposed into columns of a wider matrix (a band of
/// a transpose shared over threads).
void moe_transpose_u16_into(const uint16_t *src, size_t rows, size_t cols, uint16_t *dst, size_t dst_stride);

void moe_decode_nibbles(const uint8_t *codes, size_t rows, size_t cols, size_t row_bytes, const float *levels,
                        const float *offsets, const float *multipliers, size_t groups, size_t group_size,
                        int round_to_bf16, float *out_f32, uint16_t *out_bf16);

/* 4-bit encoders (fourbit.c; the rules: FourBitQuantization.swift). n values from x; n even (int4: a multiple
   of 8). NVFP4: codes of x / divisor. MXFP4: codes of x * multiplier, rounded to BF16 when to_bf16. int4:
   round-half-even(clamp(x / scale [BF16-rounded], -8, 7)) + 8 as nibbles, eight to a little-endian word. */
void moe_fp4_pack_divided(const float *x, size_t n, float divisor, uint8_t *out);
void moe_fp4_pack_multiplied(const float *x, size_t n, float multiplier, int to_bf16, uint8_t *out);
void moe_int4_pack(const float *x, size_t n, float scale, int to_bf16, uint32_t *words);
/* gpt-oss's MXFP4 (triton_kernels): codes of x * multiplier, the sign from the sign bit. */
void moe_fp4_pack_ocp(const float *x, size_t n, float multiplier, uint8_t *out);

#endif
