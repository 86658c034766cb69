/*
 * textbuf.h: growth doubles up to the ceiling; once failed, every append is a no-op so a writer
 * never has to check in the middle of building a body.
 */
#include "util/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void textbuf_init(struct textbuf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void textbuf_free(struct textbuf *b)
{
	free(b->data);
	textbuf_init(b, b->max);
}

void textbuf_reset(struct textbuf *b)
{
	b->len = 0;
	b->failed = false;
	if (b->data)
		b->data[0] = '\0';
}

/* Makes room for n more bytes plus the NUL; false (and failed) if it cannot. */
static bool textbuf_reserve(struct textbuf *b, size_t n)
{
	if (b->failed)
		return false;
	if (n > b->max - b->len) {
		b->failed = true;
		return false;
	}
	size_t need = b->len + n + 1;
	if (need <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p) {
		b->failed = true;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

void textbuf_append(struct textbuf *b, const char *s, size_t n)
{
	if (!textbuf_reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void textbuf_puts(struct textbuf *b, const char *s)
{
	textbuf_append(b, s, strlen(s));
}

void textbuf_printf(struct textbuf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		textbuf_append(b, small, (size_t)n);
		return;
	}
	/* Longer than the stack copy: format straight into the buffer. */
	if (!textbuf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void textbuf_json_string(struct textbuf *b, const char *s)
{
	textbuf_append(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char esc[2] = { '\\', (char)*p };
			textbuf_append(b, esc, 2);
		} else if (*p < 0x20) {
			textbuf_printf(b, "\\u%04x", *p);
		} else {
			textbuf_append(b, (const char *)p, 1);
		}
	}
	textbuf_append(b, "\"", 1);
}

void textbuf_prom_label(struct textbuf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			textbuf_append(b, "\\\\", 2);
		else if (*s == '"')
			textbuf_append(b, "\\\"", 2);
		else if (*s == '\n')
			textbuf_append(b, "\\n", 2);
		else
			textbuf_append(b, s, 1);
	}
}
