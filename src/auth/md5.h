/*
 * PostgreSQL md5 authentication: a stored secret is "md5" + hex(md5(password || user)); the wire
 * response to a 4-byte salt is "md5" + hex(md5(hex(md5(password || user)) || salt)).
 * The void functions write an empty string when the digest cannot be computed (OpenSSL out of
 * memory, or MD5 unavailable as in FIPS mode); md5_secret_is_valid() and every server reject it.
 * A response's len excludes any terminating NUL.
 */
#ifndef PGRELAY_AUTH_MD5_H
#define PGRELAY_AUTH_MD5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD5_PASSWD_LEN 35 /* "md5" + 32 hex digits */

/* out receives 35 chars + NUL: "md5" + hex(md5(password || user)). */
void md5_secret_from_password(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1]);
/* True if text looks like a stored md5 secret. */
bool md5_secret_is_valid(const char *text);
/* out receives the wire response for a stored secret (md5...) and salt. */
void md5_response_from_secret(const char *secret, const uint8_t salt[4],
			      char out[MD5_PASSWD_LEN + 1]);
/* Constant-time check of a client's response against a stored secret. */
bool md5_check_response(const char *secret, const uint8_t salt[4], const char *response, size_t len)
	__attribute__((warn_unused_result));

#endif
