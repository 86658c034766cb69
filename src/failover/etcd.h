/*
 * A small, blocking etcd v3 client over etcd's JSON/HTTP gateway (libcurl, json-c): leases, put,
 * prefix range, and the two compare-and-set transactions the watchdog needs. Keys and values are
 * base64 on the wire; 64-bit numbers are JSON strings. Every call has a hard deadline
 * (timeout_ms) per endpoint and tries the next endpoint on a transport failure, starting from the
 * last one that answered. Used only by the watchdog thread (watchdog.c), never on a loop.
 */
#ifndef PGRELAY_FAILOVER_ETCD_H
#define PGRELAY_FAILOVER_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_KEY_MAX	   256	     /* longest key accepted (prefix + "/members/" + name) */
#define ETCD_VALUE_MAX	   2048	     /* longest value read or written */
#define ETCD_RANGE_MAX	   64	     /* keys kept from one prefix range */
#define ETCD_REPLY_MAX	   (1 << 20) /* a reply larger than this is an error */

struct etcd_kv {
	char key[ETCD_KEY_MAX];
	char value[ETCD_VALUE_MAX]; /* NUL-terminated; longer values are cut */
	int64_t lease;		    /* 0 when none */
	int64_t create_revision;
	int64_t mod_revision;
};

typedef struct etcd etcd_t; /* opaque */

/* endpoints: comma-separated URLs. NULL on out of memory or when none is given. */
etcd_t *etcd_new(const char *endpoints, uint32_t timeout_ms) __attribute__((warn_unused_result));
void etcd_free(etcd_t *e);

/* The last transport or protocol error, for logs ("" after a success). */
const char *etcd_last_error(const etcd_t *e);
/* The endpoint that answered last (or will be tried first). */
const char *etcd_current_endpoint(const etcd_t *e);

bool etcd_lease_grant(etcd_t *e, int ttl_s, int64_t *id) __attribute__((warn_unused_result));
/* True when etcd answered; *ttl_left is 0 when the lease no longer exists. */
bool etcd_lease_keepalive(etcd_t *e, int64_t id, int64_t *ttl_left)
	__attribute__((warn_unused_result));
bool etcd_lease_revoke(etcd_t *e, int64_t id);

bool etcd_put(etcd_t *e, const char *key, const char *value, int64_t lease)
	__attribute__((warn_unused_result));

/*
 * Creates key (with lease) only if it does not exist (create_revision == 0). True when etcd
 * answered; *created says whether this call created it. *holder gets the key as it is now.
 */
bool etcd_create(etcd_t *e, const char *key, const char *value, int64_t lease, bool *created,
		 struct etcd_kv *holder) __attribute__((warn_unused_result));

/*
 * Puts key = value only while guard_key still has create_revision guard_rev (the writer still
 * holds the leadership it won). True when etcd answered; *done says whether the put happened.
 */
bool etcd_put_guarded(etcd_t *e, const char *guard_key, int64_t guard_rev, const char *key,
		      const char *value, bool *done) __attribute__((warn_unused_result));

/* Deletes key only while its create_revision is rev. */
bool etcd_delete_guarded(etcd_t *e, const char *key, int64_t rev);

/* Every key under prefix (at most cap, by key order); -1 on error. */
int etcd_range_prefix(etcd_t *e, const char *prefix, struct etcd_kv *out, int cap)
	__attribute__((warn_unused_result));

#endif
