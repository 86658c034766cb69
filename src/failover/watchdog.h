/*
 * The watchdog: several pgrelay instances in front of the same backends act as one proxy, with
 * etcd (v3, JSON gateway, etcd.h) as the arbiter (doc/watchdog.md).
 *
 * One thread of its own talks to etcd (every call bounded by min(1 s, lease_ttl / 3), the next
 * endpoint tried on failure) and never blocks anybody else. It
 *  - holds a lease of lease_ttl and keeps it alive;
 *  - publishes this instance's report under the lease: <prefix>/members/<name> (JSON: the port
 *    it serves on, the nodes it sees down and up, the primary it routes to, the time);
 *  - competes for <prefix>/leader with a create-if-absent transaction bound to the lease
 *    (Patroni's way); the holder runs the virtual-IP hooks (if_up_cmd, arping_cmd; if_down_cmd
 *    before it gives the key up);
 *  - as the leader, writes the cluster view it is handed to <prefix>/view, guarded by the
 *    leader key's create_revision (a deposed leader's write fails);
 *  - reads the whole prefix every tick and hands the result to the cluster manager.
 * An instance whose lease could not be renewed for lease_ttl is *lost*; it is *fenced* (takes no
 * writes) unless the peers it can reach over HTTP (GET /watchdog) say they lost etcd too (etcd is
 * wholly down; then nobody can fail over and writes go on).
 *
 * The cluster manager (cluster.c) owns the policy: consensus, applying views, which commands
 * run. It calls watchdog_set_local/watchdog_set_view and reads watchdog_state_copy; notify(arg)
 * is called (no locks held) after every tick that changed the state.
 */
#ifndef PGRELAY_FAILOVER_WATCHDOG_H
#define PGRELAY_FAILOVER_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WD_MAX_MEMBERS 16
#define WD_NAME_MAX    64

struct config;

/* One instance as read from etcd (or remembered after its key expired: status lost). */
struct wd_member {
	char name[WD_NAME_MAX];
	char host[64]; /* the address it serves clients on */
	int port;      /* its client port */
	int http_port; /* its HTTP port, 0 none (the fencing peer check needs it) */
	bool present;  /* its key exists (its lease is alive) */
	bool fenced;   /* it reported itself fenced */
	uint64_t down; /* bit i: it sees backend i failed */
	int primary;   /* the primary it routes writes to, -1 none */
	int64_t at_ms; /* CLOCK_REALTIME ms of its report */
};

/* The cluster view the leader writes to <prefix>/view. */
struct wd_view {
	bool valid;	   /* a view was read */
	uint64_t epoch;	   /* increases with every change of primary or failover state */
	int primary;	   /* -1 none */
	bool failing_over; /* the leader lost the primary and has not published a new one */
	int failed;	   /* the node being failed over, -1 none */
	int new_main;	   /* the standby its failover_command promotes (%m), -1 none */
	uint64_t former;   /* bit i: backend i lost the primary role and is kept out */
	char leader[WD_NAME_MAX];
};

/* What this instance reports about the backends (written to its member key). */
struct wd_local {
	uint64_t down; /* bit i: backend i failed its checks here */
	int primary;   /* the primary this instance routes to, -1 none */
	bool fenced;
};

enum wd_status { WD_STARTING, WD_MEMBER, WD_LEADER, WD_LOST, WD_FENCED };

struct wd_state {
	char name[WD_NAME_MAX];
	char leader[WD_NAME_MAX]; /* the leader key's holder, "" none known */
	enum wd_status status;
	bool observe;	/* watchdog.mode = observe */
	bool connected; /* the lease was renewed within lease_ttl */
	bool fresh;	/* the last round (renew + read) succeeded within a tick or two */
	bool is_leader; /* this instance holds the leader key */
	bool fenced;	/* no writes: etcd lost for lease_ttl, peers still have it */
	bool etcd_down_everywhere;  /* etcd lost, but so did every peer reached: not fenced */
	int64_t lease_remaining_ms; /* of this instance's lease, 0 when lost */
	uint32_t lease_ttl_ms;
	int n_members;
	struct wd_member members[WD_MAX_MEMBERS]; /* this instance first */
	struct wd_view view;
	uint64_t view_written;	/* seq of the last watchdog_set_view etcd stored */
	uint64_t gen;		/* increases with every tick that changed something */
	uint64_t elections_won; /* times this instance became the leader */
};

typedef struct watchdog watchdog_t; /* opaque */

/* Starts the thread; NULL (logged) on failure. cfg may be freed after the call. */
watchdog_t *watchdog_start(const struct config *cfg, void (*notify)(void *arg), void *arg)
	__attribute__((warn_unused_result));

/* Steps down (if_down_cmd, leader key deleted), revokes the lease, joins, frees. NULL is fine. */
void watchdog_stop(watchdog_t *wd);

/* The report published under this instance's member key. Any thread; cheap. */
void watchdog_set_local(watchdog_t *wd, const struct wd_local *l);

/* The view to write as the leader (ignored otherwise); seq increases with every call. */
void watchdog_set_view(watchdog_t *wd, const struct wd_view *v, uint64_t seq);

void watchdog_state_copy(watchdog_t *wd, struct wd_state *out);

/* Whether this instance may run failover_command and the other commands now. */
bool watchdog_may_run_commands(const struct wd_state *s);

/* "leader", "member", "lost", "fenced", "starting". */
const char *watchdog_status_name(enum wd_status s);

/*
 * The HTTP body of GET /watchdog (the peer check): {"name": ..., "etcd": "ok"|"lost",
 * "leader": bool, "fenced": bool}. Any thread.
 */
void watchdog_peer_json(watchdog_t *wd, char *out, size_t cap);

#endif
