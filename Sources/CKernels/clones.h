#ifndef MOE_CLONES_H
#define MOE_CLONES_H
/* Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time by the
   CPU (ifunc). They use the same IEEE float32 operations in each version (no contraction into
   FMA: -ffp-contract=off), so every version gives identical results. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOE_NO_CLONES 1 /* ThreadSanitizer instruments the ifunc resolvers, which run before it starts */
#endif
#endif
#if defined(__x86_64__) && defined(__linux__) && !defined(MOE_NO_CLONES)
#define MOE_CLONES __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define MOE_CLONES
#endif
#endif
