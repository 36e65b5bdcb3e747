/* rng.h: a small, portable, serialisable random generator (xoshiro256**, seeded through
 * splitmix64). Same seed + stream = same numbers on every machine, so sampling, data order and
 * init are reproducible and a checkpoint can store the whole state (4 words). */
#ifndef AHA_BASE_RNG_H
#define AHA_BASE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} aha_rng;

/* Independent streams of one seed: stream i of seed s is unrelated to stream j != i. */
void aha_rng_seed(aha_rng *rng, uint64_t seed, uint64_t stream);
uint64_t aha_rng_u64(aha_rng *rng);
/* uniform in [0, 1) with 24 (f32) or 53 (f64) random bits */
float aha_rng_f32(aha_rng *rng);
double aha_rng_f64(aha_rng *rng);
/* uniform integer in [0, n), n > 0, without modulo bias */
uint64_t aha_rng_below(aha_rng *rng, uint64_t n);
/* standard normal (Box-Muller) */
double aha_rng_normal(aha_rng *rng);
/* mix two words into one (for deriving seeds) */
uint64_t aha_mix64(uint64_t a, uint64_t b);

#endif
