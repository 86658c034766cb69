/*
 * (Not named strbuf: libconfig exports strbuf_append, and ours would interpose on it.)
 * A growable text buffer with a hard ceiling and a sticky failure flag (PgBouncer's pktbuf
 * habit): writers append without checking, the owner checks textbuf_failed() once at the end.
 * Used to build HTTP bodies; the ceiling bounds what one response may cost.
 */
#ifndef PGRELAY_UTIL_TEXTBUF_H
#define PGRELAY_UTIL_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

struct textbuf {
	char *data;  /* owned; NUL-terminated when len > 0; NULL before the first append */
	size_t len;  /* bytes used, without the NUL */
	size_t cap;  /* bytes allocated */
	size_t max;  /* ceiling of len; an append beyond it fails the buffer */
	bool failed; /* an append did not fit (ceiling or out of memory); data is then partial */
};

void textbuf_init(struct textbuf *b, size_t max);
void textbuf_free(struct textbuf *b);
void textbuf_reset(struct textbuf *b);
void textbuf_append(struct textbuf *b, const char *s, size_t n);
void textbuf_puts(struct textbuf *b, const char *s);
void textbuf_printf(struct textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal, quotes included; control bytes escaped as \u00XX. */
void textbuf_json_string(struct textbuf *b, const char *s);
/* s as a Prometheus label value (backslash, quote and newline escaped), no quotes. */
void textbuf_prom_label(struct textbuf *b, const char *s);
static inline bool textbuf_failed(const struct textbuf *b)
{
	return b->failed;
}

#endif
