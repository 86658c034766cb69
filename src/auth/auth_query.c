/*
 * The auth_query lookup; see auth_query.h. One fresh connection per lookup: lookups are rare
 * (the cache serves repeated logins) and a connection kept open would need its own health
 * story. The user name reaches the server only as a bound parameter, never inside the SQL text.
 */
#include "auth/auth_query.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#define AUTHQ_APPLICATION_NAME "pgrelay auth_query"

void authq_conninfo(const struct authq_target *t, struct authq_conninfo *ci)
{
	int k = 0;
	struct in_addr a4;
	struct in6_addr a6;
	snprintf(ci->port, sizeof(ci->port), "%d", t->port);
	/* libpq's connect_timeout counts whole seconds and honours no less than 2. */
	uint32_t secs = (t->timeout_ms + 999) / 1000;
	snprintf(ci->connect_timeout, sizeof(ci->connect_timeout), "%u", secs < 2 ? 2 : secs);
	/* The server ends a lookup that hangs (a lock on pg_authid, a slow function) itself. */
	snprintf(ci->options, sizeof(ci->options), "-c statement_timeout=%u", t->timeout_ms);
	ci->keys[k] = "host";
	ci->vals[k++] = t->host;
	/* A numeric address also goes to hostaddr so libpq never resolves a name. */
	if (inet_pton(AF_INET, t->host, &a4) == 1 || inet_pton(AF_INET6, t->host, &a6) == 1) {
		ci->keys[k] = "hostaddr";
		ci->vals[k++] = t->host;
	}
	ci->keys[k] = "port";
	ci->vals[k++] = ci->port;
	ci->keys[k] = "user";
	ci->vals[k++] = t->user;
	ci->keys[k] = "password";
	ci->vals[k++] = t->password;
	ci->keys[k] = "dbname";
	ci->vals[k++] = t->dbname;
	ci->keys[k] = "connect_timeout";
	ci->vals[k++] = ci->connect_timeout;
	ci->keys[k] = "options";
	ci->vals[k++] = ci->options;
	ci->keys[k] = "application_name";
	ci->vals[k++] = AUTHQ_APPLICATION_NAME;
	k += libpq_tls_params(&t->tls, ci->keys + k, ci->vals + k);
	/* GSSAPI negotiation may talk to a KDC with calls no timeout covers. */
	ci->keys[k] = "gssencmode";
	ci->vals[k++] = "disable";
	ci->keys[k] = NULL;
	ci->vals[k] = NULL;
}

/* Copies libpq's message into err on one line (libpq ends it with a newline, may have more). */
static void authq_set_error(char *err, size_t errcap, const char *prefix, const char *msg)
{
	snprintf(err, errcap, "%s%s", prefix, msg ? msg : "");
	for (char *p = err; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	size_t n = strlen(err);
	while (n > 0 && err[n - 1] == ' ')
		err[--n] = '\0';
}

/* Reads the one row of res into *out; see authq_lookup for the contract. */
static enum authq_status authq_read_result(const PGresult *res, const char *user,
					   struct user_entry *out, char *err, size_t errcap)
{
	if (PQnfields(res) < 2) {
		snprintf(err, errcap,
			 "auth_query returned %d column(s); it must return the user name "
			 "and its secret",
			 PQnfields(res));
		return AUTHQ_FAILED;
	}
	int rows = PQntuples(res);
	if (rows == 0) {
		snprintf(err, errcap, "no such login role");
		return AUTHQ_NOT_FOUND;
	}
	if (rows > 1) {
		snprintf(err, errcap, "auth_query returned %d rows; it must return at most one",
			 rows);
		return AUTHQ_FAILED;
	}
	/* A function returning one record answers "nobody" with a row of NULLs (PgBouncer's
	 * user_lookup example does). */
	if (PQgetisnull(res, 0, 0)) {
		snprintf(err, errcap, "no such login role");
		return AUTHQ_NOT_FOUND;
	}
	if (strcmp(PQgetvalue(res, 0, 0), user) != 0) {
		snprintf(err, errcap, "auth_query returned a row for another user name");
		return AUTHQ_FAILED;
	}
	const char *secret = PQgetvalue(res, 0, 1);
	if (PQgetisnull(res, 0, 1) || secret[0] == '\0') {
		snprintf(err, errcap, "no password (none set, or VALID UNTIL passed)");
		return AUTHQ_NOT_FOUND;
	}
	memset(out, 0, sizeof(*out));
	out->name = strdup(user);
	if (!out->name) {
		snprintf(err, errcap, "out of memory");
		return AUTHQ_FAILED;
	}
	enum users_secret_status st = users_secret_parse(user, secret, out);
	if (st == USERS_SECRET_OK)
		return AUTHQ_FOUND;
	users_entry_clear(out);
	if (st == USERS_SECRET_NO_DERIVE) {
		snprintf(err, errcap, "could not derive secrets from the plain-text password");
		return AUTHQ_FAILED;
	}
	snprintf(err, errcap, "the secret auth_query returned is malformed (%s)",
		 st == USERS_SECRET_BAD_SCRAM ? "not a valid SCRAM-SHA-256 verifier"
					      : "not a valid md5 hash");
	return AUTHQ_UNUSABLE;
}

enum authq_status authq_lookup(const struct authq_target *t, const char *query, const char *user,
			       struct user_entry *out, char *err, size_t errcap)
{
	struct authq_conninfo ci;
	authq_conninfo(t, &ci);
	PGconn *conn = PQconnectdbParams(ci.keys, ci.vals, 0);
	if (!conn) {
		snprintf(err, errcap, "out of memory");
		return AUTHQ_NO_CONNECT;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		authq_set_error(err, errcap, "", PQerrorMessage(conn));
		PQfinish(conn);
		return AUTHQ_NO_CONNECT;
	}
	const char *params[1] = { user };
	PGresult *res = PQexecParams(conn, query, 1, NULL, params, NULL, NULL, 0);
	enum authq_status st;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		authq_set_error(err, errcap, "auth_query failed: ", PQerrorMessage(conn));
		st = AUTHQ_FAILED;
	} else {
		st = authq_read_result(res, user, out, err, errcap);
	}
	/* The secret's text lives in res until here: libpq frees it, it never reaches a log. */
	PQclear(res);
	PQfinish(conn);
	return st;
}
