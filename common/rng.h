/*
 * rng.h — a small deterministic random generator (xoshiro256**, seeded through splitmix64).
 *
 * Used for sampling and synthetic weights: the same seed gives the same stream on every machine
 * and build. A ts_rng is a plain struct owned by one thread.
 */
#ifndef TS_COMMON_RNG_H
#define TS_COMMON_RNG_H

#include <stdint.h>

typedef struct ts_rng {
    uint64_t s[4];
} ts_rng;

void ts_rng_seed(ts_rng *rng, uint64_t seed);
uint64_t ts_rng_next(ts_rng *rng);
/* Uniform in [0, 1) with 24 bits of precision. */
float ts_rng_uniform(ts_rng *rng);
/* Standard normal (Box–Muller). */
float ts_rng_normal(ts_rng *rng);

#endif
