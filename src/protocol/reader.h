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

bool reader_u8(struct reader *r, uint8_t *out) __attribute__((warn_unused_result));
bool reader_u16(struct reader *r, uint16_t *out) __attribute__((warn_unused_result));
bool reader_u32(struct reader *r, uint32_t *out) __attribute__((warn_unused_result));
bool reader_i32(struct reader *r, int32_t *out) __attribute__((warn_unused_result));
/* A NUL-terminated string inside the body; *out points into the body, *len excludes the NUL. */
bool reader_cstr(struct reader *r, const char **out, size_t *len)
	__attribute__((warn_unused_result));
/* n raw bytes; *out points into the body. */
bool reader_bytes(struct reader *r, size_t n, const uint8_t **out)
	__attribute__((warn_unused_result));
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
