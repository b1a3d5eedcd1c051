// Byte planes for compression, and XXH64, written from the public xxHash specification.
#include "CKernels.h"
#include "clones.h"
#include <string.h>

static inline uint16_t rotl16(uint16_t x, int r) { return (uint16_t)((x << r) | (x >> (16 - r))); }
static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

MOE_CLONES
void moe_split16(const void *in, size_t n, uint8_t *hi, uint8_t *lo) {
    const uint8_t *p = (const uint8_t *)in;
    for (size_t i = 0; i < n; i++) {
        uint16_t x;
        memcpy(&x, p + 2 * i, 2);
        x = rotl16(x, 1);
        hi[i] = (uint8_t)(x >> 8);
        lo[i] = (uint8_t)x;
    }
}

MOE_CLONES
void moe_join16(const uint8_t *hi, const uint8_t *lo, size_t n, void *out) {
    uint8_t *p = (uint8_t *)out;
    for (size_t i = 0; i < n; i++) {
        uint16_t x = (uint16_t)(((uint16_t)hi[i] << 8) | lo[i]);
        x = rotl16(x, 15);
        memcpy(p + 2 * i, &x, 2);
    }
}

MOE_CLONES
void moe_split32(const void *in, size_t n, uint8_t *p0, uint8_t *p1, uint8_t *p2, uint8_t *p3) {
    const uint8_t *p = (const uint8_t *)in;
    for (size_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, p + 4 * i, 4);
        x = rotl32(x, 1);
        p0[i] = (uint8_t)(x >> 24);
        p1[i] = (uint8_t)(x >> 16);
        p2[i] = (uint8_t)(x >> 8);
        p3[i] = (uint8_t)x;
    }
}

MOE_CLONES
void moe_join32(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3, size_t n, void *out) {
    uint8_t *p = (uint8_t *)out;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = ((uint32_t)p0[i] << 24) | ((uint32_t)p1[i] << 16) | ((uint32_t)p2[i] << 8) | p3[i];
        x = rotl32(x, 31);
        memcpy(p + 4 * i, &x, 4);
    }
}

void moe_split_nibbles(const uint8_t *in, size_t n, uint8_t *hi, uint8_t *lo) {
    size_t pairs = n / 2;
    for (size_t i = 0; i < pairs; i++) {
        uint8_t a = (uint8_t)((in[2 * i] << 1) | (in[2 * i] >> 7));
        uint8_t b = (uint8_t)((in[2 * i + 1] << 1) | (in[2 * i + 1] >> 7));
        hi[i] = (uint8_t)((a & 0xF0) | (b >> 4));
        lo[i] = (uint8_t)((a << 4) | (b & 0x0F));
    }
    if (n & 1) {
        uint8_t a = (uint8_t)((in[n - 1] << 1) | (in[n - 1] >> 7));
        hi[pairs] = (uint8_t)(a & 0xF0);
        lo[pairs] = (uint8_t)(a << 4);
    }
}

void moe_join_nibbles(const uint8_t *hi, const uint8_t *lo, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        uint8_t h = (i & 1) ? (uint8_t)(hi[i / 2] << 4) : (uint8_t)(hi[i / 2] & 0xF0);
        uint8_t l = (i & 1) ? (uint8_t)(lo[i / 2] & 0x0F) : (uint8_t)(lo[i / 2] >> 4);
        uint8_t a = (uint8_t)(h | l);
        out[i] = (uint8_t)((a >> 1) | (a << 7));
    }
}

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t xxh_round(uint64_t acc, uint64_t input) {
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

static inline uint64_t read64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t read32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

uint64_t moe_xxh64(const void *data, size_t len, uint64_t seed) {
    moe_xxh64_state s;
    moe_xxh64_reset(&s, seed);
    moe_xxh64_update(&s, data, len);
    return moe_xxh64_digest(&s);
}

void moe_xxh64_reset(moe_xxh64_state *s, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->v[0] = seed + P1 + P2;
    s->v[1] = seed + P2;
    s->v[2] = seed;
    s->v[3] = seed - P1;
    s->seed = seed;
}

void moe_xxh64_update(moe_xxh64_state *s, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    const uint8_t *end = p + len;
    s->total += len;
    if (s->buffered + len < 32) {
        memcpy(s->buffer + s->buffered, p, len);
        s->buffered += (uint32_t)len;
        return;
    }
    if (s->buffered > 0) {
        size_t fill = 32 - s->buffered;
        memcpy(s->buffer + s->buffered, p, fill);
        s->v[0] = xxh_round(s->v[0], read64(s->buffer));
        s->v[1] = xxh_round(s->v[1], read64(s->buffer + 8));
        s->v[2] = xxh_round(s->v[2], read64(s->buffer + 16));
        s->v[3] = xxh_round(s->v[3], read64(s->buffer + 24));
        p += fill;
        s->buffered = 0;
    }
    while (p + 32 <= end) {
        s->v[0] = xxh_round(s->v[0], read64(p));
        s->v[1] = xxh_round(s->v[1], read64(p + 8));
        s->v[2] = xxh_round(s->v[2], read64(p + 16));
        s->v[3] = xxh_round(s->v[3], read64(p + 24));
        p += 32;
    }
    if (p < end) {
        memcpy(s->buffer, p, (size_t)(end - p));
        s->buffered = (uint32_t)(end - p);
    }
}

uint64_t moe_xxh64_digest(const moe_xxh64_state *s) {
    uint64_t h;
    if (s->total >= 32) {
        h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
        h = xxh_merge(h, s->v[0]);
        h = xxh_merge(h, s->v[1]);
        h = xxh_merge(h, s->v[2]);
        h = xxh_merge(h, s->v[3]);
    } else {
        h = s->seed + P5;
    }
    h += s->total;
    const uint8_t *p = s->buffer;
    const uint8_t *end = p + s->buffered;
    while (p + 8 <= end) {
        h ^= xxh_round(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}
