/*
 * The StartupMessage body: name\0value\0 ... \0. Parsed in place (the result points into the
 * caller's bytes) with the checks PostgreSQL makes, and turned into the pool key pgrelay groups
 * backend connections by. Shared by the client state machine and the startup fuzzer.
 */
#ifndef PGRELAY_PROTOCOL_STARTUP_H
#define PGRELAY_PROTOCOL_STARTUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum startup_status {
	STARTUP_OK,
	STARTUP_BAD_LAYOUT,  /* 08P01 */
	STARTUP_NO_USER,     /* 28000 */
	STARTUP_REPLICATION, /* 0A000: walsender connections are not relayed */
};

struct startup_params {
	const char *user;	      /* points into the body */
	const char *database;	      /* points into the body; the user when not given */
	const char *application_name; /* points into the body, or "" */
};

/* Parses body[0..len); on failure writes a PostgreSQL-style message into err. */
enum startup_status startup_parse(const uint8_t *body, uint32_t len, struct startup_params *out,
				  char *err, size_t errcap) __attribute__((warn_unused_result));
/*
 * The pool key: database \0 user \0 then every other parameter but application_name, as
 * name\0value\0 in the order sent. False if it does not fit in cap.
 */
bool startup_pool_key(const uint8_t *body, uint32_t len, const struct startup_params *p, char *key,
		      size_t cap, size_t *key_len) __attribute__((warn_unused_result));

#endif
