/*
 * Statement normalisation; see normalize.h. One pass, one output buffer, no allocation.
 *
 * This runs for every simple-protocol statement whose constants change between calls (a cache
 * miss on the raw text), so it copies lazily: text kept verbatim (words, blanks, operators) is not
 * copied byte by byte but in one memcpy per stretch, when a constant or comment ends the stretch.
 * Character classes are tested by hand (ASCII, like the C locale), not with <ctype.h>, whose
 * functions go through a locale table lookup per byte.
 */
#include "route/normalize.h"

#include <string.h>

struct out {
	const char *src; /* the input */
	size_t from; /* src[from ..] is not handled yet: the next verbatim stretch starts here */
	char *p;
	size_t len, cap;
	bool ok;
};

static inline bool is_digit(unsigned char c)
{
	return (unsigned)(c - '0') < 10;
}

static inline bool is_alpha(unsigned char c)
{
	return (unsigned)((c | 0x20) - 'a') < 26;
}

/* Byte classes (GNU range designators, which gcc and clang both take). C_KEPT: a blank, an
 * operator or punctuation, copied as it is and never the start of anything else. The bytes that
 * may start a constant, comment, quoted name or parameter (' " $ - / . NUL and digits) are not
 * C_KEPT. C_SPACE is isspace() of the C locale. */
enum { C_KEPT = 1, C_SPACE = 2, C_ID_START = 4, C_ID_CHAR = 8, C_DIGIT = 16 };
static const unsigned char byte_class[256] = {
	[' '] = C_KEPT | C_SPACE,
	['\t' ... '\r'] = C_KEPT | C_SPACE,
	['a' ... 'z'] = C_ID_START | C_ID_CHAR,
	['A' ... 'Z'] = C_ID_START | C_ID_CHAR,
	['_'] = C_ID_START | C_ID_CHAR,
	[0x80 ... 0xff] = C_ID_START | C_ID_CHAR,
	['0' ... '9'] = C_DIGIT | C_ID_CHAR,
	['$'] = C_ID_CHAR,
	['!'] = C_KEPT,
	['#'] = C_KEPT,
	['%'] = C_KEPT,
	['&'] = C_KEPT,
	['('] = C_KEPT,
	[')'] = C_KEPT,
	['*'] = C_KEPT,
	['+'] = C_KEPT,
	[','] = C_KEPT,
	[':'] = C_KEPT,
	[';'] = C_KEPT,
	['<'] = C_KEPT,
	['='] = C_KEPT,
	['>'] = C_KEPT,
	['?'] = C_KEPT,
	['@'] = C_KEPT,
	['['] = C_KEPT,
	['\\'] = C_KEPT,
	[']'] = C_KEPT,
	['^'] = C_KEPT,
	['`'] = C_KEPT,
	['{'] = C_KEPT,
	['|'] = C_KEPT,
	['}'] = C_KEPT,
	['~'] = C_KEPT,
};

static inline bool is_space(unsigned char c)
{
	return byte_class[c] & C_SPACE;
}

static inline bool is_ident_start(unsigned char c)
{
	return byte_class[c] & C_ID_START;
}

static inline bool is_ident_char(unsigned char c)
{
	return byte_class[c] & C_ID_CHAR;
}

static void put(struct out *o, const char *s, size_t n)
{
	if (!o->ok || o->len + n + 1 > o->cap) {
		o->ok = false;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

/* Copies the verbatim stretch up to (not including) src[to]; what follows it is replaced. */
static void copy_to(struct out *o, size_t to)
{
	if (to > o->from)
		put(o, o->src + o->from, to - o->from);
}

/* src[at .. resume) is replaced by text (n bytes). */
static void replace(struct out *o, size_t at, size_t resume, const char *text, size_t n)
{
	copy_to(o, at);
	put(o, text, n);
	o->from = resume;
}

/* A constant at src[at .. resume): separated from a preceding word or number so tokens never
 * merge. */
static void replace_constant(struct out *o, size_t at, size_t resume, const char *text, size_t n)
{
	copy_to(o, at);
	o->from = resume;
	if (o->len > 0) {
		unsigned char prev = (unsigned char)o->p[o->len - 1];
		if (is_alpha(prev) || is_digit(prev) || prev == '_' || prev == '.' || prev == '$')
			put(o, " ", 1);
	}
	put(o, text, n);
}

/* Skips a '...' literal starting at i (the quote); backslash escapes when escapes. */
static bool skip_quoted(const char *s, size_t len, size_t *i, bool escapes)
{
	size_t j = *i + 1;
	for (;;) {
		if (j >= len)
			return false;
		if (escapes && s[j] == '\\') {
			j += 2;
			continue;
		}
		if (s[j] == '\'') {
			if (j + 1 < len && s[j + 1] == '\'') {
				j += 2;
				continue;
			}
			*i = j + 1;
			return true;
		}
		j++;
	}
}

/* At s[i] == '$': the length of a dollar-quote tag ($$ or $tag$), or 0 if it is none. */
static size_t dollar_tag_len(const char *s, size_t len, size_t i)
{
	size_t j = i + 1;
	if (j < len && is_ident_start((unsigned char)s[j]))
		while (j < len &&
		       (is_ident_start((unsigned char)s[j]) || is_digit((unsigned char)s[j])))
			j++;
	return j < len && s[j] == '$' ? j + 1 - i : 0;
}

/* Skips a dollar-quoted string starting at i with a tag of tag_len bytes. */
static bool skip_dollar(const char *s, size_t len, size_t *i, size_t tag_len)
{
	const char *tag = s + *i;
	for (size_t j = *i + tag_len; j + tag_len <= len; j++) {
		if (s[j] == '$' && memcmp(s + j, tag, tag_len) == 0) {
			*i = j + tag_len;
			return true;
		}
	}
	return false;
}

/* Skips a nested block comment starting at i (slash, star). */
static bool skip_block_comment(const char *s, size_t len, size_t *i)
{
	int depth = 0;
	size_t j = *i;
	while (j + 1 < len) {
		if (s[j] == '/' && s[j + 1] == '*') {
			depth++;
			j += 2;
		} else if (s[j] == '*' && s[j + 1] == '/') {
			j += 2;
			if (--depth == 0) {
				*i = j;
				return true;
			}
		} else {
			j++;
		}
	}
	return false;
}

/* Skips a number (digits, fraction, exponent) starting at i. */
static void skip_number(const char *s, size_t len, size_t *i)
{
	size_t j = *i;
	while (j < len && is_digit((unsigned char)s[j]))
		j++;
	if (j < len && s[j] == '.' && !(j + 1 < len && s[j + 1] == '.')) {
		j++;
		while (j < len && is_digit((unsigned char)s[j]))
			j++;
	}
	if (j < len && (s[j] == 'e' || s[j] == 'E')) {
		size_t k = j + 1;
		if (k < len && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k < len && is_digit((unsigned char)s[k])) {
			j = k;
			while (j < len && is_digit((unsigned char)s[j]))
				j++;
		}
	}
	*i = j;
}

/*
 * Statement types whose class never depends on a constant. Others are not normalised: EXPLAIN's
 * options take values (ANALYZE 0 is not ANALYZE 1), COPY's file name decides between a read
 * (STDOUT) and a write, and SET/BEGIN are rare enough to parse as they are.
 */
static bool normalizable_start(const char *s, size_t len)
{
	size_t i = 0;
	for (;;) {
		while (i < len && is_space((unsigned char)s[i]))
			i++;
		if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
			if (!skip_block_comment(s, len, &i))
				return false;
		} else if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
			while (i < len && s[i] != '\n' && s[i] != '\r')
				i++;
		} else {
			break;
		}
	}
	while (i < len && s[i] == '(')
		i++; /* (SELECT ...) UNION ... */
	char w[6];
	size_t n = 0;
	while (i + n < len && is_alpha((unsigned char)s[i + n])) {
		if (n == sizeof(w))
			return false;
		w[n] = (char)(s[i + n] | 0x20);
		n++;
	}
	if (n == 4)
		return memcmp(w, "with", 4) == 0;
	if (n == 5)
		return memcmp(w, "table", 5) == 0;
	return n == 6 && (memcmp(w, "select", 6) == 0 || memcmp(w, "insert", 6) == 0 ||
			  memcmp(w, "update", 6) == 0 || memcmp(w, "delete", 6) == 0 ||
			  memcmp(w, "values", 6) == 0);
}

/* A word of n bytes at s that is UESCAPE, in any case. */
static bool is_uescape(const char *s, size_t n)
{
	static const char word[] = "uescape";
	if (n != sizeof(word) - 1)
		return false;
	for (size_t k = 0; k < n; k++)
		if ((s[k] | 0x20) != word[k])
			return false;
	return true;
}

bool normalize_sql(const char *sql, size_t len, char *out, size_t cap, size_t *out_len)
{
	if (!normalizable_start(sql, len))
		return false;
	struct out o = { sql, 0, out, 0, cap, cap > 0 };
	bool leading = true; /* nothing but blanks and comments so far: a hint may come */
	size_t i = 0;
	while (i < len && o.ok) {
		unsigned char c = (unsigned char)sql[i];
		unsigned char k = byte_class[c];
		if (k & C_KEPT) {
			leading = leading && (k & C_SPACE);
			i++;
			continue;
		}
		if (k & C_ID_START) {
			leading = false;
			size_t j = i + 1;
			while (j < len && is_ident_char((unsigned char)sql[j]))
				j++;
			/* UESCAPE's literal is syntax (one escape character), not a value. */
			if (is_uescape(sql + i, j - i))
				return false;
			/* E'..', B'..', X'..', N'..' and U&'..' prefixes: the literal goes. */
			char p = (char)(c | 0x20);
			if (j - i == 1 && j < len && sql[j] == '\'' &&
			    (p == 'e' || p == 'b' || p == 'x' || p == 'n')) {
				size_t end = j;
				if (!skip_quoted(sql, len, &end, p == 'e'))
					return false;
				replace(&o, j, end, "''", 2); /* the prefix letter is kept */
				i = end;
				continue;
			}
			if (j - i == 1 && p == 'u' && j + 1 < len && sql[j] == '&' &&
			    sql[j + 1] == '\'') {
				size_t end = j + 1;
				if (!skip_quoted(sql, len, &end, false))
					return false;
				replace(&o, i, end, "U&''", 4);
				i = end;
				continue;
			}
			i = j;
			continue;
		}
		if (c == 0)
			return false;
		if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
			size_t start = i;
			while (i < len && sql[i] != '\n' && sql[i] != '\r')
				i++;
			replace(&o, start, i, " ", 1);
			continue;
		}
		if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
			size_t start = i;
			if (!skip_block_comment(sql, len, &i))
				return false;
			if (!(leading && i - start >= 3 && sql[start + 2] == '+'))
				replace(&o, start, i, " ", 1); /* else a routing hint, kept */
			continue;
		}
		leading = false;
		size_t start = i;
		if (c == '\'') {
			if (!skip_quoted(sql, len, &i, false))
				return false;
			replace_constant(&o, start, i, "''", 2);
			continue;
		}
		if (c == '"') {
			size_t j = i + 1;
			for (;;) {
				if (j >= len)
					return false;
				if (sql[j] == '"') {
					if (j + 1 < len && sql[j + 1] == '"') {
						j += 2;
						continue;
					}
					break;
				}
				j++;
			}
			i = j + 1; /* a quoted identifier, kept */
			continue;
		}
		if (c == '$') {
			size_t tag = dollar_tag_len(sql, len, i);
			if (tag) {
				if (!skip_dollar(sql, len, &i, tag))
					return false;
				replace_constant(&o, start, i, "''", 2);
				continue;
			}
			/* $1: a parameter, kept with its digits */
			i++;
			while (i < len && is_digit((unsigned char)sql[i]))
				i++;
			continue;
		}
		if (is_digit(c) ||
		    (c == '.' && i + 1 < len && is_digit((unsigned char)sql[i + 1]))) {
			skip_number(sql, len, &i);
			replace_constant(&o, start, i, "0", 1);
			continue;
		}
		i++; /* a control character, kept */
	}
	copy_to(&o, len);
	if (!o.ok)
		return false;
	out[o.len] = 0;
	*out_len = o.len;
	return true;
}
