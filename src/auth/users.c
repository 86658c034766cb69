/*
 * The users file loader. Each non-comment line is "name:secret"; the name ends at the first ':'
 * and the secret is the rest of the line verbatim (a password may contain ':' or spaces). A secret
 * starting with "SCRAM-SHA-256$" must be a valid verifier, one of 35 characters starting with
 * "md5" must be a valid md5 hash, anything else is a plain-text password. Plain text gets its md5
 * secret and a SCRAM verifier (random salt, PBKDF2 once) here, so no login pays for PBKDF2.
 *
 * Every bad line is reported, not only the first; any error fails the whole load. The result is
 * sorted by name for binary search and never changes afterwards, so any thread may read it.
 */
#include "auth/users.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/errbuf.h"

#define USERS_MAX_LINE 4096
#define USERS_MAX_NAME 63 /* PostgreSQL's NAMEDATALEN - 1 */
#define SCRAM_PREFIX   "SCRAM-SHA-256$"

/* An entry while loading: the line is kept for duplicate messages. */
struct users_item {
	struct user_entry entry;
	int line;
};

/* Growable array of items; owns the entries until they move into the userlist. */
struct users_load {
	struct users_item *items;
	size_t count;
	size_t cap;
	struct errbuf err;
};

void users_entry_clear(struct user_entry *u)
{
	free(u->name);
	if (u->plain) {
		OPENSSL_cleanse(u->plain, strlen(u->plain));
		free(u->plain);
	}
	OPENSSL_cleanse(u, sizeof(*u));
}

bool users_entry_copy(struct user_entry *dst, const struct user_entry *src)
{
	*dst = *src;
	dst->name = src->name ? strdup(src->name) : NULL;
	dst->plain = src->plain ? strdup(src->plain) : NULL;
	if ((src->name && !dst->name) || (src->plain && !dst->plain)) {
		users_entry_clear(dst);
		return false;
	}
	return true;
}

static bool users_name_valid(struct users_load *ld, int line, const char *name, size_t len)
{
	if (len == 0) {
		errbuf_add(&ld->err, line, "empty user name");
		return false;
	}
	if (len > USERS_MAX_NAME) {
		errbuf_add(&ld->err, line, "user name longer than %d bytes", USERS_MAX_NAME);
		return false;
	}
	if (name[0] == ' ' || name[0] == '\t' || name[len - 1] == ' ' || name[len - 1] == '\t') {
		errbuf_add(&ld->err, line, "user name starts or ends with white space");
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
			errbuf_add(&ld->err, line, "control character in user name");
			return false;
		}
	}
	return true;
}

enum users_secret_status users_secret_parse(const char *name, const char *text,
					    struct user_entry *u)
{
	if (text[0] == '\0')
		return USERS_SECRET_EMPTY;
	if (strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0) {
		u->kind = SECRET_SCRAM;
		u->has_scram = scram_secret_parse(text, &u->scram);
		return u->has_scram ? USERS_SECRET_OK : USERS_SECRET_BAD_SCRAM;
	}
	if (strlen(text) == MD5_PASSWD_LEN && strncmp(text, "md5", 3) == 0) {
		/* PostgreSQL would take a mistyped hash as a password; we call it a mistake. */
		if (!md5_secret_is_valid(text))
			return USERS_SECRET_BAD_MD5;
		u->kind = SECRET_MD5;
		memcpy(u->md5, text, MD5_PASSWD_LEN + 1);
		return USERS_SECRET_OK;
	}
	u->kind = SECRET_PLAIN;
	u->plain = strdup(text);
	md5_secret_from_password(text, name, u->md5);
	u->has_scram = scram_secret_from_password(text, SCRAM_DEFAULT_ITERATIONS, &u->scram);
	if (!u->plain || !md5_secret_is_valid(u->md5) || !u->has_scram)
		return USERS_SECRET_NO_DERIVE;
	return USERS_SECRET_OK;
}

/* Fills u's secret fields from text, which the file held for user name. */
static bool users_parse_secret(struct users_load *ld, int line, const char *name, const char *text,
			       struct user_entry *u)
{
	switch (users_secret_parse(name, text, u)) {
	case USERS_SECRET_OK:
		return true;
	case USERS_SECRET_EMPTY:
		errbuf_add(&ld->err, line, "empty secret for user \"%s\"", name);
		return false;
	case USERS_SECRET_BAD_SCRAM:
		errbuf_add(&ld->err, line, "malformed SCRAM-SHA-256 verifier for user \"%s\"",
			   name);
		return false;
	case USERS_SECRET_BAD_MD5:
		errbuf_add(&ld->err, line,
			   "malformed md5 secret for user \"%s\" (need \"md5\" and 32 "
			   "lower-case hex digits)",
			   name);
		return false;
	case USERS_SECRET_NO_DERIVE:
		break;
	}
	errbuf_add(&ld->err, line, "could not derive secrets for user \"%s\"", name);
	return false;
}

static bool users_append(struct users_load *ld, int line, struct user_entry *u)
{
	if (ld->count == ld->cap) {
		size_t cap = ld->cap ? 2 * ld->cap : 16;
		struct users_item *items = realloc(ld->items, cap * sizeof(*items));

		if (!items) {
			errbuf_add(&ld->err, line, "out of memory");
			return false;
		}
		ld->items = items;
		ld->cap = cap;
	}
	ld->items[ld->count].entry = *u;
	ld->items[ld->count].line = line;
	ld->count++;
	return true;
}

/* Handles one line without its newline; len is its length (it may hold NULs). */
static void users_parse_line(struct users_load *ld, int line, char *text, size_t len)
{
	struct user_entry u = { 0 };
	const char *p = text;
	char *colon;

	if (len > USERS_MAX_LINE) {
		errbuf_add(&ld->err, line, "line longer than %d bytes", USERS_MAX_LINE);
		return;
	}
	if (memchr(text, '\0', len)) {
		errbuf_add(&ld->err, line, "NUL byte in line");
		return;
	}
	p += strspn(p, " \t");
	if (*p == '\0' || *p == '#')
		return;
	colon = strchr(text, ':');
	if (!colon) {
		errbuf_add(&ld->err, line, "expected \"user:secret\"");
		return;
	}
	if (!users_name_valid(ld, line, text, (size_t)(colon - text)))
		return;
	*colon = '\0';
	u.name = strdup(text);
	if (!u.name) {
		errbuf_add(&ld->err, line, "out of memory");
		return;
	}
	if (!users_parse_secret(ld, line, u.name, colon + 1, &u) || !users_append(ld, line, &u))
		users_entry_clear(&u);
	OPENSSL_cleanse(colon + 1, strlen(colon + 1));
}

static int users_item_cmp(const void *a, const void *b)
{
	const struct users_item *x = a, *y = b;
	int c = strcmp(x->entry.name, y->entry.name);

	return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Sorts by name, then line, and reports every later definition of a name. */
static void users_check_duplicates(struct users_load *ld)
{
	if (ld->count == 0)
		return;
	qsort(ld->items, ld->count, sizeof(*ld->items), users_item_cmp);
	for (size_t i = 1, first = 0; i < ld->count; i++) {
		if (strcmp(ld->items[i].entry.name, ld->items[first].entry.name) != 0) {
			first = i;
			continue;
		}
		errbuf_add(&ld->err, ld->items[i].line,
			   "duplicate user \"%s\" (first defined at line %d)",
			   ld->items[i].entry.name, ld->items[first].line);
	}
}

static void users_load_discard(struct users_load *ld)
{
	for (size_t i = 0; i < ld->count; i++)
		users_entry_clear(&ld->items[i].entry);
	free(ld->items);
}

static bool users_read_file(struct users_load *ld, const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t bufcap = 0;
	ssize_t n;
	int line = 0;
	bool ok;

	if (!f) {
		errbuf_add(&ld->err, 0, "could not open: %s", strerror(errno));
		return false;
	}
	while ((n = getline(&buf, &bufcap, f)) >= 0) {
		size_t len = (size_t)n;

		line++;
		if (len && buf[len - 1] == '\n')
			buf[--len] = '\0';
		if (len && buf[len - 1] == '\r')
			buf[--len] = '\0';
		users_parse_line(ld, line, buf, len);
	}
	ok = !ferror(f);
	if (!ok)
		errbuf_add(&ld->err, 0, "read error: %s", strerror(errno));
	if (buf) {
		OPENSSL_cleanse(buf, bufcap);
		free(buf);
	}
	fclose(f);
	return ok;
}

struct userlist *users_load(const char *path, char *err, size_t errcap)
{
	struct users_load ld = { 0 };
	struct userlist *list;

	errbuf_init(&ld.err, err, errcap, path);
	if (users_read_file(&ld, path))
		users_check_duplicates(&ld);
	list = ld.err.count ? NULL : calloc(1, sizeof(*list));
	if (!list) {
		if (!ld.err.count)
			errbuf_add(&ld.err, 0, "out of memory");
		users_load_discard(&ld);
		return NULL;
	}
	list->count = ld.count;
	list->users = ld.count ? calloc(ld.count, sizeof(*list->users)) : NULL;
	if (ld.count && !list->users) {
		errbuf_add(&ld.err, 0, "out of memory");
		free(list);
		users_load_discard(&ld);
		return NULL;
	}
	size_t per_kind[3] = { 0, 0, 0 };
	for (size_t i = 0; i < ld.count; i++) {
		list->users[i] = ld.items[i].entry; /* ownership moves; items only freed below */
		per_kind[list->users[i].kind]++;
	}
	list->common_kind = SECRET_PLAIN;
	if (per_kind[SECRET_MD5] > per_kind[list->common_kind])
		list->common_kind = SECRET_MD5;
	if (per_kind[SECRET_SCRAM] > per_kind[list->common_kind])
		list->common_kind = SECRET_SCRAM;
	OPENSSL_cleanse(ld.items, ld.count * sizeof(*ld.items));
	free(ld.items);
	return list;
}

void users_free(struct userlist *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->count; i++)
		users_entry_clear(&list->users[i]);
	free(list->users);
	free(list);
}

static int users_find_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct user_entry *)elem)->name);
}

const struct user_entry *users_find(const struct userlist *list, const char *name)
{
	if (!list || list->count == 0)
		return NULL;
	return bsearch(name, list->users, list->count, sizeof(*list->users), users_find_cmp);
}

void users_stand_in(const struct userlist *list, struct user_entry *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = list ? list->common_kind : SECRET_PLAIN;
	out->has_scram = out->kind != SECRET_MD5;
}

enum hba_method users_default_method(const struct user_entry *u)
{
	return u && u->kind == SECRET_MD5 ? HBA_MD5 : HBA_SCRAM;
}

enum hba_method users_pick_method(const struct user_entry *u, enum hba_method m)
{
	switch (m) {
	case HBA_MD5:
		if (!u || u->kind == SECRET_SCRAM)
			return HBA_SCRAM;
		return HBA_MD5;
	case HBA_SCRAM:
		return !u || u->has_scram ? HBA_SCRAM : HBA_REJECT;
	case HBA_TRUST:
	case HBA_REJECT:
	case HBA_PASSWORD:
	case HBA_CERT:
	case HBA_NOMATCH:
		break;
	}
	return m;
}

bool users_check_password(const struct user_entry *u, const char *password)
{
	char md5[MD5_PASSWD_LEN + 1];
	bool ok;

	switch (u->kind) {
	case SECRET_PLAIN:
		/* Length is not secret enough to hide; the bytes are compared in constant time. */
		return strlen(password) == strlen(u->plain) &&
		       CRYPTO_memcmp(password, u->plain, strlen(u->plain)) == 0;
	case SECRET_MD5:
		md5_secret_from_password(password, u->name, md5);
		ok = md5_secret_is_valid(md5) && CRYPTO_memcmp(md5, u->md5, MD5_PASSWD_LEN) == 0;
		OPENSSL_cleanse(md5, sizeof(md5));
		return ok;
	case SECRET_SCRAM:
		return scram_secret_check_password(&u->scram, password);
	}
	return false;
}
