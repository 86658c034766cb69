/* Bounds-checked body reader; see reader.h. */
#include "protocol/reader.h"

#include <string.h>

bool reader_cstr_scan(struct reader *r, const char **out, size_t *len)
{
	if (r->failed) {
		return false;
	}
	const uint8_t *nul = memchr(r->p, 0, (size_t)(r->end - r->p));
	if (!nul) {
		r->failed = true;
		return false;
	}
	*out = (const char *)r->p;
	if (len)
		*len = (size_t)(nul - r->p);
	r->p = nul + 1;
	return true;
}

size_t reader_remaining(const struct reader *r)
{
	return r->failed ? 0 : (size_t)(r->end - r->p);
}

bool reader_end(const struct reader *r)
{
	return !r->failed && r->p == r->end;
}

bool msg_body_is_cstr(const uint8_t *body, size_t len)
{
	return len > 0 && memchr(body, 0, len) == body + len - 1;
}

bool msg_body_is_parse(const uint8_t *body, size_t len)
{
	/* name\0 (most often empty), query\0: one look for each NUL. */
	size_t at = len && body[0] == 0 ? 0 : cstr_len(body, len);
	if (at == len)
		return false;
	at++;
	size_t qlen = cstr_len(body + at, len - at);
	if (qlen == len - at)
		return false;
	at += qlen + 1;
	/* int16 count, count int32 type oids, and nothing after. */
	if (len - at < 2)
		return false;
	size_t n = (size_t)body[at] << 8 | body[at + 1];
	return len - at - 2 == n * 4;
}
