/*
 * Statement normalisation for the classification cache: the same statement with other constants
 * ("... WHERE aid = 17" and "... WHERE aid = 4711") must hit one cache entry, or every
 * simple-protocol statement of a typical application costs a full parse (tens of microseconds).
 *
 * Constants never change a statement's class (the class follows keywords, statement types and
 * function names), so they are replaced: numbers by 0, string literals (plain, E'', B'', X'', U&'',
 * dollar-quoted) by ''. Comments are dropped, except a leading routing hint (a block comment
 * whose first character is '+'), which is kept verbatim. Identifiers, quoted identifiers,
 * parameters ($1), operators and keywords are copied as they are. The result is again valid SQL
 * whenever the input was, and a syntax error in the input stays an error or becomes a different
 * read (sent where a read may go, where it fails the same way): a write can never disappear,
 * because no keyword or name is touched.
 *
 * Scanning assumes standard_conforming_strings = on, like the parser (libpg_query) does; text
 * that scans differently under "off" then parses as more statements, never fewer (routing errs to
 * the primary).
 */
#ifndef PGRELAY_ROUTE_NORMALIZE_H
#define PGRELAY_ROUTE_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Writes the normalised form of sql (len bytes) into out (cap bytes, NUL-terminated) and its
 * length into *out_len. Only statements that start with SELECT, WITH, INSERT, UPDATE, DELETE,
 * VALUES or TABLE are normalised. False, with out unusable, for other statements, text with an
 * unterminated literal, quoted identifier or comment, a NUL byte, or that does not fit: classify
 * the original then.
 */
bool normalize_sql(const char *sql, size_t len, char *out, size_t cap, size_t *out_len)
	__attribute__((warn_unused_result));

#endif
