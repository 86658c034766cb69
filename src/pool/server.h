/*
 * Server connections: the backend side of a session.
 *
 * States (each is exactly one worker list; server_set_state() is the only way to move):
 *   SV_CONNECTING  TCP connect in progress; swept for pool.server_connect_timeout.
 *   SV_LOGIN       startup sent; authenticating as the client's user and collecting the welcome
 *                  (ParameterStatus, BackendKeyData) until ReadyForQuery; also swept.
 *   SV_ACTIVE      linked to a client; messages are relayed.
 *   SV_CLOSING     close started; waits for the handle.
 * A server is never handed to another client: on any doubt about its state it is closed.
 */
#ifndef PGRELAY_POOL_SERVER_H
#define PGRELAY_POOL_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/scram.h"
#include "net/conn.h"
#include "util/list.h"

struct worker;
struct client;
struct pool;

enum server_state { SV_CONNECTING, SV_LOGIN, SV_ACTIVE, SV_CLOSING };

struct server {
	struct conn conn;      /* embedded; conn.owner == this */
	struct worker *w;      /* borrowed */
	struct list_node node; /* in the worker list of its state */
	enum server_state state;
	uint64_t id;
	uint64_t since_ms;	      /* loop time of the last state change */
	int node_id;		      /* index into cfg->backends */
	struct sockaddr_storage addr; /* the backend's address */
	struct pool *pool;	      /* borrowed */
	struct client *client;	      /* borrowed link, NULL once unlinked */
	uint32_t be_pid;	      /* the backend's real BackendKeyData */
	uint32_t be_key;
	struct scram_client *scram; /* owned during SASL login */
	char txn_status;	    /* from the last ReadyForQuery */
};

/*
 * Opens a backend connection for client c to node_id and links them. Progress is reported to
 * the client via client_on_server_ready / client_on_server_lost. False if it could not even start
 * (the caller tells the client).
 */
bool server_connect_for(struct client *c, int node_id) __attribute__((warn_unused_result));
/* Unlinks the client and closes the connection (Terminate first when it is logged in). */
void server_close(struct server *s, const char *reason);
void server_set_state(struct server *s, enum server_state st);

/* Resolves a backend's host once (numeric or via getaddrinfo at config load time). */
bool server_resolve(const char *host, int port, struct sockaddr_storage *out)
	__attribute__((warn_unused_result));

#endif
