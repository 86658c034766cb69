/*
 * Bounds-checked cursor over a message body the caller owns (a slice of an iobuf). Every getter
 * fails on short input and leaves the cursor unusable (sticky failure); reader_end() succeeds only
 * if the body was consumed exactly, as PostgreSQL's pq_getmsgend.
 */
#ifndef PGRELAY_PROTOCOL_READER_H
#define PGRELAY_PROTOCOL_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct reader {
	const uint8_t *p;   /* borrowed: next byte to read */
	const uint8_t *end; /* borrowed: one past the body */
	bool failed;	    /* sticky: set by the first getter that ran out of bytes */
};

static inline void reader_init(struct reader *r, const uint8_t *body, size_t len)
{
	r->p = body;
	r->end = body + len;
	r->failed = false;
}

/* The getters are inline: the session layer reads a few bytes of most messages it relays. */
static inline __attribute__((warn_unused_result)) bool reader_take(struct reader *r, size_t n,
								   const uint8_t **at)
{
	if (r->failed || (size_t)(r->end - r->p) < n) {
		r->failed = true;
		return false;
	}
	*at = r->p;
	r->p += n;
	return true;
}

static inline __attribute__((warn_unused_result)) bool reader_u8(struct reader *r, uint8_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 1, &at))
		return false;
	*out = at[0];
	return true;
}

static inline __attribute__((warn_unused_result)) bool reader_u16(struct reader *r, uint16_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 2, &at))
		return false;
	*out = (uint16_t)((at[0] << 8) | at[1]);
	return true;
}

static inline __attribute__((warn_unused_result)) bool reader_u32(struct reader *r, uint32_t *out)
{
	const uint8_t *at;
	if (!reader_take(r, 4, &at))
		return false;
	*out = ((uint32_t)at[0] << 24) | ((uint32_t)at[1] << 16) | ((uint32_t)at[2] << 8) | at[3];
	return true;
}

static inline __attribute__((warn_unused_result)) bool reader_i32(struct reader *r, int32_t *out)
{
	uint32_t u;
	if (!reader_u32(r, &u))
		return false;
	*out = (int32_t)u;
	return true;
}

/* reader_cstr past its fast path: looks for the NUL. */
bool reader_cstr_scan(struct reader *r, const char **out, size_t *len)
	__attribute__((warn_unused_result));
/*
 * A NUL-terminated string inside the body; *out points into the body, *len excludes the NUL.
 * The empty string (the unnamed portal and statement that drivers send in every unit) is taken
 * without a call.
 */
static inline __attribute__((warn_unused_result)) bool reader_cstr(struct reader *r,
								   const char **out, size_t *len)
{
	if (r->failed || r->p == r->end || r->p[0] != 0)
		return reader_cstr_scan(r, out, len);
	*out = (const char *)r->p++;
	if (len)
		*len = 0;
	return true;
}
/* n raw bytes; *out points into the body. */
static inline __attribute__((warn_unused_result)) bool reader_bytes(struct reader *r, size_t n,
								    const uint8_t **out)
{
	return reader_take(r, n, out);
}
size_t reader_remaining(const struct reader *r);
/* True if nothing failed and every byte was consumed. */
bool reader_end(const struct reader *r) __attribute__((warn_unused_result));

/*
 * Whole-body checks for messages whose text later code reads as C strings, with PostgreSQL's
 * rules (pq_getmsgstring + pq_getmsgend): a body that fails would get "invalid message format"
 * from the server, and must not reach a reader that trusts a terminating NUL.
 */
/* A Query body: exactly one NUL-terminated string, its NUL being the last byte. */
bool msg_body_is_cstr(const uint8_t *body, size_t len) __attribute__((warn_unused_result));
/*
 * The length of the C string at s, at most cap (cap when no NUL is in the first cap bytes).
 * strnlen() does the same, but in this process it resolves to libpg_query's exported copy, a
 * byte loop, before glibc's: memchr() is glibc's vector version.
 */
static inline size_t cstr_len(const void *s, size_t cap)
{
	const void *z = memchr(s, 0, cap);
	return z ? (size_t)((const char *)z - (const char *)s) : cap;
}
/* A Parse body: name\0 query\0, an int16 count, count int32 type oids, and nothing after. */
bool msg_body_is_parse(const uint8_t *body, size_t len) __attribute__((warn_unused_result));

#endif
