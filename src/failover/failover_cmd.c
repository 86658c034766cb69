/*
 * Placeholder expansion and the non-blocking command runner (see failover_cmd.h).
 *
 * Invariants: while r->running, r->pid is our child and the leader of its own process group;
 * nothing here blocks except cmd_abort's waitpid after SIGKILL. The shell is reaped with
 * waitpid(pid, WNOHANG) on that pid only, so other children of the process (libuv's) are never
 * touched. Output after the shell exited is not waited for: a background process of the script
 * may hold the pipe open for ever.
 */
#include "failover/failover_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/log.h"

#define COMPONENT     "failover"
#define REAP_TICK_MS  20  /* how often a running shell is polled with waitpid(WNOHANG) */
#define MAX_LOG_LINES 200 /* output lines logged per command (the tail is kept anyway) */

extern char **environ;

/* ----------------------------------------------------------------------------------------------
 * Expansion (pure).
 */

struct outbuf {
	char *p;
	size_t cap, len;
	bool overflow;
};

static void put(struct outbuf *o, const char *s)
{
	size_t n = strlen(s);

	if (o->len + n >= o->cap) {
		n = o->cap - 1 - o->len;
		o->overflow = true;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void put_int(struct outbuf *o, int v)
{
	char b[16];

	snprintf(b, sizeof(b), "%d", v);
	put(o, b);
}

/* A node's port: "" when the node does not exist (id < 0). */
static void put_port(struct outbuf *o, int id, int port)
{
	if (id >= 0)
		put_int(o, port);
}

static void put_str(struct outbuf *o, int id, const char *s)
{
	if (id >= 0 && s != NULL)
		put(o, s);
}

bool cmd_expand(const char *tmpl, const struct cmd_vars *v, char *out, size_t cap)
{
	struct outbuf o = { out, cap, 0, false };
	char one[2] = { 0, 0 };

	if (cap == 0)
		return false;
	out[0] = '\0';
	for (const char *s = tmpl; *s != '\0'; s++) {
		if (*s != '%') {
			one[0] = *s;
			put(&o, one);
			continue;
		}
		s++;
		switch (*s) {
		case 'd':
			put_int(&o, v->failed_id);
			break;
		case 'h':
			put_str(&o, v->failed_id, v->failed_host);
			break;
		case 'p':
			put_port(&o, v->failed_id, v->failed_port);
			break;
		case 'D':
			put_str(&o, v->failed_id, v->failed_dir);
			break;
		case 'm':
			put_int(&o, v->new_main_id);
			break;
		case 'H':
			put_str(&o, v->new_main_id, v->new_main_host);
			break;
		case 'r':
			put_port(&o, v->new_main_id, v->new_main_port);
			break;
		case 'R':
			put_str(&o, v->new_main_id, v->new_main_dir);
			break;
		case 'M':
			put_int(&o, v->old_main_id);
			break;
		case 'P':
			put_int(&o, v->old_primary_id);
			break;
		case 'N':
			put_str(&o, v->old_primary_id, v->old_primary_host);
			break;
		case 'S':
			put_port(&o, v->old_primary_id, v->old_primary_port);
			break;
		case '%':
			put(&o, "%");
			break;
		case '\0':
			s--; /* a trailing lone % is dropped */
			break;
		default:
			break; /* unknown placeholder: dropped, as pgpool does */
		}
	}
	return !o.overflow;
}

void cmd_build_env(const struct cmd_vars *v, char (*buf)[CLUSTER_COMMAND_MAX], char **env)
{
	static const char *const names[CMD_ENV_VARS] = {
		"PGRELAY_FAILED_NODE_ID",   "PGRELAY_FAILED_HOST",
		"PGRELAY_FAILED_PORT",	    "PGRELAY_FAILED_DATA_DIR",
		"PGRELAY_NEW_MAIN_NODE_ID", "PGRELAY_NEW_MAIN_HOST",
		"PGRELAY_NEW_MAIN_PORT",    "PGRELAY_NEW_MAIN_DATA_DIR",
		"PGRELAY_OLD_MAIN_NODE_ID", "PGRELAY_OLD_PRIMARY_NODE_ID",
		"PGRELAY_OLD_PRIMARY_HOST", "PGRELAY_OLD_PRIMARY_PORT",
	};
	/* The same letters, in the same order, through the same expansion. */
	static const char *const letters[CMD_ENV_VARS] = {
		"%d", "%h", "%p", "%D", "%m", "%H", "%r", "%R", "%M", "%P", "%N", "%S",
	};

	for (int i = 0; i < CMD_ENV_VARS; i++) {
		size_t n = (size_t)snprintf(buf[i], CLUSTER_COMMAND_MAX, "%s=", names[i]);

		if (!cmd_expand(letters[i], v, buf[i] + n, CLUSTER_COMMAND_MAX - n))
			log_warning(COMPONENT, 0, "%s truncated", names[i]);
		env[i] = buf[i];
	}
}

/* ----------------------------------------------------------------------------------------------
 * The runner.
 */

static void close_out(struct cmd_run *r)
{
	if (r->out_fd >= 0) {
		close(r->out_fd);
		r->out_fd = -1;
	}
}

/* Appends bytes to the tail (the last CLUSTER_OUTPUT_MAX - 1 bytes) and logs complete lines. */
static void take_output(struct cmd_run *r, const char *b, size_t n)
{
	size_t keep = sizeof(r->tail) - 1;

	if (n >= keep) {
		memcpy(r->tail, b + n - keep, keep);
		r->tail_len = keep;
	} else {
		if (r->tail_len + n > keep) {
			size_t drop = r->tail_len + n - keep;

			memmove(r->tail, r->tail + drop, r->tail_len - drop);
			r->tail_len -= drop;
		}
		memcpy(r->tail + r->tail_len, b, n);
		r->tail_len += n;
	}
	r->tail[r->tail_len] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (b[i] == '\n' || r->line_len == sizeof(r->line) - 1) {
			r->line[r->line_len] = '\0';
			if (r->lines_logged++ < MAX_LOG_LINES)
				log_info(COMPONENT, 0, "%s: %s", r->label, r->line);
			r->line_len = 0;
			if (b[i] == '\n')
				continue;
		}
		r->line[r->line_len++] = b[i] == '\r' || b[i] == '\t' ? ' ' : b[i];
	}
}

static void read_output(struct cmd_run *r)
{
	char b[4096];

	while (r->out_fd >= 0) {
		ssize_t n = read(r->out_fd, b, sizeof(b));

		if (n > 0) {
			take_output(r, b, (size_t)n);
			continue;
		}
		if (n == 0 || (errno != EINTR && errno != EAGAIN))
			close_out(r);
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
}

bool cmd_start(struct cmd_run *r, const char *label, const char *cmdline, char *const *extra_env,
	       int n_extra, uint32_t timeout_ms, uint64_t now_ms)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	char *argv[] = { "sh", "-c", (char *)cmdline, NULL };
	char **envp;
	size_t n_env = 0;
	int fds[2], rc;

	memset(r, 0, sizeof(*r));
	r->out_fd = -1;
	r->exit_status = -1;
	r->started_at = now_ms;
	snprintf(r->label, sizeof(r->label), "%s", label);
	while (environ != NULL && environ[n_env] != NULL)
		n_env++;
	envp = calloc(n_env + (size_t)n_extra + 1, sizeof(*envp));
	if (envp == NULL) {
		log_error(COMPONENT, 0, "%s: out of memory", label);
		return false;
	}
	/* Our variables win over inherited ones of the same name. */
	size_t k = 0;
	for (size_t i = 0; i < n_env; i++) {
		if (strncmp(environ[i], "PGRELAY_", 8) != 0)
			envp[k++] = environ[i];
	}
	for (int i = 0; i < n_extra; i++)
		envp[k++] = extra_env[i];
	envp[k] = NULL;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		log_error(COMPONENT, 0, "%s: pipe: %s", label, strerror(errno));
		free(envp);
		return false;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
	posix_spawnattr_init(&attr);
	/* The manager thread blocks every signal; the command starts with none blocked and the
	 * usual dispositions (pgrelay ignores SIGPIPE, a shell script must not). */
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGQUIT);
	sigaddset(&dfl, SIGCHLD);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawn(&r->pid, "/bin/sh", &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	free(envp);
	close(fds[1]);
	if (rc != 0) {
		close(fds[0]);
		log_error(COMPONENT, 0, "%s: cannot start /bin/sh: %s", label, strerror(rc));
		return false;
	}
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0)
		log_warning(COMPONENT, 0, "%s: fcntl: %s", label, strerror(errno));
	r->out_fd = fds[0];
	r->deadline = now_ms + timeout_ms;
	r->running = true;
	log_info(COMPONENT, 0, "%s started (pid %d, timeout %u ms): %s", label, (int)r->pid,
		 timeout_ms, cmdline);
	return true;
}

bool cmd_pollfd(const struct cmd_run *r, struct pollfd *pfd)
{
	if (!r->running || r->out_fd < 0)
		return false;
	pfd->fd = r->out_fd;
	pfd->events = POLLIN;
	pfd->revents = 0;
	return true;
}

int cmd_next_ms(const struct cmd_run *r, uint64_t now_ms)
{
	uint64_t t;

	if (!r->running)
		return -1;
	t = r->term_sent ? r->deadline + CMD_KILL_GRACE_MS : r->deadline;
	if (t <= now_ms)
		return 0;
	return t - now_ms < REAP_TICK_MS ? (int)(t - now_ms) : REAP_TICK_MS;
}

static void signal_group(struct cmd_run *r, int sig)
{
	if (kill(-r->pid, sig) != 0 && errno != ESRCH)
		log_warning(COMPONENT, 0, "%s: kill(-%d, %d): %s", r->label, (int)r->pid, sig,
			    strerror(errno));
}

bool cmd_step(struct cmd_run *r, uint64_t now_ms)
{
	int st;
	pid_t w;

	if (!r->running)
		return true;
	read_output(r);
	do {
		w = waitpid(r->pid, &st, WNOHANG);
	} while (w < 0 && errno == EINTR);
	if (w == r->pid || (w < 0 && errno == ECHILD)) {
		read_output(r); /* what the shell wrote just before it exited */
		close_out(r);
		if (r->line_len > 0) {
			r->line[r->line_len] = '\0';
			if (r->lines_logged++ < MAX_LOG_LINES)
				log_info(COMPONENT, 0, "%s: %s", r->label, r->line);
			r->line_len = 0;
		}
		if (w < 0)
			r->exit_status = -1;
		else if (WIFEXITED(st))
			r->exit_status = WEXITSTATUS(st);
		else if (WIFSIGNALED(st))
			r->exit_status = 128 + WTERMSIG(st);
		/* A timed-out script's leftovers (same group) are not left running. */
		if (r->timed_out)
			signal_group(r, SIGKILL);
		r->running = false;
		r->duration_ms = (uint32_t)(now_ms - r->started_at);
		return true;
	}
	if (!r->term_sent && now_ms >= r->deadline) {
		r->timed_out = true;
		r->term_sent = true;
		log_warning(COMPONENT, 0, "%s (pid %d) timed out after %u ms: SIGTERM to its group",
			    r->label, (int)r->pid, (unsigned)(now_ms - r->started_at));
		signal_group(r, SIGTERM);
	} else if (r->term_sent && !r->kill_sent && now_ms >= r->deadline + CMD_KILL_GRACE_MS) {
		r->kill_sent = true;
		log_warning(COMPONENT, 0, "%s (pid %d) still running: SIGKILL to its group",
			    r->label, (int)r->pid);
		signal_group(r, SIGKILL);
	}
	return false;
}

void cmd_last_line(const struct cmd_run *r, char *out, size_t cap)
{
	size_t end = r->tail_len, start;

	while (end > 0 &&
	       (r->tail[end - 1] == '\n' || r->tail[end - 1] == '\r' || r->tail[end - 1] == ' '))
		end--;
	start = end;
	while (start > 0 && r->tail[start - 1] != '\n')
		start--;
	if (cap == 0)
		return;
	if (end - start >= cap)
		end = start + cap - 1;
	memcpy(out, r->tail + start, end - start);
	out[end - start] = '\0';
	for (char *c = out; *c != '\0'; c++) {
		if (*c == '\r' || *c == '\t')
			*c = ' ';
	}
}

void cmd_abort(struct cmd_run *r)
{
	if (!r->running)
		return;
	signal_group(r, SIGKILL);
	while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
	}
	close_out(r);
	r->running = false;
	r->exit_status = 128 + SIGKILL;
}
