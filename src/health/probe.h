/*
 * Health probe: one bounded libpq round trip to one PostgreSQL node that reports whether it
 * answers, whether it is in recovery, its WAL positions, its replay delay and (on a primary) its
 * pg_stat_replication rows. Everything runs on non-blocking libpq against an absolute deadline:
 * PQconnectStartParams + PQconnectPoll, then PQsendQuery + PQconsumeInput/PQisBusy, each wait a
 * poll() that never outlasts the deadline. No call here blocks past it, except the host name
 * lookup inside PQconnectStartParams (use IP addresses in backends[].host; doc/health.md).
 *
 * Two layers:
 * - struct probe is a resumable state machine (start, poll its fd, step) so the health thread can
 *   run one per node in a single poll() loop; it keeps its connection open between probes and
 *   reopens it when it died (within the same deadline).
 * - health_probe() is the one-shot blocking form (fresh connection, closed at the end) for tools
 *   and tests.
 *
 * On timeout the connection is closed with PQfinish, not cancelled: PQcancel connects and waits
 * without a timeout, which is exactly what must not happen against a frozen node. The probe query
 * runs under statement_timeout = the probe timeout, so the server ends it on its own.
 */
#ifndef PGRELAY_HEALTH_PROBE_H
#define PGRELAY_HEALTH_PROBE_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/tls_ctx.h"

#define PROBE_MAX_REPLICAS 64  /* pg_stat_replication rows kept per observation */
#define PROBE_NAME_MAX	   64  /* application_name bytes kept, NUL included (63 + 1) */
#define PROBE_WORD_MAX	   16  /* state / sync_state bytes kept, NUL included */
#define PROBE_ERROR_MAX	   256 /* error text bytes kept, NUL included */
#define PROBE_APPLICATION  "pgrelay health check"

/* Where and as whom to connect. Every string is borrowed; NULL or "" means libpq's default. */
struct probe_target {
	const char *host;     /* borrowed: host name, IP address or unix socket folder */
	int port;	      /* 1..65535 */
	const char *user;     /* borrowed */
	const char *password; /* borrowed; never copied into an observation or a log line */
	const char *dbname;   /* borrowed */
	struct libpq_tls tls; /* borrowed strings: sslmode and its files */
};

/* How a probe ended. Only PROBE_OK means the node answered the whole query. */
enum probe_status {
	PROBE_OK = 0,
	PROBE_CONNECT_FAILED, /* refused, unreachable, authentication or startup error */
	PROBE_QUERY_FAILED,   /* connected, but the query failed or the connection broke */
	PROBE_BAD_REPLY,      /* the reply did not have the expected shape */
	PROBE_TIMEOUT,	      /* the deadline passed (connect or query phase) */
	PROBE_INTERNAL,	      /* out of memory or a bad argument on our side */
};

/* One row of pg_stat_replication on the probed node. */
struct replica_row {
	char application_name[PROBE_NAME_MAX]; /* standby's name, truncated to 63 bytes */
	char state[PROBE_WORD_MAX];	       /* "streaming", "catchup", ...; "" if hidden */
	char sync_state[PROBE_WORD_MAX];       /* "async", "sync", "potential", "quorum"; or "" */
	uint64_t replay_lsn;		       /* 0 when NULL (0/0 is never a valid LSN) */
};

/*
 * What one probe saw. LSN fields are 0 when the server returned NULL (0/0 is InvalidXLogRecPtr,
 * never a real position). Only fields listed as such are meaningful when reachable is false.
 * Rows of replicas[] past n_replicas are undefined (stale or never written): nobody reads them, and
 * a probe neither clears nor copies them, so the pages of an observation's 6.5 kB row array are
 * only touched by the rows a primary reports. replicas[] is the last member for that reason (the
 * used part of an observation is one prefix, see probe_obs_copy).
 */
struct node_observation {
	bool reachable;		   /* the query completed: status == PROBE_OK */
	enum probe_status status;  /* always set */
	bool timed_out_connecting; /* PROBE_TIMEOUT: true if still in the connect phase */
	bool rejected; /* PROBE_CONNECT_FAILED: the server answered, refusing the login (bad
			  health_check credentials, no such role or database): alive, not checked */
	bool refused;  /* PROBE_CONNECT_FAILED: a fresh connection was refused
			  (ECONNREFUSED: nothing listens, the postmaster is gone) */
	bool connection_reused; /* the query ran on the connection kept from an earlier probe */
	bool in_recovery;	/* pg_is_in_recovery() */
	uint64_t current_lsn;	/* pg_current_wal_lsn() on a primary, 0 on a standby */
	uint64_t replay_lsn;	/* pg_last_wal_replay_lsn(), 0 on a primary */
	uint64_t receive_lsn;	/* pg_last_wal_receive_lsn(), 0 on a primary */
	bool has_replay_delay;	/* replay_delay_s is set (standby that replayed a commit) */
	double replay_delay_s;	/* now() - pg_last_xact_replay_timestamp(), seconds */
	uint32_t latency_ms;	/* start to end of this probe, also when it failed */
	uint64_t observed_at;	/* CLOCK_MONOTONIC ms when the probe ended; always set */
	char error[PROBE_ERROR_MAX]; /* one line, "" on success; libpq text holds no password */
	int n_replicas;		     /* rows used in replicas[]; 0..PROBE_MAX_REPLICAS */
	bool replicas_truncated;     /* the node reported more rows than were kept */
	struct replica_row replicas[PROBE_MAX_REPLICAS]; /* last: see above */
};

/*
 * Copies src to dst up to its last used row (dst's rows past src->n_replicas are left as they
 * were): a few hundred bytes instead of 7 kB, and no page of dst's row array touched needlessly.
 */
void probe_obs_copy(struct node_observation *dst, const struct node_observation *src);

enum probe_phase {
	PROBE_PHASE_IDLE = 0,	/* not running; conn is NULL or an idle reusable connection */
	PROBE_PHASE_CONNECTING, /* driving PQconnectPoll; poll_want says which direction */
	PROBE_PHASE_SENDING,	/* query queued; flushing it (nonblocking libpq) */
	PROBE_PHASE_WAITING,	/* query sent; reading until PQisBusy says a result is whole */
	PROBE_PHASE_DONE,	/* finished; obs is final until the next probe_start */
};

/*
 * A resumable probe for one node. Zero it (or probe_init) before first use: calloc'd memory is an
 * idle probe. obs is the last member, so probe_init and probe_start write only its used prefix.
 */
struct probe {
	enum probe_phase phase;
	void *conn;			   /* owned PGconn *; kept across probes when healthy */
	const struct probe_target *target; /* borrowed while running, for a reconnect */
	uint32_t timeout_ms;		   /* of the running probe, for statement_timeout */
	int poll_want;			   /* POLLIN / POLLOUT wanted by libpq right now */
	bool reused;			   /* the running probe started on a kept connection */
	bool light;			   /* the running probe is a light WAL-position poll */
	uint64_t started_at;		   /* monotonic ms */
	uint64_t deadline;		   /* monotonic ms; absolute */
	struct node_observation obs;	   /* the result once phase is PROBE_PHASE_DONE; last */
};

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t probe_now_ms(void);

void probe_init(struct probe *p);
/*
 * Starts a probe of t that must end by now_ms + timeout_ms. t must stay valid until the probe is
 * done. Returns true while the probe runs (then poll probe_pollfd and call probe_step), false if it
 * finished at once (refused before any wait, bad argument): p->obs is then final.
 */
bool probe_start(struct probe *p, const struct probe_target *t, uint32_t timeout_ms,
		 uint64_t now_ms);
/*
 * Starts a light poll on the kept connection: one round trip of pg_is_in_recovery() and the three
 * WAL positions (no pg_stat_replication, never a reconnect), bounded by timeout_ms. Only
 * in_recovery and the LSN fields of p->obs are filled. Requires probe_has_conn() and an idle
 * probe. Returns true while it runs, false if it finished at once (the kept connection was found
 * broken: p->obs says so and the connection is closed).
 */
bool probe_start_light(struct probe *p, uint32_t timeout_ms, uint64_t now_ms);
/* True when an idle probe keeps a connection from its last successful attempt. */
bool probe_has_conn(const struct probe *p);
/* The fd and events to wait for; false when the probe is not waiting on a socket. */
bool probe_pollfd(const struct probe *p, struct pollfd *pfd);
/*
 * Advances after poll() returned (revents ignored: libpq calls are cheap and non-blocking) or
 * the deadline passed. Returns true once the probe is done (p->obs final).
 */
bool probe_step(struct probe *p, uint64_t now_ms);
/* Drops the kept connection (next probe reconnects). Safe on an idle or running probe. */
void probe_close(struct probe *p);

/*
 * One-shot probe with a fresh connection, closed before returning. Never returns later than
 * timeout_ms after the call (plus scheduling noise; see the host-name caveat above). Returns
 * out->reachable.
 */
bool health_probe(const struct probe_target *t, uint32_t timeout_ms, struct node_observation *out);

/* Parses PostgreSQL's "X/Y" LSN text (each part 1-8 hex digits). Exposed for tests. */
bool probe_parse_lsn(const char *text, uint64_t *out) __attribute__((warn_unused_result));
/*
 * Parses the replication column of the probe query: rows separated by '\n', fields by '\t':
 * application_name, state, sync_state, replay_lsn (empty for NULL). Keeps at most cap rows, sets
 * *truncated when there were more. Returns the number kept, or -1 if a row is malformed.
 */
int probe_parse_replicas(const char *text, struct replica_row *rows, int cap, bool *truncated);
/* Short lowercase name of a status ("ok", "timeout", ...). */
const char *probe_status_name(enum probe_status s);

#endif
