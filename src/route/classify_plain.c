/*
 * The plain-statement proof; see classify_plain_command() in classify.h.
 *
 * Where routing is fixed (load balancing off, or a session pinned to one role) the session layer
 * needs only a statement's session effects and its kind, and every session effect of a SELECT,
 * INSERT, UPDATE or DELETE comes from a function call (advisory locks, set_config) or from
 * SELECT ... INTO (a new, possibly temporary, table). Neither can be written without a
 * parenthesis or the word INTO. So one pass over the bytes that finds none of them, nor a second
 * statement, nor a comment (a hint), proves what the grammar would say, without the normaliser,
 * the two hashes and the cache lookups a statement with changing constants costs otherwise.
 * A call is a name (maybe quoted or qualified) then '(': an INSERT's parentheses that follow
 * anything else (VALUES, a comma) or open the column list after the table's name are no calls,
 * so INSERT ... VALUES, the commonest write, passes too.
 *
 * Quoting is not followed: a parenthesis, semicolon or INTO inside a literal or a quoted name
 * only sends the text to the full classifier. The proof can be wrong only towards "not plain".
 */
#include <string.h>

#include "route/classify.h"

/* Identifier characters (as PostgreSQL's scanner: letters, digits, _, $, non-ASCII bytes). */
static const bool ident_char[256] = {
	['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true,
	['_'] = true,	      ['$'] = true,	    [0x80 ... 0xff] = true,
};

static bool is_blank(unsigned char ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

static bool is_ident(unsigned char ch)
{
	return ident_char[ch];
}

/* The word w (lower case, n letters) at s[i], standing alone. */
static bool word_at(const char *s, size_t len, size_t i, const char *w, size_t n)
{
	if (i + n > len || (i > 0 && is_ident((unsigned char)s[i - 1])))
		return false;
	for (size_t k = 0; k < n; k++)
		if ((s[i + k] | 0x20) != w[k])
			return false;
	return i + n == len || !is_ident((unsigned char)s[i + n]);
}

static uint8_t plain_keyword(const char *s, size_t len, size_t i)
{
	if (word_at(s, len, i, "select", 6))
		return CLASSIFY_CMD_OTHER;
	if (word_at(s, len, i, "update", 6))
		return CLASSIFY_CMD_UPDATE;
	if (word_at(s, len, i, "delete", 6))
		return CLASSIFY_CMD_DELETE;
	if (word_at(s, len, i, "insert", 6))
		return CLASSIFY_CMD_INSERT;
	return CLASSIFY_CMD_NONE;
}

/*
 * The bytes that need a look: ( ; - / and, where INTO must be found, i and I. Sixteen bytes per
 * step (GCC vector extensions, SSE2 or NEON code), since a statement is mostly other bytes.
 */
typedef unsigned char u8x16 __attribute__((vector_size(16)));

static uint64_t plain_marks_half(const u8x16 *m, int half)
{
	uint64_t w;
	memcpy(&w, (const unsigned char *)m + 8 * half, 8);
	return w;
}

/* Non-zero bytes where the 16 bytes at p hold a byte that needs a look. */
static void plain_marks(const char *p, bool into, uint64_t *lo, uint64_t *hi)
{
	u8x16 v;
	memcpy(&v, p, 16);
	u8x16 m = (u8x16)((v == '(') | (v == ';') | (v == '-') | (v == '/'));
	if (into)
		m |= (u8x16)((v | 0x20) == 'i');
	*lo = plain_marks_half(&m, 0);
	*hi = plain_marks_half(&m, 1);
}

/* The first byte at or after i that needs a look, or len. */
static size_t plain_next(const char *s, size_t len, size_t i, bool into)
{
	uint64_t lo, hi;
	for (; i + 16 <= len; i += 16) {
		plain_marks(s + i, into, &lo, &hi);
		if (lo)
			return i + (size_t)__builtin_ctzll(lo) / 8;
		if (hi)
			return i + 8 + (size_t)__builtin_ctzll(hi) / 8;
	}
	if (i >= len)
		return len;
	if (len >= 16) {
		/* The last 16 bytes, overlapping what was seen: marks before i are dropped. */
		size_t base = len - 16, skip = i - base;
		plain_marks(s + base, into, &lo, &hi);
		if (skip >= 8) {
			lo = 0;
			hi &= ~0ull << (8 * (skip - 8));
		} else {
			lo &= ~0ull << (8 * skip);
		}
		if (lo)
			return base + (size_t)__builtin_ctzll(lo) / 8;
		if (hi)
			return base + 8 + (size_t)__builtin_ctzll(hi) / 8;
		return len;
	}
	for (; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '(' || ch == ';' || ch == '-' || ch == '/' ||
		    (into && (ch | 0x20) == 'i'))
			return i;
	}
	return len;
}

/*
 * An INSERT's parentheses that cannot be calls: a call is a name, maybe quoted, then '(' (blanks
 * between allowed), so a '(' after anything else, or the column list right after the table's
 * name (at table_end), holds no call of its own. VALUES (..), (..) is what this lets through.
 */
static bool insert_paren_ok(const char *s, size_t at, size_t table_end)
{
	size_t q = at;
	while (q > 0 && is_blank((unsigned char)s[q - 1]))
		q--;
	if (q == table_end)
		return true;
	if (q == 0)
		return false;
	unsigned char before = (unsigned char)s[q - 1];
	if (before == ',')
		return true;
	return q >= 6 && word_at(s, q, q - 6, "values", 6);
}

/*
 * True when s[i..len) holds no parenthesis (for an INSERT, table_end != 0: none that may be a
 * call), comment, second statement or (into) INTO.
 */
static bool plain_rest(const char *s, size_t len, size_t i, bool into, size_t table_end)
{
	for (i = plain_next(s, len, i, into); i < len; i = plain_next(s, len, i + 1, into)) {
		switch (s[i]) {
		case '(':
			if (!table_end || !insert_paren_ok(s, i, table_end))
				return false;
			break;
		case ';':
			/* Only blanks may follow the statement's own terminator. */
			for (i++; i < len; i++)
				if (!is_blank((unsigned char)s[i]))
					return false;
			return true;
		case '-':
		case '/':
			if (i + 1 < len && s[i + 1] == (s[i] == '-' ? '-' : '*'))
				return false;
			break;
		default: /* i or I */
			if (word_at(s, len, i, "into", 4))
				return false;
			break;
		}
	}
	return true;
}

/* The end of the table name at s[i] (name.name, parts quoted without a doubled quote), or 0. */
static size_t table_name_end(const char *s, size_t len, size_t i)
{
	size_t start = i;
	for (;;) {
		if (i < len && s[i] == '"') {
			const char *close = memchr(s + i + 1, '"', len - i - 1);
			if (!close || close == s + i + 1)
				return 0;
			i = (size_t)(close - s) + 1;
			if (i < len && s[i] == '"')
				return 0; /* a doubled quote: not followed here */
		} else {
			size_t from = i;
			while (i < len && is_ident((unsigned char)s[i]))
				i++;
			if (i == from)
				return 0;
		}
		if (i < len && s[i] == '.') {
			i++;
			continue;
		}
		return i > start ? i : 0;
	}
}

static uint8_t plain_command(const char *sql, size_t len, bool select_too)
{
	size_t i = 0;
	while (i < len && is_blank((unsigned char)sql[i]))
		i++;
	uint8_t cmd = plain_keyword(sql, len, i);
	if (cmd == CLASSIFY_CMD_NONE || (cmd == CLASSIFY_CMD_OTHER && !select_too))
		return CLASSIFY_CMD_NONE;
	i += 6;
	size_t table_end = 0;
	if (cmd == CLASSIFY_CMD_INSERT) {
		/* INSERT's own INTO is the one allowed, then the table. */
		while (i < len && is_blank((unsigned char)sql[i]))
			i++;
		if (!word_at(sql, len, i, "into", 4))
			return CLASSIFY_CMD_NONE;
		i += 4;
		while (i < len && is_blank((unsigned char)sql[i]))
			i++;
		table_end = table_name_end(sql, len, i);
		if (!table_end)
			return CLASSIFY_CMD_NONE;
		i = table_end;
	}
	/* Only a SELECT can have an INTO of its own (UPDATE and DELETE have none, INSERT's is
	 * behind): a subquery's would need a parenthesis. */
	return plain_rest(sql, len, i, cmd == CLASSIFY_CMD_OTHER, table_end) ? cmd
									     : CLASSIFY_CMD_NONE;
}

uint8_t classify_plain_command(const char *sql, size_t len)
{
	return plain_command(sql, len, true);
}

uint8_t classify_plain_write(const char *sql, size_t len)
{
	return plain_command(sql, len, false);
}
