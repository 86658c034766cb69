/*
 * What the two halves of the pgbouncer console share (console.c: parsing, commands that act,
 * login; console_show.c: the SHOW commands). Private to src/admin/.
 */
#ifndef PGRELAY_ADMIN_CONSOLE_INT_H
#define PGRELAY_ADMIN_CONSOLE_INT_H

#include <stdbool.h>
#include <string.h>

#include "protocol/builder.h"

struct client;

/* Ends an answer: CommandComplete tag, ReadyForQuery. */
void console_done(struct builder *out, const char *tag);
/* An ERROR with sqlstate and msg, then ReadyForQuery. */
void console_error(struct builder *out, const char *sqlstate, const char *msg);
/* Answers SHOW what (a PgBouncer name, any case) into out; false if it names nothing. */
bool console_show(struct client *c, const char *what, struct builder *out);

/* True if database name is db, or db names every database (NULL or ""). */
static inline bool console_db_matches(const char *db, const char *name)
{
	return !db || !db[0] || strcmp(db, name) == 0;
}

#endif
