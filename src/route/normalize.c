/*
 * Statement normalisation; see normalize.h. One pass, one output buffer, no allocation.
 */
#include "route/normalize.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

struct out {
	char *p;
	size_t len, cap;
	bool ok;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (!o->ok || o->len + n + 1 > o->cap) {
		o->ok = false;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

/* A constant: separated from a preceding word or number so tokens never merge. */
static void put_constant(struct out *o, const char *text)
{
	if (o->len > 0) {
		char prev = o->p[o->len - 1];
		if (isalnum((unsigned char)prev) || prev == '_' || prev == '.' || prev == '$')
			put(o, " ", 1);
	}
	put(o, text, strlen(text));
}

static bool is_ident_start(unsigned char c)
{
	return isalpha(c) || c == '_' || c >= 0x80;
}

static bool is_ident_char(unsigned char c)
{
	return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
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
		       (isalnum((unsigned char)s[j]) || s[j] == '_' || (unsigned char)s[j] >= 0x80))
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
	while (j < len && isdigit((unsigned char)s[j]))
		j++;
	if (j < len && s[j] == '.' && !(j + 1 < len && s[j + 1] == '.')) {
		j++;
		while (j < len && isdigit((unsigned char)s[j]))
			j++;
	}
	if (j < len && (s[j] == 'e' || s[j] == 'E')) {
		size_t k = j + 1;
		if (k < len && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k < len && isdigit((unsigned char)s[k])) {
			j = k;
			while (j < len && isdigit((unsigned char)s[j]))
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
	static const char *const words[] = { "select", "with",	 "insert", "update",
					     "delete", "values", "table" };
	size_t i = 0;
	for (;;) {
		while (i < len && isspace((unsigned char)s[i]))
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
	size_t j = i;
	while (j < len && isalpha((unsigned char)s[j]))
		j++;
	for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
		if (j - i == strlen(words[k]) && strncasecmp(s + i, words[k], j - i) == 0)
			return true;
	return false;
}

/* Case-insensitive search of a lower-case word in the first len bytes. */
static bool contains_word(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	for (size_t i = 0; i + n <= len; i++)
		if ((s[i] | 0x20) == word[0] && strncasecmp(s + i, word, n) == 0)
			return true;
	return false;
}

bool normalize_sql(const char *sql, size_t len, char *out, size_t cap, size_t *out_len)
{
	/* UESCAPE's literal is syntax (one escape character), not a value: leave such text be. */
	if (!normalizable_start(sql, len) || contains_word(sql, len, "uescape"))
		return false;
	struct out o = { out, 0, cap, cap > 0 };
	bool leading = true; /* nothing but blanks copied so far: a hint may come */
	for (size_t i = 0; i < len && o.ok;) {
		unsigned char c = (unsigned char)sql[i];
		if (c == 0)
			return false;
		if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
			while (i < len && sql[i] != '\n' && sql[i] != '\r')
				i++;
			put(&o, " ", 1);
			continue;
		}
		if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
			size_t start = i;
			if (!skip_block_comment(sql, len, &i))
				return false;
			if (leading && i - start >= 3 && sql[start + 2] == '+')
				put(&o, sql + start, i - start); /* a routing hint */
			else
				put(&o, " ", 1);
			continue;
		}
		if (isspace(c)) {
			put(&o, sql + i, 1);
			i++;
			continue;
		}
		leading = false;
		if (c == '\'') {
			if (!skip_quoted(sql, len, &i, false))
				return false;
			put_constant(&o, "''");
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
			put(&o, sql + i, j + 1 - i);
			i = j + 1;
			continue;
		}
		if (c == '$') {
			size_t tag = dollar_tag_len(sql, len, i);
			if (tag) {
				if (!skip_dollar(sql, len, &i, tag))
					return false;
				put_constant(&o, "''");
				continue;
			}
			/* $1: a parameter, copied with its digits */
			size_t j = i + 1;
			while (j < len && isdigit((unsigned char)sql[j]))
				j++;
			put(&o, sql + i, j - i);
			i = j;
			continue;
		}
		if (isdigit(c) || (c == '.' && i + 1 < len && isdigit((unsigned char)sql[i + 1]))) {
			skip_number(sql, len, &i);
			put_constant(&o, "0");
			continue;
		}
		if (is_ident_start(c)) {
			size_t j = i;
			while (j < len && is_ident_char((unsigned char)sql[j]))
				j++;
			/* E'..', B'..', X'..', N'..' and U&'..' prefixes: the literal goes. */
			bool one = j - i == 1;
			char p = (char)(c | 0x20);
			if (j < len && sql[j] == '\'' && one &&
			    (p == 'e' || p == 'b' || p == 'x' || p == 'n')) {
				size_t k = j;
				if (!skip_quoted(sql, len, &k, p == 'e'))
					return false;
				put(&o, sql + i, 1);
				put(&o, "''", 2);
				i = k;
				continue;
			}
			if (one && p == 'u' && j + 1 < len && sql[j] == '&' && sql[j + 1] == '\'') {
				size_t k = j + 1;
				if (!skip_quoted(sql, len, &k, false))
					return false;
				put(&o, "U&''", 4);
				i = k;
				continue;
			}
			put(&o, sql + i, j - i);
			i = j;
			continue;
		}
		put(&o, sql + i, 1);
		i++;
	}
	if (!o.ok)
		return false;
	out[o.len] = 0;
	*out_len = o.len;
	return true;
}
