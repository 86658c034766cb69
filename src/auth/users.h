/*
 * The users file: one "user:secret" per line, '#' comments and blank lines ignored. A secret is a
 * SCRAM-SHA-256 verifier, an md5 hash ("md5" + 32 hex) or plain text. Plain-text secrets get a
 * SCRAM verifier computed once at load, so no login runs PBKDF2 on the server side.
 * A userlist is immutable after load and owned by the config that loaded it.
 */
#ifndef PGRELAY_AUTH_USERS_H
#define PGRELAY_AUTH_USERS_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/hba.h"
#include "auth/md5.h"
#include "auth/scram.h"

enum secret_kind { SECRET_PLAIN, SECRET_MD5, SECRET_SCRAM };

struct user_entry {
	char *name;		      /* owned */
	enum secret_kind kind;	      /* what the file held */
	char *plain;		      /* owned; the password when kind == SECRET_PLAIN, else NULL */
	char md5[MD5_PASSWD_LEN + 1]; /* valid when kind is SECRET_PLAIN or SECRET_MD5 */
	bool has_scram;		      /* scram valid when kind is SECRET_PLAIN or SECRET_SCRAM */
	struct scram_secret scram;
};

struct userlist {
	struct user_entry *users; /* owned, sorted by name */
	size_t count;
	enum secret_kind common_kind; /* the most frequent kind (SECRET_PLAIN on a tie or none) */
};

/*
 * Loads path. On error returns NULL and writes "FILE:LINE: message" lines (newline-separated) into
 * err. Lines longer than 4096 bytes, names longer than 63 bytes and malformed verifiers are errors.
 */
struct userlist *users_load(const char *path, char *err, size_t errcap);
void users_free(struct userlist *list);
/* Frees what u owns (name, plain) and wipes it; u itself is the caller's. */
void users_entry_clear(struct user_entry *u);
/* Deep copy (dst owns its own name and plain); false when out of memory (dst is then empty). */
bool users_entry_copy(struct user_entry *dst, const struct user_entry *src)
	__attribute__((warn_unused_result));

/* What users_secret_parse() made of a secret's text. */
enum users_secret_status {
	USERS_SECRET_OK,
	USERS_SECRET_EMPTY,	/* "" */
	USERS_SECRET_BAD_SCRAM, /* starts with "SCRAM-SHA-256$" but is not a valid verifier */
	USERS_SECRET_BAD_MD5,	/* 35 characters starting with "md5" but not 32 lower-case hex */
	USERS_SECRET_NO_DERIVE, /* plain text whose md5 secret or verifier could not be made */
};
/*
 * Fills u's secret fields (kind, plain, md5, has_scram, scram; not name) from text, the secret of
 * user name, with the users file's rules (a verifier, an md5 hash, else plain text, which gets its
 * md5 secret and a verifier: one PBKDF2 run). Shared by the users file and auth_query, so a
 * secret means the same wherever it came from. On failure u may own a plain copy: clear it.
 */
enum users_secret_status users_secret_parse(const char *name, const char *text,
					    struct user_entry *u)
	__attribute__((warn_unused_result));
/* Binary search; NULL if absent. */
const struct user_entry *users_find(const struct userlist *list, const char *name);
/*
 * What an unknown user is made to look like so that the method picked for it is the one most known
 * users get under the same hba rule (no user enumeration by the challenge): an entry with no
 * secret of the list's most common kind. list may be NULL.
 */
void users_stand_in(const struct userlist *list, struct user_entry *out);

/*
 * Method for a user when there is no hba file: HBA_SCRAM for verifiers and plain text, HBA_MD5
 * for md5 secrets. u may be NULL (unknown user): HBA_SCRAM, to be run with scram_secret_mock().
 */
enum hba_method users_default_method(const struct user_entry *u);
/*
 * The exchange to run when the matching hba rule says m, with PostgreSQL's rules: "md5" runs
 * SCRAM when only a verifier is stored, and md5 for md5 or plain-text secrets; "scram-sha-256"
 * needs a verifier (plain text has one) and gives HBA_REJECT for an md5-only user; "password"
 * works with every secret. trust, reject and no-match come back unchanged. For u == NULL, md5 and
 * scram-sha-256 give HBA_SCRAM (run it with scram_secret_mock() so it fails like a wrong password).
 */
enum hba_method users_pick_method(const struct user_entry *u, enum hba_method m);
/*
 * Checks a clear-text password (method "password") against whatever secret u holds, in constant
 * time for plain and md5 secrets. A SCRAM verifier costs one PBKDF2 run per call.
 */
bool users_check_password(const struct user_entry *u, const char *password)
	__attribute__((warn_unused_result));

#endif
