/*
 * Error collector for the file loaders in this folder (users, hba): each error becomes one
 * "PATH:LINE: message" line in a caller-supplied buffer, lines separated by '\n', so an operator
 * sees every bad line of a file at once instead of fixing them one reload at a time. Output that
 * does not fit is cut, but the buffer always ends with a NUL and the count stays exact.
 * Internal to src/auth; header-only so the build files need not change.
 */
#ifndef PGRELAY_AUTH_ERRBUF_H
#define PGRELAY_AUTH_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

struct errbuf {
	char *buf;	  /* borrowed from the caller; may be NULL when cap is 0 */
	size_t cap;	  /* size of buf */
	size_t len;	  /* characters written so far, never more than cap - 1 */
	const char *path; /* borrowed: the file being loaded, prefix of every line */
	unsigned count;	  /* errors reported, including those cut for lack of room */
};

static inline void errbuf_init(struct errbuf *e, char *buf, size_t cap, const char *path)
{
	e->buf = buf;
	e->cap = cap;
	e->len = 0;
	e->path = path;
	e->count = 0;
	if (cap)
		buf[0] = '\0';
}

/* Appends fmt at len, clamping len so the buffer stays NUL-terminated. */
static inline void errbuf_vappend(struct errbuf *e, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static inline void errbuf_vappend(struct errbuf *e, const char *fmt, va_list ap)
{
	int n;

	if (e->cap == 0 || e->len + 1 >= e->cap)
		return;
	n = vsnprintf(e->buf + e->len, e->cap - e->len, fmt, ap);
	if (n < 0)
		return;
	e->len += (size_t)n;
	if (e->len >= e->cap)
		e->len = e->cap - 1;
}

static inline void errbuf_append(struct errbuf *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void errbuf_append(struct errbuf *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errbuf_vappend(e, fmt, ap);
	va_end(ap);
}

/* Adds "PATH:LINE: message"; line 0 means the error is about the whole file ("PATH: message"). */
static inline void errbuf_add(struct errbuf *e, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void errbuf_add(struct errbuf *e, int line, const char *fmt, ...)
{
	va_list ap;

	if (e->count++)
		errbuf_append(e, "\n");
	if (line > 0)
		errbuf_append(e, "%s:%d: ", e->path, line);
	else
		errbuf_append(e, "%s: ", e->path);
	va_start(ap, fmt);
	errbuf_vappend(e, fmt, ap);
	va_end(ap);
}

#endif
