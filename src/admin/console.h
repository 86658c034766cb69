/*
 * The PgBouncer-compatible admin console (doc/admin.md): a client that logs into the virtual
 * database "pgbouncer" talks to pgrelay itself, never to a backend. Users in admin_users may run
 * every command, users in stats_users the SHOW commands; anyone else is refused after
 * authentication (FATAL 28000). Commands (case-insensitive, optional trailing ';'):
 *   SHOW POOLS | CLIENTS | SERVERS | STATS | STATS_TOTALS | STATS_AVERAGES | TOTALS | DATABASES |
 *        USERS | CONFIG | LISTS | VERSION | STATE | HELP      (PgBouncer 1.25's columns and types)
 *   PAUSE [db] | RESUME [db] | RECONNECT [db] | KILL [db] | KILL_CLIENT id | RELOAD | SHUTDOWN |
 *   WAIT_CLOSE [db]                                             (admin_users only, else 42501)
 * Anything else: ERROR 08P01 "invalid command '...', use SHOW HELP;" as PgBouncer answers.
 */
#ifndef PGRELAY_ADMIN_CONSOLE_H
#define PGRELAY_ADMIN_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/builder.h"

struct client;
struct worker;

#define CONSOLE_DATABASE  "pgbouncer" /* the virtual database of the console */
#define CONSOLE_QUERY_MAX 4096	      /* longest command text accepted */

/* True if database is the console's. */
bool console_is_database(const char *database);
/*
 * Authentication of a console client succeeded: checks admin_users / stats_users, sets
 * c->kind and sends the welcome; a refused user is disconnected (28000).
 */
void console_login(struct client *c);
/*
 * Answers command sql (len bytes, no NUL needed) into out: rows or a tag, or an ErrorResponse,
 * then ReadyForQuery. A command that must wait (PAUSE, WAIT_CLOSE) when may_wait leaves out
 * empty and sets c->console_wait; the janitor finishes it (console_poll).
 */
void console_answer(struct client *c, const char *sql, size_t len, struct builder *out,
		    bool may_wait);
/* True if sql is a SHOW command (it has rows, and no effect). */
bool console_is_show(const char *sql, size_t len);
/* The janitor's round: finishes console commands whose condition holds or whose time ran out. */
void console_poll(struct worker *w, uint64_t now_ms);

#endif
