/*
 * The SQL admin interface, answered by pgrelay itself on every port and database
 * (doc/admin.md): pgpool-II's SHOW pool_* commands and pgrelay's own PGRELAY commands
 *   SHOW pool_nodes | pool_version | pool_health_check_stats | pool_failover_history |
 *        pool_pools | pool_processes | pool_backend_stats | pool_cache | pool_watchdog |
 *        pool_recovery
 * (the PgBouncer-compatible console of the virtual database "pgbouncer" is admin/console.h)
 *   PGRELAY EXPLAIN ROUTE <sql>
 *   PGRELAY ATTACH NODE n | DETACH NODE n | PROMOTE NODE n [SWITCHOVER]   (admin_users only)
 *   PGRELAY RECOVER NODE n   (admin_users only; returns once the recovery is started)
 *   PGRELAY RELOAD | STOP [SMART|FAST]     (admin_users only; as SIGHUP / SIGTERM / SIGINT)
 *   SET pgrelay.route = primary | standby | auto;  RESET pgrelay.route
 * The simple protocol (psql, pgrelayctl) and the extended protocol (JDBC, prepared psycopg; the
 * session layer answers the whole unit, client_route.c) both carry them. Each answer is complete:
 * RowDescription, DataRows, CommandComplete (or an ErrorResponse), ReadyForQuery. SHOW pool_nodes
 * and pool_version are open to every user; the other SHOWs need admin_users or stats_users.
 */
#ifndef PGRELAY_ADMIN_ADMIN_H
#define PGRELAY_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "protocol/builder.h"
#include "route/router.h"

struct client;

/*
 * SET pgrelay.route = x / SET pgrelay.route TO x / RESET pgrelay.route. Returns 0 if sql is not
 * one, 1 for SET (force in *out), 2 for RESET (*out = AUTO), -1 for SET with a bad value.
 */
int admin_match_route_setting(const char *sql, size_t len, enum route_force *out);

/*
 * How PGRELAY RELOAD / STOP reach the process's own signal handlers: kill(getpid(), sig) by
 * default (0 or -1 with errno). Replaced only by test harnesses that must not be signalled.
 */
extern int (*admin_raise_signal)(int sig);

/* Answers sql into out if it is an admin statement of c's session; false if it is not one. */
bool admin_answer(struct client *c, const char *sql, size_t len, struct builder *out);

#endif
