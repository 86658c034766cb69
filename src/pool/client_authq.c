/*
 * auth_query on a worker; see client_authq.h. Everything here runs on the worker's loop except
 * authq_job_work, which runs on libuv's thread pool and touches only its job.
 *
 * A job owns copies of everything the lookup needs (the config may be reloaded while it runs)
 * and the ids of the clients it answers. Its completion logs the outcome once, hands each
 * client still waiting in CLS_AUTH_QUERY its own copy of the answer, then starts lookups for
 * queued clients. Nothing is cached here: a fetched secret reaches the cache only through
 * client_authq_login_ok, after a client proved it knows the password.
 */
#include "pool/client_authq.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/auth_query.h"
#include "pool/client.h"
#include "pool/worker.h"
#include "util/log.h"

struct authq_job {
	uv_work_t req;
	struct list_node link; /* in authq_sched.jobs */
	struct worker *w;      /* borrowed: outlives its loop's work requests */
	uint64_t generation;   /* authq_sched.generation at start */
	uint64_t started_ms;   /* loop time at start */
	int node;	       /* the primary it runs on, for the log */
	/* Owned copies (the config may be replaced meanwhile); password is cleansed. */
	char *user, *dbname, *host, *auth_user, *password, *query;
	struct libpq_tls tls; /* owned copies: the node's TLS settings */
	int port;
	uint32_t timeout_ms;
	uint64_t clients[AUTHQ_MAX_SHARED]; /* ids of the clients waiting for this answer */
	int n_clients;
	/* Written by the thread. */
	enum authq_status status;
	struct user_entry entry; /* owned when status == AUTHQ_FOUND */
	char err[256];		 /* why, for every other status; never a secret */
};

void authq_sched_init(struct authq_sched *q)
{
	memset(q, 0, sizeof(*q));
	list_init(&q->jobs);
	q->cache = auth_cache_new(AUTH_CACHE_DEFAULT_CAP);
	/*
	 * A lookup holds a pool thread for up to its timeout (a primary that does not answer).
	 * libuv's default of 4 threads would let AUTHQ_MAX_INFLIGHT of them stall PBKDF2 checks,
	 * reloads and catalog loads; an operator's own UV_THREADPOOL_SIZE is kept.
	 */
	setenv("UV_THREADPOOL_SIZE", AUTHQ_THREADPOOL_SIZE, 0);
}

void authq_sched_destroy(struct authq_sched *q)
{
	auth_cache_free(q->cache);
	q->cache = NULL;
}

void authq_sched_config_changed(struct authq_sched *q)
{
	q->generation++;
	if (q->cache)
		auth_cache_clear(q->cache);
}

/* The database the lookup for c runs in: auth_dbname, else the client's own (PgBouncer). */
static const char *authq_dbname(const struct client *c)
{
	const char *db = c->w->cfg->auth_dbname;
	return db ? db : c->database;
}

static void authq_job_free(struct authq_job *job)
{
	free(job->user);
	free(job->dbname);
	free(job->host);
	free(job->auth_user);
	if (job->password) {
		OPENSSL_cleanse(job->password, strlen(job->password));
		free(job->password);
	}
	free(job->query);
	libpq_tls_free(&job->tls);
	if (job->status == AUTHQ_FOUND)
		users_entry_clear(&job->entry);
	free(job);
}

static void authq_job_work(uv_work_t *req)
{
	struct authq_job *job = req->data;
	struct authq_target t = { job->host,   job->port,	job->auth_user, job->password,
				  job->dbname, job->timeout_ms, job->tls };
	job->status =
		authq_lookup(&t, job->query, job->user, &job->entry, job->err, sizeof(job->err));
}

/* The client with id that waits for a lookup, or NULL if it left. */
static struct client *authq_find_client(struct worker *w, uint64_t id)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->login_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (c->id == id)
			return c->login == CLS_AUTH_QUERY ? c : NULL;
	}
	return NULL;
}

/* Logs a finished lookup once, whatever the number of clients it answers. */
static void authq_job_log(const struct authq_job *job)
{
	char user[LOG_UNTRUSTED_BUF], db[LOG_UNTRUSTED_BUF];
	log_untrusted(job->user, user, sizeof(user));
	log_untrusted(job->dbname, db, sizeof(db));
	switch (job->status) {
	case AUTHQ_FOUND:
		log_debug("auth_query", 0, "found a secret for user=%s (database=%s, node %d)",
			  user, db, job->node);
		return;
	case AUTHQ_NOT_FOUND:
		log_debug("auth_query", 0, "no usable secret for user=%s (database=%s): %s", user,
			  db, job->err);
		return;
	case AUTHQ_UNUSABLE:
	case AUTHQ_NO_CONNECT:
	case AUTHQ_FAILED:
		log_warning("auth_query", 0,
			    "lookup of user=%s as auth_user \"%s\" in database=%s on node %d "
			    "failed: %s",
			    user, job->auth_user, db, job->node, job->err);
		return;
	}
}

/* Hands c the job's answer and resumes its login. */
static void authq_deliver(struct client *c, const struct authq_job *job)
{
	switch (job->status) {
	case AUTHQ_FOUND:
		client_authq_free(c);
		c->lg->authq.fetched = malloc(sizeof(*c->lg->authq.fetched));
		if (!c->lg->authq.fetched || !users_entry_copy(c->lg->authq.fetched, &job->entry)) {
			free(c->lg->authq.fetched);
			c->lg->authq.fetched = NULL;
			client_disconnect(c, "53200", "out of memory");
			return;
		}
		c->lg->authq.fetched_ms = job->started_ms;
		c->lg->authq.generation = job->generation;
		client_auth_continue(c, c->lg->authq.fetched);
		return;
	case AUTHQ_NOT_FOUND:
	case AUTHQ_UNUSABLE:
		/* The same exchange as a wrong password (mock secret): names cannot be probed. */
		client_auth_continue(c, NULL);
		return;
	case AUTHQ_NO_CONNECT:
		client_disconnect(
			c, "08006",
			"auth_query could not connect to the primary to look up the user");
		return;
	case AUTHQ_FAILED:
		client_disconnect(c, "28000", "auth_query failed to look up the user");
		return;
	}
}

static void authq_start_waiting(struct worker *w);

static void authq_job_done(uv_work_t *req, int status)
{
	struct authq_job *job = req->data;
	struct worker *w = job->w;
	list_del(&job->link);
	w->authq.n_jobs--;
	if (status != 0) {
		if (job->status == AUTHQ_FOUND)
			users_entry_clear(&job->entry);
		job->status = AUTHQ_NO_CONNECT;
		snprintf(job->err, sizeof(job->err), "cancelled: %s", uv_strerror(status));
	}
	authq_job_log(job);
	for (int i = 0; i < job->n_clients; i++) {
		struct client *c = authq_find_client(w, job->clients[i]);
		if (c)
			authq_deliver(c, job);
	}
	authq_job_free(job);
	authq_start_waiting(w);
}

/* The running lookup c can share (same user, same database), or NULL. */
static struct authq_job *authq_find_job(struct worker *w, const struct client *c)
{
	const char *db = authq_dbname(c);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->authq.jobs)
	{
		struct authq_job *job = list_entry(pos, struct authq_job, link);
		if (job->generation == w->authq.generation && job->n_clients < AUTHQ_MAX_SHARED &&
		    strcmp(job->user, c->user) == 0 && strcmp(job->dbname, db) == 0)
			return job;
	}
	return NULL;
}

/* Starts a lookup for c on the primary; false after disconnecting c. */
static bool authq_job_start(struct client *c)
{
	struct worker *w = c->w;
	const struct config *cfg = w->cfg;
	int node = router_primary(&w->router);
	if (node < 0) {
		client_disconnect(c, "08006", "auth_query cannot look up the user: no primary");
		return false;
	}
	const struct user_entry *au = users_find(cfg->users, cfg->auth_user);
	struct authq_job *job = calloc(1, sizeof(*job));
	if (!job || !au || !au->plain) { /* config validation makes !au impossible */
		free(job);
		client_disconnect(c, "53200", "out of memory");
		return false;
	}
	job->req.data = job;
	job->w = w;
	job->generation = w->authq.generation;
	job->started_ms = uv_now(&w->loop);
	job->node = node;
	job->user = strdup(c->user);
	job->dbname = strdup(authq_dbname(c));
	job->host = strdup(cfg->backends[node].host);
	job->port = cfg->backends[node].port;
	job->auth_user = strdup(cfg->auth_user);
	job->password = strdup(au->plain);
	job->query = strdup(cfg->auth_query);
	job->timeout_ms = cfg->pool.server_connect_timeout_ms;
	struct libpq_tls tls;
	config_backend_libpq_tls(cfg, node, &tls);
	bool tls_ok = libpq_tls_dup(&tls, &job->tls);
	job->clients[job->n_clients++] = c->id;
	job->status = AUTHQ_FAILED; /* until the thread says otherwise */
	if (!job->user || !job->dbname || !job->host || !job->auth_user || !job->password ||
	    !job->query || !tls_ok ||
	    uv_queue_work(&w->loop, &job->req, authq_job_work, authq_job_done) < 0) {
		authq_job_free(job);
		client_disconnect(c, "53200", "out of memory");
		return false;
	}
	list_append(&w->authq.jobs, &job->link);
	w->authq.n_jobs++;
	w->authq.lookups++;
	if (log_enabled(LOG_LVL_DEBUG)) {
		char user[LOG_UNTRUSTED_BUF];
		log_debug("client", c->id, "auth_query: looking up user=%s on node %d",
			  log_untrusted(c->user, user, sizeof(user)), node);
	}
	return true;
}

/* Joins a running lookup of the same user, starts one, or queues c; refuses c when full. */
static void authq_enqueue(struct client *c)
{
	struct worker *w = c->w;
	struct authq_sched *q = &w->authq;
	struct authq_job *job = authq_find_job(w, c);
	if (job) {
		job->clients[job->n_clients++] = c->id;
		return;
	}
	if (q->n_jobs < AUTHQ_MAX_INFLIGHT) {
		(void)authq_job_start(c);
		return;
	}
	if (q->n_waiting == AUTHQ_MAX_WAITING) {
		client_disconnect(c, "53300", "too many clients waiting for auth_query");
		return;
	}
	q->waiting[(q->wait_head + q->n_waiting) % AUTHQ_MAX_WAITING] = c->id;
	q->n_waiting++;
}

/* A lookup slot freed: queued clients that are still here get theirs, oldest first. */
static void authq_start_waiting(struct worker *w)
{
	struct authq_sched *q = &w->authq;
	while (q->n_waiting > 0 && q->n_jobs < AUTHQ_MAX_INFLIGHT) {
		uint64_t id = q->waiting[q->wait_head];
		q->wait_head = (q->wait_head + 1) % AUTHQ_MAX_WAITING;
		q->n_waiting--;
		struct client *c = authq_find_client(w, id);
		if (c)
			authq_enqueue(c);
	}
}

bool client_authq_start(struct client *c, enum hba_method m)
{
	const struct config *cfg = c->w->cfg;
	if (!cfg->auth_user || (m != HBA_SCRAM && m != HBA_MD5 && m != HBA_PASSWORD))
		return false;
	struct authq_sched *q = &c->w->authq;
	if (q->cache && cfg->auth_query_cache_ms > 0) {
		const struct user_entry *e =
			auth_cache_get(q->cache, authq_dbname(c), c->user, uv_now(&c->w->loop),
				       cfg->auth_query_cache_ms);
		if (e) {
			log_debug("client", c->id, "auth_query: secret served from the cache");
			c->lg->authq.from_cache = true;
			client_auth_continue(c, e); /* copies what it keeps out of e */
			return true;
		}
	}
	c->login = CLS_AUTH_QUERY;
	authq_enqueue(c);
	return true;
}

void client_authq_login_ok(struct client *c)
{
	struct authq_sched *q = &c->w->authq;
	struct user_entry *e = c->lg->authq.fetched;
	if (!e)
		return;
	c->lg->authq.fetched = NULL;
	/* A lookup made under a replaced config may no longer be what auth_query says now. */
	if (q->cache && c->w->cfg->auth_query_cache_ms > 0 &&
	    c->lg->authq.generation == q->generation)
		(void)auth_cache_put(q->cache, authq_dbname(c), e, c->lg->authq.fetched_ms);
	else
		users_entry_clear(e);
	free(e);
}

void client_authq_login_failed(struct client *c)
{
	struct authq_sched *q = &c->w->authq;
	/* The password may have changed on the server: the next login looks it up again. */
	if (c->lg->authq.from_cache && q->cache)
		auth_cache_forget(q->cache, authq_dbname(c), c->user);
	c->lg->authq.from_cache = false;
}

void client_authq_free(struct client *c)
{
	if (!c->lg->authq.fetched)
		return;
	users_entry_clear(c->lg->authq.fetched);
	free(c->lg->authq.fetched);
	c->lg->authq.fetched = NULL;
}
