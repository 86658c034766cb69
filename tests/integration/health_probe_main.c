/*
 * Test driver for tests/integration/test_health_probe.py (compiled by the test against
 * libpgrelay.a; not part of the build).
 *
 *   health_probe_main probe TIMEOUT_MS USER PASSWORD DBNAME HOST:PORT
 *       one health_probe(); prints the observation as one JSON line plus "elapsed_ms".
 *   health_probe_main thread RUN_MS PERIOD_MS TIMEOUT_MS MAX_RETRIES RETRY_DELAY_MS USER
 *                            PASSWORD DBNAME HOST:PORT...
 *       runs the health thread for RUN_MS; prints one JSON line per published snapshot, each
 *       {"seq":..,"t_ms":..,"nodes":[..]} with t_ms the time since health_start.
 * Exit code 0 unless the arguments were bad or the thread did not start.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health/health.h"
#include "health/probe.h"
#include "util/log.h"

#include "driver_json.h"

static void print_observation(const struct node_observation *o)
{
	printf("{\"reachable\":%s,\"status\":\"%s\",\"in_recovery\":%s",
	       o->reachable ? "true" : "false", probe_status_name(o->status),
	       o->in_recovery ? "true" : "false");
	printf(",\"timed_out_connecting\":%s,\"connection_reused\":%s",
	       o->timed_out_connecting ? "true" : "false", o->connection_reused ? "true" : "false");
	json_lsn("current_lsn", o->current_lsn);
	json_lsn("replay_lsn", o->replay_lsn);
	json_lsn("receive_lsn", o->receive_lsn);
	if (o->has_replay_delay)
		printf(",\"replay_delay_s\":%.3f", o->replay_delay_s);
	else
		printf(",\"replay_delay_s\":null");
	printf(",\"latency_ms\":%u,\"replicas_truncated\":%s,\"replicas\":[", o->latency_ms,
	       o->replicas_truncated ? "true" : "false");
	for (int i = 0; i < o->n_replicas; i++) {
		const struct replica_row *r = &o->replicas[i];

		printf("%s{\"application_name\":", i ? "," : "");
		json_string(r->application_name);
		printf(",\"state\":");
		json_string(r->state);
		printf(",\"sync_state\":");
		json_string(r->sync_state);
		json_lsn("replay_lsn", r->replay_lsn);
		printf("}");
	}
	printf("],\"error\":");
	json_string(o->error);
	printf("}");
}

static bool parse_hostport(const char *arg, char *host, size_t cap, int *port)
{
	const char *colon = strrchr(arg, ':');

	if (colon == NULL || (size_t)(colon - arg) >= cap)
		return false;
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	*port = atoi(colon + 1);
	return *port > 0 && *port < 65536;
}

static int run_probe(int argc, char **argv)
{
	struct probe_target t;
	struct node_observation o;
	char host[256];
	uint64_t t0;

	if (argc != 7)
		return 2;
	memset(&t, 0, sizeof(t));
	t.user = argv[3];
	t.password = argv[4];
	t.dbname = argv[5];
	if (!parse_hostport(argv[6], host, sizeof(host), &t.port))
		return 2;
	t.host = host;
	t0 = probe_now_ms();
	health_probe(&t, (uint32_t)atoi(argv[2]), &o);
	printf("{\"elapsed_ms\":%" PRIu64 ",\"observation\":", probe_now_ms() - t0);
	print_observation(&o);
	printf("}\n");
	return 0;
}

struct printer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending; /* notifications not yet printed */
};

static void on_notify(void *arg)
{
	struct printer *p = arg;

	pthread_mutex_lock(&p->mu);
	p->pending++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void print_snapshot(const struct health_snapshot *s, uint64_t t0)
{
	printf("{\"seq\":%" PRIu64 ",\"t_ms\":%" PRIu64 ",\"enabled\":%s,\"nodes\":[", s->seq,
	       s->published_at - t0, s->enabled ? "true" : "false");
	for (int i = 0; i < s->n_nodes; i++) {
		const struct health_node_state *n = &s->nodes[i];
		const struct health_stats *st = &n->stats;

		printf("%s{\"failed\":%s,\"in_session\":%s,\"consecutive_failures\":%d",
		       i ? "," : "", n->failed ? "true" : "false", n->in_session ? "true" : "false",
		       n->consecutive_failures);
		printf(",\"total_count\":%" PRIu64 ",\"success_count\":%" PRIu64
		       ",\"fail_count\":%" PRIu64 ",\"retry_count\":%" PRIu64,
		       st->total_count, st->success_count, st->fail_count, st->retry_count);
		printf(",\"obs\":");
		if (n->has_observation)
			print_observation(&n->obs);
		else
			printf("null");
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
}

static int run_thread(int argc, char **argv)
{
	static struct probe_target targets[HEALTH_MAX_NODES];
	static char hosts[HEALTH_MAX_NODES][256];
	static struct health_snapshot snap;
	struct printer pr = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	struct health_config_copy cfg;
	int n = argc - 10;
	uint64_t t0, end, last_seq = 0;
	health_t *h;

	if (n < 1 || n > HEALTH_MAX_NODES)
		return 2;
	end = (uint64_t)atoi(argv[2]);
	cfg.period_ms = (uint32_t)atoi(argv[3]);
	cfg.timeout_ms = (uint32_t)atoi(argv[4]);
	cfg.max_retries = atoi(argv[5]);
	cfg.retry_delay_ms = (uint32_t)atoi(argv[6]);
	cfg.user = argv[7];
	cfg.password = argv[8];
	cfg.database = argv[9];
	for (int i = 0; i < n; i++) {
		if (!parse_hostport(argv[10 + i], hosts[i], sizeof(hosts[i]), &targets[i].port))
			return 2;
		targets[i].host = hosts[i];
	}
	t0 = probe_now_ms();
	end += t0;
	h = health_start(&cfg, targets, n, on_notify, &pr);
	if (h == NULL)
		return 1;
	for (;;) {
		uint64_t now = probe_now_ms();

		health_snapshot_copy(h, &snap);
		if (snap.seq != last_seq) {
			print_snapshot(&snap, t0);
			last_seq = snap.seq;
		}
		if (now >= end)
			break;
		pthread_mutex_lock(&pr.mu);
		if (pr.pending == 0) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&pr.cv, &pr.mu, &ts);
		}
		pr.pending = 0;
		pthread_mutex_unlock(&pr.mu);
	}
	t0 = probe_now_ms();
	health_stop(h);
	fprintf(stderr, "stop_ms=%" PRIu64 "\n", probe_now_ms() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 2;

	log_set_level(LOG_LVL_WARNING);
	if (argc >= 2 && strcmp(argv[1], "probe") == 0)
		rc = run_probe(argc, argv);
	else if (argc >= 2 && strcmp(argv[1], "thread") == 0)
		rc = run_thread(argc, argv);
	if (rc == 2)
		fprintf(stderr, "usage: see the comment at the top of health_probe_main.c\n");
	return rc;
}
