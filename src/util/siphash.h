/*
 * SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF"), the keyed hash that
 * PgBouncer, Redis and CPython use for hash tables fed by untrusted peers: without the key, a
 * peer cannot choose names that collide in a table and turn its lookups into linear scans.
 *
 * siphash_process() uses one 128-bit key per process, drawn from getrandom() on first use
 * (thread-safe, set once, never changed): values differ between runs and must not be stored.
 */
#ifndef PGRELAY_UTIL_SIPHASH_H
#define PGRELAY_UTIL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

/* SipHash-2-4 of len bytes at data under key (the reference's byte order: k0 = key[0..7] LE). */
uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len);
/* SipHash-2-4 under the process key. */
uint64_t siphash_process(const void *data, size_t len);

#endif
