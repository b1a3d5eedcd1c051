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

/// BF16 (possibly unaligned) to float32.
void moe_bf16_to_f32(const void *in, float *out, size_t n);



/// out[i] = BF16_RNE(table[codes[i]] * s) for n elements (table: the 256 E4M3 values as float32).
void moe_decode_e4m3_to_bf16(const uint8_t *codes, size_t n, float s, const float *table, uint16_t *out);

/// Keeps freed large buffers in the heap (glibc mallopt) so that repeated band-sized
/// allocations reuse memory instead of faulting in fresh zeroed pages each time.
void moe_keep_large_buffers(void);
#endif
