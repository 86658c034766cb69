/*
 * SCRAM-SHA-256 (RFC 5802 / 7677, as PostgreSQL uses it: empty user name in client-first-message)
 * on both sides; the server side also runs SCRAM-SHA-256-PLUS with tls-server-end-point channel
 * binding, the client side (towards backends) never binds:
 *  - server side: pgrelay authenticates a client against a stored secret;
 *  - client side: pgrelay authenticates itself to a backend, either with the plain password or
 *    with the ClientKey recovered from the client's own SCRAM proof (PgBouncer's trick), which
 *    works when the backend's verifier has the same salt and iteration count.
 *
 * Pure functions over caller-owned buffers; no allocation, no logging of secrets. The only shared
 * state is the client-side SaltedPassword cache (mutex-protected) and the mock-salt key (set once).
 */
#ifndef PGRELAY_AUTH_SCRAM_H
#define PGRELAY_AUTH_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN		 32
#define SCRAM_MAX_SALT		 64
#define SCRAM_NONCE_B64		 24  /* base64 chars of the nonce part each side contributes */
#define SCRAM_MAX_MSG		 512 /* bound on every SCRAM message we build or accept */
#define SCRAM_DEFAULT_ITERATIONS 4096
/*
 * Longest client nonce accepted. PostgreSQL's libpq, pgx and Npgsql send 24 characters, asyncpg
 * sends 32, so a buffer of two SCRAM_NONCE_B64 parts would turn asyncpg away.
 */
#define SCRAM_MAX_CLIENT_NONCE 64
/*
 * Largest iteration count accepted from a verifier or a backend's server-first-message. PBKDF2 runs
 * on the calling thread; this keeps a hostile or mistyped count from stalling it for minutes.
 */
#define SCRAM_MAX_ITERATIONS 10000000

/* A parsed verifier "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>". */
struct scram_secret {
	int iterations;
	uint8_t salt[SCRAM_MAX_SALT];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* Returns false if text is not a well-formed verifier. */
bool scram_secret_parse(const char *text, struct scram_secret *out)
	__attribute__((warn_unused_result));
/* Builds a verifier from a plain password with a random salt. Runs PBKDF2: call at load time. */
bool scram_secret_from_password(const char *password, int iterations, struct scram_secret *out)
	__attribute__((warn_unused_result));

/*
 * Channel binding on the server side (tls-server-end-point, RFC 5929): whether the connection
 * offered SCRAM-SHA-256-PLUS, whether the client picked it, and the binding data (the hash of
 * pgrelay's certificate).
 */
struct scram_cbind {
	bool offered;
	bool selected;
	const uint8_t *data;
	size_t len;
};
#define SCRAM_CBIND_B64_MAX 160 /* base64 of the GS2 header and a 64-byte hash, with NUL */

/* Server-side exchange state, embedded in the client object during authentication. */
struct scram_server {
	const struct scram_secret *secret; /* borrowed: lives as long as the config that owns it */
	char client_first_bare[SCRAM_MAX_MSG];
	char server_first[SCRAM_MAX_MSG];
	char nonce[SCRAM_MAX_CLIENT_NONCE + SCRAM_NONCE_B64 + 1]; /* client nonce + server nonce */
	char cbind_flag; /* GS2 flag the client sent: 'n', 'y' or 'p' (channel binding) */
	char cbind_b64[SCRAM_CBIND_B64_MAX]; /* what client-final's c= must be */
	uint8_t client_key[SCRAM_KEY_LEN];   /* recovered from the client's proof after success */
	int step; /* 0 before first, 1 after server-first, 2 done, -1 failed (final) */
};

/*
 * Consumes the client's SASLInitialResponse data (client-first-message) and writes the
 * server-first-message into out (NUL-terminated, *out_len without NUL). False on malformed input.
 */
bool scram_server_first(struct scram_server *st, const struct scram_secret *secret,
			const struct scram_cbind *cb, const char *client_first, size_t len,
			char *out, size_t cap, size_t *out_len) __attribute__((warn_unused_result));
/*
 * Consumes client-final-message; on a valid proof writes server-final-message ("v=...") into out,
 * fills st->client_key and returns true. False on malformed input or wrong proof.
 */
bool scram_server_final(struct scram_server *st, const char *client_final, size_t len, char *out,
			size_t cap, size_t *out_len) __attribute__((warn_unused_result));

/* Client-side exchange state, embedded in the server (backend) object during authentication. */
struct scram_client {
	char client_nonce[SCRAM_NONCE_B64 + 1];
	char client_first_bare[SCRAM_MAX_MSG];
	uint8_t server_signature[SCRAM_KEY_LEN];
	int step; /* 0 initial, 1 after client-first, 2 after client-final, 3 verified, -1 failed */
};

/* Writes client-first-message ("n,,n=,r=<nonce>") into out. */
bool scram_client_first(struct scram_client *st, char *out, size_t cap, size_t *out_len)
	__attribute__((warn_unused_result));
/*
 * Consumes server-first-message and writes client-final-message. Credentials: either password
 * (plain text; the SaltedPassword for a (password, salt, iterations) triple is cached in a small
 * process-wide, thread-safe cache so pooled reconnects do not rerun PBKDF2), or client_key +
 * secret (ClientKey recovered from the client, the verifier's ServerKey checks the server); pass
 * NULL for the one not used. False on malformed input or when the credentials cannot be used.
 */
bool scram_client_final(struct scram_client *st, const char *password,
			const uint8_t client_key[SCRAM_KEY_LEN], const struct scram_secret *secret,
			const char *server_first, size_t len, char *out, size_t cap,
			size_t *out_len) __attribute__((warn_unused_result));
/* Verifies server-final-message ("v=..."). */
bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len)
	__attribute__((warn_unused_result));

/*
 * Fills out with a verifier that no proof matches and whose salt is a stable function of user, so
 * an unknown user gets the same SCRAM exchange as a known one with a wrong password and a client
 * cannot probe for user names (PostgreSQL's scram_mock_salt). The salt is keyed by a random
 * per-process secret.
 */
bool scram_secret_mock(const char *user, struct scram_secret *out)
	__attribute__((warn_unused_result));
/*
 * Checks a clear-text password (the "password" method) against a verifier. Runs PBKDF2 with the
 * verifier's iteration count on every call, and bypasses the client cache on purpose: the
 * passwords here come from untrusted clients.
 */
bool scram_secret_check_password(const struct scram_secret *secret, const char *password)
	__attribute__((warn_unused_result));
/* Counters of the client-side SaltedPassword cache since process start (for SHOW and tests). */
void scram_cache_stats(uint64_t *hits, uint64_t *misses);

#endif
