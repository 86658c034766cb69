/*
 * The watchdog thread (see watchdog.h for the contract, doc/watchdog.md for the design).
 *
 * Ownership: struct watchdog is shared between callers and the thread. Fields marked "mu" are
 * touched only under wd->mu; fields marked "thread" belong to the thread (watchdog_stop reads
 * them after the join). The etcd client (etcd.h) and the peer-check curl handle are the
 * thread's. Every network call has a deadline (call_ms); the thread never holds mu across one.
 *
 * One tick (every tick_ms, or at once when woken):
 *   1. lease: grant one if none; renew it every ttl/3; lost when not renewed for ttl;
 *   2. put this instance's member report (when it changed, and every ttl/3);
 *   3. try to take the leader key (create-if-absent, bound to the lease) unless held;
 *   4. as the leader, write the pending view (guarded by the leader key's create_revision);
 *   5. read the prefix: members, leader, view; a leader whose key is gone or changed steps down;
 *   6. fencing: lost for ttl and some reachable peer still has etcd (or too few are reachable).
 */
#include "failover/watchdog.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "failover/curl_api.h"
#include "failover/etcd.h"
#include "util/log.h"

#define COMPONENT      "watchdog"
#define TICK_MAX_MS    250
#define URGENT_TICK_MS 50    /* the tick while the primary is seen failed here */
#define HOOK_MAX_MS    10000 /* a VIP hook running longer is killed */
#define PEER_BODY_MAX  4096

extern char **environ;

struct watchdog {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*notify)(void *arg);
	void *notify_arg;

	/* immutable after start */
	char prefix[128];
	char name[WD_NAME_MAX];
	char host[64];
	int port, http_port;
	uint32_t ttl_ms, tick_ms, call_ms;
	bool observe;
	char *delegate_ip, *if_up_cmd, *if_down_cmd, *arping_cmd; /* owned or NULL */

	/* mu */
	bool stop, woken;
	struct wd_local local;
	struct wd_view pending;
	uint64_t pending_seq;
	struct wd_state state;

	/* thread */
	etcd_t *etcd;
	const struct curl_api *cu; /* libcurl, loaded by watchdog_start */
	CURL *peer;		   /* the peer-check handle */
	int64_t lease;
	int64_t old_lease;	/* the lease given up after an outage; tried first when back */
	uint64_t lease_sent_ok; /* monotonic ms of the request of the last good renew */
	uint64_t last_renew;	/* monotonic ms of the last renew attempt */
	uint64_t last_member_put;
	struct wd_local put_local; /* the report as last written */
	bool put_valid;
	bool leader;
	int64_t leader_rev; /* create_revision of the leader key we hold */
	uint64_t written_seq;
	uint64_t last_round_ok; /* monotonic ms of the last fully successful tick */
	bool ever_connected;
	struct wd_member known[WD_MAX_MEMBERS]; /* every member seen, for SHOW and the peer check */
	int n_known;
	struct wd_view view;
	char leader_name[WD_NAME_MAX];
	bool fenced, down_everywhere;
	uint64_t elections;
	char last_err[256];
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *watchdog_status_name(enum wd_status s)
{
	switch (s) {
	case WD_LEADER:
		return "leader";
	case WD_MEMBER:
		return "member";
	case WD_LOST:
		return "lost";
	case WD_FENCED:
		return "fenced";
	case WD_STARTING:
		break;
	}
	return "starting";
}

bool watchdog_may_run_commands(const struct wd_state *s)
{
	return s->is_leader && s->fresh && !s->fenced && !s->observe;
}

/* ---- VIP hooks ------------------------------------------------------------------------------- */

/* Runs cmd (with $_IP_$ replaced) through /bin/sh, waiting at most HOOK_MAX_MS. */
static void run_hook(struct watchdog *wd, const char *what, const char *cmd)
{
	char line[1024];
	size_t len = 0;
	const char *ip = wd->delegate_ip ? wd->delegate_ip : "";
	if (!cmd)
		return;
	for (const char *p = cmd; *p && len + 1 < sizeof(line);) {
		if (strncmp(p, "$_IP_$", 6) == 0) {
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s", ip);
			p += 6;
		} else {
			line[len++] = *p++;
		}
	}
	line[len < sizeof(line) ? len : sizeof(line) - 1] = '\0';
	char *argv[] = { "/bin/sh", "-c", line, NULL };
	pid_t pid;
	uint64_t t0 = mono_ms();
	int rc = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
	if (rc != 0) {
		log_warning(COMPONENT, 0, "%s: could not start /bin/sh: %s", what, strerror(rc));
		return;
	}
	int status = 0;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return;
		if (mono_ms() - t0 > HOOK_MAX_MS) {
			kill(pid, SIGKILL);
			(void)waitpid(pid, &status, 0);
			log_warning(COMPONENT, 0, "%s timed out after %d ms: %s", what, HOOK_MAX_MS,
				    line);
			return;
		}
		usleep(10000);
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (code == 0)
		log_info(COMPONENT, 0, "%s succeeded in %" PRIu64 " ms: %s", what, mono_ms() - t0,
			 line);
	else
		log_warning(COMPONENT, 0, "%s failed (exit status %d): %s", what, code, line);
}

static void become_leader(struct watchdog *wd, int64_t rev)
{
	wd->leader = true;
	wd->leader_rev = rev;
	wd->elections++;
	/* A view handed before (under an older leadership) is stale: the manager hands a new one
	 * once it sees this leadership. */
	pthread_mutex_lock(&wd->mu);
	wd->written_seq = wd->pending_seq;
	pthread_mutex_unlock(&wd->mu);
	snprintf(wd->leader_name, sizeof(wd->leader_name), "%s", wd->name);
	log_info(COMPONENT, 0, "this instance (%s) is the leader (lease %" PRId64 ")", wd->name,
		 wd->lease);
	run_hook(wd, "if_up_cmd", wd->if_up_cmd);
	if (wd->if_up_cmd)
		run_hook(wd, "arping_cmd", wd->arping_cmd);
}

static void step_down(struct watchdog *wd, const char *why)
{
	if (!wd->leader)
		return;
	wd->leader = false;
	if (strcmp(why, "shutting down") == 0)
		log_info(COMPONENT, 0, "this instance (%s) leaves the leadership: %s", wd->name,
			 why);
	else
		log_warning(COMPONENT, 0, "this instance (%s) is no longer the leader: %s",
			    wd->name, why);
	run_hook(wd, "if_down_cmd", wd->if_down_cmd);
}

/* ---- JSON of the keys ------------------------------------------------------------------------ */

static void bits_to_json(json_object *o, const char *k, uint64_t bits)
{
	json_object *a = json_object_new_array();
	for (int i = 0; i < 64; i++)
		if (bits & (UINT64_C(1) << i))
			json_object_array_add(a, json_object_new_int(i));
	json_object_object_add(o, k, a);
}

static uint64_t bits_from_json(json_object *o, const char *k)
{
	json_object *a;
	uint64_t bits = 0;
	if (!json_object_object_get_ex(o, k, &a) || !json_object_is_type(a, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(a) && i < 64; i++) {
		int v = json_object_get_int(json_object_array_get_idx(a, i));
		if (v >= 0 && v < 64)
			bits |= UINT64_C(1) << v;
	}
	return bits;
}

static int64_t get_int(json_object *o, const char *k, int64_t def)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : def;
}

static void get_str(json_object *o, const char *k, char *out, size_t cap)
{
	json_object *v;
	snprintf(out, cap, "%s",
		 json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
			 ? json_object_get_string(v)
			 : "");
}

static json_object *parse(const char *text)
{
	json_tokener *tok = json_tokener_new_ex(8);
	if (!tok)
		return NULL;
	json_object *o = json_tokener_parse_ex(tok, text, (int)strlen(text));
	if (json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static char *member_json(const struct watchdog *wd, const struct wd_local *l)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(wd->name));
	json_object_object_add(o, "host", json_object_new_string(wd->host));
	json_object_object_add(o, "port", json_object_new_int(wd->port));
	json_object_object_add(o, "http_port", json_object_new_int(wd->http_port));
	bits_to_json(o, "down", l->down);
	json_object_object_add(o, "primary", json_object_new_int(l->primary));
	json_object_object_add(o, "fenced", json_object_new_boolean(l->fenced));
	json_object_object_add(o, "at", json_object_new_int64(wall_ms()));
	char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static bool member_from_json(const char *text, struct wd_member *m)
{
	json_object *o = parse(text);
	if (!o)
		return false;
	memset(m, 0, sizeof(*m));
	get_str(o, "name", m->name, sizeof(m->name));
	get_str(o, "host", m->host, sizeof(m->host));
	m->port = (int)get_int(o, "port", 0);
	m->http_port = (int)get_int(o, "http_port", 0);
	m->down = bits_from_json(o, "down");
	m->primary = (int)get_int(o, "primary", -1);
	json_object *f;
	m->fenced = json_object_object_get_ex(o, "fenced", &f) && json_object_get_boolean(f);
	m->at_ms = get_int(o, "at", 0);
	m->present = true;
	json_object_put(o);
	return m->name[0] != '\0';
}

static char *view_json(const struct wd_view *v)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)v->epoch));
	json_object_object_add(o, "primary", json_object_new_int(v->primary));
	json_object_object_add(o, "failing_over", json_object_new_boolean(v->failing_over));
	json_object_object_add(o, "failed", json_object_new_int(v->failed));
	json_object_object_add(o, "new_main", json_object_new_int(v->new_main));
	bits_to_json(o, "former", v->former);
	json_object_object_add(o, "leader", json_object_new_string(v->leader));
	json_object_object_add(o, "at", json_object_new_int64(wall_ms()));
	char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static bool view_from_json(const char *text, struct wd_view *v)
{
	json_object *o = parse(text);
	if (!o)
		return false;
	memset(v, 0, sizeof(*v));
	v->valid = true;
	v->epoch = (uint64_t)get_int(o, "epoch", 0);
	v->primary = (int)get_int(o, "primary", -1);
	json_object *f;
	v->failing_over =
		json_object_object_get_ex(o, "failing_over", &f) && json_object_get_boolean(f);
	v->failed = (int)get_int(o, "failed", -1);
	v->new_main = (int)get_int(o, "new_main", -1);
	v->former = bits_from_json(o, "former");
	get_str(o, "leader", v->leader, sizeof(v->leader));
	json_object_put(o);
	return true;
}

/* ---- the peer check (fencing) ------------------------------------------------------------------
 */

struct body {
	char buf[PEER_BODY_MAX];
	size_t len;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	if (b->len + n >= sizeof(b->buf))
		return 0;
	memcpy(b->buf + b->len, ptr, n);
	b->len += n;
	b->buf[b->len] = '\0';
	return n;
}

/* 1: the peer has etcd; 0: it lost etcd too; -1: not reached. */
static int peer_has_etcd(struct watchdog *wd, const struct wd_member *m)
{
	char url[160];
	struct body b = { .len = 0 };
	b.buf[0] = '\0';
	if (!wd->peer || m->http_port <= 0)
		return -1;
	snprintf(url, sizeof(url), "http://%s:%d/watchdog", m->host, m->http_port);
	wd->cu->easy_setopt(wd->peer, CURLOPT_URL, url);
	wd->cu->easy_setopt(wd->peer, CURLOPT_WRITEFUNCTION, on_body);
	wd->cu->easy_setopt(wd->peer, CURLOPT_WRITEDATA, &b);
	if (wd->cu->easy_perform(wd->peer) != CURLE_OK)
		return -1;
	json_object *o = parse(b.buf), *e;
	if (!o)
		return -1;
	int r = json_object_object_get_ex(o, "etcd", &e) &&
				strcmp(json_object_get_string(e), "ok") == 0
			? 1
			: 0;
	json_object_put(o);
	return r;
}

/*
 * Lost etcd for a whole TTL: fenced unless etcd is down for everybody, i.e. a majority of the
 * known members (this one included) is reached and none of them has etcd.
 */
static void decide_fencing(struct watchdog *wd)
{
	int total = 1, reached = 1, with_etcd = 0;
	for (int i = 0; i < wd->n_known; i++) {
		/* The instances alive at the last successful read (their keys were there). */
		if (!wd->known[i].present || strcmp(wd->known[i].name, wd->name) == 0)
			continue;
		total++;
		int r = peer_has_etcd(wd, &wd->known[i]);
		if (r >= 0)
			reached++;
		if (r == 1)
			with_etcd++;
	}
	bool everywhere = wd->ever_connected && total > 1 && 2 * reached > total && with_etcd == 0;
	if (everywhere != wd->down_everywhere)
		log_warning(COMPONENT, 0,
			    everywhere
				    ? "etcd is unreachable from every instance reached (%d of %d): "
				      "writes go on, no failover until it is back"
				    : "etcd is unreachable from here only (%d of %d instances "
				      "reached): fencing",
			    reached, total);
	wd->down_everywhere = everywhere;
	wd->fenced = !everywhere;
}

/* ---- the tick -----------------------------------------------------------------------------------
 */

static void key_of(const struct watchdog *wd, const char *what, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", wd->prefix, what);
}

static void remember(struct watchdog *wd, const struct wd_member *m)
{
	for (int i = 0; i < wd->n_known; i++) {
		if (strcmp(wd->known[i].name, m->name) == 0) {
			wd->known[i] = *m;
			return;
		}
	}
	if (wd->n_known < WD_MAX_MEMBERS)
		wd->known[wd->n_known++] = *m;
}

/* Reads the prefix; false on a failed read. */
static bool read_prefix(struct watchdog *wd)
{
	struct etcd_kv *kvs = calloc(ETCD_RANGE_MAX, sizeof(*kvs));
	char pfx[160], leader_key[160], view_key[160], members[160];
	if (!kvs)
		return false;
	snprintf(pfx, sizeof(pfx), "%s/", wd->prefix);
	key_of(wd, "leader", leader_key, sizeof(leader_key));
	key_of(wd, "view", view_key, sizeof(view_key));
	key_of(wd, "members/", members, sizeof(members));
	int n = etcd_range_prefix(wd->etcd, pfx, kvs, ETCD_RANGE_MAX);
	if (n < 0) {
		free(kvs);
		return false;
	}
	bool leader_seen = false;
	for (int i = 0; i < wd->n_known; i++)
		wd->known[i].present = false;
	wd->leader_name[0] = '\0';
	for (int i = 0; i < n; i++) {
		const struct etcd_kv *kv = &kvs[i];
		if (strcmp(kv->key, leader_key) == 0) {
			snprintf(wd->leader_name, sizeof(wd->leader_name), "%s", kv->value);
			if (wd->leader && kv->create_revision == wd->leader_rev)
				leader_seen = true;
		} else if (strcmp(kv->key, view_key) == 0) {
			struct wd_view v;
			if (view_from_json(kv->value, &v))
				wd->view = v;
		} else if (strncmp(kv->key, members, strlen(members)) == 0) {
			struct wd_member m;
			if (member_from_json(kv->value, &m))
				remember(wd, &m);
		}
	}
	free(kvs);
	if (wd->leader && !leader_seen)
		step_down(wd, "the leader key is gone or held by another lease");
	return true;
}

static void tick(struct watchdog *wd, const struct wd_local *local, const struct wd_view *pending,
		 uint64_t pending_seq)
{
	uint64_t now = mono_ms();
	bool ok = true;

	/* 1. the lease (after an outage, the old one first: etcd keeps leases over a restart) */
	if (wd->lease == 0 && wd->old_lease != 0) {
		int64_t left = 0;
		uint64_t sent = now;
		if (etcd_lease_keepalive(wd->etcd, wd->old_lease, &left) && left > 0) {
			wd->lease = wd->old_lease;
			wd->lease_sent_ok = wd->last_renew = sent;
			wd->put_valid = false;
			log_info(COMPONENT, 0,
				 "etcd at %s is reachable again; lease %" PRId64 " is still valid",
				 etcd_current_endpoint(wd->etcd), wd->lease);
		}
		wd->old_lease = 0;
	}
	if (wd->lease == 0) {
		int64_t id;
		uint64_t sent = now;
		if (etcd_lease_grant(wd->etcd, (int)((wd->ttl_ms + 999) / 1000), &id)) {
			wd->lease = id;
			wd->lease_sent_ok = wd->last_renew = sent;
			wd->put_valid = false;
			if (!wd->ever_connected || wd->fenced || wd->down_everywhere)
				log_info(COMPONENT, 0,
					 "connected to etcd at %s (lease %" PRId64 ")",
					 etcd_current_endpoint(wd->etcd), id);
			wd->ever_connected = true;
		} else {
			ok = false;
		}
	} else if (now - wd->last_renew >= wd->ttl_ms / 3) {
		int64_t left = 0;
		uint64_t sent = now;
		wd->last_renew = now;
		if (etcd_lease_keepalive(wd->etcd, wd->lease, &left)) {
			if (left > 0) {
				wd->lease_sent_ok = sent;
			} else {
				log_warning(COMPONENT, 0,
					    "lease %" PRId64 " expired; taking a new one",
					    wd->lease);
				step_down(wd, "its lease expired");
				wd->lease = 0;
				ok = false;
			}
		} else {
			ok = false;
		}
	}
	now = mono_ms();
	if (wd->lease != 0 && now - wd->lease_sent_ok >= wd->ttl_ms) {
		/* etcd has let the lease go by now (it counts from before our request). */
		step_down(wd, "etcd could not be reached for the lease TTL");
		wd->old_lease = wd->lease;
		wd->lease = 0;
	}
	/* Leave the key a tick before etcd would take it: if_down_cmd runs first. */
	if (wd->leader && now - wd->lease_sent_ok + wd->tick_ms >= wd->ttl_ms)
		step_down(wd, "the lease could not be renewed in time");

	/* 2. the member report */
	if (wd->lease != 0 && ok &&
	    (!wd->put_valid || memcmp(&wd->put_local, local, sizeof(*local)) != 0 ||
	     now - wd->last_member_put >= wd->ttl_ms / 3)) {
		char key[ETCD_KEY_MAX];
		snprintf(key, sizeof(key), "%s/members/%s", wd->prefix, wd->name);
		char *val = member_json(wd, local);
		if (val && etcd_put(wd->etcd, key, val, wd->lease)) {
			wd->put_local = *local;
			wd->put_valid = true;
			wd->last_member_put = now;
		} else {
			ok = false;
		}
		free(val);
	}

	/* 3. the leader key */
	if (wd->lease != 0 && ok && !wd->leader) {
		char key[ETCD_KEY_MAX];
		bool created = false;
		struct etcd_kv holder;
		key_of(wd, "leader", key, sizeof(key));
		if (etcd_create(wd->etcd, key, wd->name, wd->lease, &created, &holder)) {
			if (created)
				become_leader(wd, holder.create_revision);
			else if (holder.lease == wd->lease && strcmp(holder.value, wd->name) == 0)
				become_leader(wd, holder.create_revision); /* ours already */
		} else {
			ok = false;
		}
	}

	/* 4. the view */
	if (wd->leader && ok && pending_seq > wd->written_seq && pending->valid) {
		char key[ETCD_KEY_MAX], guard[ETCD_KEY_MAX];
		bool done = false;
		key_of(wd, "view", key, sizeof(key));
		key_of(wd, "leader", guard, sizeof(guard));
		char *val = view_json(pending);
		if (val && etcd_put_guarded(wd->etcd, guard, wd->leader_rev, key, val, &done)) {
			if (done)
				wd->written_seq = pending_seq;
			else
				step_down(wd, "the leader key changed hands");
		} else {
			ok = false;
		}
		free(val);
	}

	/* 5. read everything */
	if (ok && !read_prefix(wd))
		ok = false;
	if (ok && wd->lease != 0)
		wd->last_round_ok = mono_ms();
	if (!ok && strcmp(wd->last_err, etcd_last_error(wd->etcd)) != 0) {
		snprintf(wd->last_err, sizeof(wd->last_err), "%s", etcd_last_error(wd->etcd));
		if (wd->last_err[0])
			log_warning(COMPONENT, 0, "etcd: %s", wd->last_err);
	}

	/* 6. fencing */
	now = mono_ms();
	bool lost = now - wd->lease_sent_ok >= wd->ttl_ms;
	if (wd->lease != 0 && now - wd->lease_sent_ok < wd->ttl_ms) {
		if (wd->fenced)
			log_info(COMPONENT, 0, "etcd is reachable again: writes resume");
		wd->fenced = false;
		wd->down_everywhere = false;
	} else if (lost) {
		decide_fencing(wd);
	}
}

static void publish_state(struct watchdog *wd)
{
	struct wd_state *s = &wd->state;
	uint64_t now = mono_ms();
	struct wd_state n;
	memset(&n, 0, sizeof(n));
	snprintf(n.name, sizeof(n.name), "%s", wd->name);
	snprintf(n.leader, sizeof(n.leader), "%s", wd->leader_name);
	n.observe = wd->observe;
	n.lease_ttl_ms = wd->ttl_ms;
	n.connected = wd->lease != 0 && now - wd->lease_sent_ok < wd->ttl_ms;
	n.fresh = n.connected && now - wd->last_round_ok <= 2 * wd->tick_ms + wd->call_ms;
	n.is_leader = wd->leader;
	n.fenced = wd->fenced;
	n.etcd_down_everywhere = wd->down_everywhere;
	n.lease_remaining_ms = n.connected ? (int64_t)(wd->lease_sent_ok + wd->ttl_ms - now) : 0;
	n.status = !wd->ever_connected && !wd->fenced ? WD_STARTING
		   : wd->fenced			      ? WD_FENCED
		   : !n.connected		      ? WD_LOST
		   : wd->leader			      ? WD_LEADER
						      : WD_MEMBER;
	/* this instance first, then the others in the order first seen */
	n.members[0] = (struct wd_member){ .port = wd->port,
					   .http_port = wd->http_port,
					   .present = n.connected,
					   .fenced = wd->fenced,
					   .primary = wd->put_local.primary,
					   .down = wd->put_local.down,
					   .at_ms = wall_ms() };
	snprintf(n.members[0].name, sizeof(n.members[0].name), "%s", wd->name);
	snprintf(n.members[0].host, sizeof(n.members[0].host), "%s", wd->host);
	n.n_members = 1;
	for (int i = 0; i < wd->n_known && n.n_members < WD_MAX_MEMBERS; i++)
		if (strcmp(wd->known[i].name, wd->name) != 0)
			n.members[n.n_members++] = wd->known[i];
	n.view = wd->view;
	n.view_written = wd->written_seq;
	n.elections_won = wd->elections;
	pthread_mutex_lock(&wd->mu);
	bool changed = memcmp(&n.name, &s->name, offsetof(struct wd_state, members)) != 0 ||
		       n.n_members != s->n_members || memcmp(&n.view, &s->view, sizeof(n.view)) ||
		       n.view_written != s->view_written;
	for (int i = 1; i < n.n_members && !changed; i++)
		changed = memcmp(&n.members[i], &s->members[i], sizeof(n.members[i])) != 0;
	n.gen = s->gen + (changed ? 1 : 0);
	/* lease_remaining_ms moves every tick: keep it current without a notify */
	*s = n;
	pthread_mutex_unlock(&wd->mu);
	if (changed && wd->notify)
		wd->notify(wd->notify_arg);
}

static void *watchdog_main(void *arg)
{
	struct watchdog *wd = arg;
	for (;;) {
		struct wd_local local;
		struct wd_view pending;
		uint64_t pending_seq;
		struct timespec ts;
		/* While this instance sees its primary failed, read the others' reports more often:
		 * the consensus waits on them. */
		pthread_mutex_lock(&wd->mu);
		bool urgent = wd->local.primary >= 0 && wd->local.primary < 64 &&
			      (wd->local.down & (UINT64_C(1) << wd->local.primary));
		uint32_t wait =
			urgent && wd->tick_ms > URGENT_TICK_MS ? URGENT_TICK_MS : wd->tick_ms;
		pthread_mutex_unlock(&wd->mu);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)wait * 1000000L;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&wd->mu);
		while (!wd->stop && !wd->woken)
			if (pthread_cond_timedwait(&wd->cv, &wd->mu, &ts) == ETIMEDOUT)
				break;
		wd->woken = false;
		bool stop = wd->stop;
		local = wd->local;
		pending = wd->pending;
		pending_seq = wd->pending_seq;
		pthread_mutex_unlock(&wd->mu);
		if (stop)
			break;
		tick(wd, &local, &pending, pending_seq);
		publish_state(wd);
	}
	return NULL;
}

/* ---- API ----------------------------------------------------------------------------------------
 */

static void free_wd(struct watchdog *wd)
{
	etcd_free(wd->etcd);
	if (wd->peer)
		wd->cu->easy_cleanup(wd->peer);
	free(wd->delegate_ip);
	free(wd->if_up_cmd);
	free(wd->if_down_cmd);
	free(wd->arping_cmd);
	pthread_cond_destroy(&wd->cv);
	pthread_mutex_destroy(&wd->mu);
	free(wd);
}

static char *dup_opt(const char *s)
{
	return s && s[0] ? strdup(s) : NULL;
}

watchdog_t *watchdog_start(const struct config *cfg, void (*notify)(void *arg), void *arg)
{
	const struct watchdog_conf *wc = &cfg->watchdog;
	char why[256];
	const struct curl_api *cu = curl_api_get(why, sizeof(why));
	if (!cu) {
		log_error(COMPONENT, 0, "the watchdog needs libcurl: %s", why);
		return NULL;
	}
	struct watchdog *wd = calloc(1, sizeof(*wd));
	if (!wd)
		return NULL;
	wd->cu = cu;
	pthread_mutex_init(&wd->mu, NULL);
	pthread_cond_init(&wd->cv, NULL);
	wd->notify = notify;
	wd->notify_arg = arg;
	snprintf(wd->prefix, sizeof(wd->prefix), "%s", wc->prefix ? wc->prefix : "/pgrelay/main");
	size_t pl = strlen(wd->prefix);
	while (pl > 1 && wd->prefix[pl - 1] == '/')
		wd->prefix[--pl] = '\0';
	snprintf(wd->host, sizeof(wd->host), "%s",
		 cfg->n_listen > 0 && strcmp(cfg->listen_addresses[0], "*") != 0
			 ? cfg->listen_addresses[0]
			 : "127.0.0.1");
	wd->port = cfg->port;
	wd->http_port = cfg->http.port;
	if (wc->name && wc->name[0]) {
		snprintf(wd->name, sizeof(wd->name), "%s", wc->name);
	} else {
		char hn[64] = "localhost";
		(void)gethostname(hn, sizeof(hn) - 1);
		snprintf(wd->name, sizeof(wd->name), "%.40s:%d", hn, cfg->port);
	}
	wd->ttl_ms = wc->lease_ttl_ms;
	wd->tick_ms = wd->ttl_ms / 4 < TICK_MAX_MS ? wd->ttl_ms / 4 : TICK_MAX_MS;
	wd->call_ms = wd->ttl_ms / 3 < 1000 ? wd->ttl_ms / 3 : 1000;
	wd->observe = wc->mode == WATCHDOG_MODE_OBSERVE;
	wd->delegate_ip = dup_opt(wc->delegate_ip);
	wd->if_up_cmd = dup_opt(wc->if_up_cmd);
	wd->if_down_cmd = dup_opt(wc->if_down_cmd);
	wd->arping_cmd = dup_opt(wc->arping_cmd);
	wd->local.primary = -1;
	wd->put_local.primary = -1;
	wd->view.primary = wd->view.failed = wd->view.new_main = -1;
	wd->lease_sent_ok = mono_ms(); /* a start without etcd fences after one TTL */
	wd->etcd = etcd_new(wc->endpoints, wd->call_ms);
	wd->peer = wd->cu->easy_init();
	if (!wd->etcd || !wd->peer) {
		log_error(COMPONENT, 0, "could not set up the etcd client");
		free_wd(wd);
		return NULL;
	}
	wd->cu->easy_setopt(wd->peer, CURLOPT_NOSIGNAL, 1L);
	wd->cu->easy_setopt(wd->peer, CURLOPT_TIMEOUT_MS, (long)wd->call_ms);
	wd->cu->easy_setopt(wd->peer, CURLOPT_CONNECTTIMEOUT_MS, (long)wd->call_ms);
	wd->cu->easy_setopt(wd->peer, CURLOPT_PROTOCOLS_STR, "http");
	snprintf(wd->state.name, sizeof(wd->state.name), "%s", wd->name);
	wd->state.view.primary = wd->state.view.failed = wd->state.view.new_main = -1;
	wd->state.lease_ttl_ms = wd->ttl_ms;
	wd->state.observe = wd->observe;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&wd->thread, NULL, watchdog_main, wd);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_error(COMPONENT, 0, "pthread_create: %s", strerror(rc));
		free_wd(wd);
		return NULL;
	}
	log_info(COMPONENT, 0, "watchdog %s started: etcd %s, prefix %s, lease TTL %u ms, mode %s",
		 wd->name, wc->endpoints, wd->prefix, wd->ttl_ms,
		 wd->observe ? "observe" : "manage");
	return wd;
}

void watchdog_stop(watchdog_t *wd)
{
	if (!wd)
		return;
	pthread_mutex_lock(&wd->mu);
	wd->stop = true;
	pthread_cond_signal(&wd->cv);
	pthread_mutex_unlock(&wd->mu);
	pthread_join(wd->thread, NULL);
	if (wd->leader) {
		char key[ETCD_KEY_MAX];
		step_down(wd, "shutting down");
		key_of(wd, "leader", key, sizeof(key));
		(void)etcd_delete_guarded(wd->etcd, key, wd->leader_rev);
	}
	if (wd->lease)
		(void)etcd_lease_revoke(wd->etcd, wd->lease);
	free_wd(wd);
}

static void poke(struct watchdog *wd)
{
	wd->woken = true;
	pthread_cond_signal(&wd->cv);
}

void watchdog_set_local(watchdog_t *wd, const struct wd_local *l)
{
	pthread_mutex_lock(&wd->mu);
	if (memcmp(&wd->local, l, sizeof(*l)) != 0) {
		wd->local = *l;
		poke(wd);
	}
	pthread_mutex_unlock(&wd->mu);
}

void watchdog_set_view(watchdog_t *wd, const struct wd_view *v, uint64_t seq)
{
	pthread_mutex_lock(&wd->mu);
	wd->pending = *v;
	wd->pending_seq = seq;
	poke(wd);
	pthread_mutex_unlock(&wd->mu);
}

void watchdog_state_copy(watchdog_t *wd, struct wd_state *out)
{
	pthread_mutex_lock(&wd->mu);
	*out = wd->state;
	pthread_mutex_unlock(&wd->mu);
}

void watchdog_peer_json(watchdog_t *wd, char *out, size_t cap)
{
	json_object *o = json_object_new_object();
	pthread_mutex_lock(&wd->mu);
	/* "ok" only while its rounds succeed: when etcd stops, every peer says so within a tick or
	 * two, long before anybody's lease TTL is over (doc/watchdog.md, fencing). */
	json_object_object_add(o, "name", json_object_new_string(wd->state.name));
	json_object_object_add(o, "etcd", json_object_new_string(wd->state.fresh ? "ok" : "lost"));
	json_object_object_add(o, "leader", json_object_new_boolean(wd->state.is_leader));
	json_object_object_add(o, "fenced", json_object_new_boolean(wd->state.fenced));
	pthread_mutex_unlock(&wd->mu);
	snprintf(out, cap, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}
