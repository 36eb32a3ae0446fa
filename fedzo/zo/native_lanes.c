/* The portable direction's update w += a * z on the CPU, regenerating z element by element
 * (no direction buffer), for one to three alphas applied in order, each rounded once.
 *
 * Built at first use by fedzo/zo/native_lanes.py with the system C compiler and called
 * through ctypes. The bits are fedzo.zo.noise.portable_bits': two rounds of the murmur3
 * finaliser over the group counter's low word xor the key's first word, then its high word
 * plus the key's second word. A Gaussian pair (positions 2g, 2g + 1) shares one hash: the
 * even element takes the quantile-table entry of its low 16 bits, the odd one of its high
 * 16 bits. A Rademacher group of 32 positions shares one hash: position p takes bit p mod 32,
 * 1 for +1. Each alpha is applied as torch's add_(z, alpha=a) does on the CPU: a fused
 * multiply-add, one rounding (fmaf; compiled with -ffp-contract=off so that nothing else is
 * contracted). The Python side checks the result bitwise against add_ before using it.
 *
 * Plain scalar C on purpose: on the hosts measured (AMD EPYC, AVX-512) the compiler's
 * vectorised table gathers were slower than scalar loads; the hash is cheap next to them.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_THREADS 64

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

static inline uint32_t group_hash(uint64_t g, uint32_t k0, uint32_t k1) {
    return mix32(mix32((uint32_t)g ^ k0) ^ ((uint32_t)(g >> 32) + k1));
}

static inline float update(float x, float z, const float *a, int count) {
    for (int j = 0; j < count; j++) x = fmaf(z, a[j], x);
    return x;
}

/* the Gaussian z of one position */
static inline float gaussian_at(uint64_t p, uint32_t k0, uint32_t k1, const float *table) {
    uint32_t h = group_hash(p >> 1, k0, k1);
    return table[(p & 1) ? (h >> 16) : (h & 0xFFFFu)];
}

/* whole pairs g .. g + m - 1 that share the counter's high word; w at the first's even element */
#define PAIRS(COUNT)                                                              \
    for (uint32_t q = 0; q < m; q++) {                                            \
        uint32_t h = mix32(mix32((lo + q) ^ k0) ^ hi);                            \
        float z0 = table[h & 0xFFFFu], z1 = table[h >> 16];                       \
        float x0 = w[2 * (int64_t)q], x1 = w[2 * (int64_t)q + 1];                 \
        for (int j = 0; j < COUNT; j++) {                                         \
            x0 = fmaf(z0, a[j], x0);                                              \
            x1 = fmaf(z1, a[j], x1);                                              \
        }                                                                         \
        w[2 * (int64_t)q] = x0;                                                   \
        w[2 * (int64_t)q + 1] = x1;                                               \
    }

static void gaussian_pairs(float *restrict w, uint64_t g, uint32_t m, uint32_t k0, uint32_t k1,
                           const float *restrict table, const float *restrict a, int count) {
    uint32_t lo = (uint32_t)g, hi = (uint32_t)(g >> 32) + k1;
    switch (count) { /* a constant trip count lets the compiler unroll the alphas */
    case 1: PAIRS(1) break;
    case 2: PAIRS(2) break;
    default: PAIRS(3) break;
    }
}

static void gaussian_range(float *w, int64_t n, uint64_t start, uint32_t k0, uint32_t k1,
                           const float *table, const float *a, int count) {
    int64_t i = 0;
    if ((start & 1) && n > 0) { /* an odd first position: the second half of its pair */
        w[0] = update(w[0], gaussian_at(start, k0, k1, table), a, count);
        i = 1;
    }
    uint64_t g = (start + (uint64_t)i) >> 1;
    int64_t pairs = (n - i) / 2;
    while (pairs > 0) {
        uint64_t room = (1ull << 32) - (g & 0xFFFFFFFFull); /* pairs before the high word changes */
        int64_t m = pairs < (int64_t)room ? pairs : (int64_t)room;
        if (m > 0x7FFFFFFF) m = 0x7FFFFFFF;
        gaussian_pairs(w + i, g, (uint32_t)m, k0, k1, table, a, count);
        i += 2 * m;
        g += (uint64_t)m;
        pairs -= m;
    }
    if (i < n) w[i] = update(w[i], gaussian_at(start + (uint64_t)i, k0, k1, table), a, count);
}

/* Rademacher: z = +-1 makes z * a exact, so fmaf(z, a, x) is x + (+-a) rounded once */
static inline float rademacher_at(uint32_t h, uint32_t bit) { return ((h >> bit) & 1u) ? 1.0f : -1.0f; }

#define GROUPS(COUNT)                                                             \
    for (; i + 32 <= n; i += 32, g++) {                                           \
        uint32_t h = group_hash(g, k0, k1);                                       \
        float *p = w + i;                                                         \
        for (uint32_t b = 0; b < 32; b++) {                                       \
            float x = p[b], z = rademacher_at(h, b);                              \
            for (int j = 0; j < COUNT; j++) x = fmaf(z, a[j], x);                 \
            p[b] = x;                                                             \
        }                                                                         \
    }

static void rademacher_range(float *w, int64_t n, uint64_t start, uint32_t k0, uint32_t k1,
                             const float *a, int count) {
    int64_t i = 0;
    for (; i < n && ((start + (uint64_t)i) & 31); i++) { /* up to the first whole group */
        uint64_t p = start + (uint64_t)i;
        w[i] = update(w[i], rademacher_at(group_hash(p >> 5, k0, k1), (uint32_t)(p & 31)), a, count);
    }
    uint64_t g = (start + (uint64_t)i) >> 5;
    switch (count) {
    case 1: GROUPS(1) break;
    case 2: GROUPS(2) break;
    default: GROUPS(3) break;
    }
    for (; i < n; i++) { /* the last, partial group */
        uint64_t p = start + (uint64_t)i;
        w[i] = update(w[i], rademacher_at(group_hash(p >> 5, k0, k1), (uint32_t)(p & 31)), a, count);
    }
}

/* One call's work: every segment (a tensor's elements, at its stream positions) cut into
 * blocks of BLOCK elements, handed out in turn through an atomic counter, so a thread the
 * scheduler delays (a loaded host) leaves its blocks to the others, and small tensors (norms,
 * biases) share the threads with the large ones. A block takes every entry (a direction's key
 * for that segment and its one to three alphas) in order before the next block: each element
 * is updated entry after entry, alpha after alpha, exactly as the entries applied one by one
 * over all the weights, while the block stays in the cache. */
#define BLOCK ((int64_t)1 << 16) /* whole Rademacher groups and Gaussian pairs */

struct job {
    const int64_t *segs;   /* per segment: the weights' address, the length, the first position */
    const int64_t *first;  /* per segment, the index of its first block; first[nsegs] = all blocks */
    int64_t nsegs, entries;
    const uint32_t *keys;  /* per entry, per segment: the key's two words */
    const float *alphas;   /* per entry: three slots */
    const int32_t *counts; /* per entry: how many of its slots apply (1-3) */
    const float *table;
    int gaussian;
    int64_t next; /* the next block to take (atomic) */
};

static void run_block(const struct job *j, int64_t b) {
    int64_t lo = 0, hi = j->nsegs - 1; /* the segment holding block b: first[s] <= b < first[s + 1] */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (j->first[mid] <= b) lo = mid; else hi = mid - 1;
    }
    const int64_t *seg = j->segs + 3 * lo;
    int64_t off = (b - j->first[lo]) * BLOCK, n = seg[1] - off < BLOCK ? seg[1] - off : BLOCK;
    float *w = (float *)(intptr_t)seg[0] + off;
    uint64_t start = (uint64_t)seg[2] + (uint64_t)off;
    for (int64_t e = 0; e < j->entries; e++) {
        const uint32_t *k = j->keys + 2 * (e * j->nsegs + lo);
        const float *a = j->alphas + 3 * e;
        if (j->gaussian)
            gaussian_range(w, n, start, k[0], k[1], j->table, a, j->counts[e]);
        else
            rademacher_range(w, n, start, k[0], k[1], a, j->counts[e]);
    }
}

static void *run_job(void *arg) {
    struct job *j = (struct job *)arg;
    int64_t blocks = j->first[j->nsegs];
    for (;;) {
        int64_t b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (b >= blocks) break;
        run_block(j, b);
    }
    return 0;
}

/* Every entry's update over every segment, over up to `threads` threads (each position's z
 * depends on its position and its segment's key only, so any split gives the same bits).
 * segs: 3 int64 per segment (address of contiguous float32 weights, length, first stream
 * position); keys: 2 words per entry per segment (entry-major); alphas: 3 floats per entry,
 * of which counts[e] (1-3) apply. Returns 0, or -1 for bad arguments (nothing written). */
int fedzo_lanes_apply_table(const int64_t *segs, int64_t nsegs, const uint32_t *keys, const float *alphas,
                            const int32_t *counts, int64_t entries, const float *table, int gaussian, int threads) {
    if (nsegs < 0 || entries < 0 || (gaussian && !table)) return -1;
    for (int64_t s = 0; s < nsegs; s++)
        if (segs[3 * s + 1] < 0 || (segs[3 * s + 1] > 0 && !segs[3 * s])) return -1;
    for (int64_t e = 0; e < entries; e++)
        if (counts[e] < 1 || counts[e] > 3) return -1;
    if (nsegs == 0 || entries == 0) return 0;
    int64_t first_small[65], *first = nsegs < 65 ? first_small : malloc(sizeof(int64_t) * (size_t)(nsegs + 1));
    if (!first) return -2;
    first[0] = 0;
    for (int64_t s = 0; s < nsegs; s++) first[s + 1] = first[s] + (segs[3 * s + 1] + BLOCK - 1) / BLOCK;
    struct job job = {segs, first, nsegs, entries, keys, alphas, counts, table, gaussian, 0};
    int64_t work = first[nsegs] * entries; /* block passes */
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > work / 16) threads = (int)(work / 16); /* a thread is worth a million element updates */
    if (threads < 1) threads = 1;
    pthread_t ids[MAX_THREADS];
    int started = 1;
    for (; started < threads; started++)
        if (pthread_create(&ids[started], 0, run_job, &job) != 0) break; /* none to be had: fewer */
    run_job(&job);
    for (int t = 1; t < started; t++) pthread_join(ids[t], 0);
    if (first != first_small) free(first);
    return 0;
}

/* w[0 .. n) at stream positions start .. start + n - 1: one segment, one entry. */
int fedzo_lanes_apply(float *w, int64_t n, uint64_t start, uint32_t k0, uint32_t k1, const float *table,
                      const float *a, int count, int gaussian, int threads) {
    if (n < 0 || count < 1 || count > 3 || (gaussian && !table)) return -1;
    int64_t seg[3] = {(int64_t)(intptr_t)w, n, (int64_t)start};
    uint32_t key[2] = {k0, k1};
    float slots[3] = {a[0], count > 1 ? a[1] : 0.0f, count > 2 ? a[2] : 0.0f};
    int32_t c = count;
    return fedzo_lanes_apply_table(seg, 1, key, slots, &c, 1, table, gaussian, threads);
}
