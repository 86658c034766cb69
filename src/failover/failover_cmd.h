/*
 * Failover, follow-primary and failback commands: pgpool-II's placeholder expansion (pure) and a
 * non-blocking runner for one command at a time.
 *
 * The runner starts `/bin/sh -c COMMAND` with posix_spawn in a process group of its own, stdin
 * from /dev/null, stdout and stderr into one pipe, the PGRELAY_* variables added to the
 * environment. The caller polls the pipe (cmd_pollfd) and calls cmd_step(): it reads the output
 * (the last CLUSTER_OUTPUT_MAX bytes are kept, complete lines are logged), reaps the shell with
 * waitpid(WNOHANG) and, at the timeout, sends SIGTERM to the whole group, then SIGKILL 2 s later.
 * Nothing here waits: the manager's probes keep running while a command does.
 */
#ifndef PGRELAY_FAILOVER_FAILOVER_CMD_H
#define PGRELAY_FAILOVER_FAILOVER_CMD_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "failover/cluster.h"

#define CMD_KILL_GRACE_MS 2000 /* SIGTERM to SIGKILL */
#define CMD_ENV_VARS	  12

/* The values of one command's placeholders. Ids are -1 and strings NULL for "no such node". */
struct cmd_vars {
	int failed_id;		      /* %d */
	const char *failed_host;      /* %h */
	int failed_port;	      /* %p */
	const char *failed_dir;	      /* %D */
	int new_main_id;	      /* %m */
	const char *new_main_host;    /* %H */
	int new_main_port;	      /* %r */
	const char *new_main_dir;     /* %R */
	int old_main_id;	      /* %M */
	int old_primary_id;	      /* %P */
	const char *old_primary_host; /* %N */
	int old_primary_port;	      /* %S */
};

/*
 * Expands pgpool-II's placeholders in tmpl into out (cap bytes, NUL included). Values are
 * inserted verbatim (not shell-quoted), as pgpool does; a missing node gives "-1" for its id and
 * "" for its host, port and directory. "%%" is a literal %, an unknown %x is dropped (pgpool).
 * Returns false if out was too small (out then holds a truncated string).
 */
bool cmd_expand(const char *tmpl, const struct cmd_vars *v, char *out, size_t cap)
	__attribute__((warn_unused_result));

/*
 * Fills env[] with the CMD_ENV_VARS "PGRELAY_...=value" strings of v (each in its own slot of
 * buf, slot_cap bytes). Order: FAILED_NODE_ID, FAILED_HOST, FAILED_PORT, FAILED_DATA_DIR,
 * NEW_MAIN_NODE_ID, NEW_MAIN_HOST, NEW_MAIN_PORT, NEW_MAIN_DATA_DIR, OLD_MAIN_NODE_ID,
 * OLD_PRIMARY_NODE_ID, OLD_PRIMARY_HOST, OLD_PRIMARY_PORT.
 */
void cmd_build_env(const struct cmd_vars *v, char (*buf)[CLUSTER_COMMAND_MAX], char **env);

/* One running command. Zero it before first use. */
struct cmd_run {
	bool running;	     /* between cmd_start and the end reported by cmd_step */
	pid_t pid;	     /* the shell; also the process group id */
	int out_fd;	     /* nonblocking read end of the output pipe, -1 when closed */
	uint64_t started_at; /* monotonic ms */
	uint64_t deadline;   /* monotonic ms: SIGTERM to the group */
	bool term_sent, kill_sent;
	bool timed_out;
	int exit_status;	       /* exit code, 128 + signal, -1 if it could not start */
	uint32_t duration_ms;	       /* set when it ended */
	char tail[CLUSTER_OUTPUT_MAX]; /* the last bytes of output, NUL-terminated */
	size_t tail_len;
	char line[256]; /* the partial line being assembled for the log */
	size_t line_len;
	unsigned lines_logged;
	char label[48]; /* "failover_command", ... for the log */
};

/*
 * Starts cmdline under /bin/sh -c with extra_env appended to the environment. False (logged,
 * r->exit_status = -1) if it could not start.
 */
bool cmd_start(struct cmd_run *r, const char *label, const char *cmdline, char *const *extra_env,
	       int n_extra, uint32_t timeout_ms, uint64_t now_ms)
	__attribute__((warn_unused_result));
/* The pipe to poll for input; false when there is none (then poll with a short timeout). */
bool cmd_pollfd(const struct cmd_run *r, struct pollfd *pfd);
/* Milliseconds until cmd_step must run again at the latest (reap, timeout, kill). */
int cmd_next_ms(const struct cmd_run *r, uint64_t now_ms);
/* Reads output, reaps, enforces the timeout. True once the command ended (fields final). */
bool cmd_step(struct cmd_run *r, uint64_t now_ms);
/* The last non-empty line of the output (into out), "" if none. */
void cmd_last_line(const struct cmd_run *r, char *out, size_t cap);
/* Kills the whole group with SIGKILL and reaps the shell (bounded: SIGKILL cannot be ignored). */
void cmd_abort(struct cmd_run *r);

#endif
