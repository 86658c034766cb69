/*
 * The key table and everything that only needs one key at a time: parsing of durations and sizes,
 * the typed setters that convert, check bounds and store a value, defaults, freeing, comparison,
 * formatting and the Markdown reference (doc/configuration.md is this file's output).
 * Invariant: every field a row points at holds a valid value of the row's type at all times once
 * config_keys_set_defaults() ran, so setters may free the previous value unconditionally.
 */
#include "conf/config.h"
#include "conf/config_keys.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_query.h"
#include "util/cidr.h"
#include "util/log.h"

#define MS_PER_S   1000LL
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H   (60 * MS_PER_MIN)
#define MS_PER_D   (24 * MS_PER_H)
#define DUR_MAX	   (30 * MS_PER_D) /* fits uint32_t milliseconds with room to spare */
#define STR_(x)	   #x
#define STR(x)	   STR_(x)
#define KB	   1024LL
#define MB	   (1024 * KB)
#define GB	   (1024 * MB)

static const char *const pool_modes[] = { "session", "transaction", "statement", NULL };
static const char *const log_levels[] = { "error", "warning", "log", "debug", "noise", NULL };
static const char *const lb_on_write[] = { "transaction", "off", "trans_transaction", "always",
					   NULL };
static const char *const backend_flags[] = { "ALLOW_TO_FAILOVER", "DISALLOW_TO_FAILOVER",
					     "ALWAYS_PRIMARY", NULL };

static const char *const watchdog_modes[] = { "manage", "observe", NULL };

static const char *const backend_tls_modes[] = { "default", "disable",	 "allow",	"prefer",
						 "require", "verify-ca", "verify-full", NULL };

static bool parse_log_level(const char *text, int *out)
{
	enum log_level lvl;
	if (!log_level_parse(text, &lvl))
		return false;
	*out = (int)lvl;
	return true;
}

#define TOP(n, t, f, d, lo, hi, field, ch, desc)                                                   \
	{                                                                                          \
		"", n, t, f, d, lo, hi, offsetof(struct config, field), ch, NULL, desc             \
	}
#define GRP(g, n, t, f, d, lo, hi, field, ch, desc)                                                \
	{                                                                                          \
		g, n, t, f, d, lo, hi, offsetof(struct config, field), ch, NULL, desc              \
	}
#define BACKEND(n, t, f, d, lo, hi, field, ch, desc)                                               \
	{                                                                                          \
		"backends", n, t, (f) | KF_BACKEND | KF_RESTART, d, lo, hi,                        \
			offsetof(struct backend_conf, field), ch, NULL, desc                       \
	}

const struct key_def config_keys[] = {
	TOP("listen_addresses", KT_ADDRLIST, KF_RESTART, "127.0.0.1", 1, CONFIG_MAX_LISTEN,
	    listen_addresses, NULL,
	    "Comma-separated host names or IP addresses to listen on; \"*\" means all IPv4 and "
	    "IPv6 addresses."),
	TOP("port", KT_INT, KF_RESTART, "9999", 1, 65535, port, NULL,
	    "TCP port clients connect to (also the admin interface)."),
	TOP("authentication_timeout", KT_DURATION, 0, "60s", 0, DUR_MAX, authentication_timeout_ms,
	    NULL, "Time a new client has to finish startup and authentication; 0 means no limit."),
	TOP("max_message_size", KT_SIZE, 0, "1GB", 8 * KB, 1 * GB, max_message_size, NULL,
	    "Largest single protocol message accepted from a client; a larger one ends the "
	    "connection."),
	TOP("shutdown_timeout", KT_DURATION, 0, "30s", 0, DUR_MAX, shutdown_timeout_ms, NULL,
	    "How long a smart shutdown (SIGTERM) waits for clients to leave before closing them, "
	    "and "
	    "how long work in flight on a detached standby may take to finish; 0 closes them at "
	    "once."),
	TOP("admin_users", KT_STRING, 0, "postgres", 0, 0, admin_users, NULL,
	    "Comma-separated users who may run the PGRELAY ATTACH/DETACH/PROMOTE/RECOVER NODE, "
	    "RELOAD and STOP commands and every SHOW pool_* command; SHOW pool_nodes and SHOW "
	    "pool_version are open to every user."),
	TOP("stats_users", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, stats_users, NULL,
	    "Comma-separated users who may run every SHOW pool_* command (statistics, sessions, "
	    "failover history) but no node command; unset means only admin_users."),
	TOP("stats_period", KT_DURATION, 0, "60s", MS_PER_S, 24 * 60 * MS_PER_MIN, stats_period_ms,
	    NULL,
	    "Period over which the pgbouncer console's averages (SHOW STATS avg_*, "
	    "STATS_AVERAGES) are computed, PgBouncer's stats_period."),
	TOP("failover_command", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, failover_command, NULL,
	    "Command run when a node is detached, with pgpool-II's placeholders (%d failed node "
	    "id, %h, %p, %D, %m, %H, %M, %P, %r, %R, %N, %S, %%); unset runs nothing."),
	TOP("follow_primary_command", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0,
	    follow_primary_command, NULL,
	    "Command run for each standby after a failover promoted a new primary, same "
	    "placeholders; unset runs nothing."),
	TOP("failback_command", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, failback_command, NULL,
	    "Command run when a node is attached again, same placeholders; unset runs nothing."),
	TOP("failover_command_timeout", KT_DURATION, 0, "60s", MS_PER_S, DUR_MAX,
	    failover_command_timeout_ms, NULL,
	    "Longest a failover, follow-primary or failback command may run before it is killed."),
	TOP("recovery_1st_stage_command", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0,
	    recovery_1st_stage_command, NULL,
	    "First command of PGRELAY RECOVER NODE n: makes the down node a standby of the "
	    "current primary (pg_rewind or pg_basebackup). Failover placeholders, with %d %h %p "
	    "%D the node to recover and %m %H %r %R the current primary; unset refuses "
	    "recoveries."),
	TOP("recovery_remote_start_command", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0,
	    recovery_remote_start_command, NULL,
	    "Second command of an online recovery: starts the recovered node's PostgreSQL, same "
	    "placeholders; unset skips the stage (the first stage started it)."),
	TOP("recovery_timeout", KT_DURATION, 0, "5min", MS_PER_S, DUR_MAX, recovery_timeout_ms,
	    NULL,
	    "Longest a whole online recovery (both commands, the wait for streaming and the "
	    "attach) may take; a command still running then is killed and the node stays down."),
	TOP("search_primary_node_timeout", KT_DURATION, 0, "5min", 0, DUR_MAX,
	    search_primary_node_timeout_ms, NULL,
	    "How long to look for a new primary after a failover; 0 searches forever."),
	TOP("failover_on_backend_error", KT_BOOL, 0, "true", 0, 0, failover_on_backend_error, NULL,
	    "A backend connection that breaks or is refused triggers an immediate health check "
	    "of its node (the check, not the error, decides the failover)."),
	TOP("detach_false_primary", KT_BOOL, 0, "true", 0, 0, detach_false_primary, NULL,
	    "When two nodes claim to be primary, keep the one the standbys stream from and detach "
	    "the other."),
	TOP("auto_failback", KT_BOOL, 0, "false", 0, 0, auto_failback, NULL,
	    "Attach a detached standby again once it passes its checks and streams from the "
	    "primary; a detached primary is never attached automatically."),
	TOP("auto_failback_interval", KT_DURATION, 0, "1min", 0, DUR_MAX, auto_failback_interval_ms,
	    NULL, "Least time between two automatic failbacks of the same node."),
	TOP("listeners", KT_LISTENERS, KF_RESTART, NULL, 0, CONFIG_MAX_LISTENERS, listeners, NULL,
	    "Extra ports pinned to a role, a list of groups ( { port = 5000; role = "
	    "\"primary\"; }, ... ): role \"primary\" sends every statement to the primary, "
	    "\"standby\" sends every session to a standby (read-only), \"auto\" splits like "
	    "port."),
	TOP("backends", KT_BACKENDS, KF_REQUIRED | KF_RESTART, NULL, 1, CONFIG_MAX_BACKENDS,
	    backends, NULL,
	    "The PostgreSQL nodes, a list of groups ( { host = ...; }, ... ); node ids count from "
	    "0 in this order."),

	BACKEND("host", KT_STRING, KF_REQUIRED, NULL, 0, 0, host, NULL,
		"Host name or IP address of the node."),
	BACKEND("port", KT_INT, 0, "5432", 1, 65535, port, NULL, "TCP port of the node."),
	BACKEND("weight", KT_DOUBLE, 0, "1.0", 0, 1000000, weight, NULL,
		"Load-balancing weight relative to the other nodes (an integer or a float); 0 "
		"sends it no reads."),
	BACKEND("data_directory", KT_STRING, 0, "", 0, 0, data_directory, NULL,
		"Data directory of the node, handed to failover commands (%D, %R)."),
	BACKEND("application_name", KT_STRING, 0, "", 0, 0, application_name, NULL,
		"application_name this node uses in its primary_conninfo, to find it in "
		"pg_stat_replication."),
	BACKEND("flag", KT_FLAGS, 0, "ALLOW_TO_FAILOVER", 0, 0, flags, backend_flags,
		"pgpool-II's backend_flag, flags joined with | "
		"(\"ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER\"); at most one node may be "
		"ALWAYS_PRIMARY."),

	BACKEND("tls_mode", KT_ENUM, 0, "default", 0, 0, tls_mode, backend_tls_modes,
		"TLS towards this node with libpq's sslmode names; \"default\" uses "
		"tls.server_mode."),
	BACKEND("tls_ca_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls_ca_file, NULL,
		"CA file that verifies this node's certificate; unset uses tls.server_ca_file."),

	GRP("tls", "cert_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls.cert_file, NULL,
	    "pgrelay's certificate (PEM, chain allowed) towards clients; unset: clients cannot use "
	    "TLS."),
	GRP("tls", "key_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls.key_file, NULL,
	    "Private key of cert_file; must not be readable by group or others (0640 allowed when "
	    "root owns it)."),
	GRP("tls", "ca_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls.ca_file, NULL,
	    "CA certificates that sign client certificates (client_mode verify-ca / verify-full, "
	    "hba method cert); unset: no client certificate is asked for."),
	GRP("tls", "client_mode", KT_ENUM, 0, "prefer", 0, 0, tls.client_mode, tls_mode_names,
	    "TLS towards clients: disable answers SSLRequest with N; allow and prefer offer TLS "
	    "and accept plaintext; require refuses plaintext; verify-ca also wants a client "
	    "certificate from ca_file; verify-full also wants its CN to be the user name."),
	GRP("tls", "server_mode", KT_ENUM, 0, "prefer", 0, 0, tls.server_mode, tls_mode_names,
	    "TLS towards backends, health checks and catalog reads, with libpq's sslmode "
	    "meanings; allow connects in plaintext (pooled connections do not retry with TLS)."),
	GRP("tls", "server_ca_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls.server_ca_file,
	    NULL,
	    "CA file that verifies backend certificates (server_mode verify-ca / verify-full)."),
	GRP("tls", "server_cert_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0,
	    tls.server_cert_file, NULL,
	    "Client certificate pgrelay presents to backends; unset: none."),
	GRP("tls", "server_key_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, tls.server_key_file,
	    NULL, "Private key of server_cert_file."),
	GRP("tls", "min_protocol", KT_STRING, 0, "TLSv1.2", 0, 0, tls.min_protocol, NULL,
	    "Oldest TLS version accepted on both sides: TLSv1.2 or TLSv1.3."),
	GRP("tls", "ciphers", KT_STRING, 0, "HIGH:!aNULL", 0, 0, tls.ciphers, NULL,
	    "OpenSSL cipher list for TLS 1.2 on both sides (TLS 1.3 suites are OpenSSL's "
	    "defaults)."),

	GRP("http", "port", KT_INT, KF_RESTART, "0", 0, 65535, http.port, NULL,
	    "TCP port of the HTTP listener (health paths, /cluster, /metrics; doc/http.md); 0 "
	    "means no HTTP listener. 9998 is the port the examples use."),
	GRP("http", "listen_addresses", KT_STRING, KF_RESTART, "127.0.0.1", 0, 0,
	    http.listen_addresses, NULL,
	    "Comma-separated IP addresses the HTTP listener binds; \"*\" means all IPv4 and IPv6 "
	    "addresses."),
	GRP("http", "allow", KT_CIDRS, KF_RESTART, "127.0.0.1/32, ::1/128", 0, CIDR_LIST_MAX,
	    http.allow, NULL,
	    "Networks that may read /metrics and /cluster, a list of strings ( \"10.0.0.0/8\", "
	    "... ); others get 403. The health paths are open to every peer that can connect."),
	GRP("http", "max_connections", KT_INT, KF_RESTART, "256", 1, 10000, http.max_connections,
	    NULL, "Most HTTP connections open at once; further ones are closed at once."),
	GRP("http", "idle_timeout", KT_DURATION, KF_RESTART, "5s", 100, DUR_MAX,
	    http.idle_timeout_ms, NULL,
	    "An HTTP connection that does not finish its request (or send the next one) within "
	    "this time is closed."),

	GRP("auth", "users_file", KT_STRING, KF_REQUIRED, NULL, 0, 0, users_file, NULL,
	    "File of user:secret lines (secret: SCRAM-SHA-256 verifier, md5 hash or plain text); "
	    "relative to this file's folder."),
	GRP("auth", "hba_file", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, hba_file, NULL,
	    "Client authentication rules in pg_hba.conf syntax, relative to this file's folder; "
	    "unset: scram or md5 as users_file allows."),
	GRP("auth", "auth_user", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, auth_user, NULL,
	    "Role that runs auth_query for users not in users_file (set: auth_query is on); it "
	    "must be in users_file with its plain-text password."),
	GRP("auth", "auth_query", KT_STRING, 0, AUTH_QUERY_DEFAULT, 0, 0, auth_query, NULL,
	    "SQL run on the primary as auth_user with the user name as $1; returns at most one "
	    "row (name, secret); a NULL secret or no row fails like a wrong password."),
	GRP("auth", "auth_dbname", KT_STRING, KF_EMPTY_IS_NULL, NULL, 0, 0, auth_dbname, NULL,
	    "Database auth_query runs in; unset: the database the client asked for."),
	GRP("auth", "auth_query_cache", KT_DURATION, 0, "0", 0, DUR_MAX, auth_query_cache_ms, NULL,
	    "How long a secret auth_query fetched serves further logins of that user (counted "
	    "from the lookup, kept only after a successful login); 0 looks up at every login, as "
	    "PgBouncer."),

	{ "logging", "level", KT_ENUM, 0, "log", 0, 0, offsetof(struct config, log_level),
	  log_levels, parse_log_level,
	  "Lowest level written to stderr; -d on the command line forces debug." },

	GRP("pool", "mode", KT_ENUM, KF_RESTART, "session", 0, 0, pool.mode, pool_modes,
	    "When a server connection goes back to the pool: when the client leaves, after each "
	    "transaction, or after each statement."),
	GRP("pool", "max_client_conn", KT_INT, 0, "10000", 1, 1000000, pool.max_client_conn, NULL,
	    "Most client connections accepted at once; further ones are refused."),
	GRP("pool", "pool_size", KT_INT, 0, "20", 1, 100000, pool.pool_size, NULL,
	    "Most server connections per (database, user) pair on each node."),
	GRP("pool", "min_pool_size", KT_INT, 0, "0", 0, 100000, pool.min_pool_size, NULL,
	    "Server connections kept open per (database, user) pair on each node; at most "
	    "pool_size."),
	GRP("pool", "max_db_connections", KT_INT, 0, "0", 0, 1000000, pool.max_db_connections, NULL,
	    "Most server connections per database on each node; 0 means no limit."),
	GRP("pool", "max_user_connections", KT_INT, 0, "0", 0, 1000000, pool.max_user_connections,
	    NULL, "Most server connections per user on each node; 0 means no limit."),
	GRP("pool", "query_wait_timeout", KT_DURATION, 0, "120s", 0, DUR_MAX,
	    pool.query_wait_timeout_ms, NULL,
	    "Longest a client waits for a server connection before it gets an error; 0 waits "
	    "forever."),
	GRP("pool", "server_connect_timeout", KT_DURATION, 0, "5s", 1, DUR_MAX,
	    pool.server_connect_timeout_ms, NULL,
	    "Longest a connection attempt to a node (including its authentication) may take."),
	GRP("pool", "server_lifetime", KT_DURATION, 0, "1h", 0, DUR_MAX, pool.server_lifetime_ms,
	    NULL,
	    "A server connection older than this is closed when it is next idle; 0 means no "
	    "limit."),
	GRP("pool", "server_idle_timeout", KT_DURATION, 0, "10min", 0, DUR_MAX,
	    pool.server_idle_timeout_ms, NULL,
	    "A server connection idle in the pool this long is closed; 0 means never."),
	GRP("pool", "client_idle_timeout", KT_DURATION, 0, "0", 0, DUR_MAX,
	    pool.client_idle_timeout_ms, NULL,
	    "A client idle outside a transaction this long is disconnected; 0 means never."),
	GRP("pool", "idle_transaction_timeout", KT_DURATION, 0, "0", 0, DUR_MAX,
	    pool.idle_transaction_timeout_ms, NULL,
	    "A client idle inside a transaction this long is disconnected; 0 means never."),
	GRP("pool", "reset_query_list", KT_STRING, 0, "ABORT; DISCARD ALL", 0, 0,
	    pool.reset_query_list, NULL,
	    "SQL run on a server connection before another client gets it in session mode; \"\" "
	    "runs nothing."),
	GRP("pool", "connection_cache", KT_BOOL, 0, "true", 0, 0, pool.connection_cache, NULL,
	    "pgpool-II's connection_cache: false closes a session's backend connections when it "
	    "ends (session mode, and pinned sessions), so every session gets fresh backends."),

	GRP("health_check", "period", KT_DURATION, 0, "1s", 0, DUR_MAX, health_check.period_ms,
	    NULL, "Time between health checks of each node; 0 disables health checking."),
	GRP("health_check", "timeout", KT_DURATION, 0, "2s", 1, DUR_MAX, health_check.timeout_ms,
	    NULL, "Deadline of one check (connect and query)."),
	GRP("health_check", "max_retries", KT_INT, 0, "2", 0, 1000, health_check.max_retries, NULL,
	    "Retries of a check: the node is declared down when 1 + max_retries attempts of a "
	    "session failed."),
	GRP("health_check", "retry_delay", KT_DURATION, 0, "500ms", 0, DUR_MAX,
	    health_check.retry_delay_ms, NULL,
	    "Time between the starts of a session's attempts; a retry does not wait for the "
	    "earlier attempt to time out, so a frozen node is declared down after timeout + "
	    "max_retries x retry_delay."),
	GRP("health_check", "user", KT_STRING, 0, "postgres", 0, 0, health_check.user, NULL,
	    "Role the health check connects as."),
	GRP("health_check", "password", KT_STRING, KF_SECRET, "", 0, 0, health_check.password, NULL,
	    "Password of that role; \"\" sends none."),
	GRP("health_check", "database", KT_STRING, 0, "postgres", 0, 0, health_check.database, NULL,
	    "Database the health check connects to."),
	GRP("health_check", "rise", KT_INT, 0, "2", 1, 1000, health_check.rise, NULL,
	    "Consecutive successful checks before a failed node counts as healthy again."),

	GRP("load_balance", "enabled", KT_BOOL, 0, "true", 0, 0, load_balance.enabled, NULL,
	    "Send read-only statements to standbys (pgpool-II's load_balance_mode); false sends "
	    "everything to the primary."),
	GRP("load_balance", "statement_level", KT_BOOL, 0, "false", 0, 0,
	    load_balance.statement_level, NULL,
	    "Choose the read node per statement instead of once per session "
	    "(statement_level_load_balance)."),
	GRP("load_balance", "disable_load_balance_on_write", KT_ENUM, 0, "transaction", 0, 0,
	    load_balance.disable_on_write, lb_on_write,
	    "After a write: reads of the rest of the transaction go to the primary (transaction), "
	    "keep balancing (off), also later transactions (trans_transaction), or the rest of the "
	    "session (always)."),
	GRP("load_balance", "read_only_function_list", KT_STRING, 0, "", 0, 0,
	    load_balance.read_only_function_list, NULL,
	    "Comma-separated functions that never write, whatever their volatility (\"name\" or "
	    "\"schema.name\")."),
	GRP("load_balance", "write_function_list", KT_STRING, 0, "", 0, 0,
	    load_balance.write_function_list, NULL,
	    "Comma-separated functions that write: statements calling them go to the primary."),
	GRP("load_balance", "database_redirect_preference_list", KT_STRING, 0, "", 0, 0,
	    load_balance.database_redirect_preference_list, NULL,
	    "pgpool syntax \"database:node[(weight)],...\"; node is primary, standby or a node "
	    "id; the database is a POSIX regex matched whole."),
	GRP("load_balance", "app_name_redirect_preference_list", KT_STRING, 0, "", 0, 0,
	    load_balance.app_name_redirect_preference_list, NULL,
	    "Same syntax, by application_name; takes precedence over the database list."),
	GRP("load_balance", "user_redirect_preference_list", KT_STRING, 0, "", 0, 0,
	    load_balance.user_redirect_preference_list, NULL,
	    "Same syntax, by user; takes precedence over the application_name list."),
	GRP("load_balance", "primary_routing_query_pattern_list", KT_STRING, 0, "", 0, 0,
	    load_balance.primary_routing_query_pattern_list, NULL,
	    "';'-separated POSIX extended regexes (case-insensitive): statements matching one go "
	    "to the primary."),
	GRP("load_balance", "delay_threshold", KT_SIZE, 0, "0", 0, 4 * GB - 1,
	    load_balance.delay_threshold, NULL,
	    "A standby whose replay lags the primary by more than this many bytes gets no reads; "
	    "0 means no limit."),
	GRP("load_balance", "delay_threshold_by_time", KT_DURATION, 0, "0", 0, DUR_MAX,
	    load_balance.delay_threshold_by_time_ms, NULL,
	    "A standby whose replay delay exceeds this gets no reads; 0 means no limit."),
	GRP("load_balance", "prefer_lower_delay_standby", KT_BOOL, 0, "false", 0, 0,
	    load_balance.prefer_lower_delay_standby, NULL,
	    "When the session's read node lags beyond delay_threshold(_by_time), read from the "
	    "least lagging standby within them instead of the primary (pgpool-II's meaning)."),
	GRP("load_balance", "read_your_writes", KT_BOOL, 0, "true", 0, 0,
	    load_balance.read_your_writes, NULL,
	    "After a session wrote, its reads go to a standby only once that standby replayed "
	    "past the write; until then to the primary."),
	GRP("load_balance", "classify_cache_size", KT_INT, 0, "4096", 0, 1000000,
	    load_balance.classify_cache_size, NULL,
	    "Statement texts whose classification is kept per worker; 0 parses every statement."),

	GRP("watchdog", "enabled", KT_BOOL, KF_RESTART, "false", 0, 0, watchdog.enabled, NULL,
	    "Run as one member of a group of pgrelay instances that elect a leader in etcd, agree "
	    "on node failures and apply one cluster view (doc/watchdog.md)."),
	GRP("watchdog", "mode", KT_ENUM, KF_RESTART, "manage", 0, 0, watchdog.mode, watchdog_modes,
	    "\"manage\": the leader runs failover_command and the other commands; \"observe\": "
	    "follow an outside HA manager (find the new primary, move traffic), never run them."),
	GRP("watchdog", "endpoints", KT_CIDRS, KF_RESTART | KF_URL_LIST, "", 0, 16,
	    watchdog.endpoints, NULL,
	    "etcd v3 client URLs, a list of strings ( \"http://10.0.0.1:2379\", ... ); tried in "
	    "turn, the next one after a failure."),
	GRP("watchdog", "prefix", KT_STRING, KF_RESTART, "/pgrelay/main", 0, 0, watchdog.prefix,
	    NULL, "etcd key prefix naming this pgrelay cluster; every member uses the same one."),
	GRP("watchdog", "name", KT_STRING, KF_RESTART | KF_EMPTY_IS_NULL, NULL, 0, 0, watchdog.name,
	    NULL, "This instance's name, unique in the cluster; unset: the host name and port."),
	GRP("watchdog", "lease_ttl", KT_DURATION, KF_RESTART, "5s", 2 * MS_PER_S, 60 * MS_PER_S,
	    watchdog.lease_ttl_ms, NULL,
	    "etcd lease TTL of the leader and member keys; an instance that cannot reach etcd "
	    "this long stops taking writes (fencing)."),
	GRP("watchdog", "failover_require_consensus", KT_BOOL, KF_RESTART, "true", 0, 0,
	    watchdog.require_consensus, NULL,
	    "The leader fails a node over only when a majority of the live instances see it "
	    "down."),
	GRP("watchdog", "failover_when_quorum_exists", KT_BOOL, KF_RESTART, "true", 0, 0,
	    watchdog.when_quorum_exists, NULL,
	    "Fail over only while etcd has quorum (it holds the leader key); false is refused: "
	    "etcd is the quorum."),
	GRP("watchdog", "delegate_ip", KT_STRING, KF_RESTART | KF_EMPTY_IS_NULL, NULL, 0, 0,
	    watchdog.delegate_ip, NULL,
	    "Virtual IP held by the leader; replaces $_IP_$ in if_up_cmd, if_down_cmd and "
	    "arping_cmd."),
	GRP("watchdog", "if_up_cmd", KT_STRING, KF_RESTART | KF_EMPTY_IS_NULL, NULL, 0, 0,
	    watchdog.if_up_cmd, NULL, "Command run when this instance becomes the leader."),
	GRP("watchdog", "if_down_cmd", KT_STRING, KF_RESTART | KF_EMPTY_IS_NULL, NULL, 0, 0,
	    watchdog.if_down_cmd, NULL,
	    "Command run when this instance stops being the leader (before it gives up the "
	    "key)."),
	GRP("watchdog", "arping_cmd", KT_STRING, KF_RESTART | KF_EMPTY_IS_NULL, NULL, 0, 0,
	    watchdog.arping_cmd, NULL, "Command run after if_up_cmd succeeded."),
};

const size_t config_key_count = sizeof(config_keys) / sizeof(config_keys[0]);

/* Digits, optional blanks, a unit, optional blanks. Returns the unit's start in *unit. */
static bool parse_number_unit(const char *text, uint64_t *n, const char **unit)
{
	const char *p = text;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return false;
	uint64_t v = 0;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	while (*p == ' ' || *p == '\t')
		p++;
	*n = v;
	*unit = p;
	return true;
}

struct unit {
	const char *name;
	uint64_t mult;
};

static bool apply_unit(uint64_t n, const char *unit, const struct unit *units, uint64_t *out)
{
	size_t len = strlen(unit);
	while (len > 0 && (unit[len - 1] == ' ' || unit[len - 1] == '\t'))
		len--;
	for (const struct unit *u = units; u->name; u++) {
		if (strlen(u->name) == len && strncmp(unit, u->name, len) == 0) {
			if (u->mult && n > UINT64_MAX / u->mult)
				return false;
			*out = n * u->mult;
			return true;
		}
	}
	return false;
}

static const struct unit duration_units[] = {
	{ "", MS_PER_S },  { "ms", 1 },	      { "s", MS_PER_S }, { "min", MS_PER_MIN },
	{ "h", MS_PER_H }, { "d", MS_PER_D }, { NULL, 0 },
};
static const struct unit size_units[] = {
	{ "", 1 }, { "B", 1 }, { "kB", KB }, { "MB", MB }, { "GB", GB }, { NULL, 0 },
};

static bool parse_duration64(const char *text, uint64_t *ms)
{
	uint64_t n;
	const char *unit;
	return parse_number_unit(text, &n, &unit) && apply_unit(n, unit, duration_units, ms);
}

static bool parse_size64(const char *text, uint64_t *bytes)
{
	uint64_t n;
	const char *unit;
	return parse_number_unit(text, &n, &unit) && apply_unit(n, unit, size_units, bytes);
}

bool config_parse_duration(const char *text, uint32_t *ms_out)
{
	uint64_t ms;
	if (!text || !parse_duration64(text, &ms) || ms > UINT32_MAX)
		return false;
	*ms_out = (uint32_t)ms;
	return true;
}

bool config_parse_size(const char *text, uint64_t *bytes_out)
{
	uint64_t b;
	if (!text || !parse_size64(text, &b))
		return false;
	*bytes_out = b;
	return true;
}

/* Largest unit that divides the value exactly, so formatting and parsing round-trip. */
static void format_units(uint64_t v, const struct unit *units, const char *zero, char *buf,
			 size_t cap)
{
	if (v == 0) {
		snprintf(buf, cap, "%s", zero);
		return;
	}
	const struct unit *best = NULL;
	for (const struct unit *u = units; u->name; u++)
		if (u->name[0] && v % u->mult == 0 && (!best || u->mult > best->mult))
			best = u;
	snprintf(buf, cap, "%" PRIu64 "%s", v / best->mult, best->name);
}

void config_format_duration(uint64_t ms, char *buf, size_t cap)
{
	format_units(ms, duration_units, "0", buf, cap);
}

void config_format_size(uint64_t bytes, char *buf, size_t cap)
{
	format_units(bytes, size_units, "0", buf, cap);
}

static void *field(const struct key_def *k, void *base)
{
	return (char *)base + k->offset;
}

static const void *cfield(const struct key_def *k, const void *base)
{
	return (const char *)base + k->offset;
}

/* Formats a bound or a value of an integer-like key in its unit. */
static void format_int(const struct key_def *k, int64_t v, char *buf, size_t cap)
{
	if (k->type == KT_DURATION && v >= 0)
		config_format_duration((uint64_t)v, buf, cap);
	else if (k->type == KT_SIZE && v >= 0)
		config_format_size((uint64_t)v, buf, cap);
	else
		snprintf(buf, cap, "%" PRId64, v);
}

bool key_set_int(const struct key_def *k, void *base, int64_t v, char *why, size_t cap)
{
	if (k->type == KT_DOUBLE)
		return key_set_double(k, base, (double)v, why, cap);
	if (v < k->min || v > k->max) {
		char sv[32], lo[32], hi[32];
		format_int(k, v, sv, sizeof(sv));
		format_int(k, k->min, lo, sizeof(lo));
		format_int(k, k->max, hi, sizeof(hi));
		snprintf(why, cap, "%s is out of range (%s..%s)", sv, lo, hi);
		return false;
	}
	switch (k->type) {
	case KT_INT:
		*(int *)field(k, base) = (int)v;
		return true;
	case KT_DURATION:
	case KT_SIZE:
		*(uint32_t *)field(k, base) = (uint32_t)v;
		return true;
	default:
		snprintf(why, cap, "internal error: not an integer key");
		return false;
	}
}

bool key_set_double(const struct key_def *k, void *base, double v, char *why, size_t cap)
{
	if (k->type != KT_DOUBLE) {
		snprintf(why, cap, "internal error: not a float key");
		return false;
	}
	if (!isfinite(v) || v < (double)k->min || v > (double)k->max) {
		snprintf(why, cap, "%g is out of range (%" PRId64 "..%" PRId64 ")", v, k->min,
			 k->max);
		return false;
	}
	*(double *)field(k, base) = v;
	return true;
}

bool key_set_bool(const struct key_def *k, void *base, bool v, char *why, size_t cap)
{
	if (k->type != KT_BOOL) {
		snprintf(why, cap, "internal error: not a boolean key");
		return false;
	}
	*(bool *)field(k, base) = v;
	return true;
}

static void choices_text(const char *const *choices, char *buf, size_t cap)
{
	size_t len = 0;
	buf[0] = '\0';
	for (int i = 0; choices[i] && len < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", choices[i]);
}

static bool set_enum(const struct key_def *k, void *base, const char *text, char *why, size_t cap)
{
	int v = -1;
	if (k->parse_enum) {
		if (!k->parse_enum(text, &v))
			v = -1;
	} else {
		for (int i = 0; k->choices[i]; i++)
			if (strcasecmp(text, k->choices[i]) == 0)
				v = i;
	}
	if (v < 0) {
		char list[256];
		choices_text(k->choices, list, sizeof(list));
		snprintf(why, cap, "\"%s\" is not one of %s", text, list);
		return false;
	}
	*(int *)field(k, base) = v;
	return true;
}

/* Trims blanks in place at both ends of [*s, *e). */
static void trim(const char **s, const char **e)
{
	while (*s < *e && isspace((unsigned char)**s))
		(*s)++;
	while (*e > *s && isspace((unsigned char)(*e)[-1]))
		(*e)--;
}

static bool set_flags(const struct key_def *k, void *base, const char *text, char *why, size_t cap)
{
	unsigned flags = 0;
	bool allow = false;
	const char *p = text;
	for (;;) {
		const char *end = strchr(p, '|');
		const char *s = p, *e = end ? end : p + strlen(p);
		trim(&s, &e);
		size_t len = (size_t)(e - s);
		if (len == 0) {
			snprintf(why, cap, "\"%s\" has an empty flag; use %s joined with |", text,
				 "ALLOW_TO_FAILOVER, DISALLOW_TO_FAILOVER, ALWAYS_PRIMARY");
			return false;
		}
		if (len == 17 && strncasecmp(s, "ALLOW_TO_FAILOVER", len) == 0)
			allow = true;
		else if (len == 20 && strncasecmp(s, "DISALLOW_TO_FAILOVER", len) == 0)
			flags |= BACKEND_FLAG_DISALLOW_TO_FAILOVER;
		else if (len == 14 && strncasecmp(s, "ALWAYS_PRIMARY", len) == 0)
			flags |= BACKEND_FLAG_ALWAYS_PRIMARY;
		else {
			snprintf(why, cap,
				 "unknown flag \"%.*s\" (use ALLOW_TO_FAILOVER, "
				 "DISALLOW_TO_FAILOVER or ALWAYS_PRIMARY, joined with |)",
				 (int)len, s);
			return false;
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (allow && (flags & BACKEND_FLAG_DISALLOW_TO_FAILOVER)) {
		snprintf(why, cap,
			 "ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER contradict each other");
		return false;
	}
	*(unsigned *)field(k, base) = flags;
	return true;
}

static void free_addrs(struct config *cfg)
{
	for (int i = 0; i < cfg->n_listen; i++) {
		free(cfg->listen_addresses[i]);
		cfg->listen_addresses[i] = NULL;
	}
	cfg->n_listen = 0;
}

static bool set_addrs(struct config *cfg, const char *text, char *why, size_t cap)
{
	char *addr[CONFIG_MAX_LISTEN];
	int n = 0;
	bool star = false;
	const char *p = text;
	for (;;) {
		const char *end = strchr(p, ',');
		const char *s = p, *e = end ? end : p + strlen(p);
		trim(&s, &e);
		const char *problem = NULL;
		if (s == e)
			problem = "has an empty address";
		else if (n == CONFIG_MAX_LISTEN)
			problem = "has more than " STR(CONFIG_MAX_LISTEN) " addresses";
		else if (!(addr[n] = strndup(s, (size_t)(e - s))))
			problem = "could not be stored: out of memory";
		if (problem) {
			snprintf(why, cap, "\"%s\" %s", text, problem);
			while (n > 0)
				free(addr[--n]);
			return false;
		}
		star |= strcmp(addr[n], "*") == 0;
		n++;
		if (!end)
			break;
		p = end + 1;
	}
	if (star && n > 1) {
		snprintf(why, cap, "\"%s\": \"*\" already means every address; list it alone",
			 text);
		while (n > 0)
			free(addr[--n]);
		return false;
	}
	free_addrs(cfg);
	for (int i = 0; i < n; i++)
		cfg->listen_addresses[i] = addr[i];
	cfg->n_listen = n;
	return true;
}

/* Checks every entry with cidr.h, then stores the text as given (the HTTP module parses it). */
/* A comma-separated list of http:// or https:// URLs (watchdog.endpoints). */
static bool check_url_list(const char *text, char *why, size_t cap)
{
	const char *p = text;
	int n = 0;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, ", ");
		if ((strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0) ||
		    len > 200) {
			snprintf(why, cap, "\"%.*s\" is not an http:// or https:// URL",
				 (int)(len > 60 ? 60 : len), p);
			return false;
		}
		if (++n > 16) {
			snprintf(why, cap, "more than 16 URLs");
			return false;
		}
		p += len;
	}
	return true;
}

static bool set_cidrs(const struct key_def *k, void *base, const char *text, char *why, size_t cap)
{
	struct cidr_list l;
	if ((k->flags & KF_URL_LIST) ? !check_url_list(text, why, cap)
				     : !cidr_list_parse(text, &l, why, cap))
		return false;
	char *copy = strdup(text);
	if (!copy) {
		snprintf(why, cap, "out of memory");
		return false;
	}
	char **dst = field(k, base);
	free(*dst);
	*dst = copy;
	return true;
}

bool key_set_text(const struct key_def *k, void *base, const char *text, char *why, size_t cap)
{
	uint64_t u;
	char *end;
	switch (k->type) {
	case KT_INT: {
		errno = 0;
		long long v = strtoll(text, &end, 10);
		if (errno || end == text || *end) {
			snprintf(why, cap, "\"%s\" is not an integer", text);
			return false;
		}
		return key_set_int(k, base, v, why, cap);
	}
	case KT_DOUBLE: {
		errno = 0;
		double v = strtod(text, &end);
		if (errno || end == text || *end) {
			snprintf(why, cap, "\"%s\" is not a number", text);
			return false;
		}
		return key_set_double(k, base, v, why, cap);
	}
	case KT_BOOL:
		if (strcasecmp(text, "true") == 0 || strcasecmp(text, "on") == 0)
			return key_set_bool(k, base, true, why, cap);
		if (strcasecmp(text, "false") == 0 || strcasecmp(text, "off") == 0)
			return key_set_bool(k, base, false, why, cap);
		snprintf(why, cap, "\"%s\" is not true or false", text);
		return false;
	case KT_STRING: {
		char *copy = NULL;
		if (!(text[0] == '\0' && (k->flags & KF_EMPTY_IS_NULL)) && !(copy = strdup(text))) {
			snprintf(why, cap, "out of memory");
			return false;
		}
		char **dst = field(k, base);
		free(*dst);
		*dst = copy;
		return true;
	}
	case KT_DURATION:
		if (!parse_duration64(text, &u)) {
			snprintf(
				why, cap,
				"\"%s\" is not a duration (a whole number with ms, s, min, h or d; "
				"no unit means seconds)",
				text);
			return false;
		}
		return key_set_int(k, base, u > INT64_MAX ? INT64_MAX : (int64_t)u, why, cap);
	case KT_SIZE:
		if (!parse_size64(text, &u)) {
			snprintf(why, cap,
				 "\"%s\" is not a size (a whole number with B, kB, MB or GB; "
				 "no unit means bytes)",
				 text);
			return false;
		}
		return key_set_int(k, base, u > INT64_MAX ? INT64_MAX : (int64_t)u, why, cap);
	case KT_ENUM:
		return set_enum(k, base, text, why, cap);
	case KT_FLAGS:
		return set_flags(k, base, text, why, cap);
	case KT_ADDRLIST:
		return set_addrs(base, text, why, cap);
	case KT_CIDRS:
		return set_cidrs(k, base, text, why, cap);
	case KT_BACKENDS:
	case KT_LISTENERS:
		break;
	}
	snprintf(why, cap, "internal error: cannot set from text");
	return false;
}

void config_keys_set_defaults(void *base, unsigned backend_flag)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) != backend_flag || !k->def)
			continue;
		char why[256];
		bool ok = key_set_text(k, base, k->def, why, sizeof(why));
		assert(ok && "a default in config_keys[] does not parse");
		(void)ok;
	}
}

void config_keys_free(void *base, unsigned backend_flag)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) != backend_flag)
			continue;
		if (k->type == KT_STRING || k->type == KT_CIDRS) {
			char **s = field(k, base);
			free(*s);
			*s = NULL;
		} else if (k->type == KT_ADDRLIST) {
			free_addrs(base);
		}
	}
}

static bool str_equal(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool key_equal(const struct key_def *k, const void *a, const void *b)
{
	const void *fa = cfield(k, a), *fb = cfield(k, b);
	switch (k->type) {
	case KT_INT:
	case KT_ENUM:
		return *(const int *)fa == *(const int *)fb;
	case KT_DOUBLE:
		return *(const double *)fa == *(const double *)fb;
	case KT_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case KT_STRING:
	case KT_CIDRS:
		return str_equal(*(char *const *)fa, *(char *const *)fb);
	case KT_DURATION:
	case KT_SIZE:
		return *(const uint32_t *)fa == *(const uint32_t *)fb;
	case KT_FLAGS:
		return *(const unsigned *)fa == *(const unsigned *)fb;
	case KT_ADDRLIST: {
		const struct config *ca = a, *cb = b;
		if (ca->n_listen != cb->n_listen)
			return false;
		for (int i = 0; i < ca->n_listen; i++)
			if (!str_equal(ca->listen_addresses[i], cb->listen_addresses[i]))
				return false;
		return true;
	}
	case KT_BACKENDS: {
		const struct config *ca = a, *cb = b;
		if (ca->n_backends != cb->n_backends)
			return false;
		for (int i = 0; i < ca->n_backends; i++)
			for (size_t j = 0; j < config_key_count; j++)
				if ((config_keys[j].flags & KF_BACKEND) &&
				    !key_equal(&config_keys[j], &ca->backends[i], &cb->backends[i]))
					return false;
		return true;
	}
	case KT_LISTENERS: {
		const struct config *ca = a, *cb = b;
		if (ca->n_listeners != cb->n_listeners)
			return false;
		for (int i = 0; i < ca->n_listeners; i++)
			if (ca->listeners[i].port != cb->listeners[i].port ||
			    ca->listeners[i].role != cb->listeners[i].role)
				return false;
		return true;
	}
	}
	return false;
}

void key_format(const struct key_def *k, const void *base, char *buf, size_t cap)
{
	const void *f = cfield(k, base);
	buf[0] = '\0';
	switch (k->type) {
	case KT_INT:
		snprintf(buf, cap, "%d", *(const int *)f);
		break;
	case KT_DOUBLE:
		snprintf(buf, cap, "%g", *(const double *)f);
		break;
	case KT_BOOL:
		snprintf(buf, cap, "%s", *(const bool *)f ? "true" : "false");
		break;
	case KT_STRING:
	case KT_CIDRS:
		snprintf(buf, cap, "%s", *(char *const *)f ? *(char *const *)f : "");
		break;
	case KT_DURATION:
		config_format_duration(*(const uint32_t *)f, buf, cap);
		break;
	case KT_SIZE:
		config_format_size(*(const uint32_t *)f, buf, cap);
		break;
	case KT_ENUM: {
		int v = *(const int *)f;
		int n = 0;
		while (k->choices[n])
			n++;
		snprintf(buf, cap, "%s", v >= 0 && v < n ? k->choices[v] : "?");
		break;
	}
	case KT_FLAGS: {
		unsigned v = *(const unsigned *)f;
		snprintf(buf, cap, "%s%s%s",
			 (v & BACKEND_FLAG_ALWAYS_PRIMARY) ? "ALWAYS_PRIMARY" : "",
			 (v & BACKEND_FLAG_ALWAYS_PRIMARY) ? "|" : "",
			 (v & BACKEND_FLAG_DISALLOW_TO_FAILOVER) ? "DISALLOW_TO_FAILOVER"
								 : "ALLOW_TO_FAILOVER");
		break;
	}
	case KT_ADDRLIST: {
		const struct config *c = base;
		size_t len = 0;
		for (int i = 0; i < c->n_listen && len < cap; i++)
			len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? "," : "",
						c->listen_addresses[i]);
		break;
	}
	case KT_BACKENDS:
		snprintf(buf, cap, "%d", ((const struct config *)base)->n_backends);
		break;
	case KT_LISTENERS: {
		static const char *const roles[] = { "auto", "primary", "standby" };
		const struct config *c = base;
		size_t len = 0;
		buf[0] = 0;
		for (int i = 0; i < c->n_listeners && len < cap; i++)
			len += (size_t)snprintf(buf + len, cap - len, "%s%d:%s", i ? "," : "",
						c->listeners[i].port, roles[c->listeners[i].role]);
		break;
	}
	}
}

void key_path(const struct key_def *k, int backend_index, char *buf, size_t cap)
{
	if (k->flags & KF_BACKEND) {
		if (backend_index >= 0)
			snprintf(buf, cap, "backends[%d].%s", backend_index, k->name);
		else
			snprintf(buf, cap, "backends[].%s", k->name);
	} else if (k->group[0]) {
		snprintf(buf, cap, "%s.%s", k->group, k->name);
	} else {
		snprintf(buf, cap, "%s", k->name);
	}
}

void config_foreach_value(const struct config *cfg,
			  void (*fn)(void *arg, const char *key, const char *value,
				     bool reloadable),
			  void *arg)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) || k->type == KT_BACKENDS)
			continue;
		char path[128], value[1024];
		key_path(k, -1, path, sizeof(path));
		key_format(k, cfg, value, sizeof(value));
		if ((k->flags & KF_SECRET) && value[0])
			snprintf(value, sizeof(value), "********");
		fn(arg, path, value, !(k->flags & KF_RESTART));
	}
}

void config_foreach_setting(const struct config *cfg,
			    void (*fn)(void *arg, const char *key, const char *value,
				       const char *def, bool reloadable),
			    void *arg)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) || k->type == KT_BACKENDS)
			continue;
		char path[128], value[1024];
		key_path(k, -1, path, sizeof(path));
		key_format(k, cfg, value, sizeof(value));
		if ((k->flags & KF_SECRET) && value[0])
			snprintf(value, sizeof(value), "********");
		fn(arg, path, value, k->def ? k->def : "", !(k->flags & KF_RESTART));
	}
}

static const char *type_name(enum key_type t)
{
	switch (t) {
	case KT_INT:
		return "int";
	case KT_DOUBLE:
		return "float";
	case KT_BOOL:
		return "bool";
	case KT_STRING:
	case KT_ADDRLIST:
	case KT_FLAGS:
		return "string";
	case KT_DURATION:
		return "duration";
	case KT_SIZE:
		return "size";
	case KT_ENUM:
		return "enum";
	case KT_BACKENDS:
	case KT_LISTENERS:
	case KT_CIDRS:
		return "list";
	}
	return "?";
}

/* Writes s into a Markdown table cell: '|' must be escaped. */
static void md_cell(FILE *out, const char *s)
{
	fputs(" ", out);
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputs(" |", out);
}

static void range_text(const struct key_def *k, char *buf, size_t cap)
{
	char lo[32], hi[32];
	buf[0] = '\0';
	switch (k->type) {
	case KT_INT:
	case KT_DOUBLE:
	case KT_DURATION:
	case KT_SIZE:
		format_int(k, k->min, lo, sizeof(lo));
		format_int(k, k->max, hi, sizeof(hi));
		snprintf(buf, cap, "%s .. %s", lo, hi);
		break;
	case KT_ENUM:
	case KT_FLAGS:
		choices_text(k->choices, buf, cap);
		break;
	case KT_ADDRLIST:
		snprintf(buf, cap, "%" PRId64 " .. %" PRId64 " addresses", k->min, k->max);
		break;
	case KT_BACKENDS:
	case KT_LISTENERS:
	case KT_CIDRS:
		snprintf(buf, cap, "%" PRId64 " .. %" PRId64 " entries", k->min, k->max);
		break;
	case KT_BOOL:
	case KT_STRING:
		break;
	}
}

void config_write_reference(FILE *out)
{
	fputs("# Configuration reference\n"
	      "\n"
	      "<!-- Generated from the key table in src/conf/config_keys.c by "
	      "config_write_reference();\n"
	      "     tests/unit/test_config.c fails when this file and the table disagree. -->\n"
	      "\n"
	      "pgrelay reads one file in [libconfig](https://hyperrealm.github.io/libconfig/) "
	      "syntax (`pgrelay -f FILE`;\n"
	      "`pgrelay -t` checks it and prints every problem as `FILE:LINE: message`). A sample "
	      "with every key is\n"
	      "`conf/pgrelay.conf`.\n"
	      "\n"
	      "- Top-level keys are written `name = value;`, grouped keys inside their group, "
	      "`pool = { mode = \"transaction\"; };`.\n"
	      "  `backends` is a list of groups, one per PostgreSQL node; node ids count from 0 in "
	      "list order.\n"
	      "- **Durations** are strings with a unit: `\"500ms\"`, `\"3s\"`, `\"2min\"`, "
	      "`\"1h\"`, `\"1d\"`. A bare integer\n"
	      "  (`timeout = 2;` or `\"2\"`) means **seconds**, as in pgpool-II. Whole numbers "
	      "only.\n"
	      "- **Sizes** are strings with a unit: `\"512B\"`, `\"64kB\"`, `\"16MB\"`, `\"1GB\"` "
	      "(1024-based, as in PostgreSQL; the\n"
	      "  units are case-sensitive). A bare integer means bytes.\n"
	      "- Relative paths (`auth.users_file`, `auth.hba_file`, the `tls` files) are resolved "
	      "against the folder of the configuration file.\n"
	      "- Unknown keys are errors, at every level, with a \"did you mean\" hint.\n"
	      "- *Reload* `yes`: SIGHUP applies a change. `restart`: the change is logged and "
	      "waits "
	      "for a restart; for\n"
	      "  `backends` this means any change to the list or to an entry.\n"
	      "\n"
	      "| Group | Key | Type | Default | Range | Reload | Description |\n"
	      "|---|---|---|---|---|---|---|\n",
	      out);
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		char group[64], name[128], def[512], range[256];
		if (k->flags & KF_BACKEND)
			snprintf(group, sizeof(group), "backends[]");
		else
			snprintf(group, sizeof(group), "%s", k->group[0] ? k->group : "(top)");
		snprintf(name, sizeof(name), "`%s`", k->name);
		if (k->flags & KF_REQUIRED)
			snprintf(def, sizeof(def), "(required)");
		else if (!k->def)
			snprintf(def, sizeof(def), "(unset)");
		else if (k->type == KT_INT || k->type == KT_DOUBLE || k->type == KT_BOOL)
			snprintf(def, sizeof(def), "`%s`", k->def);
		else
			snprintf(def, sizeof(def), "`\"%s\"`", k->def);
		range_text(k, range, sizeof(range));
		fputs("|", out);
		md_cell(out, group);
		md_cell(out, name);
		md_cell(out, type_name(k->type));
		md_cell(out, def);
		md_cell(out, range);
		md_cell(out, (k->flags & KF_RESTART) ? "restart" : "yes");
		md_cell(out, k->desc);
		fputs("\n", out);
	}
}
