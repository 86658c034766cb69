/*
 * SipHash-2-4, written from the paper and checked against the reference vectors
 * (tests/unit/test_prepared.c); see siphash.h. The process key is the only state: set once
 * under pthread_once, read-only afterwards.
 */
#include "util/siphash.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

static inline uint64_t siphash_rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static inline uint64_t siphash_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
	       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = siphash_rotl(v1, 13);                                                         \
		v1 ^= v0;                                                                          \
		v0 = siphash_rotl(v0, 32);                                                         \
		v2 += v3;                                                                          \
		v3 = siphash_rotl(v3, 16);                                                         \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = siphash_rotl(v3, 21);                                                         \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = siphash_rotl(v1, 17);                                                         \
		v1 ^= v2;                                                                          \
		v2 = siphash_rotl(v2, 32);                                                         \
	} while (0)

uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t k0 = siphash_le64(key), k1 = siphash_le64(key + 8);
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull,
		 v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	size_t whole = len & ~(size_t)7;
	for (size_t i = 0; i < whole; i += 8) {
		uint64_t m = siphash_le64(p + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t i = 0; i < (len & 7); i++)
		b |= (uint64_t)p[whole + i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint8_t siphash_key[SIPHASH_KEY_LEN];
static pthread_once_t siphash_key_once = PTHREAD_ONCE_INIT;

static void siphash_key_init(void)
{
	size_t got = 0;
	while (got < sizeof(siphash_key)) {
		ssize_t n = getrandom(siphash_key + got, sizeof(siphash_key) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got == sizeof(siphash_key))
		return;
	/* No getrandom (old kernel, seccomp): still vary per run, and say so once. */
	log_warning("main", 0, "getrandom() failed (%s): hash tables use a weak key",
		    strerror(errno));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t mix[2] = { (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32),
			    (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts };
	memcpy(siphash_key, mix, sizeof(siphash_key));
}

uint64_t siphash_process(const void *data, size_t len)
{
	pthread_once(&siphash_key_once, siphash_key_init);
	return siphash24(siphash_key, data, len);
}
