/*
 * Cancel keys. Every client gets pgrelay's own BackendKeyData (pid, secret); the map finds the
 * client from a CancelRequest, and the cancel is then sent to the backend running that client's
 * query with the backend's real key, over a new short-lived connection (bounded by a timer).
 * Open addressing keyed by pid; pids are unique per worker, secrets are random.
 */
#ifndef PGRELAY_POOL_CANCEL_H
#define PGRELAY_POOL_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct client;
struct worker;

struct cancel_slot {
	uint32_t pid; /* 0 = empty; tombstones use pid with client NULL */
	uint32_t key;
	struct client *client; /* borrowed */
};

struct cancel_map {
	struct cancel_slot *slots; /* owned */
	size_t cap;		   /* power of two */
	size_t used;		   /* live + tombstones */
	size_t live;
	uint32_t next_pid;
};

bool cancel_map_init(struct cancel_map *m) __attribute__((warn_unused_result));
void cancel_map_destroy(struct cancel_map *m);
/* Assigns a fresh pid and random key to client and registers it. False when out of memory. */
bool cancel_map_add(struct cancel_map *m, struct client *client, uint32_t *pid, uint32_t *key)
	__attribute__((warn_unused_result));
void cancel_map_remove(struct cancel_map *m, uint32_t pid);
/* The client whose key matches, or NULL (the key is compared in constant time). */
struct client *cancel_map_find(const struct cancel_map *m, uint32_t pid, uint32_t key);

/* Sends CancelRequest(pid, key) to addr on a new connection; fire and forget, bounded in time. */
void cancel_send(struct worker *w, const struct sockaddr *addr, uint32_t pid, uint32_t key);

#endif
