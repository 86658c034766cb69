/*
 * Internal to src/pool/server.c and src/pool/server_login.c (and the fuzz harness that includes
 * server.c): backend login, and the parts of server.c it uses. Everything else uses server.h.
 */
#ifndef PGRELAY_POOL_SERVER_LOGIN_H
#define PGRELAY_POOL_SERVER_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

struct server;

#define SERVER_LOGIN_MSG_MAX 16384 /* bound on any backend message before ReadyForQuery */

/* server_login.c */

/* The backend accepted the TCP connection: sends the startup packet and enters SV_LOGIN. */
void server_send_startup(struct server *s);
/* Handles the whole login messages in the read buffer, up to ReadyForQuery or a failure. */
void server_login_scan(struct server *s);

/* server.c */

/* The session cannot continue: closes s, telling its client (or dropping an idle link). */
void server_fail(struct server *s, const char *sqlstate, const char *reason);
/* Parks a clean server on its pool's idle list and hands it on if a client waits. */
void server_park(struct server *s);
/* ParameterStatus: the pool's welcome during login (login), tracked values always. */
void server_record_param(struct server *s, const uint8_t *body, uint32_t len, bool login);

#endif
