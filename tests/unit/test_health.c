/*
 * Health probe and thread: LSN and pg_stat_replication parsing, the retry/failure state machine
 * as a pure function, and the thread against local sockets that refuse (nothing listens) or
 * freeze (accept TCP, never answer). The live-cluster cases are in
 * tests/integration/test_health_probe.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "health/health.h"
#include "health/probe.h"
#include "util/log.h"

/* ----------------------------------------------------------------------------------------------
 * LSN parsing.
 */

static void test_parse_lsn_table(void **state)
{
	static const struct {
		const char *text;
		bool ok;
		uint64_t want;
	} cases[] = {
		{ "0/0", true, 0 },
		{ "0/3000060", true, 0x3000060 },
		{ "16/B374D848", true, 0x16B374D848ull },
		{ "16/b374d848", true, 0x16B374D848ull },
		{ "FFFFFFFF/FFFFFFFF", true, UINT64_MAX },
		{ "1/0", true, 1ull << 32 },
		{ "", false, 0 },
		{ "/", false, 0 },
		{ "1/", false, 0 },
		{ "/1", false, 0 },
		{ "12", false, 0 },
		{ "G/1", false, 0 },
		{ "1/2/3", false, 0 },
		{ "123456789/0", false, 0 }, /* 9 digits: does not fit 32 bits */
		{ "0/123456789", false, 0 },
		{ " 1/2", false, 0 },
		{ "1/2 ", false, 0 },
		{ "-1/2", false, 0 },
		{ "0x1/2", false, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;
		bool ok = probe_parse_lsn(cases[i].text, &v);

		if (ok != cases[i].ok)
			fail_msg("\"%s\": expected %s", cases[i].text,
				 cases[i].ok ? "ok" : "error");
		if (ok)
			assert_int_equal(v, cases[i].want);
	}
	assert_false(probe_parse_lsn(NULL, &(uint64_t){ 0 }));
}

/* ----------------------------------------------------------------------------------------------
 * pg_stat_replication rows.
 */

static void test_parse_replicas(void **state)
{
	struct replica_row rows[4];
	bool trunc;
	int n;

	(void)state;
	n = probe_parse_replicas("node1\tstreaming\tasync\t0/3000148\nnode2\tcatchup\tsync\t", rows,
				 4, &trunc);
	assert_int_equal(n, 2);
	assert_false(trunc);
	assert_string_equal(rows[0].application_name, "node1");
	assert_string_equal(rows[0].state, "streaming");
	assert_string_equal(rows[0].sync_state, "async");
	assert_int_equal(rows[0].replay_lsn, 0x3000148);
	assert_string_equal(rows[1].application_name, "node2");
	assert_string_equal(rows[1].sync_state, "sync");
	assert_int_equal(rows[1].replay_lsn, 0); /* NULL */

	/* Empty text (no rows) and hidden columns (unprivileged user sees NULLs). */
	assert_int_equal(probe_parse_replicas("", rows, 4, &trunc), 0);
	assert_int_equal(probe_parse_replicas(NULL, rows, 4, &trunc), 0);
	assert_int_equal(probe_parse_replicas("\t\t\t", rows, 4, &trunc), 1);
	assert_string_equal(rows[0].application_name, "");

	/* Malformed rows are rejected, not half-read. */
	assert_int_equal(probe_parse_replicas("node1\tstreaming\tasync", rows, 4, &trunc), -1);
	assert_int_equal(probe_parse_replicas("a\tb\tc\td\te", rows, 4, &trunc), -1);
	assert_int_equal(probe_parse_replicas("a\tb\tc\tnot-an-lsn", rows, 4, &trunc), -1);
	assert_int_equal(probe_parse_replicas("a\tb\tc\t0/1\n", rows, 4, &trunc), -1);
}

static void test_parse_replicas_bounds(void **state)
{
	/* Bug guarded: a long name or many rows overflow the fixed arrays. */
	char text[8192], longname[200];
	struct replica_row rows[PROBE_MAX_REPLICAS];
	size_t off = 0;
	bool trunc;
	int n;

	(void)state;
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	n = snprintf(text, sizeof(text), "%s\tstreaming-but-much-longer-than-sixteen\tasync\t0/1",
		     longname);
	assert_true(n > 0);
	n = probe_parse_replicas(text, rows, PROBE_MAX_REPLICAS, &trunc);
	assert_int_equal(n, 1);
	assert_int_equal(strlen(rows[0].application_name), PROBE_NAME_MAX - 1);
	assert_int_equal(strlen(rows[0].state), PROBE_WORD_MAX - 1);

	for (int i = 0; i < PROBE_MAX_REPLICAS + 1; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%sn%d\ts\ta\t0/%X",
					i ? "\n" : "", i, i + 1);
	n = probe_parse_replicas(text, rows, PROBE_MAX_REPLICAS, &trunc);
	assert_int_equal(n, PROBE_MAX_REPLICAS);
	assert_true(trunc);
	assert_string_equal(rows[PROBE_MAX_REPLICAS - 1].application_name, "n63");
	assert_int_equal(rows[PROBE_MAX_REPLICAS - 1].replay_lsn, 64);
}

static void test_obs_copy_stops_at_last_row(void **state)
{
	/*
	 * Bug guarded: copying or clearing whole observations (7 kB, nearly all row array) made
	 * every probe slot and snapshot entry resident. The copy must carry every field and the
	 * used rows, and write nothing past them (the canary stays).
	 */
	static struct node_observation src, dst;

	(void)state;
	memset(&src, 0x5a, sizeof(src));
	memset(&dst, 0xa5, sizeof(dst));
	src.n_replicas = 2;
	src.replicas_truncated = false;
	strcpy(src.replicas[1].application_name, "node2");
	snprintf(src.error, sizeof(src.error), "%s", "an error");
	probe_obs_copy(&dst, &src);
	assert_memory_equal(&dst, &src, offsetof(struct node_observation, replicas[2]));
	assert_string_equal(dst.replicas[1].application_name, "node2");
	for (size_t i = 0; i < sizeof(dst.replicas[2]); i++)
		assert_int_equal(((const unsigned char *)&dst.replicas[2])[i], 0xa5);

	/* No rows: the fields only; a bad count copies no more than the array. */
	memset(&dst, 0xa5, sizeof(dst));
	src.n_replicas = 0;
	probe_obs_copy(&dst, &src);
	assert_int_equal(dst.n_replicas, 0);
	assert_int_equal(((const unsigned char *)&dst.replicas[0])[0], 0xa5);
	src.n_replicas = PROBE_MAX_REPLICAS + 5;
	probe_obs_copy(&dst, &src);
	assert_memory_equal(&dst, &src, sizeof(src));
}

/* ----------------------------------------------------------------------------------------------
 * The state machine, table-driven: a string of attempt outcomes ('+' ok, '-' failed), and the
 * expected decisions ('P' period, 'R' retry) and failed flag after each.
 */

struct fsm_case {
	int max_retries;
	const char *outcomes;
	const char *next;
	const char *failed; /* '1' failed, '0' not, after each attempt */
};

static void test_fsm_table(void **state)
{
	static const struct fsm_case cases[] = {
		{ 0, "+", "P", "0" },
		{ 0, "-", "P", "1" },	    /* no retries: the first failure fails the node */
		{ 0, "--+", "PPP", "110" }, /* a failed node is probed once a period */
		{ 2, "-+", "RP", "00" },    /* a retry that succeeds: never failed */
		{ 2, "--+", "RRP", "000" },
		{ 2, "---", "RRP", "001" },	     /* 1 + max_retries failures */
		{ 2, "-----", "RRPPP", "00111" },    /* failed: no retries any more */
		{ 2, "----+-", "RRPPPR", "001100" }, /* recovery re-arms the retries */
		{ 1, "-+-+-+", "RPRPRP", "000000" }, /* alternating never fails */
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct health_node_state s;
		bool in_session = false;

		memset(&s, 0, sizeof(s));
		for (size_t i = 0; cases[c].outcomes[i] != '\0'; i++) {
			enum health_next next;

			if (!in_session)
				health_fsm_session_begin(&s, 1000, 10 * i);
			assert_true(health_fsm_next_attempt_at(&s, cases[c].max_retries, 0) !=
				    UINT64_MAX);
			health_fsm_attempt_started(&s);
			next = health_fsm_record(&s, cases[c].outcomes[i] == '+',
						 cases[c].max_retries, 1000 + (int64_t)i,
						 10 * i + 5);
			in_session = next == HEALTH_NEXT_RETRY;
			if ((next == HEALTH_NEXT_RETRY ? 'R' : 'P') != cases[c].next[i] ||
			    (s.failed ? '1' : '0') != cases[c].failed[i])
				fail_msg("case %zu (%s, max_retries %d) attempt %zu: got %c/%d", c,
					 cases[c].outcomes, cases[c].max_retries, i,
					 next == HEALTH_NEXT_RETRY ? 'R' : 'P', s.failed);
			assert_int_equal(s.in_session, in_session);
		}
	}
}

/*
 * The overlapping schedule, simulated on the pure functions: attempt k starts at session start +
 * k * retry_delay whether or not the earlier ones ended; attempt k ends after lat[k] ms, ok[k] or
 * failed. Returns the session's end (ms from its start); *failed and *started tell the outcome.
 */
static uint64_t simulate(struct health_node_state *s, int max_retries, uint32_t delay,
			 const int *lat, const bool *ok, bool *failed, int *started)
{
	uint64_t t0 = 100000, end_at[16];
	int n = 0;

	health_fsm_session_begin(s, 0, t0);
	for (uint64_t t = t0; t < t0 + 100000; t++) {
		/* Completions first: an answer at t ends the session before a retry due at t. */
		for (int k = 0; k < n; k++) {
			if (end_at[k] != t)
				continue;
			if (health_fsm_record(s, ok[k], max_retries, 0, t) == HEALTH_NEXT_PERIOD) {
				*failed = s->failed;
				*started = n;
				return t - t0;
			}
		}
		while (health_fsm_next_attempt_at(s, max_retries, delay) <= t) {
			assert_true(n < 16);
			health_fsm_attempt_started(s);
			end_at[n] = t + (uint64_t)lat[n];
			n++;
		}
	}
	fail_msg("the session never ended");
	return 0;
}

static void test_fsm_overlapping_schedule(void **state)
{
	/*
	 * Bug guarded: retries wait for the earlier attempt to time out, so a frozen node (every
	 * attempt costs the timeout) is confirmed only after (1 + max_retries) * timeout +
	 * max_retries * retry_delay (8.2 s with 2 s / 2 / 500 ms) instead of timeout + max_retries
	 * * retry_delay (3 s); or an answer from an earlier, slow attempt is not taken as success.
	 */
	static const struct {
		const char *what;
		int max_retries;
		uint32_t delay;
		int lat[4];
		bool ok[4];
		uint64_t end;
		bool failed;
		int started;
	} cases[] = {
		{ "frozen", 2, 500, { 2000, 2000, 2000 }, { false, false, false }, 3000, true, 3 },
		{ "refused", 2, 500, { 1, 1, 1 }, { false, false, false }, 1001, true, 3 },
		{ "slow but alive",
		  2,
		  500,
		  { 1000, 1000, 1000 },
		  { true, true, true },
		  1000,
		  false,
		  2 },
		{ "first answers late",
		  2,
		  500,
		  { 1800, 2000, 2000 },
		  { true, false, false },
		  1800,
		  false,
		  3 },
		{ "retry answers", 2, 500, { 2000, 10, 10 }, { false, true, true }, 510, false, 2 },
		{ "no retries", 0, 500, { 2000 }, { false }, 2000, true, 1 },
		{ "no delay", 2, 0, { 2000, 2000, 2000 }, { false, false, false }, 2000, true, 3 },
		{ "healthy", 2, 500, { 1, 1, 1 }, { true, true, true }, 1, false, 1 },
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct health_node_state s;
		bool failed = false;
		int started = 0;
		uint64_t end;

		memset(&s, 0, sizeof(s));
		end = simulate(&s, cases[c].max_retries, cases[c].delay, cases[c].lat, cases[c].ok,
			       &failed, &started);
		if (end != cases[c].end || failed != cases[c].failed || started != cases[c].started)
			fail_msg("%s: ended after %llu ms, failed %d, %d attempts started",
				 cases[c].what, (unsigned long long)end, failed, started);
		assert_false(s.in_session);
		assert_int_equal(s.stats.retry_count, (uint64_t)(started - 1));
		assert_int_equal(s.stats.max_duration_ms, cases[c].end);
		assert_int_equal(s.stats.fail_count, failed ? 1 : 0);
	}

	/* A node already failed gets one attempt a period, and that attempt decides. */
	{
		struct health_node_state s;
		bool failed = false;
		int started = 0;
		static const int lat[3] = { 2000, 2000, 2000 };
		static const bool ok[3] = { false, false, false };

		memset(&s, 0, sizeof(s));
		s.failed = true;
		assert_int_equal(simulate(&s, 2, 500, lat, ok, &failed, &started), 2000);
		assert_true(failed);
		assert_int_equal(started, 1);
	}
	/* No session, no attempt. */
	{
		struct health_node_state s;

		memset(&s, 0, sizeof(s));
		assert_true(health_fsm_next_attempt_at(&s, 2, 500) == UINT64_MAX);
	}
}

static void test_fsm_stats(void **state)
{
	struct health_node_state s;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_true(health_stats_average_retry_count(&s.stats) == 0.0);
	assert_true(health_stats_average_duration_ms(&s.stats) == 0.0);

	/* Session 1: ok at once, 30 ms. */
	health_fsm_session_begin(&s, 5000, 100);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, true, 2, 5001, 130), HEALTH_NEXT_PERIOD);
	/* Session 2: two retries, then ok; 250 ms. */
	health_fsm_session_begin(&s, 6000, 1000);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, false, 2, 6001, 1050), HEALTH_NEXT_RETRY);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, false, 2, 6002, 1150), HEALTH_NEXT_RETRY);
	assert_int_equal(s.consecutive_failures, 2);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, true, 2, 6003, 1250), HEALTH_NEXT_PERIOD);
	assert_int_equal(s.consecutive_failures, 0);
	assert_int_equal(s.consecutive_successes, 1);
	/* Session 3: fails with one retry (max_retries 1); 90 ms. */
	health_fsm_session_begin(&s, 7000, 2000);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, false, 1, 7001, 2040), HEALTH_NEXT_RETRY);
	health_fsm_attempt_started(&s);
	assert_int_equal(health_fsm_record(&s, false, 1, 7002, 2090), HEALTH_NEXT_PERIOD);
	assert_true(s.failed);
	/* A skipped period. */
	health_fsm_skip(&s, 8000);

	assert_int_equal(s.stats.total_count, 4);
	assert_int_equal(s.stats.success_count, 2);
	assert_int_equal(s.stats.fail_count, 1);
	assert_int_equal(s.stats.skip_count, 1);
	assert_int_equal(s.stats.retry_count, 3);
	assert_int_equal(s.stats.max_retry_count, 2);
	assert_int_equal(s.stats.min_duration_ms, 30);
	assert_int_equal(s.stats.max_duration_ms, 250);
	assert_true(health_stats_average_duration_ms(&s.stats) == (30.0 + 250 + 90) / 3);
	assert_true(health_stats_average_retry_count(&s.stats) == 1.0);
	assert_int_equal(s.stats.last_health_check, 7002);
	assert_int_equal(s.stats.last_successful_health_check, 6003);
	assert_int_equal(s.stats.last_failed_health_check, 7002);
	assert_int_equal(s.stats.last_skip_health_check, 8000);
}

/* ----------------------------------------------------------------------------------------------
 * Local sockets: "refused" is bound but not listening (connect gets RST); "frozen" listens and
 * the kernel completes handshakes, but nobody ever reads or answers.
 */

static int local_socket(bool listening, int *port)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (listening)
		assert_int_equal(listen(fd, 64), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void test_probe_refused_fast(void **state)
{
	struct probe_target t = { .host = "127.0.0.1", .user = "u", .password = "secret-pw" };
	struct node_observation o;
	uint64_t t0;
	int fd = local_socket(false, &t.port);

	(void)state;
	t0 = probe_now_ms();
	assert_false(health_probe(&t, 2000, &o));
	assert_true(probe_now_ms() - t0 < 500);
	assert_false(o.reachable);
	assert_int_equal(o.status, PROBE_CONNECT_FAILED);
	assert_true(o.error[0] != '\0');
	assert_null(strchr(o.error, '\n'));
	assert_null(strstr(o.error, "secret-pw"));
	assert_true(o.observed_at >= t0);
	close(fd);
}

static void test_probe_frozen_bounded(void **state)
{
	/* Bug guarded: libpq waits forever for the answer to its startup packet. */
	struct probe_target t = { .host = "127.0.0.1", .user = "u", .dbname = "d" };
	struct node_observation o;
	uint64_t t0, dt;
	int fd = local_socket(true, &t.port);

	(void)state;
	t0 = probe_now_ms();
	assert_false(health_probe(&t, 300, &o));
	dt = probe_now_ms() - t0;
	assert_true(dt >= 290 && dt < 450);
	assert_int_equal(o.status, PROBE_TIMEOUT);
	assert_true(o.timed_out_connecting);
	assert_true(o.latency_ms >= 290);
	close(fd);
}

static void test_probe_bad_target(void **state)
{
	struct probe_target t = { .host = "127.0.0.1", .port = 0 };
	struct node_observation o;

	(void)state;
	assert_false(health_probe(&t, 100, &o));
	assert_int_equal(o.status, PROBE_INTERNAL);
}

/* ----------------------------------------------------------------------------------------------
 * The thread. notify() counts and signals; waiters poll snapshots with a deadline.
 */

struct notified {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int count;
};

static struct notified g_notified = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

static void on_notify(void *arg)
{
	struct notified *n = arg;

	pthread_mutex_lock(&n->mu);
	n->count++;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
}

typedef bool (*snap_pred)(const struct health_snapshot *s, void *arg);

/* Waits (on notifications) until pred holds for a snapshot; returns the ms it took, or -1. */
static long wait_snapshot(health_t *h, struct health_snapshot *s, snap_pred pred, void *arg,
			  uint32_t timeout_ms)
{
	uint64_t t0 = probe_now_ms();

	for (;;) {
		struct timespec ts;

		health_snapshot_copy(h, s);
		if (pred(s, arg))
			return (long)(probe_now_ms() - t0);
		if (probe_now_ms() - t0 > timeout_ms)
			return -1;
		pthread_mutex_lock(&g_notified.mu);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&g_notified.cv, &g_notified.mu, &ts);
		pthread_mutex_unlock(&g_notified.mu);
	}
}

static bool node_failed(const struct health_snapshot *s, void *arg)
{
	return s->nodes[*(int *)arg].failed;
}

static bool node_sessions_at_least(const struct health_snapshot *s, void *arg)
{
	const int *want = arg; /* node, count */

	return s->nodes[want[0]].stats.success_count + s->nodes[want[0]].stats.fail_count >=
	       (uint64_t)want[1];
}

static bool node_skipped_at_least(const struct health_snapshot *s, void *arg)
{
	const int *want = arg;

	return s->nodes[want[0]].stats.skip_count >= (uint64_t)want[1];
}

static void test_thread_dead_node_does_not_delay_others(void **state)
{
	/*
	 * Bug guarded: nodes probed one after the other, so a frozen node (each attempt costs the
	 * whole timeout) delays the detection of another node's failure.
	 */
	struct health_config_copy cfg = { .period_ms = 10000,
					  .timeout_ms = 800,
					  .max_retries = 1,
					  .retry_delay_ms = 50,
					  .user = "u",
					  .password = "p",
					  .database = "d" };
	struct probe_target t[2] = { { .host = "127.0.0.1" }, { .host = "127.0.0.1" } };
	int frozen = local_socket(true, &t[0].port);
	int refused = local_socket(false, &t[1].port);
	struct health_snapshot *s = malloc(sizeof(*s));
	int node;
	long ms;
	health_t *h;

	(void)state;
	h = health_start(&cfg, t, 2, on_notify, &g_notified);
	assert_non_null(h);
	node = 1;
	ms = wait_snapshot(h, s, node_failed, &node, 3000);
	assert_true(ms >= 0 && ms < 500);
	assert_false(s->nodes[0].failed);
	assert_true(s->nodes[0].in_session); /* the frozen node is still in its first attempt */
	assert_int_equal(s->nodes[1].consecutive_failures, 2);
	assert_int_equal(s->nodes[1].stats.retry_count, 1);
	assert_int_equal(s->nodes[1].obs.status, PROBE_CONNECT_FAILED);
	assert_int_equal(s->n_nodes, 2);
	assert_true(s->enabled);

	/* The frozen node fails after timeout + retry_delay: the retry did not wait. */
	node = 0;
	ms = wait_snapshot(h, s, node_failed, &node, 4000);
	assert_true(ms >= 0);
	assert_int_equal(s->nodes[0].obs.status, PROBE_TIMEOUT);
	assert_int_equal(s->nodes[0].session_attempts, 2);
	assert_int_equal(s->nodes[0].stats.retry_count, 1);
	assert_true(s->nodes[0].stats.max_duration_ms >= 850);
	assert_true(s->nodes[0].stats.max_duration_ms < 1400);
	health_stop(h);
	free(s);
	close(frozen);
	close(refused);
}

static void test_thread_request_skip_reload(void **state)
{
	struct health_config_copy cfg = { .period_ms = 60000,
					  .timeout_ms = 500,
					  .max_retries = 0,
					  .retry_delay_ms = 10,
					  .user = "u",
					  .database = "d" };
	struct probe_target t = { .host = "127.0.0.1" };
	int refused = local_socket(false, &t.port);
	struct health_snapshot *s = malloc(sizeof(*s));
	uint64_t seq;
	int want[2];
	health_t *h;
	long ms;

	(void)state;
	h = health_start(&cfg, &t, 1, on_notify, &g_notified);
	assert_non_null(h);
	want[0] = 0;
	want[1] = 1;
	assert_true(wait_snapshot(h, s, node_sessions_at_least, want, 2000) >= 0);
	seq = s->seq;
	assert_true(seq >= 2);

	/* The period is a minute: only a request brings the next session. */
	health_request_probe_now(h, 0);
	want[1] = 2;
	ms = wait_snapshot(h, s, node_sessions_at_least, want, 2000);
	assert_true(ms >= 0 && ms < 500);
	assert_true(s->seq > seq);
	health_request_probe_now(h, 7); /* out of range: ignored */

	/* A shorter period applies at once. */
	cfg.period_ms = 50;
	cfg.user = "other"; /* credentials change: the thread keeps its own copies */
	assert_true(health_update_config(h, &cfg));
	want[1] = 6;
	assert_true(wait_snapshot(h, s, node_sessions_at_least, want, 2000) >= 0);

	/* Skipped periods are counted, not probed. */
	health_set_skip(h, 0, true);
	want[1] = 3;
	assert_true(wait_snapshot(h, s, node_skipped_at_least, want, 2000) >= 0);
	assert_true(s->nodes[0].skipped);
	uint64_t done = s->nodes[0].stats.success_count + s->nodes[0].stats.fail_count;
	want[1] = 6;
	assert_true(wait_snapshot(h, s, node_skipped_at_least, want, 2000) >= 0);
	assert_true(s->nodes[0].stats.success_count + s->nodes[0].stats.fail_count <= done + 1);
	assert_true(s->nodes[0].stats.total_count >=
		    s->nodes[0].stats.skip_count + s->nodes[0].stats.fail_count);

	/* Disabling stops probing; invalid settings are refused. */
	cfg.period_ms = 0;
	assert_true(health_update_config(h, &cfg));
	cfg.timeout_ms = 0;
	assert_false(health_update_config(h, &cfg));
	health_stop(h);
	free(s);
	close(refused);
}

static void test_thread_stop_is_bounded(void **state)
{
	/* Bug guarded: health_stop waits for an attempt against a frozen node to time out. */
	struct health_config_copy cfg = {
		.period_ms = 1000, .timeout_ms = 10000, .max_retries = 3, .retry_delay_ms = 1000
	};
	struct probe_target t = { .host = "127.0.0.1" };
	int frozen = local_socket(true, &t.port);
	health_t *h;
	uint64_t t0;

	(void)state;
	h = health_start(&cfg, &t, 1, NULL, NULL);
	assert_non_null(h);
	usleep(100 * 1000);
	t0 = probe_now_ms();
	health_stop(h);
	assert_true(probe_now_ms() - t0 < 200);
	health_stop(NULL);
	close(frozen);
}

static void test_thread_bad_arguments(void **state)
{
	struct health_config_copy cfg = { .period_ms = 1000, .timeout_ms = 100 };
	struct probe_target t = { .host = "127.0.0.1", .port = 5432 };
	struct probe_target bad = { .host = "127.0.0.1", .port = 70000 };

	(void)state;
	assert_null(health_start(&cfg, &t, 0, NULL, NULL));
	assert_null(health_start(&cfg, &t, HEALTH_MAX_NODES + 1, NULL, NULL));
	assert_null(health_start(&cfg, &bad, 1, NULL, NULL));
	cfg.max_retries = -1;
	assert_null(health_start(&cfg, &t, 1, NULL, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_lsn_table),
		cmocka_unit_test(test_parse_replicas),
		cmocka_unit_test(test_parse_replicas_bounds),
		cmocka_unit_test(test_obs_copy_stops_at_last_row),
		cmocka_unit_test(test_fsm_table),
		cmocka_unit_test(test_fsm_overlapping_schedule),
		cmocka_unit_test(test_fsm_stats),
		cmocka_unit_test(test_probe_refused_fast),
		cmocka_unit_test(test_probe_frozen_bounded),
		cmocka_unit_test(test_probe_bad_target),
		cmocka_unit_test(test_thread_dead_node_does_not_delay_others),
		cmocka_unit_test(test_thread_request_skip_reload),
		cmocka_unit_test(test_thread_stop_is_bounded),
		cmocka_unit_test(test_thread_bad_arguments),
	};

	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
