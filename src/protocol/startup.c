/* StartupMessage parsing and the pool key; see startup.h. No allocation, no I/O. */
#include "protocol/startup.h"

#include <stdio.h>
#include <string.h>

#include "protocol/reader.h"

static bool startup_is_replication(const char *value)
{
	return strcmp(value, "false") != 0 && strcmp(value, "0") != 0 &&
	       strcmp(value, "off") != 0 && strcmp(value, "no") != 0;
}

enum startup_status startup_parse(const uint8_t *body, uint32_t len, struct startup_params *out,
				  char *err, size_t errcap)
{
	memset(out, 0, sizeof(*out));
	out->application_name = "";
	struct reader r;
	reader_init(&r, body, len);
	for (;;) {
		const char *name, *value;
		size_t nlen;
		if (!reader_cstr(&r, &name, &nlen)) {
			snprintf(err, errcap, "invalid startup packet layout: expected terminator");
			return STARTUP_BAD_LAYOUT;
		}
		if (nlen == 0)
			break;
		if (!reader_cstr(&r, &value, NULL)) {
			snprintf(err, errcap,
				 "invalid startup packet layout: missing value for \"%.60s\"",
				 name);
			return STARTUP_BAD_LAYOUT;
		}
		if (strcmp(name, "user") == 0)
			out->user = value;
		else if (strcmp(name, "database") == 0)
			out->database = value;
		else if (strcmp(name, "application_name") == 0)
			out->application_name = value;
		else if (strcmp(name, "replication") == 0 && startup_is_replication(value)) {
			snprintf(err, errcap,
				 "replication connections are not supported by pgrelay");
			return STARTUP_REPLICATION;
		}
	}
	if (!reader_end(&r)) {
		snprintf(err, errcap,
			 "invalid startup packet layout: expected terminator as last byte");
		return STARTUP_BAD_LAYOUT;
	}
	if (!out->user || !out->user[0]) {
		snprintf(err, errcap, "no PostgreSQL user name specified in startup packet");
		return STARTUP_NO_USER;
	}
	if (!out->database || !out->database[0])
		out->database = out->user;
	return STARTUP_OK;
}

bool startup_pool_key(const uint8_t *body, uint32_t len, const struct startup_params *p, char *key,
		      size_t cap, size_t *key_len)
{
	int w = snprintf(key, cap, "%s%c%s%c", p->database, 0, p->user, 0);
	/* snprintf reports the length it wanted: a longer key would be read past the buffer. */
	if (w < 0 || (size_t)w >= cap)
		return false;
	size_t n = (size_t)w;
	struct reader r;
	reader_init(&r, body, len);
	const char *name, *value;
	size_t nlen, vlen;
	while (reader_cstr(&r, &name, &nlen) && nlen && reader_cstr(&r, &value, &vlen)) {
		if (!strcmp(name, "user") || !strcmp(name, "database") ||
		    !strcmp(name, "application_name"))
			continue;
		if (n + nlen + vlen + 2 >= cap)
			return false;
		memcpy(key + n, name, nlen + 1);
		n += nlen + 1;
		memcpy(key + n, value, vlen + 1);
		n += vlen + 1;
	}
	*key_len = n;
	return true;
}
