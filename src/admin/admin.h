/*
 * The SQL admin interface, answered by pgrelay itself on every port and database
 * (doc/admin.md): pgpool-II's SHOW pool_* commands and pgrelay's own PGRELAY commands
 *   SHOW pool_nodes | pool_version | pool_health_check_stats | pool_failover_history |
 *        pool_pools | pool_processes | pool_backend_stats | pool_recovery
 *   PGRELAY EXPLAIN ROUTE <sql>
 *   PGRELAY ATTACH NODE n | DETACH NODE n | PROMOTE NODE n     (admin_users only)
 *   PGRELAY RECOVER NODE n   (admin_users only; returns once the recovery is started)
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

/* Answers sql into out if it is an admin statement of c's session; false if it is not one. */
bool admin_answer(struct client *c, const char *sql, size_t len, struct builder *out);

#endif
