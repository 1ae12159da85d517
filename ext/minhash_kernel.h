/* The MinHash inner loop: minimum over shingles of (a * h + b) mod 2^32, per permutation.
 *
 * 32-bit lane multiplies and unsigned minima need SSE4.1 (AVX2 for 8 lanes); the portable
 * baseline (SSE2) emulates both and runs ~2x slower. On x86-64 Linux with GCC or Clang the
 * function is compiled once per instruction set and the loader picks the best the CPU has
 * (target_clones), so one wheel is fast everywhere. Elsewhere it is plain C.
 */
#ifndef LLMPIPE_MINHASH_KERNEL_H
#define LLMPIPE_MINHASH_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && \
    (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 6)
#define LLMPIPE_TARGET_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define LLMPIPE_TARGET_CLONES
#endif

LLMPIPE_TARGET_CLONES
static void llmpipe_minhash_permute(const uint32_t *hashes, size_t count, const uint32_t *a,
                             const uint32_t *b, uint32_t *mins, size_t num_perm)
{
    for (size_t s = 0; s < count; s++) {
        const uint32_t h = hashes[s];
        for (size_t p = 0; p < num_perm; p++) {
            const uint32_t v = a[p] * h + b[p];
            mins[p] = v < mins[p] ? v : mins[p];
        }
    }
}

#endif
