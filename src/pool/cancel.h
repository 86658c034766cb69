/*
 * Cancel keys. Every client gets pgrelay's own BackendKeyData (pid, secret); the map finds the
 * client from a CancelRequest, and the cancel is then sent to the backend running that client's
 * query with the backend's real key, over a new short-lived connection (bounded by a timer).
 * Open addressing keyed by pid; pids are unique per worker, secrets are random.
 *
 * A cancel is forwarded only while its target has a request in flight on a linked backend, and is
 * checked again when the connection to the backend is up, just before the 16 bytes are written:
 * in transaction mode the backend may have finished, gone back to the pool and be running another
 * client's query by then (the race PgBouncer fixed in its PR #717). Until PostgreSQL closed the
 * cancel connection (it signals the backend first), the backend stays linked to its client, so a
 * signal that comes late hits this client's session, never another's (that PR's second race).
 * At most CANCEL_MAX_IN_FLIGHT
 * outgoing cancels per worker; more are dropped with a log line.
 */
#ifndef PGRELAY_POOL_CANCEL_H
#define PGRELAY_POOL_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CANCEL_MAX_IN_FLIGHT 64 /* outgoing cancel connections per worker */

struct client;
struct server;
struct worker;

/*
 * The clients of one worker by their cancel pid: open addressing on the pid, linear probing, at
 * most half full. A slot holds only the client (the pid and key are the client's cancel_pid and
 * cancel_key), 8 bytes for each of 2+ slots per logged-in client, where pid, key and pointer
 * took 16: the map is part of what every idle client costs.
 */
#define CANCEL_KEYS_BATCH 64

struct cancel_map {
	struct client **slots; /* owned: NULL empty, CANCEL_TOMBSTONE removed, else borrowed */
	size_t cap;	       /* power of two */
	size_t used;	       /* live + tombstones */
	size_t live;
	uint32_t next_pid;
	/* Secret keys drawn ahead, one RAND_bytes per CANCEL_KEYS_BATCH logins (each call costs
	 * OpenSSL's fork check, a getpid system call). keys[n_keys..] are unused. */
	uint32_t n_keys;
	uint32_t keys[CANCEL_KEYS_BATCH];
};

bool cancel_map_init(struct cancel_map *m) __attribute__((warn_unused_result));
void cancel_map_destroy(struct cancel_map *m);
/*
 * Gives client a fresh pid and a random key (client->cancel_pid, client->cancel_key) and
 * registers it. False when out of memory (client's fields are then unchanged).
 */
bool cancel_map_add(struct cancel_map *m, struct client *client)
	__attribute__((warn_unused_result));
/* Unregisters client (registered); its cancel_pid must not have changed since. */
void cancel_map_remove(struct cancel_map *m, struct client *client);
/* The client whose key matches, or NULL (the key is compared in constant time). */
struct client *cancel_map_find(const struct cancel_map *m, uint32_t pid, uint32_t key);

/*
 * The backend a cancel for target should reach: its linked backend with a request in flight, or
 * NULL (idle, between transactions, logging in).
 */
struct server *cancel_target_backend(struct client *target);
/*
 * Handles a client's CancelRequest(pid, key): when it names a session with a request in flight,
 * sends the backend's own key to that backend on a new connection (fire and forget, bounded in
 * time and in number), after checking again once connected that the backend still runs that
 * session's request. True when it was sent on its way with waiter (the connection that carried
 * the CancelRequest), which is then closed when PostgreSQL has closed the forwarded one (or it
 * failed or timed out): a driver that waits for that close, as libpq and asyncpg do, never has
 * its cancel hit its next statement. False: nothing to wait for, the caller closes waiter.
 */
bool cancel_forward(struct worker *w, uint32_t pid, uint32_t key, struct client *waiter);
/* The waiting client of a forwarded cancel is going away (cancel_forward): not closed later. */
void cancel_forget_waiter(struct worker *w, const struct client *waiter);
/* s is being freed: the cancels in flight for it stop holding it. */
void cancel_forget_server(struct worker *w, struct server *s);
/*
 * A client left while backend s still ran its request: PostgreSQL would only notice when it
 * next writes, so a long statement would go on holding its snapshot, locks and a core (and, on a
 * standby, delay replay). s is sent its own CancelRequest before its connection is closed.
 */
void cancel_abandoned(struct worker *w, const struct server *s);

#endif
