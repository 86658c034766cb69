/*
 * Test driver for tests/integration/test_failover_manager.py (compiled by the test against
 * libpgrelay.a; not part of the build).
 *
 *   cluster_main CONFIG
 *       starts cluster_t from a pgrelay config file and prints, one JSON document per line:
 *         {"type":"view", "seq":.., "t_ms":.., "primary":.., "failing_over":.., "nodes":[..]}
 *             for every new view (t_ms: milliseconds since cluster_start),
 *         {"type":"event", "t_ms":.., "event":.., "node":.., "command":.., "exit_status":..,
 *          "duration_ms":.., "detail":..} for every new history entry,
 *         {"type":"reply", "ok":.., "msg":..} for every command.
 *       Commands on stdin, one per line: "attach N [reason]", "detach N [reason]",
 *       "promote N [reason]", "report N" (cluster_report_backend_error), "quit" (or EOF).
 *       Logs go to stderr; the last stderr line is "stop_ms=N" (time cluster_stop took).
 * Exit code 0 unless the configuration is bad or the manager did not start.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "failover/cluster.h"
#include "util/log.h"

#include "driver_json.h"

static int wake_wr = -1;
static uint64_t t0;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_view(void *arg)
{
	char b = 1;

	(void)arg;
	if (write(wake_wr, &b, 1) < 0) {
		/* full pipe: a wake-up is pending anyway */
	}
}

static void print_view(const struct cluster_view *v)
{
	printf("{\"type\":\"view\",\"seq\":%" PRIu64 ",\"t_ms\":%" PRIu64
	       ",\"primary\":%d,\"failing_over\":%s,\"checks_enabled\":%s,\"n_lsn_samples\":%d",
	       v->seq, now_ms() - t0, v->primary, v->failing_over ? "true" : "false",
	       v->checks_enabled ? "true" : "false", v->n_lsn_samples);
	if (v->n_lsn_samples > 0)
		json_lsn("last_sample_lsn", v->lsn_samples[v->n_lsn_samples - 1].lsn);
	printf(",\"nodes\":[");
	for (int i = 0; i < v->n_nodes; i++) {
		const struct cluster_node *n = &v->nodes[i];
		const struct health_stats *s = &v->stats[i];

		printf("%s{\"status\":\"%s\",\"role\":\"%s\",\"pg_role\":\"%s\",\"pg_up\":%s",
		       i ? "," : "", cluster_status_name(n->status), cluster_role_name(n->role),
		       cluster_role_name(n->pg_role), n->pg_up ? "true" : "false");
		json_lsn("current_lsn", n->current_lsn);
		json_lsn("replay_lsn", n->replay_lsn);
		json_lsn("receive_lsn", n->receive_lsn);
		printf(",\"replication_delay\":%" PRIu64 ",\"replication_state\":",
		       n->replication_delay);
		json_string(n->replication_state);
		printf(",\"sync_state\":");
		json_string(n->sync_state);
		printf(",\"reason\":");
		json_string(n->reason);
		printf(",\"last_status_change\":%" PRId64 ",\"total_count\":%" PRIu64
		       ",\"success_count\":%" PRIu64 ",\"fail_count\":%" PRIu64 "}",
		       n->last_status_change, s->total_count, s->success_count, s->fail_count);
	}
	printf("]}\n");
}

static void print_event(const struct cluster_event *e)
{
	printf("{\"type\":\"event\",\"t_ms\":%" PRIu64 ",\"event\":", now_ms() - t0);
	json_string(e->event);
	printf(",\"node\":%d,\"command\":", e->node);
	json_string(e->command);
	printf(",\"exit_status\":%d,\"duration_ms\":%u,\"detail\":", e->exit_status,
	       e->duration_ms);
	json_string(e->detail);
	printf("}\n");
}

static void print_reply(bool ok, const char *msg)
{
	printf("{\"type\":\"reply\",\"ok\":%s,\"msg\":", ok ? "true" : "false");
	json_string(msg);
	printf("}\n");
}

/* Handles one stdin line; false on "quit". */
static bool handle_line(cluster_t *c, char *line)
{
	char word[16] = "", reason[128] = "";
	int node = -1;
	char msg[256];
	bool ok;

	line[strcspn(line, "\r\n")] = '\0';
	if (sscanf(line, "%15s %d %127[^\n]", word, &node, reason) < 1)
		return true;
	if (strcmp(word, "quit") == 0)
		return false;
	if (strcmp(word, "report") == 0) {
		cluster_report_backend_error(c, node);
		print_reply(true, "reported");
		return true;
	}
	if (strcmp(word, "attach") == 0)
		ok = cluster_command(c, CLUSTER_ATTACH, node, reason, msg, sizeof(msg));
	else if (strcmp(word, "detach") == 0)
		ok = cluster_command(c, CLUSTER_DETACH, node, reason, msg, sizeof(msg));
	else if (strcmp(word, "promote") == 0)
		ok = cluster_command(c, CLUSTER_PROMOTE, node, reason, msg, sizeof(msg));
	else {
		ok = false;
		snprintf(msg, sizeof(msg), "unknown command %s", word);
	}
	print_reply(ok, msg);
	return true;
}

int main(int argc, char **argv)
{
	static struct cluster_view view;
	static struct cluster_event hist[CLUSTER_HISTORY_MAX];
	char err[4096] = "", inbuf[1024];
	size_t inlen = 0;
	struct config *cfg;
	cluster_t *c;
	uint64_t last_seq = 0, t_stop;
	int fds[2], seen_events = 0;
	bool running = true;

	if (argc != 2) {
		fprintf(stderr, "usage: cluster_main CONFIG\n");
		return 2;
	}
	cfg = config_load(argv[1], err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	log_set_level((enum log_level)cfg->log_level);
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
		return 1;
	wake_wr = fds[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	t0 = now_ms();
	c = cluster_start(cfg, on_view, NULL);
	config_free(cfg);
	if (c == NULL)
		return 1;
	while (running) {
		struct pollfd p[2] = { { .fd = fds[0], .events = POLLIN },
				       { .fd = 0, .events = POLLIN } };
		char b[64];
		int n;

		cluster_view_copy(c, &view);
		if (view.seq != last_seq) {
			last_seq = view.seq;
			print_view(&view);
		}
		n = cluster_history_copy(c, hist, CLUSTER_HISTORY_MAX);
		/* The ring only grows in these tests (fewer than CLUSTER_HISTORY_MAX events). */
		for (int i = seen_events; i < n; i++)
			print_event(&hist[i]);
		seen_events = n;
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		while (read(fds[0], b, sizeof(b)) > 0) {
		}
		if (p[1].revents != 0) {
			ssize_t r = read(0, inbuf + inlen, sizeof(inbuf) - 1 - inlen);

			if (r <= 0) {
				running = false;
				break;
			}
			inlen += (size_t)r;
			inbuf[inlen] = '\0';
			char *nl;
			while ((nl = strchr(inbuf, '\n')) != NULL) {
				*nl = '\0';
				if (!handle_line(c, inbuf))
					running = false;
				memmove(inbuf, nl + 1, inlen - (size_t)(nl + 1 - inbuf) + 1);
				inlen -= (size_t)(nl + 1 - inbuf);
			}
			if (inlen == sizeof(inbuf) - 1)
				inlen = 0; /* a line that long is garbage */
		}
	}
	t_stop = now_ms();
	cluster_stop(c);
	fprintf(stderr, "stop_ms=%" PRIu64 "\n", now_ms() - t_stop);
	close(fds[0]);
	close(fds[1]);
	return 0;
}
