/* Bounds-checked body reader; see reader.h. */
#include "protocol/reader.h"

#include <string.h>

static bool reader_take(struct reader *r, size_t n, const uint8_t **at)
{
	if (r->failed || (size_t)(r->end - r->p) < n) {
		r->failed = true;
		return false;
	}
	*at = r->p;
	r->p += n;
	return true;
}

bool reader_u8(struct reader *r, uint8_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 1, &at))
		return false;
	*out = at[0];
	return true;
}

bool reader_u16(struct reader *r, uint16_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 2, &at))
		return false;
	*out = (uint16_t)((at[0] << 8) | at[1]);
	return true;
}

bool reader_u32(struct reader *r, uint32_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 4, &at))
		return false;
	*out = ((uint32_t)at[0] << 24) | ((uint32_t)at[1] << 16) | ((uint32_t)at[2] << 8) | at[3];
	return true;
}

bool reader_i32(struct reader *r, int32_t *out)
{
	uint32_t u;
	if (!reader_u32(r, &u))
		return false;
	*out = (int32_t)u;
	return true;
}

bool reader_cstr(struct reader *r, const char **out, size_t *len)
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

bool reader_bytes(struct reader *r, size_t n, const uint8_t **out)
{
	return reader_take(r, n, out);
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
	struct reader r;
	const char *name, *query;
	uint16_t n;
	const uint8_t *types;
	reader_init(&r, body, len);
	return reader_cstr(&r, &name, NULL) && reader_cstr(&r, &query, NULL) &&
	       reader_u16(&r, &n) && reader_bytes(&r, (size_t)n * 4, &types) && reader_end(&r);
}
