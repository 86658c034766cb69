/*
 * Configuration: loaded from a libconfig file into a new, immutable struct config, validated, then
 * swapped in whole (reload keeps the old one on any error). Every key lives in one table in
 * config_keys.c (name, type, default, bounds, unit, reloadable), which parsing, defaults,
 * validation and doc/configuration.md follow. Unknown keys are errors with a "did you mean" hint.
 * All strings are owned copies (libconfig's die with its config_t).
 */
#ifndef PGRELAY_CONF_CONFIG_H
#define PGRELAY_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "auth/hba.h"
#include "auth/users.h"
#include "net/tls_ctx.h"

#define CONFIG_MAX_BACKENDS  64
#define CONFIG_MAX_LISTEN    16
#define CONFIG_MAX_LISTENERS 8

/* Per-backend flag bits (pgpool-II's backend_flag). */
#define BACKEND_FLAG_DISALLOW_TO_FAILOVER 0x1u
#define BACKEND_FLAG_ALWAYS_PRIMARY	  0x2u

struct backend_conf {
	char *host;		/* owned */
	int port;		/* 1..65535 */
	double weight;		/* >= 0, default 1.0 */
	char *data_directory;	/* owned, may be "" */
	char *application_name; /* owned, may be "" */
	unsigned flags;		/* BACKEND_FLAG_* */
	int tls_mode;		/* 0: tls.server_mode, else 1 + enum tls_mode */
	char *tls_ca_file;	/* owned or NULL: tls.server_ca_file */
	int line;		/* line of the entry in the file, for messages */
};

/* The `tls` group: pgrelay's certificate towards clients, and how it talks to backends. */
struct tls_conf {
	char *cert_file, *key_file; /* owned or NULL; both or neither */
	char *ca_file;		    /* owned or NULL: CA of client certificates */
	int client_mode;	    /* enum tls_mode towards clients; default prefer */
	int server_mode;	    /* enum tls_mode towards backends; default prefer */
	char *server_ca_file;	    /* owned or NULL */
	char *server_cert_file, *server_key_file; /* owned or NULL: our certificate to backends */
	char *min_protocol;			  /* owned; default "TLSv1.2" */
	char *ciphers;				  /* owned; default "HIGH:!aNULL" */
};

struct health_check_conf {
	uint32_t period_ms;	 /* default 1s; 0 disables */
	uint32_t timeout_ms;	 /* default 2s */
	int max_retries;	 /* default 2 */
	uint32_t retry_delay_ms; /* default 500ms */
	char *user;		 /* owned; default "postgres" */
	char *password;		 /* owned; default "" */
	char *database;		 /* owned; default "postgres" */
	int rise;		 /* successful checks before a failed node counts as healthy */
};

/* The `http` group: health paths, /cluster and /metrics (doc/http.md). */
struct http_conf {
	int port;		/* 0 (default): no HTTP listener */
	char *listen_addresses; /* owned; comma-separated, default "127.0.0.1" */
	char *allow;		/* owned; canonical comma-separated CIDRs for /metrics, /cluster */
	int max_connections;	/* HTTP connections open at once; beyond, new ones are closed */
	uint32_t idle_timeout_ms; /* a connection silent (or slow) this long is closed */
};

/* watchdog.mode: run failover commands as the elected leader, or only follow an outside HA manager.
 */
enum watchdog_mode { WATCHDOG_MODE_MANAGE, WATCHDOG_MODE_OBSERVE };

/* The `watchdog` group: several pgrelay instances as one logical proxy (doc/watchdog.md). */
struct watchdog_conf {
	bool enabled;		 /* default false */
	int mode;		 /* enum watchdog_mode; default manage */
	char *endpoints;	 /* owned; comma-separated etcd v3 URLs, "" when unset */
	char *prefix;		 /* owned; key prefix naming this pgrelay cluster */
	char *name;		 /* owned or NULL; this instance's name (unique in the cluster) */
	uint32_t lease_ttl_ms;	 /* etcd lease TTL; default 5s */
	bool require_consensus;	 /* failover_require_consensus; default true */
	bool when_quorum_exists; /* failover_when_quorum_exists; default true */
	char *delegate_ip;	 /* owned or NULL: the virtual IP the leader holds */
	char *if_up_cmd;	 /* owned or NULL; $_IP_$ is replaced by delegate_ip */
	char *if_down_cmd;	 /* owned or NULL */
	char *arping_cmd;	 /* owned or NULL */
};

enum pool_mode { POOL_MODE_SESSION, POOL_MODE_TRANSACTION, POOL_MODE_STATEMENT };

struct pool_conf {
	enum pool_mode mode;		      /* "session" (default), "transaction", "statement" */
	int max_client_conn;		      /* default 10000 */
	int pool_size;			      /* default 20 */
	int min_pool_size;		      /* default 0 */
	int max_db_connections;		      /* default 0 = unlimited */
	int max_user_connections;	      /* default 0 = unlimited */
	uint32_t query_wait_timeout_ms;	      /* default 120s */
	uint32_t server_connect_timeout_ms;   /* default 5s */
	uint32_t server_lifetime_ms;	      /* default 1h */
	uint32_t server_idle_timeout_ms;      /* default 10min */
	uint32_t client_idle_timeout_ms;      /* default 0 = off */
	uint32_t idle_transaction_timeout_ms; /* default 0 = off */
	char *reset_query_list;		      /* owned; default "ABORT; DISCARD ALL" */
	bool connection_cache;		      /* default true: session-mode backends are reused */
};

/* pgpool-II's disable_load_balance_on_write. */
enum lb_on_write {
	LB_ON_WRITE_TRANSACTION,       /* after a write, the rest of the transaction: primary */
	LB_ON_WRITE_OFF,	       /* keep balancing reads after writes */
	LB_ON_WRITE_TRANS_TRANSACTION, /* also later transactions of the session: primary */
	LB_ON_WRITE_ALWAYS,	       /* after a write, the rest of the session: primary */
};

struct load_balance_conf {
	bool enabled;		       /* pgpool's load_balance_mode; default true */
	bool statement_level;	       /* choose a read node per statement; default false */
	int disable_on_write;	       /* enum lb_on_write; default transaction */
	char *read_only_function_list; /* owned; comma-separated names, "" none */
	char *write_function_list;     /* owned; comma-separated names, "" none */
	char *database_redirect_preference_list;  /* owned; pgpool syntax "db:node(weight),..." */
	char *app_name_redirect_preference_list;  /* owned; same syntax, by application_name */
	char *user_redirect_preference_list;	  /* owned; same syntax, by user */
	char *primary_routing_query_pattern_list; /* owned; ';'-separated POSIX regexes */
	uint32_t delay_threshold;		  /* bytes of replay lag; 0 = no limit */
	uint32_t delay_threshold_by_time_ms;	  /* replay delay; 0 = no limit */
	bool prefer_lower_delay_standby;	  /* pick the least lagging standby */
	bool read_your_writes;			  /* default true */
	int classify_cache_size;		  /* statements kept classified per worker */
};

/* Where the sessions of a listeners entry go. */
enum listener_role { LISTEN_ROLE_AUTO, LISTEN_ROLE_PRIMARY, LISTEN_ROLE_STANDBY };

struct listener_conf {
	int port; /* 1..65535, on every listen_addresses entry */
	int role; /* enum listener_role */
	int line; /* for messages */
};

struct config {
	char *path;				   /* owned: the file this came from */
	char *listen_addresses[CONFIG_MAX_LISTEN]; /* owned; from "a,b,c"; "*" means all IPv4+IPv6
						    */
	int n_listen;
	int port; /* default 9999 */
	struct backend_conf backends[CONFIG_MAX_BACKENDS];
	int n_backends; /* >= 1 */

	char *users_file;	/* owned; resolved relative to the config file's folder */
	char *hba_file;		/* owned or NULL */
	struct userlist *users; /* owned; loaded from users_file */
	struct hba *hba;	/* owned or NULL */
	/* auth_query (doc/auth.md): on when auth_user is set. */
	char *auth_user;	      /* owned or NULL; in users, with a plain-text secret */
	char *auth_query;	      /* owned; default AUTH_QUERY_DEFAULT */
	char *auth_dbname;	      /* owned or NULL: the client's database */
	uint32_t auth_query_cache_ms; /* TTL of a fetched secret; default 0 = no cache */

	uint32_t authentication_timeout_ms; /* login timeout, default 60s (pgpool's name) */
	uint32_t max_message_size;    /* bytes, default 64MB; largest client message accepted */
	uint32_t shutdown_timeout_ms; /* smart shutdown waits this long, default 30s */
	int log_level;		      /* enum log_level; logging.level, default "log" */

	struct pool_conf pool;
	struct health_check_conf health_check;
	struct load_balance_conf load_balance;
	struct tls_conf tls;
	struct http_conf http;
	struct watchdog_conf watchdog;
	/* Built from tls at load (owned): the client-facing context when clients may use TLS,
	 * and one backend-facing context per backend whose mode is not disable. */
	struct tls_server_ctx tls_clients;
	SSL_CTX *tls_backends[CONFIG_MAX_BACKENDS];
	struct listener_conf listeners[CONFIG_MAX_LISTENERS]; /* extra role-pinned ports */
	int n_listeners;

	char *failover_command;			 /* owned or NULL */
	char *follow_primary_command;		 /* owned or NULL */
	char *failback_command;			 /* owned or NULL */
	uint32_t failover_command_timeout_ms;	 /* default 60s */
	uint32_t search_primary_node_timeout_ms; /* default 5min */
	char *recovery_1st_stage_command;	 /* owned or NULL: PGRELAY RECOVER NODE */
	char *recovery_remote_start_command;	 /* owned or NULL */
	uint32_t recovery_timeout_ms;		 /* default 5min: the whole recovery */
	char *admin_users;			 /* owned; comma-separated, default "postgres" */
	char *stats_users;			 /* owned or NULL; comma-separated, SHOW pool_* */
	uint32_t stats_period_ms;	    /* averages of the pgbouncer console, default 60s */
	bool failover_on_backend_error;	    /* a broken backend socket triggers a check */
	bool detach_false_primary;	    /* default true */
	bool auto_failback;		    /* default false */
	uint32_t auto_failback_interval_ms; /* default 1min */
};

/*
 * Loads and validates path. On success returns a new config. On failure returns NULL and writes
 * one "FILE:LINE: message" line per problem into err (newline-separated, truncated to errcap).
 * Relative paths inside the file (users_file, hba_file) are resolved against the file's folder.
 * Lines read "FILE:LINE: key.path: message" (key paths like "pool.mode", "backends[1].port"); a
 * missing required key is reported at the line of its enclosing group, or line 1 at top level;
 * users_load/hba_load lines are passed through unchanged. err may be NULL when errcap is 0.
 */
struct config *config_load(const char *path, char *err, size_t errcap);
void config_free(struct config *cfg);

/*
 * Names of keys whose change needs a restart and differ between a and b, in table order,
 * separated by ", " ("port, pool.mode"); "" when none. "backends" stands for any change to the
 * list or to one of its entries.
 */
void config_diff_restart_keys(const struct config *a, const struct config *b, char *out,
			      size_t cap);

/* Parses "500ms", "3s", "2min", "1h", "1d" or a bare number of seconds. */
bool config_parse_duration(const char *text, uint32_t *ms_out) __attribute__((warn_unused_result));
/* Parses "64kB", "16MB", "1GB" or a bare number of bytes. */
bool config_parse_size(const char *text, uint64_t *bytes_out) __attribute__((warn_unused_result));

/* The TLS mode and CA file towards backend i (its own, else the tls group's). */
enum tls_mode config_backend_tls_mode(const struct config *cfg, int i);
const char *config_backend_tls_ca(const struct config *cfg, int i);
/* libpq's TLS parameters for backend i (pointers into cfg). */
void config_backend_libpq_tls(const struct config *cfg, int i, struct libpq_tls *out);

/* Index of the backend that takes writes for now: the ALWAYS_PRIMARY one, else 0. */
int config_primary_backend(const struct config *cfg);

/*
 * Writes the Markdown reference of every key (group, name, type, default, range, reload,
 * description) with a short introduction on units; doc/configuration.md is its output.
 */
void config_write_reference(FILE *out);

/*
 * Calls fn once per key except the backends list, in table order, with the key's full name
 * ("pool.mode"), its value as a user would write it (durations "5s", sizes "64MB", unset strings
 * "", secrets "********") and whether SIGHUP applies a change. For SHOW config.
 */
void config_foreach_value(const struct config *cfg,
			  void (*fn)(void *arg, const char *key, const char *value,
				     bool reloadable),
			  void *arg);
/* The same with each key's default as written in the table ("" when it has none). */
void config_foreach_setting(const struct config *cfg,
			    void (*fn)(void *arg, const char *key, const char *value,
				       const char *def, bool reloadable),
			    void *arg);

#endif
