/*
 * Unit tests of src/conf: duration and size parsing, defaults, a file setting every key, one file
 * per class of error (each asserting the exact "FILE:LINE: key: message" lines), the restart diff,
 * and that doc/configuration.md is what config_write_reference() prints.
 * Runs with the working directory tests/unit; fixtures are in data/config/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"
#include "util/log.h"

#define DIR "data/config/"

struct duration_case {
	const char *text;
	bool ok;
	uint32_t ms;
};

static const struct duration_case duration_cases[] = {
	{ "500ms", true, 500 },
	{ "3s", true, 3000 },
	{ "2min", true, 120000 },
	{ "1h", true, 3600000 },
	{ "1d", true, 86400000 },
	{ "10", true, 10000 }, /* bare number: seconds */
	{ "0", true, 0 },
	{ "0ms", true, 0 },
	{ " 5 s ", true, 5000 },
	{ "4294967295ms", true, 4294967295u },
	{ "4294967296ms", false, 0 },
	{ "50d", false, 0 }, /* more milliseconds than uint32_t holds */
	{ "", false, 0 },
	{ "s", false, 0 },
	{ "abc", false, 0 },
	{ "5x", false, 0 },
	{ "5S", false, 0 }, /* units are case-sensitive, as in PostgreSQL */
	{ "5sec", false, 0 },
	{ "5 secs", false, 0 },
	{ "-1s", false, 0 },
	{ "+1s", false, 0 },
	{ "1.5s", false, 0 },
	{ "5s5", false, 0 },
	{ "99999999999999999999999s", false, 0 },
};

static void test_parse_duration(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(duration_cases) / sizeof(duration_cases[0]); i++) {
		const struct duration_case *c = &duration_cases[i];
		uint32_t ms = 12345;
		bool ok = config_parse_duration(c->text, &ms);
		if (ok != c->ok || (ok && ms != c->ms))
			fail_msg("duration \"%s\": got ok=%d ms=%u, want ok=%d ms=%u", c->text, ok,
				 ms, c->ok, c->ms);
	}
}

struct size_case {
	const char *text;
	bool ok;
	uint64_t bytes;
};

static const struct size_case size_cases[] = {
	{ "512B", true, 512 },
	{ "64kB", true, 65536 },
	{ "16MB", true, 16777216 },
	{ "1GB", true, 1073741824 },
	{ "100", true, 100 }, /* bare number: bytes */
	{ "0", true, 0 },
	{ "8 kB", true, 8192 },
	{ "", false, 0 },
	{ "MB", false, 0 },
	{ "64KB", false, 0 }, /* case-sensitive, as in PostgreSQL */
	{ "64mb", false, 0 },
	{ "1TB", false, 0 },
	{ "-1", false, 0 },
	{ "1.5MB", false, 0 },
	{ "99999999999999999999", false, 0 },
	{ "17179869184GB", false, 0 }, /* overflows 64 bits */
};

static void test_parse_size(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
		const struct size_case *c = &size_cases[i];
		uint64_t b = 12345;
		bool ok = config_parse_size(c->text, &b);
		if (ok != c->ok || (ok && b != c->bytes))
			fail_msg("size \"%s\": got ok=%d bytes=%llu, want ok=%d bytes=%llu",
				 c->text, ok, (unsigned long long)b, c->ok,
				 (unsigned long long)c->bytes);
	}
}

static struct config *load_ok(const char *path)
{
	char err[4096];
	struct config *cfg = config_load(path, err, sizeof(err));
	if (!cfg)
		fail_msg("%s should load, got:\n%s", path, err);
	return cfg;
}

static void test_minimal_defaults(void **state)
{
	(void)state;
	struct config *cfg = load_ok(DIR "valid_min.conf");
	assert_string_equal(cfg->path, DIR "valid_min.conf");
	assert_int_equal(cfg->n_listen, 1);
	assert_string_equal(cfg->listen_addresses[0], "127.0.0.1");
	assert_int_equal(cfg->port, 9999);
	assert_int_equal(cfg->n_backends, 1);
	assert_string_equal(cfg->backends[0].host, "127.0.0.1");
	assert_int_equal(cfg->backends[0].port, 5432);
	assert_true(cfg->backends[0].weight == 1.0);
	assert_string_equal(cfg->backends[0].data_directory, "");
	assert_string_equal(cfg->backends[0].application_name, "");
	assert_int_equal(cfg->backends[0].flags, 0);
	assert_int_equal(cfg->backends[0].line, 3);
	assert_string_equal(cfg->users_file, DIR "users.txt"); /* relative to the config's folder */
	assert_non_null(cfg->users);
	assert_null(cfg->hba_file);
	assert_null(cfg->hba);
	assert_int_equal(cfg->authentication_timeout_ms, 60000);
	assert_int_equal(cfg->max_message_size, 1u << 30);
	assert_int_equal(cfg->shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->log_level, LOG_LVL_LOG);
	assert_null(cfg->failover_command);
	assert_null(cfg->follow_primary_command);
	assert_null(cfg->failback_command);
	assert_int_equal(cfg->failover_command_timeout_ms, 60000);
	assert_int_equal(cfg->search_primary_node_timeout_ms, 300000);
	assert_int_equal(cfg->pool.mode, POOL_MODE_SESSION);
	assert_int_equal(cfg->pool.max_client_conn, 10000);
	assert_int_equal(cfg->pool.pool_size, 20);
	assert_int_equal(cfg->pool.min_pool_size, 0);
	assert_int_equal(cfg->pool.max_db_connections, 0);
	assert_int_equal(cfg->pool.max_user_connections, 0);
	assert_int_equal(cfg->pool.query_wait_timeout_ms, 120000);
	assert_int_equal(cfg->pool.server_connect_timeout_ms, 5000);
	assert_int_equal(cfg->pool.server_lifetime_ms, 3600000);
	assert_int_equal(cfg->pool.server_idle_timeout_ms, 600000);
	assert_int_equal(cfg->pool.client_idle_timeout_ms, 0);
	assert_int_equal(cfg->pool.idle_transaction_timeout_ms, 0);
	assert_string_equal(cfg->pool.reset_query_list, "ABORT; DISCARD ALL");
	assert_int_equal(cfg->health_check.period_ms, 1000);
	assert_int_equal(cfg->health_check.timeout_ms, 2000);
	assert_int_equal(cfg->health_check.max_retries, 2);
	assert_int_equal(cfg->health_check.retry_delay_ms, 500);
	assert_string_equal(cfg->health_check.user, "postgres");
	assert_string_equal(cfg->health_check.password, "");
	assert_string_equal(cfg->health_check.database, "postgres");
	assert_int_equal(config_primary_backend(cfg), 0);
	config_free(cfg);
}

static void test_full_file(void **state)
{
	(void)state;
	struct config *cfg = load_ok(DIR "valid_full.conf");
	assert_int_equal(cfg->n_listen, 2);
	assert_string_equal(cfg->listen_addresses[0], "127.0.0.1");
	assert_string_equal(cfg->listen_addresses[1], "::1");
	assert_int_equal(cfg->port, 6432);
	assert_int_equal(cfg->authentication_timeout_ms, 30000);
	assert_int_equal(cfg->max_message_size, 16u << 20);
	assert_int_equal(cfg->shutdown_timeout_ms, 120000);
	assert_string_equal(cfg->failover_command, "conf/failover.sh %d %h %p");
	assert_string_equal(cfg->follow_primary_command, "conf/follow.sh %d");
	assert_null(cfg->failback_command);
	assert_int_equal(cfg->failover_command_timeout_ms, 3600000);
	assert_int_equal(cfg->search_primary_node_timeout_ms, 0);

	assert_int_equal(cfg->n_backends, 3);
	assert_string_equal(cfg->backends[0].host, "10.0.0.1");
	assert_true(cfg->backends[0].weight == 0.0);
	assert_string_equal(cfg->backends[0].data_directory, "/pg/0");
	assert_string_equal(cfg->backends[0].application_name, "node0");
	assert_int_equal(cfg->backends[0].flags, 0);
	assert_int_equal(cfg->backends[1].port, 5433);
	assert_true(cfg->backends[1].weight == 2.0);
	assert_int_equal(cfg->backends[1].flags, BACKEND_FLAG_DISALLOW_TO_FAILOVER);
	assert_int_equal(cfg->backends[2].port, 5432);
	assert_true(cfg->backends[2].weight == 0.5);
	assert_int_equal(cfg->backends[2].flags,
			 BACKEND_FLAG_ALWAYS_PRIMARY | BACKEND_FLAG_DISALLOW_TO_FAILOVER);
	assert_int_equal(config_primary_backend(cfg), 2);

	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	assert_int_equal(cfg->pool.mode, POOL_MODE_TRANSACTION);
	assert_int_equal(cfg->pool.max_client_conn, 500);
	assert_int_equal(cfg->pool.pool_size, 10);
	assert_int_equal(cfg->pool.min_pool_size, 2);
	assert_int_equal(cfg->pool.max_db_connections, 50);
	assert_int_equal(cfg->pool.max_user_connections, 40);
	assert_int_equal(cfg->pool.query_wait_timeout_ms, 0);
	assert_int_equal(cfg->pool.server_connect_timeout_ms, 250);
	assert_int_equal(cfg->pool.server_lifetime_ms, 86400000);
	assert_int_equal(cfg->pool.server_idle_timeout_ms, 60000);
	assert_int_equal(cfg->pool.client_idle_timeout_ms, 300000);
	assert_int_equal(cfg->pool.idle_transaction_timeout_ms, 30000);
	assert_string_equal(cfg->pool.reset_query_list, "DISCARD ALL");
	assert_int_equal(cfg->health_check.period_ms, 0);
	assert_int_equal(cfg->health_check.timeout_ms, 3000);
	assert_int_equal(cfg->health_check.max_retries, 0);
	assert_int_equal(cfg->health_check.retry_delay_ms, 2000);
	assert_string_equal(cfg->health_check.user, "monitor");
	assert_string_equal(cfg->health_check.password, "secret");
	assert_string_equal(cfg->health_check.database, "template1");
	config_free(cfg);
}

/* Each error file and the exact lines config_load must report, in order, and nothing else. */
struct error_case {
	const char *file;
	const char *lines[10];
};

static const struct error_case error_cases[] = {
	{ "err_unknown_key.conf",
	  { DIR "err_unknown_key.conf:2: backends[0].prot: unknown key; did you mean \"port\"?",
	    DIR "err_unknown_key.conf:5: pool.pool_sise: unknown key; did you mean \"pool_size\"?",
	    DIR "err_unknown_key.conf:5: pool.period: unknown key; did you mean "
		"\"health_check.period\"?",
	    DIR "err_unknown_key.conf:6: max_client_conn: unknown key; did you mean "
		"\"pool.max_client_conn\"?",
	    DIR "err_unknown_key.conf:7: heath_check: unknown key; did you mean \"health_check\"?",
	    DIR "err_unknown_key.conf:8: zzzzzzzz: unknown key" } },
	{ "err_wrong_type.conf",
	  { DIR "err_wrong_type.conf:1: port: expected an integer, got a string",
	    DIR "err_wrong_type.conf:3: backends[0].weight: expected a number, got a string",
	    DIR "err_wrong_type.conf:6: pool.mode: expected one of \"session\", \"transaction\", "
		"\"statement\", got an integer",
	    DIR "err_wrong_type.conf:6: pool.server_lifetime: expected a duration such as \"5s\" "
		"(or an integer number of seconds), got a float",
	    DIR "err_wrong_type.conf:7: health_check: expected a group { ... }, got an integer" } },
	{ "err_range.conf",
	  { DIR "err_range.conf:1: port: 70000 is out of range (1..65535)",
	    DIR "err_range.conf:2: max_message_size: 2GB is out of range (8kB..1GB)",
	    DIR "err_range.conf:4: backends[0].port: 0 is out of range (1..65535)",
	    DIR "err_range.conf:4: backends[0].weight: -1 is out of range (0..1000000)",
	    DIR "err_range.conf:7: pool.mode: \"sesion\" is not one of session, transaction, "
		"statement",
	    DIR "err_range.conf:7: pool.max_client_conn: 0 is out of range (1..1000000)",
	    DIR "err_range.conf:8: health_check.retry_delay: \"5 secs\" is not a duration (a whole "
		"number with ms, s, min, h or d; no unit means seconds)",
	    DIR "err_range.conf:8: health_check.timeout: 0 is out of range (1ms..30d)",
	    DIR "err_range.conf:7: pool.min_pool_size: 30 is larger than pool.pool_size (20)" } },
	{ "err_missing_backends.conf",
	  { DIR "err_missing_backends.conf:1: backends: required key is missing" } },
	{ "err_empty_backends.conf",
	  { DIR "err_empty_backends.conf:1: backends: at least one backend is required",
	    DIR "err_empty_backends.conf:3: listen_addresses: \"127.0.0.1,,::1\" has an empty "
		"address" } },
	{ "err_missing_users_file.conf",
	  { DIR "err_missing_users_file.conf:4: auth.users_file: required key is missing" } },
	{ "err_two_primaries.conf",
	  { DIR "err_two_primaries.conf:4: backends[2].flag: ALWAYS_PRIMARY is already set on "
		"backends[0] (line 2); at most one backend may have it" } },
	{ "err_backend_entry.conf",
	  { DIR "err_backend_entry.conf:2: backends[0].host: required key is missing",
	    DIR "err_backend_entry.conf:3: backends[1]: expected a group { host = ...; }, got a "
		"string",
	    DIR "err_backend_entry.conf:4: backends[2].flag: ALLOW_TO_FAILOVER and "
		"DISALLOW_TO_FAILOVER contradict each other",
	    DIR "err_backend_entry.conf:5: backends[3].flag: unknown flag \"SOMETIMES\" (use "
		"ALLOW_TO_FAILOVER, DISALLOW_TO_FAILOVER or ALWAYS_PRIMARY, joined with |)",
	    DIR "err_backend_entry.conf:5: backends[3]: same host and port as backends[2] (line "
		"4)" } },
	/* The http group is accepted since the HTTP listener exists; its keys are checked. */
	{ "err_http_group.conf",
	  { DIR "err_http_group.conf:3: http.enabled: unknown key; did you mean "
		"\"load_balance.enabled\"?",
	    DIR "err_http_group.conf:3: http.allow: \"10.0.0.0/33\" is not an IP address or "
		"network (a.b.c.d/n or an IPv6 address/n)",
	    DIR "err_http_group.conf:4: tls.cert_fil: unknown key; did you mean \"cert_file\"?" } },
	{ "err_syntax.conf", { DIR "err_syntax.conf:4: syntax error" } },
};

static void test_error_files(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
		const struct error_case *c = &error_cases[i];
		char path[256], err[8192], want[8192] = "";
		snprintf(path, sizeof(path), DIR "%s", c->file);
		for (size_t j = 0; j < 10 && c->lines[j]; j++) {
			if (j)
				strcat(want, "\n");
			strcat(want, c->lines[j]);
		}
		struct config *cfg = config_load(path, err, sizeof(err));
		if (cfg) {
			config_free(cfg);
			fail_msg("%s loaded but should not", path);
		}
		if (strcmp(err, want) != 0)
			fail_msg("%s:\n--- got\n%s\n--- want\n%s", path, err, want);
	}
}

/* users_load's and hba_load's messages are theirs; they must name the resolved files. */
static void test_auth_files_missing(void **state)
{
	(void)state;
	char err[4096];
	struct config *cfg = config_load(DIR "err_users_missing.conf", err, sizeof(err));
	assert_null(cfg);
	assert_non_null(strstr(err, DIR "no_such_users.txt"));
	assert_non_null(strstr(err, DIR "no_such_hba.conf"));
	assert_non_null(strchr(err, '\n')); /* two lines */
}

static void test_missing_config_file(void **state)
{
	(void)state;
	char err[512];
	assert_null(config_load(DIR "no_such.conf", err, sizeof(err)));
	assert_string_equal(err, DIR "no_such.conf: cannot open the configuration file: No such "
				     "file or directory");
	assert_null(config_load(DIR "no_such.conf", NULL, 0)); /* err is optional */
}

/* A small buffer gets whole lines and "...", never half a line, always terminated. */
static void test_error_truncation(void **state)
{
	(void)state;
	char err[120];
	memset(err, 'x', sizeof(err));
	assert_null(config_load(DIR "err_unknown_key.conf", err, sizeof(err)));
	assert_string_equal(err, DIR "err_unknown_key.conf:2: backends[0].prot: unknown key; did "
				     "you mean \"port\"?\n...");
}

static void test_restart_diff(void **state)
{
	(void)state;
	struct config *a = load_ok(DIR "valid_min.conf");
	struct config *b = load_ok(DIR "valid_min.conf");
	char out[256];
	config_diff_restart_keys(a, b, out, sizeof(out));
	assert_string_equal(out, "");

	b->pool.pool_size = 99; /* reloadable */
	b->health_check.period_ms = 5;
	config_diff_restart_keys(a, b, out, sizeof(out));
	assert_string_equal(out, "");

	b->port = 7777;
	b->pool.mode = POOL_MODE_STATEMENT;
	config_diff_restart_keys(a, b, out, sizeof(out));
	assert_string_equal(out, "port, pool.mode");

	b->port = a->port;
	b->pool.mode = a->pool.mode;
	b->backends[0].weight = 3.0;
	config_diff_restart_keys(a, b, out, sizeof(out));
	assert_string_equal(out, "backends");
	config_free(b);

	b = load_ok(DIR "valid_full.conf");
	config_diff_restart_keys(a, b, out, sizeof(out));
	assert_string_equal(out, "listen_addresses, port, backends, pool.mode");
	config_free(a);
	config_free(b);
}

struct shown {
	char text[4096];
};

static void collect(void *arg, const char *key, const char *value, bool reloadable)
{
	struct shown *s = arg;
	size_t len = strlen(s->text);
	snprintf(s->text + len, sizeof(s->text) - len, "%s=%s%s\n", key, value,
		 reloadable ? "" : " (restart)");
}

static void test_foreach_value(void **state)
{
	(void)state;
	struct config *cfg = load_ok(DIR "valid_full.conf");
	struct shown s = { "" };
	config_foreach_value(cfg, collect, &s);
	assert_non_null(strstr(s.text, "listen_addresses=127.0.0.1,::1 (restart)\n"));
	assert_non_null(strstr(s.text, "max_message_size=16MB\n"));
	assert_non_null(strstr(s.text, "pool.mode=transaction (restart)\n"));
	assert_non_null(strstr(s.text, "pool.server_connect_timeout=250ms\n"));
	assert_non_null(strstr(s.text, "pool.server_lifetime=1d\n"));
	assert_non_null(strstr(s.text, "logging.level=debug\n"));
	assert_non_null(strstr(s.text, "health_check.password=********\n"));
	assert_null(strstr(s.text, "secret"));
	assert_null(strstr(s.text, "backends"));
	config_free(cfg);
}

static void check_key_in_sample(void *arg, const char *key, const char *value, bool reloadable)
{
	(void)value;
	(void)reloadable;
	const char *leaf = strrchr(key, '.') ? strrchr(key, '.') + 1 : key;
	char pattern[128];
	snprintf(pattern, sizeof(pattern), "%s = ", leaf);
	/* A whole name: "timeout = " inside "authentication_timeout = " does not count. */
	for (const char *p = strstr(arg, pattern); p; p = strstr(p + 1, pattern))
		if (p == (const char *)arg || p[-1] == ' ' || p[-1] == '#' || p[-1] == '\n')
			return;
	fail_msg("conf/pgrelay.conf does not show %s", key);
}

/* The shipped sample loads, and shows every key (most of them commented out). */
static void test_sample_config(void **state)
{
	(void)state;
	struct config *cfg = load_ok("../../conf/pgrelay.conf");
	assert_int_equal(cfg->n_backends, 3);
	assert_int_equal(cfg->backends[2].port, 5434);
	assert_string_equal(cfg->users_file, "../../conf/users.txt");

	FILE *f = fopen("../../conf/pgrelay.conf", "r");
	assert_non_null(f);
	char *text = calloc(1, 65536);
	size_t n = fread(text, 1, 65535, f);
	fclose(f);
	assert_true(n > 0 && n < 65535);
	config_foreach_value(cfg, check_key_in_sample, text);
	free(text);
	config_free(cfg);
}

/* doc/configuration.md is generated; regenerate it when this fails (see the doc's header). */
static void test_reference_doc_in_sync(void **state)
{
	(void)state;
	char *gen = NULL;
	size_t gen_len = 0;
	FILE *mem = open_memstream(&gen, &gen_len);
	assert_non_null(mem);
	config_write_reference(mem);
	fclose(mem);

	FILE *f = fopen("../../doc/configuration.md", "r");
	assert_non_null(f);
	char *doc = calloc(1, gen_len + 2);
	size_t n = fread(doc, 1, gen_len + 1, f);
	fclose(f);
	if (n != gen_len || memcmp(doc, gen, gen_len) != 0)
		fail_msg("doc/configuration.md differs from config_write_reference(); regenerate "
			 "it");
	free(doc);
	free(gen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_minimal_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_error_files),
		cmocka_unit_test(test_auth_files_missing),
		cmocka_unit_test(test_missing_config_file),
		cmocka_unit_test(test_error_truncation),
		cmocka_unit_test(test_restart_diff),
		cmocka_unit_test(test_foreach_value),
		cmocka_unit_test(test_sample_config),
		cmocka_unit_test(test_reference_doc_in_sync),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
