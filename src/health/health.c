/*
 * The health thread (see health.h for the contract).
 *
 * Ownership: struct health is shared between the caller's threads and the health thread. Fields
 * marked "mu" are read and written only under h->mu; fields marked "thread" belong to the health
 * thread alone after health_start returned (health_start fills them before pthread_create, and
 * health_stop reads them only after pthread_join). The wake pipe turns any request into a poll()
 * wake-up; requests themselves travel in the "mu" fields.
 *
 * Per node the thread cycles IDLE (-> LIGHT)* -> PROBING -> IDLE. In PROBING a session runs:
 * its attempts start on the schedule of health_fsm_next_attempt_at, each in a free slot of
 * nd->slots (slot 0 keeps the node's connection between sessions, the others always connect
 * afresh and close when done), and they overlap. When the session ends (a success, or the
 * confirmed failure), every attempt still in flight is closed (PQfinish on a non-blocking
 * connection; nothing of it is read again), so no connection outlives its session except slot
 * 0's healthy one. A light poll (slot 0) left unanswered for grace_ms becomes the first attempt
 * of a requested session (light_to_session). next_due is when an IDLE node's next session
 * starts. One poll() waits on the wake pipe and every running slot's socket, for at most the
 * nearest deadline or due time.
 */
#include "health/health.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "util/log.h"

_Static_assert(HEALTH_MAX_NODES >= CONFIG_MAX_BACKENDS, "a snapshot must hold every backend");
_Static_assert(offsetof(struct health_node_state, obs) + sizeof(struct node_observation) ==
		       sizeof(struct health_node_state),
	       "obs must be the last member of struct health_node_state");

#define COMPONENT "health"

enum node_phase {
	NODE_IDLE,    /* between sessions; next_due = next session start */
	NODE_PROBING, /* a session runs: attempts in flight in slots, or still due */
	NODE_LIGHT,   /* between sessions: a light WAL-position poll runs in slot 0 */
};

/* What a slot's probe is doing. */
enum slot_use {
	SLOT_FREE,	    /* not running; slot 0 may keep an idle connection */
	SLOT_ATTEMPT,	    /* an attempt of the running session */
	SLOT_LIGHT,	    /* slot 0 only: a light poll outside any session */
	SLOT_LIGHT_ATTEMPT, /* slot 0 only: a light poll that became the session's first attempt */
};

/* A light poll never waits longer than this, whatever the health-check timeout. */
#define LIGHT_TIMEOUT_MAX_MS 1000
/* ... and counts as unanswered (the first attempt of a session) after no less than this. */
#define LIGHT_GRACE_MIN_MS 100

/* Owned copy of the settings. */
struct health_settings {
	uint32_t period_ms;
	uint32_t timeout_ms;
	int max_retries;
	uint32_t retry_delay_ms;
	uint32_t lsn_poll_ms;
	char *user;	/* owned, never NULL */
	char *password; /* owned, never NULL */
	char *database; /* owned, never NULL */
};

struct health_node {
	char *host;		    /* owned, never NULL */
	int port;		    /* 1..65535 */
	char *user;		    /* owned override or NULL (then settings.user) */
	char *password;		    /* owned override or NULL */
	char *dbname;		    /* owned override or NULL */
	char *eff_user;		    /* owned: the credentials target uses (override or settings) */
	char *eff_password;	    /* owned */
	char *eff_dbname;	    /* owned */
	struct libpq_tls tls;	    /* owned copies: sslmode and its files */
	struct probe_target target; /* borrows host and eff_* (all owned by this node) */
	uint64_t target_gen;	    /* settings generation target was built from */
	/* Slot 0 keeps the node's connection between sessions; the others connect afresh. */
	struct probe slots[HEALTH_MAX_IN_FLIGHT];
	/*
	 * slots[0 .. slots_used-1] were started at least once; the others are still the idle
	 * probes calloc made (no connection), which closing would leave as they are, so nothing
	 * reads them (where the kernel maps no shared zero page, a read makes a page resident).
	 */
	int slots_used;
	enum slot_use use[HEALTH_MAX_IN_FLIGHT];
	enum node_phase phase;
	uint64_t next_due;	     /* monotonic ms */
	uint64_t next_light;	     /* monotonic ms of the next light poll */
	bool request_pending;	     /* a session was asked for (request, failed light poll) */
	bool next_requested;	     /* the session starting at next_due was asked for */
	bool warned_rejected;	     /* its login refusal was logged (once per episode) */
	struct health_node_state st; /* what gets published */
};

struct health {
	pthread_t thread;
	pthread_mutex_t mu;
	int wake_rd; /* nonblocking pipe read end, polled by the thread */
	int wake_wr; /* nonblocking pipe write end, written by anyone */
	void (*notify)(void *arg);
	void *notify_arg;
	int n;

	/* mu */
	bool stop;
	struct health_settings *pending; /* owned; new settings not yet taken by the thread */
	bool requested[HEALTH_MAX_NODES];
	bool skip[HEALTH_MAX_NODES];
	struct health_snapshot *published; /* owned */

	/* thread */
	struct health_settings cur;
	uint64_t gen; /* bumped when credentials change */
	uint64_t seq;
	/*
	 * Owned; n entries of about 64 kB, calloc'd. Most of it is probe slots beyond the first
	 * and observation rows no node reported: their pages stay untouched (not resident) until
	 * used, because nothing clears or copies a whole probe or observation (probe.h).
	 */
	struct health_node *nodes;
};

/* ----------------------------------------------------------------------------------------------
 * Pure state machine and statistics.
 */

double health_stats_average_retry_count(const struct health_stats *s)
{
	uint64_t done = s->success_count + s->fail_count;

	return done == 0 ? 0.0 : (double)s->retry_count / (double)done;
}

double health_stats_average_duration_ms(const struct health_stats *s)
{
	uint64_t done = s->success_count + s->fail_count;

	return done == 0 ? 0.0 : (double)s->duration_sum_ms / (double)done;
}

void health_fsm_session_begin(struct health_node_state *s, int64_t wall_ms, uint64_t mono_ms)
{
	(void)wall_ms;
	s->in_session = true;
	s->session_attempts = 0;
	s->session_failures = 0;
	s->session_retries = 0;
	s->session_started_at = mono_ms;
	s->stats.total_count++;
}

uint64_t health_fsm_next_attempt_at(const struct health_node_state *s, int max_retries,
				    uint32_t retry_delay_ms)
{
	/* A node already failed gets one attempt a period: retries only protect a healthy node. */
	int limit = s->failed ? 1 : 1 + (max_retries < 0 ? 0 : max_retries);

	if (!s->in_session || s->session_attempts >= limit)
		return UINT64_MAX;
	return s->session_started_at + (uint64_t)s->session_attempts * retry_delay_ms;
}

void health_fsm_attempt_started(struct health_node_state *s)
{
	if (s->session_attempts++ > 0) {
		s->session_retries++;
		s->stats.retry_count++;
	}
}

static void session_end(struct health_node_state *s, uint64_t mono_ms)
{
	struct health_stats *st = &s->stats;
	uint64_t d64 = mono_ms > s->session_started_at ? mono_ms - s->session_started_at : 0;
	uint32_t d = d64 > UINT32_MAX ? UINT32_MAX : (uint32_t)d64;
	bool first = st->success_count + st->fail_count == 0;

	s->in_session = false;
	if (d > st->max_duration_ms)
		st->max_duration_ms = d;
	if (first || d < st->min_duration_ms)
		st->min_duration_ms = d;
	st->duration_sum_ms += d;
	if ((uint32_t)s->session_retries > st->max_retry_count)
		st->max_retry_count = (uint32_t)s->session_retries;
}

enum health_next health_fsm_record(struct health_node_state *s, bool ok, int max_retries,
				   int64_t wall_ms, uint64_t mono_ms)
{
	struct health_stats *st = &s->stats;
	int needed = 1 + (max_retries < 0 ? 0 : max_retries);

	st->last_health_check = wall_ms;
	if (ok) {
		s->consecutive_failures = 0;
		s->consecutive_successes++;
		s->failed = false;
		st->last_successful_health_check = wall_ms;
		session_end(s, mono_ms);
		st->success_count++; /* after session_end: it tells the first completed session */
		return HEALTH_NEXT_PERIOD;
	}
	s->consecutive_successes = 0;
	s->consecutive_failures++;
	s->session_failures++;
	/*
	 * A healthy node is confirmed failed by its (1 + max_retries)th failed attempt of the
	 * session (attempts overlap, so they may end in any order); a node already failed ends its
	 * session when every attempt it started failed (it starts one).
	 */
	if (!s->failed && s->session_failures < needed)
		return HEALTH_NEXT_RETRY;
	if (s->failed && s->session_failures < s->session_attempts)
		return HEALTH_NEXT_RETRY;
	s->failed = true;
	st->last_failed_health_check = wall_ms;
	session_end(s, mono_ms);
	st->fail_count++;
	return HEALTH_NEXT_PERIOD;
}

void health_fsm_skip(struct health_node_state *s, int64_t wall_ms)
{
	s->stats.total_count++;
	s->stats.skip_count++;
	s->stats.last_skip_health_check = wall_ms;
}

/* ----------------------------------------------------------------------------------------------
 * Settings.
 */

static void free_secret(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

static void settings_free(struct health_settings *s)
{
	if (s == NULL)
		return;
	free(s->user);
	free_secret(s->password);
	free(s->database);
	memset(s, 0, sizeof(*s));
}

static char *dup_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

static bool settings_valid(const struct health_config_copy *c)
{
	return c != NULL && c->timeout_ms >= 1 && c->max_retries >= 0;
}

static bool settings_copy(struct health_settings *dst, const struct health_config_copy *c)
{
	memset(dst, 0, sizeof(*dst));
	dst->period_ms = c->period_ms;
	dst->timeout_ms = c->timeout_ms;
	dst->max_retries = c->max_retries;
	dst->retry_delay_ms = c->retry_delay_ms;
	dst->lsn_poll_ms = c->lsn_poll_ms;
	dst->user = dup_or_empty(c->user);
	dst->password = dup_or_empty(c->password);
	dst->database = dup_or_empty(c->database);
	if (dst->user == NULL || dst->password == NULL || dst->database == NULL) {
		settings_free(dst);
		return false;
	}
	return true;
}

void health_config_from_conf(const struct health_check_conf *hc, struct health_config_copy *out)
{
	out->period_ms = hc->period_ms;
	out->timeout_ms = hc->timeout_ms;
	out->max_retries = hc->max_retries;
	out->retry_delay_ms = hc->retry_delay_ms;
	out->lsn_poll_ms = 0; /* the cluster manager turns it on */
	out->user = hc->user;
	out->password = hc->password;
	out->database = hc->database;
}

/* ----------------------------------------------------------------------------------------------
 * The thread.
 */

static int64_t wall_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(struct health *h)
{
	char b = 1;

	/* A full pipe already guarantees a wake-up: EAGAIN is fine. */
	while (write(h->wake_wr, &b, 1) < 0 && errno == EINTR) {
	}
}

static void drain_wake(struct health *h)
{
	char buf[64];

	while (read(h->wake_rd, buf, sizeof(buf)) > 0) {
	}
}

/* Copies one node's state up to its observation's last used row (see health.h). */
static void state_copy(struct health_node_state *dst, const struct health_node_state *src)
{
	memcpy(dst, src, offsetof(struct health_node_state, obs));
	probe_obs_copy(&dst->obs, &src->obs);
}

/* Copies the thread's view into the mailbox; notify only from the health thread. */
static void publish_locked(struct health *h, uint64_t now)
{
	struct health_snapshot *s = h->published;

	s->seq = ++h->seq;
	s->published_at = now;
	s->enabled = h->cur.period_ms > 0;
	s->n_nodes = h->n;
	for (int i = 0; i < h->n; i++) {
		state_copy(&s->nodes[i], &h->nodes[i].st);
		s->nodes[i].skipped = h->skip[i];
	}
}

static void publish(struct health *h, uint64_t now)
{

	pthread_mutex_lock(&h->mu);
	publish_locked(h, now);
	pthread_mutex_unlock(&h->mu);
	if (h->notify != NULL)
		h->notify(h->notify_arg);
}

/* Closes every slot (running or idle), e.g. to stop or before new credentials. */
static void node_close_all(struct health_node *nd)
{
	for (int k = 0; k < HEALTH_MAX_IN_FLIGHT; k++) {
		if (k < nd->slots_used)
			probe_close(&nd->slots[k]);
		nd->use[k] = SLOT_FREE;
	}
}

/*
 * Rebuilds a node's target from the current settings when they changed, and reopens its
 * connection. Called only between attempts; the node owns the strings its target points at, so a
 * running attempt never loses them. On out of memory the old target stays (tried again later).
 */
static void node_refresh_target(struct health *h, struct health_node *nd)
{
	char *u, *pw, *db;

	if (nd->target_gen == h->gen)
		return;
	u = strdup(nd->user != NULL ? nd->user : h->cur.user);
	pw = strdup(nd->password != NULL ? nd->password : h->cur.password);
	db = strdup(nd->dbname != NULL ? nd->dbname : h->cur.database);
	if (u == NULL || pw == NULL || db == NULL) {
		free(u);
		free_secret(pw);
		free(db);
		return;
	}
	node_close_all(nd);
	free(nd->eff_user);
	free_secret(nd->eff_password);
	free(nd->eff_dbname);
	nd->eff_user = u;
	nd->eff_password = pw;
	nd->eff_dbname = db;
	nd->target.host = nd->host;
	nd->target.port = nd->port;
	nd->target.user = u;
	nd->target.password = pw;
	nd->target.dbname = db;
	nd->target.tls = nd->tls;
	nd->target_gen = h->gen;
}

/* Takes new settings from the mailbox. Called with the settings already moved out of h->mu. */
static void apply_settings(struct health *h, struct health_settings *ns, uint64_t now)
{
	bool creds = strcmp(ns->user, h->cur.user) != 0 ||
		     strcmp(ns->password, h->cur.password) != 0 ||
		     strcmp(ns->database, h->cur.database) != 0;

	if (creds)
		h->gen++;
	/* Nodes own copies of their credentials: each picks the new ones at its next attempt. */
	for (int i = 0; i < h->n; i++) {
		struct health_node *nd = &h->nodes[i];

		if (nd->phase == NODE_IDLE && ns->period_ms > 0) {
			uint64_t due = nd->st.session_started_at + ns->period_ms;

			if (!nd->st.has_observation && nd->st.stats.total_count == 0)
				due = now;
			if (h->cur.period_ms == 0 || due < nd->next_due)
				nd->next_due = due < now ? now : due;
		}
	}
	settings_free(&h->cur);
	h->cur = *ns;
	log_info(COMPONENT, 0,
		 "health check settings applied: period %ums, timeout %ums, %d retries every %ums",
		 h->cur.period_ms, h->cur.timeout_ms, h->cur.max_retries, h->cur.retry_delay_ms);
}

/*
 * The session ended because slot `winner` answered (or every attempt failed: winner -1). The
 * attempts still in flight are abandoned: probe_close PQfinishes them (non-blocking, their late
 * answers are never read). Only slot 0 keeps a connection between sessions: a healthy one from
 * another slot moves there, so the next session and the light polls reuse it.
 */
static void node_session_over(struct health_node *nd, int winner)
{
	for (int k = 0; k < HEALTH_MAX_IN_FLIGHT; k++) {
		if (k == winner)
			continue;
		if ((nd->use[k] != SLOT_FREE || k != 0) && k < nd->slots_used)
			probe_close(&nd->slots[k]);
		nd->use[k] = SLOT_FREE;
	}
	if (winner > 0) {
		struct probe tmp = nd->slots[0];

		/* Slot 0 is closed (it was running or idle without winning): swap, then close. */
		nd->slots[0] = nd->slots[winner];
		nd->slots[winner] = tmp;
		probe_close(&nd->slots[winner]);
	}
	nd->use[0] = SLOT_FREE;
	if (winner > 0)
		nd->use[winner] = SLOT_FREE;
}

/* A light poll's answer becomes the node's WAL sample. */
static void node_take_lsn(struct health_node *nd, const struct probe *p, uint64_t now)
{
	nd->st.has_lsn = true;
	nd->st.lsn_in_recovery = p->obs.in_recovery;
	nd->st.lsn_current = p->obs.current_lsn;
	nd->st.lsn_replay = p->obs.replay_lsn;
	nd->st.lsn_receive = p->obs.receive_lsn;
	nd->st.lsn_started_at = p->started_at;
	nd->st.lsn_observed_at = now;
}

/* An attempt in slot k ended: record it and, when the session is over, schedule the next one. */
static void node_attempt_done(struct health *h, int i, int k, uint64_t now)
{
	struct health_node *nd = &h->nodes[i];
	const struct probe *p = &nd->slots[k];
	const struct node_observation *o = &p->obs;
	bool was_failed = nd->st.failed;
	bool light = nd->use[k] == SLOT_LIGHT_ATTEMPT;
	enum health_next next;

	nd->use[k] = SLOT_FREE;
	/*
	 * A light poll that answered as the first attempt carries no pg_stat_replication rows:
	 * its LSNs update the WAL sample and obs keeps the last full answer.
	 */
	if (light && o->reachable) {
		node_take_lsn(nd, p, now);
	} else {
		probe_obs_copy(&nd->st.obs, o);
		nd->st.has_observation = true;
	}
	nd->next_light = now + h->cur.lsn_poll_ms;
	/* A node that refuses the check's login is alive: it is not failed, only unchecked. */
	if (o->rejected && !nd->warned_rejected)
		log_error(COMPONENT, 0,
			  "node %d (%s:%d) refuses the health check's login (check "
			  "health_check.user, "
			  "password and database); the node is not failed over for this: %s",
			  i, nd->host, nd->port, o->error);
	nd->warned_rejected = o->rejected;
	next = health_fsm_record(&nd->st, o->reachable || o->rejected, h->cur.max_retries,
				 wall_now_ms(), now);
	if (nd->st.failed && !was_failed)
		log_info(COMPONENT, 0,
			 "node %d (%s:%d) failed %d health checks in %u ms (%d started %u ms "
			 "apart): "
			 "%s",
			 i, nd->host, nd->port, nd->st.session_failures,
			 (unsigned)(now - nd->st.session_started_at), nd->st.session_attempts,
			 h->cur.retry_delay_ms, o->error);
	else if (!nd->st.failed && was_failed)
		log_info(COMPONENT, 0, "node %d (%s:%d) answers health checks again", i, nd->host,
			 nd->port);
	else if (!o->reachable)
		log_debug(COMPONENT, 0, "node %d (%s:%d) health check attempt %d failed (%s): %s",
			  i, nd->host, nd->port, nd->st.session_failures,
			  probe_status_name(o->status), o->error);
	if (next == HEALTH_NEXT_RETRY)
		return;
	node_session_over(nd, o->reachable || o->rejected ? k : -1);
	nd->phase = NODE_IDLE;
	nd->next_due = nd->st.session_started_at + h->cur.period_ms;
	if (nd->next_due < now)
		nd->next_due = now;
}

/*
 * A light poll ended. An answer is published as the node's WAL sample; a failure (the kept
 * connection broke, or no answer in time) starts a requested session at once: that session, not
 * the light poll, decides whether the node is healthy.
 */
static void node_light_done(struct health *h, int i, uint64_t now)
{
	struct health_node *nd = &h->nodes[i];
	const struct probe *p = &nd->slots[0];

	nd->phase = NODE_IDLE;
	nd->use[0] = SLOT_FREE;
	nd->next_light = p->started_at + h->cur.lsn_poll_ms;
	if (p->obs.reachable) {
		node_take_lsn(nd, p, now);
		return;
	}
	probe_close(&nd->slots[0]);
	log_debug(COMPONENT, 0, "node %d (%s:%d) light poll failed (%s): %s; checking now", i,
		  nd->host, nd->port, probe_status_name(p->obs.status), p->obs.error);
	nd->request_pending = true;
}

/* How long a light poll may go unanswered before it counts as a session's first attempt. */
static uint32_t light_grace_ms(const struct health *h)
{
	uint32_t g = h->cur.retry_delay_ms;

	if (g > LIGHT_TIMEOUT_MAX_MS)
		g = LIGHT_TIMEOUT_MAX_MS;
	return g < LIGHT_GRACE_MIN_MS ? LIGHT_GRACE_MIN_MS : g;
}

/*
 * A light poll answers in about a millisecond; one left unanswered for light_grace_ms is the
 * first sign of a frozen node. It becomes the first attempt of a requested session that started
 * when the poll was sent (its deadline stretched to the full timeout), so the retries start now
 * instead of after the poll's own deadline and the session's confirmation time counts from the
 * moment the node stopped answering.
 */
static void light_to_session(struct health *h, int i)
{
	struct health_node *nd = &h->nodes[i];
	struct probe *p = &nd->slots[0];

	nd->phase = NODE_PROBING;
	nd->use[0] = SLOT_LIGHT_ATTEMPT;
	nd->request_pending = false;
	nd->next_requested = false;
	p->deadline = p->started_at + h->cur.timeout_ms;
	health_fsm_session_begin(&nd->st, wall_now_ms(), p->started_at);
	nd->st.session_requested = true;
	health_fsm_attempt_started(&nd->st);
	log_debug(COMPONENT, 0, "node %d (%s:%d) light poll unanswered for %u ms; checking now", i,
		  nd->host, nd->port, light_grace_ms(h));
}

/* Starts a light poll on an idle node that keeps a connection and has no session due. */
static bool start_light(struct health *h, int i, const bool *skip, uint64_t now)
{
	struct health_node *nd = &h->nodes[i];
	uint32_t t = h->cur.timeout_ms;

	if (h->cur.lsn_poll_ms == 0 || h->cur.period_ms == 0 || nd->phase != NODE_IDLE || skip[i] ||
	    nd->request_pending || nd->next_light > now || nd->next_due <= now ||
	    nd->target_gen != h->gen || !probe_has_conn(&nd->slots[0]))
		return false;
	if (t > LIGHT_TIMEOUT_MAX_MS)
		t = LIGHT_TIMEOUT_MAX_MS;
	nd->phase = NODE_LIGHT;
	nd->use[0] = SLOT_LIGHT;
	if (!probe_start_light(&nd->slots[0], t, now)) {
		node_light_done(h, i, now);
		return true;
	}
	return false;
}

/* Starts the session's attempts that are due, each in a free slot; true if one ended at once. */
static bool start_attempts(struct health *h, int i, uint64_t now)
{
	struct health_node *nd = &h->nodes[i];
	bool changed = false;

	while (nd->phase == NODE_PROBING &&
	       health_fsm_next_attempt_at(&nd->st, h->cur.max_retries, h->cur.retry_delay_ms) <=
		       now) {
		int k = 0;

		while (k < HEALTH_MAX_IN_FLIGHT && nd->use[k] != SLOT_FREE)
			k++;
		if (k == HEALTH_MAX_IN_FLIGHT)
			break; /* every slot runs an attempt: the next one waits for a free slot */
		if (k > 0 && k < nd->slots_used)
			probe_close(&nd->slots[k]); /* other slots never reuse a connection */
		if (k >= nd->slots_used)
			nd->slots_used = k + 1;
		health_fsm_attempt_started(&nd->st);
		nd->use[k] = SLOT_ATTEMPT;
		changed = true;
		if (!probe_start(&nd->slots[k], &nd->target, h->cur.timeout_ms, now))
			node_attempt_done(h, i, k, now);
	}
	return changed;
}

/* Starts every due session and attempt; returns true if something worth publishing happened. */
static bool start_due(struct health *h, const bool *skip, uint64_t now)
{
	bool changed = false;

	for (int i = 0; i < h->n; i++) {
		struct health_node *nd = &h->nodes[i];

		if (nd->phase == NODE_IDLE && nd->request_pending) {
			nd->request_pending = false;
			if (!skip[i] && h->cur.period_ms > 0) {
				nd->next_due = now;
				nd->next_requested = true;
			}
		}
		if (nd->phase == NODE_LIGHT) {
			if (!skip[i] && h->cur.period_ms > 0 &&
			    now >= nd->slots[0].started_at + light_grace_ms(h)) {
				light_to_session(h, i);
				changed = true;
			} else {
				continue;
			}
		}
		if (nd->phase == NODE_IDLE) {
			bool requested = nd->next_requested;

			if (nd->next_due > now) {
				changed |= start_light(h, i, skip, now);
				continue;
			}
			nd->next_requested = false;
			if (h->cur.period_ms == 0)
				continue;
			if (skip[i]) {
				health_fsm_skip(&nd->st, wall_now_ms());
				node_close_all(nd);
				nd->next_due = now + h->cur.period_ms;
				changed = true;
				continue;
			}
			node_refresh_target(h, nd);
			health_fsm_session_begin(&nd->st, wall_now_ms(), now);
			nd->st.session_requested = requested;
			nd->phase = NODE_PROBING;
		}
		changed |= start_attempts(h, i, now);
	}
	return changed;
}

/* Milliseconds until the nearest deadline or due time, -1 for none. */
static int next_timeout(const struct health *h, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (int i = 0; i < h->n; i++) {
		const struct health_node *nd = &h->nodes[i];
		bool slot_free = false;
		uint64_t t = UINT64_MAX;

		for (int k = 0; k < HEALTH_MAX_IN_FLIGHT; k++) {
			if (nd->use[k] == SLOT_FREE)
				slot_free = true;
			else if (nd->slots[k].deadline < t)
				t = nd->slots[k].deadline;
		}
		if (nd->phase == NODE_LIGHT && h->cur.period_ms > 0) {
			uint64_t g = nd->slots[0].started_at + light_grace_ms(h);

			if (g < t)
				t = g;
		} else if (nd->phase == NODE_PROBING && slot_free) {
			uint64_t a = health_fsm_next_attempt_at(&nd->st, h->cur.max_retries,
								h->cur.retry_delay_ms);

			if (a < t)
				t = a;
		} else if (nd->phase == NODE_IDLE && h->cur.period_ms > 0) {
			t = nd->next_due;
			if (h->cur.lsn_poll_ms > 0 && probe_has_conn(&nd->slots[0]) &&
			    nd->next_light < t)
				t = nd->next_light;
		}
		if (t < next)
			next = t;
	}
	if (next == UINT64_MAX)
		return -1;
	if (next <= now)
		return 0;
	return next - now > 60000 ? 60000 : (int)(next - now);
}

#define MAX_PFDS (1 + HEALTH_MAX_NODES * HEALTH_MAX_IN_FLIGHT)

static void *health_main(void *arg)
{
	struct health *h = arg;
	struct pollfd pfds[MAX_PFDS];
	int owner[MAX_PFDS]; /* node * HEALTH_MAX_IN_FLIGHT + slot */
	bool ready[HEALTH_MAX_NODES * HEALTH_MAX_IN_FLIGHT];
	bool skip[HEALTH_MAX_NODES];
	bool changed;

	for (;;) {
		struct health_settings *ns;
		bool req[HEALTH_MAX_NODES];
		uint64_t now;
		int npfd = 1, n;

		pthread_mutex_lock(&h->mu);
		if (h->stop) {
			pthread_mutex_unlock(&h->mu);
			break;
		}
		ns = h->pending;
		h->pending = NULL;
		memcpy(req, h->requested, sizeof(req));
		memset(h->requested, 0, sizeof(h->requested));
		memcpy(skip, h->skip, sizeof(skip));
		pthread_mutex_unlock(&h->mu);

		now = probe_now_ms();
		changed = false;
		if (ns != NULL) {
			apply_settings(h, ns, now);
			free(ns);
			changed = true;
		}
		for (int i = 0; i < h->n; i++) {
			/* A node in a session ignores it: that session answers the question. */
			if (req[i] &&
			    (h->nodes[i].phase == NODE_IDLE || h->nodes[i].phase == NODE_LIGHT))
				h->nodes[i].request_pending = true;
		}
		changed |= start_due(h, skip, now);
		if (changed)
			publish(h, now);

		pfds[0].fd = h->wake_rd;
		pfds[0].events = POLLIN;
		pfds[0].revents = 0;
		for (int i = 0; i < h->n; i++) {
			for (int k = 0; k < HEALTH_MAX_IN_FLIGHT; k++) {
				if (h->nodes[i].use[k] != SLOT_FREE &&
				    probe_pollfd(&h->nodes[i].slots[k], &pfds[npfd]))
					owner[npfd++] = i * HEALTH_MAX_IN_FLIGHT + k;
			}
		}
		n = poll(pfds, (nfds_t)npfd, next_timeout(h, now));
		if (n < 0 && errno != EINTR) {
			log_error(COMPONENT, 0, "poll: %s", strerror(errno));
			(void)poll(NULL, 0, 100); /* do not spin */
		}
		if (pfds[0].revents != 0)
			drain_wake(h);

		/*
		 * Step a probe only when its socket is ready or its deadline passed: PQconnectPoll
		 * must not be called before the socket is ready (it would take an unfinished
		 * connect() for a finished one).
		 */
		now = probe_now_ms();
		changed = false;
		memset(ready, 0, sizeof(ready));
		for (int q = 1; q < npfd; q++) {
			if (pfds[q].revents != 0)
				ready[owner[q]] = true;
		}
		for (int i = 0; i < h->n; i++) {
			struct health_node *nd = &h->nodes[i];

			/*
			 * A session ending here closes the node's other slots (use becomes
			 * SLOT_FREE), so later slots of the same node are skipped below: an
			 * abandoned probe is never stepped again.
			 */
			for (int k = 0; k < HEALTH_MAX_IN_FLIGHT; k++) {
				if (nd->use[k] == SLOT_FREE)
					continue;
				if (!ready[i * HEALTH_MAX_IN_FLIGHT + k] &&
				    now < nd->slots[k].deadline)
					continue;
				if (!probe_step(&nd->slots[k], now))
					continue;
				if (nd->use[k] == SLOT_LIGHT)
					node_light_done(h, i, now);
				else
					node_attempt_done(h, i, k, now);
				changed = true;
			}
		}
		if (changed)
			publish(h, now);
	}
	for (int i = 0; i < h->n; i++)
		node_close_all(&h->nodes[i]);
	return NULL;
}

/* ----------------------------------------------------------------------------------------------
 * API.
 */

static char *dup_override(const char *s)
{
	return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

static void free_handle(struct health *h)
{
	for (int i = 0; i < h->n; i++) {
		struct health_node *nd = &h->nodes[i];

		node_close_all(nd);
		free(nd->host);
		free(nd->user);
		free_secret(nd->password);
		free(nd->dbname);
		free(nd->eff_user);
		free_secret(nd->eff_password);
		free(nd->eff_dbname);
		libpq_tls_free(&nd->tls);
	}
	if (h->pending != NULL) {
		settings_free(h->pending);
		free(h->pending);
	}
	settings_free(&h->cur);
	free(h->nodes);
	free(h->published);
	if (h->wake_rd >= 0)
		close(h->wake_rd);
	if (h->wake_wr >= 0)
		close(h->wake_wr);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

health_t *health_start(const struct health_config_copy *cfg, const struct probe_target *targets,
		       int n, void (*notify)(void *arg), void *arg)
{
	struct health *h;
	int fds[2];
	sigset_t all, old;
	int rc;

	if (!settings_valid(cfg) || targets == NULL || n < 1 || n > HEALTH_MAX_NODES) {
		log_error(COMPONENT, 0, "health_start: invalid arguments");
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->wake_rd = h->wake_wr = -1;
	pthread_mutex_init(&h->mu, NULL);
	h->n = n;
	h->notify = notify;
	h->notify_arg = arg;
	h->gen = 1;
	h->published = calloc(1, sizeof(*h->published));
	h->nodes = calloc((size_t)n, sizeof(*h->nodes));
	if (h->published == NULL || h->nodes == NULL || !settings_copy(&h->cur, cfg)) {
		h->n = h->nodes == NULL ? 0 : n;
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		struct health_node *nd = &h->nodes[i];
		const struct probe_target *t = &targets[i];

		/*
		 * calloc made every slot an idle probe (probe.h): no probe_init, which would write
		 * a page of each of the 8 slots although most nodes never use more than one.
		 */
		nd->port = t->port;
		nd->host = dup_or_empty(t->host);
		nd->user = dup_override(t->user);
		nd->password = dup_override(t->password);
		nd->dbname = dup_override(t->dbname);
		if (!libpq_tls_dup(&t->tls, &nd->tls))
			goto fail;
		if (nd->host == NULL || (t->user != NULL && t->user[0] && nd->user == NULL) ||
		    (t->password != NULL && t->password[0] && nd->password == NULL) ||
		    (t->dbname != NULL && t->dbname[0] && nd->dbname == NULL))
			goto fail;
		if (t->port < 1 || t->port > 65535) {
			log_error(COMPONENT, 0, "health_start: node %d: bad port %d", i, t->port);
			goto fail;
		}
		nd->phase = NODE_IDLE;
		nd->next_due = 0; /* first session at once */
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
		log_error(COMPONENT, 0, "pipe2: %s", strerror(errno));
		goto fail;
	}
	h->wake_rd = fds[0];
	h->wake_wr = fds[1];
	/* The initial snapshot (seq 1, nothing observed yet) exists before anyone can read. */
	publish_locked(h, probe_now_ms());
	/* Signals belong to the main loop: the thread starts with all of them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&h->thread, NULL, health_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_error(COMPONENT, 0, "pthread_create: %s", strerror(rc));
		goto fail;
	}
	return h;
fail:
	free_handle(h);
	return NULL;
}

void health_snapshot_copy(health_t *h, struct health_snapshot *out)
{
	pthread_mutex_lock(&h->mu);
	const struct health_snapshot *s = h->published;
	out->seq = s->seq;
	out->published_at = s->published_at;
	out->enabled = s->enabled;
	out->n_nodes = s->n_nodes;
	for (int i = 0; i < s->n_nodes; i++)
		state_copy(&out->nodes[i], &s->nodes[i]);
	pthread_mutex_unlock(&h->mu);
}

void health_request_probe_now(health_t *h, int node)
{
	if (node >= h->n)
		return;
	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < h->n; i++) {
		if (node < 0 || node == i)
			h->requested[i] = true;
	}
	pthread_mutex_unlock(&h->mu);
	wake(h);
}

void health_set_skip(health_t *h, int node, bool skip)
{
	if (node < 0 || node >= h->n)
		return;
	pthread_mutex_lock(&h->mu);
	h->skip[node] = skip;
	pthread_mutex_unlock(&h->mu);
	wake(h);
}

bool health_update_config(health_t *h, const struct health_config_copy *cfg)
{
	struct health_settings *ns, *old;

	if (!settings_valid(cfg))
		return false;
	ns = malloc(sizeof(*ns));
	if (ns == NULL)
		return false;
	if (!settings_copy(ns, cfg)) {
		free(ns);
		return false;
	}
	pthread_mutex_lock(&h->mu);
	old = h->pending; /* two reloads before the thread looked: the later one wins */
	h->pending = ns;
	pthread_mutex_unlock(&h->mu);
	if (old != NULL) {
		settings_free(old);
		free(old);
	}
	wake(h);
	return true;
}

void health_stop(health_t *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_mutex_unlock(&h->mu);
	wake(h);
	pthread_join(h->thread, NULL);
	free_handle(h);
}
