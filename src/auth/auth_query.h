/*
 * auth_query (PgBouncer's feature): the secret of a user who is not in users_file is fetched from
 * the primary by running auth.auth_query with the user name as $1, connected as auth.auth_user.
 *
 * This module is the lookup itself: one blocking libpq connection and one PQexecParams, bounded
 * by libpq's connect_timeout and the server's statement_timeout. It runs on libuv's thread pool
 * (the caller, src/pool/client_authq.c, schedules it and finds the waiting client again); it
 * touches no worker state and logs nothing. Nothing it returns contains a secret except *out.
 */
#ifndef PGRELAY_AUTH_AUTH_QUERY_H
#define PGRELAY_AUTH_AUTH_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/tls_ctx.h"

#include "auth/users.h"

/*
 * The default auth.auth_query. Schema-qualified, so a search_path of auth_user's cannot redirect
 * it; a role that may not log in is not found, and one whose VALID UNTIL passed has no password,
 * both of which fail exactly like a wrong password. Reading pg_authid needs a superuser auth_user;
 * doc/auth.md shows the SECURITY DEFINER function to use otherwise.
 */
#define AUTH_QUERY_DEFAULT                                                                         \
	"SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL ELSE rolpassword "   \
	"END FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin"

/* Where and as whom the lookup connects; every pointer is borrowed for the call. */
struct authq_target {
	const char *host;
	int port;
	const char *user;     /* auth_user */
	const char *password; /* auth_user's plain-text password from users_file */
	const char *dbname;   /* auth_dbname, or the client's database */
	uint32_t timeout_ms;  /* connect (rounded up to whole seconds, at least 2) and statement */
	struct libpq_tls tls; /* the node's TLS settings (borrowed strings) */
};

#define AUTHQ_CONNINFO_MAX (12 + LIBPQ_TLS_KEYS) /* keywords, with the terminating NULL */

/* libpq keyword/value arrays for PQconnectdbParams; the values point into t and this struct. */
struct authq_conninfo {
	const char *keys[AUTHQ_CONNINFO_MAX];
	const char *vals[AUTHQ_CONNINFO_MAX];
	char port[16];
	char connect_timeout[16];
	char options[64];
};

/*
 * Fills ci for a connection to t. The one place the lookup's connection parameters are decided
 * (TLS towards backends adds its sslmode parameters here).
 */
void authq_conninfo(const struct authq_target *t, struct authq_conninfo *ci);

enum authq_status {
	AUTHQ_FOUND,	  /* *out holds the user's secret */
	AUTHQ_NOT_FOUND,  /* no row, or a NULL or empty secret: fails like a wrong password */
	AUTHQ_UNUSABLE,	  /* a row whose secret is malformed: fails like a wrong password, logged */
	AUTHQ_NO_CONNECT, /* could not connect (node down, auth_user refused, timeout) */
	AUTHQ_FAILED,	  /* connected, but the query failed or answered in an unexpected shape */
};

/*
 * Runs query (with user as $1, a text parameter) on t and fills *out (owned fields: clear it with
 * users_entry_clear) on AUTHQ_FOUND. The query must return at most one row whose first column is
 * user and whose second is the secret, in users_file's forms (a SCRAM verifier, an md5 hash, or
 * plain text). Every status but AUTHQ_FOUND writes a one-line reason into err (no secrets).
 * Blocking: call it off the event loop.
 */
enum authq_status authq_lookup(const struct authq_target *t, const char *query, const char *user,
			       struct user_entry *out, char *err, size_t errcap)
	__attribute__((warn_unused_result));

#endif
