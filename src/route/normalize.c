/*
 * Statement normalisation; see normalize.h. One pass, one output buffer, no allocation.
 *
 * This runs for every simple-protocol statement whose constants change between calls (a cache
 * miss on the raw text), so it does as little per byte as it can:
 *  - Most bytes never need a look: letters, '_', non-ASCII bytes, blanks and most operators are
 *    copied as they are wherever they stand. The scan (skip_plain) passes them with one table
 *    test each, eight at a time, and stops only at a byte that may start something to replace or
 *    skip (C_STOP: digits, quotes, '$', '-', '/', '.', NUL).
 *  - Words are not tokenised. Where it matters whether a byte belongs to a word (a digit or '$'
 *    after a letter is part of the name: t1, a$1; a literal's E, B, X, N or U& prefix is one only
 *    when it stands alone: E'..' but not xE'..'), the bytes just before it tell, together with
 *    the end of the last token handled by hand (a number, parameter, literal, ...), after which
 *    a new token starts whatever byte follows (1e'..' is 1 and e'..').
 *  - Text kept verbatim is not copied byte by byte but in one memcpy per stretch, when a constant
 *    or comment ends the stretch.
 * Blanks and comments before the statement are handled first, on their own: only there may a
 * routing hint stand. Character classes are tested by hand (ASCII, like the C locale), not with
 * <ctype.h>, whose functions go through a locale table lookup per byte.
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

/*
 * Byte classes (GNU range designators, which gcc and clang both take).
 *   C_STOP: a byte that may start a constant, comment, quoted name or parameter, or end the text
 *     (' " $ - / . NUL and digits). Every other byte (letters, blanks, most operators, control
 *     characters) is copied as it is wherever it stands, so the scan passes it without a look.
 *   C_SPACE: isspace() of the C locale.
 *   C_ID_START, C_ID_CHAR: may start, may continue an identifier.
 *   C_GLUE: a constant right after it needs a space, or the two would merge into one token.
 *   C_NUM_TAIL: may continue a number after its digits (fraction, exponent).
 */
enum { C_STOP = 1, C_SPACE = 2, C_ID_START = 4, C_ID_CHAR = 8, C_GLUE = 16, C_NUM_TAIL = 32 };
#define C_LETTER (C_ID_START | C_ID_CHAR | C_GLUE)
static const unsigned char byte_class[256] = {
	[0] = C_STOP,
	[' '] = C_SPACE,
	['\t' ... '\r'] = C_SPACE,
	['a' ... 'd'] = C_LETTER,
	['e'] = C_LETTER | C_NUM_TAIL,
	['f' ... 'z'] = C_LETTER,
	['A' ... 'D'] = C_LETTER,
	['E'] = C_LETTER | C_NUM_TAIL,
	['F' ... 'Z'] = C_LETTER,
	['_'] = C_LETTER,
	[0x80 ... 0xff] = C_ID_START | C_ID_CHAR,
	['0' ... '9'] = C_STOP | C_ID_CHAR | C_GLUE,
	['$'] = C_STOP | C_ID_CHAR | C_GLUE,
	['\''] = C_STOP,
	['"'] = C_STOP,
	['-'] = C_STOP,
	['/'] = C_STOP,
	['.'] = C_STOP | C_GLUE | C_NUM_TAIL,
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
static inline void replace(struct out *o, size_t at, size_t resume, const char *text, size_t n)
{
	copy_to(o, at);
	put(o, text, n);
	o->from = resume;
}

/* A constant at src[at .. resume): separated from a preceding word or number (a letter, digit,
 * '_', '.' or '$', not a non-ASCII byte) so tokens never merge. Inline, so that the few bytes of
 * text are stored directly rather than through a copy loop. */
static inline void replace_constant(struct out *o, size_t at, size_t resume, const char *text,
				    size_t n)
{
	copy_to(o, at);
	o->from = resume;
	if (o->len > 0 && (byte_class[(unsigned char)o->p[o->len - 1]] & C_GLUE))
		put(o, " ", 1);
	put(o, text, n);
}

/* Skips text quoted with q starting at i (the opening quote): a '...' literal, or a "..." name.
 * A doubled quote stands for itself; a backslash escapes the next byte when escapes (E''). */
static bool skip_quoted(const char *s, size_t len, size_t *i, char q, bool escapes)
{
	size_t j = *i + 1;
	for (;;) {
		if (j >= len)
			return false;
		if (escapes && s[j] == '\\') {
			j += 2;
			continue;
		}
		if (s[j] == q) {
			if (j + 1 < len && s[j + 1] == q) {
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

static size_t skip_digits(const char *s, size_t len, size_t j)
{
	while (j < len && is_digit((unsigned char)s[j]))
		j++;
	return j;
}

/* The end of a number (digits, fraction, exponent) starting at i. Most are integers: one table
 * test after the digits tells whether a '.' or an exponent may follow. */
static inline size_t number_end(const char *s, size_t len, size_t i)
{
	size_t j = skip_digits(s, len, i);
	if (j >= len || !(byte_class[(unsigned char)s[j]] & C_NUM_TAIL))
		return j;
	if (s[j] == '.' && !(j + 1 < len && s[j + 1] == '.'))
		j = skip_digits(s, len, j + 1);
	if (j < len && (s[j] == 'e' || s[j] == 'E')) {
		size_t k = j + 1;
		if (k < len && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k < len && is_digit((unsigned char)s[k]))
			j = skip_digits(s, len, k);
	}
	return j;
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

/*
 * UESCAPE's literal is syntax (the escape character of a U&'' literal or U&"" name), not a value,
 * so such text is not normalised. UESCAPE means something only after one of those, and they are
 * rare, so the word is looked for only once one was seen (a byte-wise scan of the whole text):
 * anywhere, even in a literal or comment, which at worst refuses text that could have been
 * normalised.
 */
static bool has_uescape_word(const char *s, size_t len)
{
	static const char word[] = "uescape";
	const size_t n = sizeof(word) - 1;
	for (size_t i = 0; i + n <= len; i++) {
		if ((s[i] | 0x20) != 'u' || (i > 0 && is_ident_char((unsigned char)s[i - 1])))
			continue;
		size_t k = 1;
		while (k < n && (s[i + k] | 0x20) == word[k])
			k++;
		if (k == n && !(i + n < len && is_ident_char((unsigned char)s[i + n])))
			return true;
	}
	return false;
}

static inline bool is_stop(unsigned char c)
{
	return byte_class[c] & C_STOP;
}

/*
 * The bytes that need no look: the index of the first C_STOP byte at or after i, or len. Most of
 * a statement is names, keywords, blanks and operators, so eight bytes are tested at once while
 * eight remain (the text has no sentinel after len), with one branch for all of them. A constant
 * often follows the last one closely ("(7, 1, "), so the first two bytes are tested alone.
 */
static size_t skip_plain(const char *s, size_t len, size_t i)
{
	const unsigned char *u = (const unsigned char *)s;
	if (i + 10 <= len) {
		if (is_stop(u[i]))
			return i;
		if (is_stop(u[i + 1]))
			return i + 1;
		i += 2;
		do {
			unsigned any = byte_class[u[i]] | byte_class[u[i + 1]] |
				       byte_class[u[i + 2]] | byte_class[u[i + 3]] |
				       byte_class[u[i + 4]] | byte_class[u[i + 5]] |
				       byte_class[u[i + 6]] | byte_class[u[i + 7]];
			if (any & C_STOP)
				break;
			i += 8;
		} while (i + 8 <= len);
	}
	while (i < len && !is_stop(u[i]))
		i++;
	return i;
}

/*
 * Blanks and comments before the statement: a block comment whose first character is '+' is a
 * routing hint and kept, other comments become one space. Returns the index of the first byte
 * after them, or len + 1 for an unterminated comment.
 */
static size_t skip_leading(struct out *o, const char *s, size_t len)
{
	size_t i = 0;
	for (;;) {
		while (i < len && is_space((unsigned char)s[i]))
			i++;
		size_t start = i;
		if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
			while (i < len && s[i] != '\n' && s[i] != '\r')
				i++;
			replace(o, start, i, " ", 1);
		} else if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
			if (!skip_block_comment(s, len, &i))
				return len + 1;
			if (s[start + 2] != '+')
				replace(o, start, i, " ", 1);
		} else {
			return i;
		}
	}
}

/*
 * Where the scan stopped on a digit or '$' (both identifier characters), whether the byte belongs
 * to the word before it (t1, a$1): so when the byte before is a letter, '_' or non-ASCII byte the
 * scan passed over (at or after end, the end of the last token handled by hand). Such a byte is
 * always in a word, and a word takes all identifier characters that follow. Before end, the byte
 * ended a token of its own (a number, parameter, dollar-quoted string), and a new token starts.
 */
static bool continues_word(const char *s, size_t i, size_t end)
{
	return i > end && is_ident_start((unsigned char)s[i - 1]);
}

/*
 * Whether the byte at i, skipped by the scan (i >= end), starts a word: it follows the end of a
 * token handled by hand, or a byte that is no identifier character. Used to tell a prefix letter
 * (E'..', U&'..') from the last letter of a longer word (xE'..').
 */
static bool starts_word(const char *s, size_t i, size_t end)
{
	return i == end || (i > end && !is_ident_char((unsigned char)s[i - 1]));
}

/* A prefix of the literal at i (the quote): the letter E, B, X or N, standing alone. */
static char letter_prefix(const char *s, size_t i, size_t end)
{
	if (i == 0)
		return 0;
	char p = (char)(s[i - 1] | 0x20);
	if ((p == 'e' || p == 'b' || p == 'x' || p == 'n') && starts_word(s, i - 1, end))
		return p;
	return 0;
}

/* The prefix U& (any case) of the literal or quoted name at i, the U standing alone. */
static bool unicode_prefix(const char *s, size_t i, size_t end)
{
	return i >= 2 && s[i - 1] == '&' && (s[i - 2] | 0x20) == 'u' && starts_word(s, i - 2, end);
}

/* A literal at i (the quote), with a prefix or without; end as for letter_prefix. */
static bool literal(struct out *o, const char *s, size_t len, size_t *i, size_t end, bool *unicode)
{
	size_t start = *i;
	char p = letter_prefix(s, start, end);
	if (p) {
		if (!skip_quoted(s, len, i, '\'', p == 'e'))
			return false;
		replace(o, start, *i, "''", 2); /* the prefix letter is kept */
		return true;
	}
	if (!skip_quoted(s, len, i, '\'', false))
		return false;
	if (unicode_prefix(s, start, end)) {
		*unicode = true;
		replace(o, start - 2, *i, "U&''", 4);
	} else {
		replace_constant(o, start, *i, "''", 2);
	}
	return true;
}

/* A dollar-quoted string or a parameter ($1, kept with its digits) at i. */
static bool dollar(struct out *o, const char *s, size_t len, size_t *i)
{
	size_t start = *i;
	size_t tag = dollar_tag_len(s, len, start);
	if (tag) {
		if (!skip_dollar(s, len, i, tag))
			return false;
		replace_constant(o, start, *i, "''", 2);
		return true;
	}
	*i = skip_digits(s, len, start + 1);
	return true;
}

/* The identifier characters from i on, in a word already begun. */
static size_t skip_word(const char *s, size_t len, size_t i)
{
	while (i < len && is_ident_char((unsigned char)s[i]))
		i++;
	return i;
}

bool normalize_sql(const char *sql, size_t len, char *out, size_t cap, size_t *out_len)
{
	if (!normalizable_start(sql, len))
		return false;
	struct out o = { sql, 0, out, 0, cap, cap > 0 };
	size_t i = skip_leading(&o, sql, len);
	if (i > len)
		return false;
	/* The end of the last token handled below: what precedes a word. */
	size_t end = i;
	bool unicode = false; /* a U&'' literal or U&"" name was seen */
	for (;;) {
		i = skip_plain(sql, len, i);
		if (i >= len || !o.ok)
			break;
		size_t start = i;
		switch (sql[i]) {
		case '\'':
			if (!literal(&o, sql, len, &i, end, &unicode))
				return false;
			break;
		case '"':
			if (unicode_prefix(sql, i, end))
				unicode = true;
			if (!skip_quoted(sql, len, &i, '"', false))
				return false; /* kept */
			break;
		case '$':
			if (continues_word(sql, i, end))
				i = skip_word(sql, len, i);
			else if (!dollar(&o, sql, len, &i))
				return false;
			break;
		case '-':
			if (i + 1 < len && sql[i + 1] == '-') {
				while (i < len && sql[i] != '\n' && sql[i] != '\r')
					i++;
				replace(&o, start, i, " ", 1);
			} else {
				i++;
			}
			break;
		case '/':
			if (i + 1 < len && sql[i + 1] == '*') {
				if (!skip_block_comment(sql, len, &i))
					return false;
				replace(&o, start, i, " ", 1);
			} else {
				i++;
			}
			break;
		case '.':
			if (i + 1 < len && is_digit((unsigned char)sql[i + 1])) {
				i = number_end(sql, len, i);
				replace_constant(&o, start, i, "0", 1);
			} else {
				i++;
			}
			break;
		case 0:
			return false;
		default: /* a digit */
			if (continues_word(sql, i, end)) {
				i = skip_word(sql, len, i);
			} else {
				i = number_end(sql, len, i);
				replace_constant(&o, start, i, "0", 1);
			}
			break;
		}
		end = i;
	}
	copy_to(&o, len);
	if (!o.ok || (unicode && has_uescape_word(sql, len)))
		return false;
	out[o.len] = 0;
	*out_len = o.len;
	return true;
}
