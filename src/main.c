/*
 * pgrelay: argv, configuration, signals, start and stop order.
 *
 * Start: parse arguments, load and validate the config (exit 1 with FILE:LINE problems), raise
 * the descriptor limit, open listeners, run the worker loop. Signals arrive on the loop:
 * SIGHUP reload, SIGTERM smart shutdown, SIGINT fast shutdown, SIGQUIT immediate exit.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "pool/worker.h"
#include "util/log.h"

#define DEFAULT_CONFIG	"/etc/pgrelay/pgrelay.conf"
#define FALLBACK_CONFIG "conf/pgrelay.conf"

static void usage(FILE *out)
{
	fprintf(out,
		"pgrelay " PGRELAY_VERSION " - PostgreSQL routing, pooling and failover proxy\n\n"
		"Usage: pgrelay [-f FILE] [-t] [-d] [--version] [--help]\n"
		"  -f, --config FILE   configuration file (default: " DEFAULT_CONFIG
		", else ./" FALLBACK_CONFIG ")\n"
		"  -t, --test-config   parse and validate the configuration, print problems\n"
		"                      as FILE:LINE: message, exit 0 (valid) or 1 (invalid)\n"
		"  -d, --debug         debug logging to stderr\n"
		"      --version       print the version and exit\n"
		"      --help          print this help and exit\n\n"
		"Signals: SIGHUP reload, SIGTERM smart shutdown, SIGINT fast shutdown,\n"
		"SIGQUIT immediate exit.\n");
}

static void print_problems(const char *err)
{
	fputs(err, stderr);
	if (err[0] && err[strlen(err) - 1] != '\n')
		fputc('\n', stderr);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct worker *w = h->data;
	switch (signum) {
	case SIGHUP:
		worker_reload(w);
		return;
	case SIGTERM:
		worker_begin_shutdown(w, WS_SMART);
		return;
	case SIGINT:
		worker_begin_shutdown(w, WS_FAST);
		return;
	case SIGQUIT:
		log_info("main", 0, "immediate shutdown");
		_exit(0);
	}
}

static bool install_signals(struct worker *w, uv_signal_t *handles)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT };
	for (int i = 0; i < 4; i++) {
		if (uv_signal_init(&w->loop, &handles[i]) < 0)
			return false;
		handles[i].data = w;
		if (uv_signal_start(&handles[i], on_signal, sigs[i]) < 0)
			return false;
		/* Signals must not keep the loop alive once everything else is closed. */
		uv_unref((uv_handle_t *)&handles[i]);
	}
	signal(SIGPIPE, SIG_IGN);
	return true;
}

static const char *default_config_path(void)
{
	return access(DEFAULT_CONFIG, R_OK) == 0 ? DEFAULT_CONFIG : FALLBACK_CONFIG;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'f' },
		{ "test-config", no_argument, NULL, 't' },
		{ "debug", no_argument, NULL, 'd' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	bool test_only = false, debug = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "f:tdh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			path = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'd':
			debug = true;
			break;
		case 'V':
			printf("pgrelay %s\n", PGRELAY_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pgrelay: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!path)
		path = default_config_path();

	static char err[16384];
	struct config *cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		print_problems(err);
		if (!test_only)
			fprintf(stderr, "pgrelay: configuration %s is invalid, not starting\n",
				path);
		return 1;
	}
	if (test_only) {
		/* What the router compiles (regular expressions, lists) is part of the config. */
		static struct router r;
		if (!router_init(&r, cfg, err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", path, err);
			config_free(cfg);
			return 1;
		}
		router_free(&r);
		printf("configuration file %s is valid\n", path);
		config_free(cfg);
		return 0;
	}
	log_set_level(debug ? LOG_LVL_DEBUG : (enum log_level)cfg->log_level);

	static struct worker w;
	if (!worker_init(&w, cfg, err, sizeof(err))) {
		log_error("main", 0, "%s", err);
		return 1;
	}
	w.force_debug = debug;
	/* Before the discovery wait: a signal arriving meanwhile is handled once the loop runs. */
	uv_signal_t sig[4];
	if (!install_signals(&w, sig)) {
		log_error("main", 0, "could not install signal handlers");
		return 1;
	}
	if (!worker_start_cluster(&w) && cfg->health_check.period_ms > 0)
		log_warning("main", 0,
			    "health checks and failover are not running; routing follows the "
			    "configuration only");
	log_info("main", 0, "pgrelay %s started with %s, %d backends", PGRELAY_VERSION, path,
		 cfg->n_backends);
	int rc = worker_run(&w);
	log_info("main", 0, "pgrelay stopped");
	worker_destroy(&w);
	return rc;
}
