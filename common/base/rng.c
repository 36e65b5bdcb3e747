/* rng.c: xoshiro256** (Blackman & Vigna), seeded by splitmix64 over (seed, stream). */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t aha_mix64(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b * 0xd1b54a32d192ed03ULL);
    return splitmix64(&x);
}

void aha_rng_seed(aha_rng *rng, uint64_t seed, uint64_t stream)
{
    uint64_t x = aha_mix64(seed, stream + 1);
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3])) rng->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t aha_rng_u64(aha_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float aha_rng_f32(aha_rng *rng) { return (float)(aha_rng_u64(rng) >> 40) * 0x1.0p-24f; }
double aha_rng_f64(aha_rng *rng) { return (double)(aha_rng_u64(rng) >> 11) * 0x1.0p-53; }

uint64_t aha_rng_below(aha_rng *rng, uint64_t n)
{
    uint64_t limit = -n % n; /* 2^64 mod n */
    for (;;) {
        uint64_t r = aha_rng_u64(rng);
        if (r >= limit) return r % n;
    }
}

double aha_rng_normal(aha_rng *rng)
{
    double u1 = aha_rng_f64(rng), u2 = aha_rng_f64(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
