/*
 * Health probe over non-blocking libpq (see probe.h for the contract).
 *
 * Invariants: a running probe owns p->conn and waits only through probe_pollfd/probe_step, so the
 * caller's poll() decides how long anything takes and never sleeps past p->deadline. A probe that
 * did not end in PROBE_OK closes its connection, so the next one starts clean; a kept connection
 * is idle (no query in flight, nothing buffered that we care about) between probes.
 */
#include "health/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

/* The used part of an observation is one prefix (probe.h), and of a probe too. */
_Static_assert(offsetof(struct node_observation, replicas) +
			       sizeof(((struct node_observation *)0)->replicas) ==
		       sizeof(struct node_observation),
	       "replicas[] must be the last member of struct node_observation");
_Static_assert(offsetof(struct probe, obs) + sizeof(struct node_observation) ==
		       sizeof(struct probe),
	       "obs must be the last member of struct probe");

/*
 * One round trip. pg_current_wal_lsn() raises an error during recovery, hence the CASE (its
 * function is volatile, so the branch not taken is never evaluated). pg_stat_replication is
 * fetched with one row more than kept so truncation can be reported; tabs and newlines are our
 * separators, so they are replaced in the name (PostgreSQL already turns non-printable ASCII in
 * application_name into '?', this is belt and braces).
 */
static const char probe_query[] =
	"SELECT pg_is_in_recovery(),"
	" CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,"
	" pg_last_wal_replay_lsn(),"
	" pg_last_wal_receive_lsn(),"
	" CASE WHEN pg_is_in_recovery()"
	" THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END,"
	" (SELECT string_agg(translate(left(coalesce(r.application_name, ''), 63), E'\\t\\n', '  ')"
	" || E'\\t' || coalesce(r.state, '') || E'\\t' || coalesce(r.sync_state, '')"
	" || E'\\t' || coalesce(r.replay_lsn::text, ''), E'\\n')"
	" FROM (SELECT * FROM pg_stat_replication ORDER BY application_name, pid LIMIT 65) r)";

#define PROBE_QUERY_COLUMNS 6

/* The light poll: the first four columns of the probe query, nothing that scans a view. */
static const char light_query[] =
	"SELECT pg_is_in_recovery(),"
	" CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,"
	" pg_last_wal_replay_lsn(),"
	" pg_last_wal_receive_lsn()";

#define LIGHT_QUERY_COLUMNS 4

uint64_t probe_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *probe_status_name(enum probe_status s)
{
	switch (s) {
	case PROBE_OK:
		return "ok";
	case PROBE_CONNECT_FAILED:
		return "connect_failed";
	case PROBE_QUERY_FAILED:
		return "query_failed";
	case PROBE_BAD_REPLY:
		return "bad_reply";
	case PROBE_TIMEOUT:
		return "timeout";
	case PROBE_INTERNAL:
		return "internal";
	}
	return "unknown";
}

/* ----------------------------------------------------------------------------------------------
 * Parsing (pure; unit-tested).
 */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses 1-8 hex digits ending at stop (a character that is not a digit); advances *s. */
static bool parse_hex32(const char **s, char stop, uint32_t *out)
{
	uint32_t v = 0;
	int n = 0;

	for (; **s != stop; (*s)++) {
		int d = hex_value(**s);

		if (d < 0 || ++n > 8)
			return false;
		v = (v << 4) | (uint32_t)d;
	}
	if (n == 0)
		return false;
	*out = v;
	return true;
}

bool probe_parse_lsn(const char *text, uint64_t *out)
{
	uint32_t hi, lo;
	const char *s = text;

	if (text == NULL || !parse_hex32(&s, '/', &hi))
		return false;
	s++; /* the '/' */
	if (!parse_hex32(&s, '\0', &lo))
		return false;
	*out = ((uint64_t)hi << 32) | lo;
	return true;
}

/* Copies the field [s, end) into dst (cap bytes, NUL included), truncating; never splits less. */
static void copy_field(char *dst, size_t cap, const char *s, const char *end)
{
	size_t n = (size_t)(end - s);

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

int probe_parse_replicas(const char *text, struct replica_row *rows, int cap, bool *truncated)
{
	int n = 0;
	const char *line = text;

	*truncated = false;
	if (text == NULL || *text == '\0')
		return 0;
	while (line != NULL) {
		const char *eol = strchr(line, '\n');
		const char *end = eol != NULL ? eol : line + strlen(line);
		const char *f[4], *fe[4];
		const char *s = line;
		char lsn[32];
		struct replica_row row;

		for (int i = 0; i < 4; i++) {
			const char *tab = memchr(s, '\t', (size_t)(end - s));

			f[i] = s;
			if (i < 3) {
				if (tab == NULL)
					return -1;
				fe[i] = tab;
				s = tab + 1;
			} else {
				if (tab != NULL)
					return -1;
				fe[i] = end;
			}
		}
		if (n == cap) {
			*truncated = true;
			break;
		}
		memset(&row, 0, sizeof(row));
		copy_field(row.application_name, sizeof(row.application_name), f[0], fe[0]);
		copy_field(row.state, sizeof(row.state), f[1], fe[1]);
		copy_field(row.sync_state, sizeof(row.sync_state), f[2], fe[2]);
		if (fe[3] > f[3]) {
			if ((size_t)(fe[3] - f[3]) >= sizeof(lsn))
				return -1;
			copy_field(lsn, sizeof(lsn), f[3], fe[3]);
			if (!probe_parse_lsn(lsn, &row.replay_lsn))
				return -1;
		}
		rows[n++] = row;
		line = eol != NULL ? eol + 1 : NULL;
	}
	return n;
}

/* ----------------------------------------------------------------------------------------------
 * The state machine.
 */

/*
 * Copies msg into obs->error as one line: newlines become spaces, trailing blanks go, the text is
 * cut at PROBE_ERROR_MAX - 1 bytes without splitting a UTF-8 sequence. libpq messages name the
 * host, port, user and database but never the password.
 */
static void set_error(struct node_observation *obs, const char *prefix, const char *msg)
{
	size_t n;

	snprintf(obs->error, sizeof(obs->error), "%s%s", prefix, msg != NULL ? msg : "");
	n = strlen(obs->error);
	if (n == sizeof(obs->error) - 1) {
		/* Truncated: back up over UTF-8 continuation bytes to a character start. */
		while (n > 0 && ((unsigned char)obs->error[n - 1] & 0xC0) == 0x80)
			n--;
		if (n > 0 && ((unsigned char)obs->error[n - 1] & 0x80))
			n--;
		obs->error[n] = '\0';
	}
	for (char *c = obs->error; *c != '\0'; c++) {
		if (*c == '\n' || *c == '\r' || *c == '\t')
			*c = ' ';
	}
	while (n > 0 && obs->error[n - 1] == ' ')
		obs->error[--n] = '\0';
}

static void conn_close(struct probe *p)
{
	if (p->conn != NULL) {
		/*
		 * The connection is in nonblocking mode, so the Terminate message PQfinish sends is
		 * best effort and cannot block on a full socket buffer.
		 */
		PQfinish(p->conn);
		p->conn = NULL;
	}
}

/* Bytes of an observation in use: everything up to its last used row. */
static size_t obs_used_size(const struct node_observation *o)
{
	int n = o->n_replicas < 0 ? 0 : o->n_replicas;

	if (n > PROBE_MAX_REPLICAS)
		n = PROBE_MAX_REPLICAS;
	return offsetof(struct node_observation, replicas) + (size_t)n * sizeof(o->replicas[0]);
}

void probe_obs_copy(struct node_observation *dst, const struct node_observation *src)
{
	memcpy(dst, src, obs_used_size(src));
}

/* A fresh observation: every field zero, n_replicas 0 (the rows are left alone, see probe.h). */
static void obs_clear(struct node_observation *o)
{
	memset(o, 0, offsetof(struct node_observation, replicas));
}

void probe_init(struct probe *p)
{
	memset(p, 0, offsetof(struct probe, obs));
	obs_clear(&p->obs);
}

void probe_close(struct probe *p)
{
	conn_close(p);
	/* No store on an idle probe: closing a never-used calloc'd slot leaves its page alone. */
	if (p->phase != PROBE_PHASE_DONE && p->phase != PROBE_PHASE_IDLE)
		p->phase = PROBE_PHASE_IDLE;
}

/* Ends the running probe. Any failure closes the connection so the next probe starts clean. */
static bool finish(struct probe *p, enum probe_status st, uint64_t now_ms)
{
	p->obs.status = st;
	p->obs.reachable = st == PROBE_OK;
	if (st != PROBE_OK)
		conn_close(p);
	p->obs.observed_at = now_ms;
	p->obs.latency_ms = (uint32_t)(now_ms - p->started_at);
	p->phase = PROBE_PHASE_DONE;
	return true;
}

static bool fail_with_conn(struct probe *p, enum probe_status st, const char *prefix,
			   uint64_t now_ms)
{
	const char *msg = p->conn != NULL ? PQerrorMessage(p->conn) : "";

	/*
	 * A refused connect means nothing listens on the port: the postmaster is gone (not frozen,
	 * not overloaded). libpq words it with strerror_r, so the same call finds it here.
	 */
	if (st == PROBE_CONNECT_FAILED && p->phase == PROBE_PHASE_CONNECTING) {
		char buf[128];
		const char *refused = strerror_r(ECONNREFUSED, buf, sizeof(buf));

		p->obs.refused = refused != NULL && refused[0] != '\0' && strstr(msg, refused);
		/*
		 * A login the server itself refused (28P01 wrong password, 28000 no hba entry or
		 * role, 3D000 no database, 42501 no CONNECT right) says the node is alive and the
		 * check is misconfigured: never a reason to fail a node over.
		 */
		static const char *const codes[] = { "28P01:", "28000:", "3D000:", "42501:" };
		for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
			if (strstr(msg, codes[i]))
				p->obs.rejected = true;
	}
	set_error(&p->obs, prefix, msg);
	return finish(p, st, now_ms);
}

/* Starts a fresh connection; returns true while it is in progress. */
static bool connect_start(struct probe *p, uint64_t now_ms)
{
	const struct probe_target *t = p->target;
	char port[16], options[64];
	const char *keys[16], *vals[16];
	int k = 0;
	struct in6_addr a6;
	struct in_addr a4;

	snprintf(port, sizeof(port), "%d", t->port);
	/* The server ends the probe query itself if we gave up on it (we do not cancel). */
	snprintf(options, sizeof(options), "-c statement_timeout=%u", p->timeout_ms);
	if (t->host != NULL && t->host[0] != '\0') {
		keys[k] = "host";
		vals[k++] = t->host;
		/* A numeric address also goes to hostaddr so libpq never resolves a name. */
		if (inet_pton(AF_INET, t->host, &a4) == 1 ||
		    inet_pton(AF_INET6, t->host, &a6) == 1) {
			keys[k] = "hostaddr";
			vals[k++] = t->host;
		}
	}
	keys[k] = "port";
	vals[k++] = port;
	if (t->user != NULL && t->user[0] != '\0') {
		keys[k] = "user";
		vals[k++] = t->user;
	}
	if (t->password != NULL && t->password[0] != '\0') {
		keys[k] = "password";
		vals[k++] = t->password;
	}
	if (t->dbname != NULL && t->dbname[0] != '\0') {
		keys[k] = "dbname";
		vals[k++] = t->dbname;
	}
	keys[k] = "application_name";
	vals[k++] = PROBE_APPLICATION;
	keys[k] = "options";
	vals[k++] = options;
	k += libpq_tls_params(&t->tls, keys + k, vals + k);
	/* GSSAPI negotiation may talk to a KDC with blocking calls: never for a health check. */
	keys[k] = "gssencmode";
	vals[k++] = "disable";
	keys[k] = NULL;
	vals[k] = NULL;

	p->conn = PQconnectStartParams(keys, vals, 0);
	if (p->conn == NULL) {
		set_error(&p->obs, "", "out of memory starting a connection");
		return !finish(p, PROBE_INTERNAL, now_ms);
	}
	p->phase = PROBE_PHASE_CONNECTING;
	/* Errors carry their SQLSTATE, whatever the server's language (see fail_with_conn). */
	PQsetErrorVerbosity(p->conn, PQERRORS_VERBOSE);
	if (PQstatus(p->conn) == CONNECTION_BAD)
		return !fail_with_conn(p, PROBE_CONNECT_FAILED, "", now_ms);
	p->poll_want = POLLOUT; /* libpq: act as if PQconnectPoll returned PGRES_POLLING_WRITING */
	p->reused = false;
	p->obs.connection_reused = false;
	return true;
}

/* Queues the query on an established connection; returns true while the probe runs. */
static bool query_start(struct probe *p, uint64_t now_ms)
{
	if (!PQsendQuery(p->conn, p->light ? light_query : probe_query))
		return !fail_with_conn(p, PROBE_QUERY_FAILED, "sending the probe query: ", now_ms);
	p->phase = PROBE_PHASE_SENDING;
	p->poll_want = POLLIN | POLLOUT;
	return !probe_step(p, now_ms);
}

/*
 * A kept connection is usable if it still looks alive: PQconsumeInput reads (without blocking)
 * whatever arrived while idle, e.g. a FATAL from pg_terminate_backend or an EOF, and fails if the
 * socket is gone.
 */
static bool kept_alive(void *kept)
{
	return kept != NULL && PQstatus(kept) == CONNECTION_OK && PQconsumeInput(kept) &&
	       PQtransactionStatus(kept) == PQTRANS_IDLE && PQstatus(kept) == CONNECTION_OK;
}

bool probe_start(struct probe *p, const struct probe_target *t, uint32_t timeout_ms,
		 uint64_t now_ms)
{
	void *kept = p->conn;

	obs_clear(&p->obs);
	p->target = t;
	p->timeout_ms = timeout_ms;
	p->started_at = now_ms;
	p->deadline = now_ms + timeout_ms;
	p->phase = PROBE_PHASE_IDLE;
	p->light = false;
	if (t == NULL || t->port < 1 || t->port > 65535 || timeout_ms == 0) {
		conn_close(p);
		set_error(&p->obs, "", "bad probe target or timeout");
		return !finish(p, PROBE_INTERNAL, now_ms);
	}
	/*
	 * A kept connection that dies later in this probe is replaced by a fresh one if the
	 * deadline allows (probe_step).
	 */
	if (kept_alive(kept)) {
		p->reused = true;
		p->obs.connection_reused = true;
		return query_start(p, now_ms);
	}
	conn_close(p);
	return connect_start(p, now_ms);
}

bool probe_has_conn(const struct probe *p)
{
	return p->conn != NULL && (p->phase == PROBE_PHASE_IDLE || p->phase == PROBE_PHASE_DONE);
}

bool probe_start_light(struct probe *p, uint32_t timeout_ms, uint64_t now_ms)
{
	obs_clear(&p->obs);
	p->timeout_ms = timeout_ms;
	p->started_at = now_ms;
	p->deadline = now_ms + timeout_ms;
	p->light = true;
	p->reused = true;
	p->obs.connection_reused = true;
	if (!kept_alive(p->conn)) {
		p->phase = PROBE_PHASE_CONNECTING; /* for finish(); no reconnect for a light poll */
		set_error(&p->obs, "kept connection lost: ",
			  p->conn != NULL ? PQerrorMessage(p->conn) : "none");
		return !finish(p, PROBE_QUERY_FAILED, now_ms);
	}
	return query_start(p, now_ms);
}

bool probe_pollfd(const struct probe *p, struct pollfd *pfd)
{
	int fd;

	if (p->conn == NULL || p->phase == PROBE_PHASE_IDLE || p->phase == PROBE_PHASE_DONE)
		return false;
	fd = PQsocket(p->conn);
	if (fd < 0)
		return false;
	pfd->fd = fd;
	pfd->events = (short)p->poll_want;
	pfd->revents = 0;
	return true;
}

/* Reads the single result row into p->obs; returns the status to finish with. */
static enum probe_status take_row(struct probe *p, PGresult *res)
{
	struct node_observation *o = &p->obs;
	const char *v;
	char *end;

	if (PQnfields(res) != (p->light ? LIGHT_QUERY_COLUMNS : PROBE_QUERY_COLUMNS) ||
	    PQntuples(res) != 1) {
		set_error(o, "", "probe query returned an unexpected shape");
		return PROBE_BAD_REPLY;
	}
	v = PQgetvalue(res, 0, 0);
	if (PQgetisnull(res, 0, 0) || (strcmp(v, "t") != 0 && strcmp(v, "f") != 0)) {
		set_error(o, "", "pg_is_in_recovery() returned no boolean");
		return PROBE_BAD_REPLY;
	}
	o->in_recovery = v[0] == 't';
	uint64_t *lsns[3] = { &o->current_lsn, &o->replay_lsn, &o->receive_lsn };
	for (int i = 0; i < 3; i++) {
		if (!PQgetisnull(res, 0, 1 + i) &&
		    !probe_parse_lsn(PQgetvalue(res, 0, 1 + i), lsns[i])) {
			set_error(o, "malformed LSN: ", PQgetvalue(res, 0, 1 + i));
			return PROBE_BAD_REPLY;
		}
	}
	if (p->light)
		return PROBE_OK;
	if (!PQgetisnull(res, 0, 4)) {
		v = PQgetvalue(res, 0, 4);
		errno = 0;
		o->replay_delay_s = strtod(v, &end);
		if (errno != 0 || end == v || *end != '\0') {
			set_error(o, "malformed replay delay: ", v);
			return PROBE_BAD_REPLY;
		}
		o->has_replay_delay = true;
	}
	if (!PQgetisnull(res, 0, 5)) {
		o->n_replicas = probe_parse_replicas(PQgetvalue(res, 0, 5), o->replicas,
						     PROBE_MAX_REPLICAS, &o->replicas_truncated);
		if (o->n_replicas < 0) {
			o->n_replicas = 0;
			set_error(o, "", "malformed pg_stat_replication rows");
			return PROBE_BAD_REPLY;
		}
	}
	return PROBE_OK;
}

/*
 * A kept connection that broke before answering (server restarted, backend terminated, idle
 * timeout) says nothing about the node now: reconnect once within the same deadline.
 */
static bool retry_fresh(struct probe *p, uint64_t now_ms)
{
	if (!p->reused || p->light || now_ms >= p->deadline)
		return false;
	conn_close(p);
	obs_clear(&p->obs);
	return true;
}

static bool step_connecting(struct probe *p, uint64_t now_ms)
{
	switch (PQconnectPoll(p->conn)) {
	case PGRES_POLLING_READING:
		p->poll_want = POLLIN;
		return false;
	case PGRES_POLLING_WRITING:
		p->poll_want = POLLOUT;
		return false;
	case PGRES_POLLING_OK:
		/* Nonblocking from now on: no libpq call may wait on the socket by itself. */
		if (PQsetnonblocking(p->conn, 1) != 0)
			return fail_with_conn(p, PROBE_CONNECT_FAILED, "", now_ms);
		return !query_start(p, now_ms);
	case PGRES_POLLING_FAILED:
	default:
		return fail_with_conn(p, PROBE_CONNECT_FAILED, "", now_ms);
	}
}

/* Reads available input and collects results; returns true when the probe is done. */
static bool step_waiting(struct probe *p, uint64_t now_ms)
{
	enum probe_status st = PROBE_OK;
	bool got_row = false;
	PGresult *res;

	if (!PQconsumeInput(p->conn))
		goto broken;
	while (!PQisBusy(p->conn)) {
		res = PQgetResult(p->conn);
		if (res == NULL) {
			if (!got_row && st == PROBE_OK) {
				set_error(&p->obs, "", "probe query returned no rows");
				st = PROBE_BAD_REPLY;
			}
			return finish(p, st, now_ms);
		}
		switch (PQresultStatus(res)) {
		case PGRES_TUPLES_OK:
			if (st == PROBE_OK) {
				st = take_row(p, res);
				got_row = true;
			}
			break;
		case PGRES_FATAL_ERROR:
			if (PQstatus(p->conn) == CONNECTION_BAD) {
				PQclear(res);
				goto broken;
			}
			if (st == PROBE_OK) {
				set_error(&p->obs, "", PQresultErrorMessage(res));
				st = PROBE_QUERY_FAILED;
			}
			break;
		default:
			if (st == PROBE_OK) {
				set_error(&p->obs,
					  "unexpected result: ", PQresStatus(PQresultStatus(res)));
				st = PROBE_BAD_REPLY;
			}
			break;
		}
		PQclear(res);
	}
	if (PQstatus(p->conn) == CONNECTION_BAD)
		goto broken;
	p->poll_want = POLLIN;
	return false;
broken:
	if (retry_fresh(p, now_ms))
		return !connect_start(p, now_ms);
	return fail_with_conn(p, PROBE_QUERY_FAILED, "", now_ms);
}

bool probe_step(struct probe *p, uint64_t now_ms)
{
	int r;

	switch (p->phase) {
	case PROBE_PHASE_IDLE:
	case PROBE_PHASE_DONE:
		return true;
	default:
		break;
	}
	if (now_ms >= p->deadline) {
		p->obs.timed_out_connecting = p->phase == PROBE_PHASE_CONNECTING;
		set_error(&p->obs, "",
			  p->phase == PROBE_PHASE_CONNECTING
				  ? "timeout while connecting"
				  : "timeout waiting for the probe query");
		return finish(p, PROBE_TIMEOUT, now_ms);
	}
	switch (p->phase) {
	case PROBE_PHASE_CONNECTING:
		return step_connecting(p, now_ms);
	case PROBE_PHASE_SENDING:
		/* libpq: on read-ready consume input first, then flush again. */
		if (!PQconsumeInput(p->conn)) {
			if (retry_fresh(p, now_ms))
				return !connect_start(p, now_ms);
			return fail_with_conn(p, PROBE_QUERY_FAILED, "", now_ms);
		}
		r = PQflush(p->conn);
		if (r < 0) {
			if (retry_fresh(p, now_ms))
				return !connect_start(p, now_ms);
			return fail_with_conn(p, PROBE_QUERY_FAILED, "", now_ms);
		}
		if (r > 0) {
			p->poll_want = POLLIN | POLLOUT;
			return false;
		}
		p->phase = PROBE_PHASE_WAITING;
		return step_waiting(p, now_ms);
	case PROBE_PHASE_WAITING:
		return step_waiting(p, now_ms);
	default:
		return true;
	}
}

/* Milliseconds poll() may wait before the deadline, never negative. */
static int wait_ms(uint64_t deadline, uint64_t now)
{
	uint64_t left = deadline > now ? deadline - now : 0;

	return left > 60000 ? 60000 : (int)left;
}

bool health_probe(const struct probe_target *t, uint32_t timeout_ms, struct node_observation *out)
{
	struct probe p;
	uint64_t now = probe_now_ms();
	bool running;

	probe_init(&p);
	running = probe_start(&p, t, timeout_ms, now);
	while (running) {
		struct pollfd pfd;
		bool have_fd = probe_pollfd(&p, &pfd);
		int n = 0;

		now = probe_now_ms();
		if (now < p.deadline) {
			/* No socket to wait on (should not happen): nap, do not spin. */
			int ms = wait_ms(p.deadline, now);

			n = poll(have_fd ? &pfd : NULL, have_fd ? 1 : 0,
				 have_fd || ms < 10 ? ms : 10);
			if (n < 0 && errno != EINTR) {
				set_error(&p.obs, "poll: ", strerror(errno));
				finish(&p, PROBE_INTERNAL, probe_now_ms());
				break;
			}
			now = probe_now_ms();
			/* PQconnectPoll must only run once the socket is ready (see health.c). */
			if (n <= 0 && now < p.deadline && have_fd)
				continue;
		}
		running = !probe_step(&p, now);
	}
	conn_close(&p);
	probe_obs_copy(out, &p.obs);
	return out->reachable;
}
