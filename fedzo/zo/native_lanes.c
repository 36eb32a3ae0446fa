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

/* one call's work, shared by its threads: blocks of BLOCK elements handed out in turn, so a
 * thread the scheduler delays (a loaded host) leaves its blocks to the others */
#define BLOCK ((int64_t)1 << 16) /* whole Rademacher groups and Gaussian pairs */

struct job {
    float *w;
    int64_t n;
    uint64_t start;
    uint32_t k0, k1;
    const float *table, *a;
    int count, gaussian;
    int64_t next; /* the next block to take (atomic) */
};

static void *run_job(void *arg) {
    struct job *j = (struct job *)arg;
    for (;;) {
        int64_t b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        int64_t lo = b * BLOCK;
        if (lo >= j->n) break;
        int64_t len = j->n - lo < BLOCK ? j->n - lo : BLOCK;
        if (j->gaussian)
            gaussian_range(j->w + lo, len, j->start + (uint64_t)lo, j->k0, j->k1, j->table, j->a, j->count);
        else
            rademacher_range(j->w + lo, len, j->start + (uint64_t)lo, j->k0, j->k1, j->a, j->count);
    }
    return 0;
}

/* w[0 .. n) at stream positions start .. start + n - 1, over up to `threads` threads (each
 * position's z depends on its position only, so any split gives the same bits).
 * Returns 0, or -1 for bad arguments (nothing written). */
int fedzo_lanes_apply(float *w, int64_t n, uint64_t start, uint32_t k0, uint32_t k1, const float *table,
                      const float *a, int count, int gaussian, int threads) {
    if (n < 0 || count < 1 || count > 3 || (gaussian && !table)) return -1;
    struct job job = {w, n, start, k0, k1, table, a, count, gaussian, 0};
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > blocks / 16) threads = (int)(blocks / 16); /* a thread is worth a million elements */
    if (threads < 1) threads = 1;
    pthread_t ids[MAX_THREADS];
    int started = 1;
    for (; started < threads; started++)
        if (pthread_create(&ids[started], 0, run_job, &job) != 0) break; /* none to be had: fewer */
    run_job(&job);
    for (int t = 1; t < started; t++) pthread_join(ids[t], 0);
    return 0;
}
