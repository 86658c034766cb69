/*
 * Internal to src/pool/server.c and src/pool/server_login.c (and the fuzz harness that includes
 * server.c): backend login, and the parts of server.c it uses. Everything else uses server.h.
 */
#ifndef PGRELAY_POOL_SERVER_LOGIN_H
#define PGRELAY_POOL_SERVER_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "pool/client.h"

struct server;

#define SERVER_LOGIN_MSG_MAX 16384 /* bound on any backend message before ReadyForQuery */

/* server_login.c */

/*
 * The backend accepted the TCP connection: asks for TLS first when the node's tls mode wants it
 * (SSLRequest, answer read by server_tls_answer, then the handshake), else sends the startup.
 */
void server_begin_login(struct server *s);
/* SV_CONNECTING with bytes: the backend's one-byte answer to our SSLRequest. */
void server_tls_answer(struct server *s);
/* Sends the startup packet and enters SV_LOGIN (after TLS, if any). */
void server_send_startup(struct server *s);
/* Handles the whole login messages in the read buffer, up to ReadyForQuery or a failure. */
void server_login_scan(struct server *s);

/* server.c */

/* s fails; its client learns how much of it the link carried (client.h's enum link_loss). */
void server_fail_link(struct server *s, const char *sqlstate, const char *reason,
		      enum link_loss how);
/* The session cannot continue: closes s, telling its client (or dropping an idle link). */
void server_fail(struct server *s, const char *sqlstate, const char *reason);
/* Parks a clean server on its pool's idle list and hands it on if a client waits. */
void server_park(struct server *s);
/* ParameterStatus: the pool's welcome during login (login), tracked values always. */
void server_record_param(struct server *s, const uint8_t *body, uint32_t len, bool login);

#endif
