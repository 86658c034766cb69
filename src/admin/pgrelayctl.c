/*
 * pgrelayctl: the admin CLI, a pcp replacement. It connects to pgrelay's SQL admin interface with
 * libpq, sends the one statement a subcommand stands for (doc/admin.md lists them), and prints the
 * answer as an aligned table, `name: value` lines (`node N`) or JSON (--json).
 *
 * Exit status: 0 success, 1 the server refused or failed the command (an ErrorResponse), 2 usage,
 * connection or protocol errors. Nothing waits without a bound: the connection has
 * connect_timeout, and the statement is sent and read non-blocking against --timeout. Passwords
 * come from PGPASSWORD / ~/.pgpass (libpq) or, with -W, from the terminal; libpq never prompts.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE   2
#define SQL_MAX	     256
#define NOTICE_MAX   512

/* One subcommand: its name, arguments and help. */
struct subcommand {
	const char *name;
	const char *args;  /* synopsis after the name */
	const char *sql;   /* what it sends (for the help) */
	const char *about; /* one paragraph */
};

static const struct subcommand subcommands[] = {
	{ "nodes", "", "SHOW pool_nodes", "List the backend nodes as pgrelay sees them." },
	{ "node", "N", "SHOW pool_nodes (row N)",
	  "Show node N alone, one `column: value` line each (pcp_node_info)." },
	{ "attach", "N", "PGRELAY ATTACH NODE N",
	  "Attach node N again (pcp_attach_node); it is up after a successful health check." },
	{ "detach", "N", "PGRELAY DETACH NODE N",
	  "Detach node N (pcp_detach_node); detaching the primary starts a failover." },
	{ "promote", "N [--switchover]", "PGRELAY PROMOTE NODE N [SWITCHOVER]",
	  "Promote standby N (pcp_promote_node). With --switchover (pcp_promote_node -s) the "
	  "current primary is detached and every other node, the old primary included, follows N "
	  "(follow_primary_command). Without it N is promoted and the primary detached, but the "
	  "other nodes are left as they are." },
	{ "recover", "N [--no-wait]", "PGRELAY RECOVER NODE N, then SHOW pool_recovery",
	  "Online recovery of node N (pcp_recovery_node): pgrelay makes the node a standby of the "
	  "current primary, starts it and attaches it. Like pcp_recovery_node it waits until the "
	  "recovery ends (pgrelay bounds it by recovery_timeout; pgrelayctl gives up after one "
	  "hour), printing each stage it reaches, and exits 0 when the node is attached, 1 when "
	  "the recovery failed. With --no-wait it returns once pgrelay has accepted the "
	  "recovery." },
	{ "watchdog", "", "SHOW pool_watchdog",
	  "List the pgrelay instances of the watchdog (pcp_watchdog_info)." },
	{ "reload", "", "PGRELAY RELOAD",
	  "Reload the configuration file, as SIGHUP does (pcp_reload_config)." },
	{ "stop", "[smart|fast]", "PGRELAY STOP SMART|FAST",
	  "Shut pgrelay down (pcp_stop_pgpool): smart (default) waits for clients to leave, as "
	  "SIGTERM; fast closes their sessions now, as SIGINT." },
	{ "show", "WHAT", "SHOW pool_WHAT",
	  "Any SHOW of the admin interface: `show pools` sends SHOW pool_pools, `show pool_nodes` "
	  "is sent as is. WHAT is letters, digits and underscores." },
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static const char *prog = "pgrelayctl";

static void print_synopsis(FILE *out)
{
	fprintf(out,
		"%s [-h HOST] [-p PORT] [-U USER] [-d DB] [-W] [--json] [--timeout SECONDS] "
		"COMMAND [ARG...]\n",
		prog);
}

/* Prints text wrapped at 80 columns, each line indented by indent spaces. */
static void print_wrapped(FILE *out, int indent, const char *text)
{
	const char *p = text;

	while (*p) {
		int room = 80 - indent, n = 0, cut = 0;

		while (p[n] && n < room) {
			if (p[n] == ' ')
				cut = n;
			n++;
		}
		if (p[n] == '\0' || cut == 0)
			cut = n;
		fprintf(out, "%*s%.*s\n", indent, "", cut, p);
		p += cut;
		while (*p == ' ')
			p++;
	}
}

static void print_help(FILE *out)
{
	fprintf(out, "NAME\n    pgrelayctl - control pgrelay through its SQL admin interface\n\n");
	fprintf(out, "SYNOPSIS\n    ");
	print_synopsis(out);
	fprintf(out, "    %s COMMAND --help\n    %s --help\n\n", prog, prog);
	fprintf(out,
		"DESCRIPTION\n"
		"    Connects to pgrelay (libpq), sends the statement COMMAND stands for and "
		"prints "
		"the\n    answer: a table, or JSON with --json. The pcp_* tools of pgpool-II map "
		"onto the\n    commands below. Commands other than nodes and show pool_version "
		"need "
		"a user in\n    admin_users (SHOWs: admin_users or stats_users).\n\n");
	fprintf(out, "COMMANDS\n");
	for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
		fprintf(out, "    %s%s%s\n", subcommands[i].name, subcommands[i].args[0] ? " " : "",
			subcommands[i].args);
		print_wrapped(out, 8, subcommands[i].about);
		fprintf(out, "        Sends: %s\n", subcommands[i].sql);
	}
	fprintf(out,
		"\nOPTIONS\n"
		"    -h, --host HOST       pgrelay's host or unix socket folder (PGHOST)\n"
		"    -p, --port PORT       pgrelay's port (PGPORT; pgrelay's default is 9999)\n"
		"    -U, --username USER   user to connect as (PGUSER); an admin_users member for "
		"commands\n"
		"    -d, --dbname DB       database named at login (PGDATABASE); any database "
		"works\n"
		"    -W, --password        ask for the password on the terminal\n"
		"    -w, --no-password     never ask (the default: PGPASSWORD or ~/.pgpass)\n"
		"    --json                print results as JSON: rows as an array of objects "
		"(values\n"
		"                          strings, NULL null; `node N`: one object); commands as\n"
		"                          {\"ok\":true,\"status\":TAG,\"message\":TEXT}; errors "
		"as\n"
		"                          {\"ok\":false,\"sqlstate\":CODE,\"error\":TEXT}\n"
		"    -t, --timeout SECONDS bound on connecting and on the answer (default 30)\n"
		"    -?, --help            this help; `COMMAND --help` for one command\n\n"
		"EXIT STATUS\n"
		"    0  the command succeeded\n"
		"    1  pgrelay refused it or it failed (an ErrorResponse: permission denied, no "
		"such\n"
		"       node, unknown command, a failover in progress, ...)\n"
		"    2  usage error, connection error (refused, authentication, timeout) or a "
		"lost\n"
		"       connection\n\n"
		"ENVIRONMENT\n"
		"    PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE and the "
		"other\n"
		"    libpq variables; ~/.pgpass. PGCONNECT_TIMEOUT is overridden by --timeout.\n\n"
		"EXAMPLES\n"
		"    pgrelayctl -p 9999 -U postgres nodes\n"
		"    pgrelayctl -p 9999 -U postgres --json node 1\n"
		"    pgrelayctl -p 9999 -U postgres detach 2\n"
		"    pgrelayctl -p 9999 -U postgres promote 1 --switchover\n"
		"    pgrelayctl -p 9999 -U postgres show health_check_stats\n"
		"    PGPASSWORD=secret pgrelayctl -h db1 -U postgres stop fast\n");
}

static void print_command_help(FILE *out, const struct subcommand *sc)
{
	fprintf(out, "NAME\n    pgrelayctl %s\n\nSYNOPSIS\n    %s [OPTIONS] %s%s%s\n\n", sc->name,
		prog, sc->name, sc->args[0] ? " " : "", sc->args);
	fprintf(out, "DESCRIPTION\n");
	print_wrapped(out, 4, sc->about);
	fprintf(out, "\nSENDS\n    %s\n\nSee `%s --help` for the options and exit status.\n",
		sc->sql, prog);
}

static void usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nUsage: ");
	print_synopsis(stderr);
	fprintf(stderr, "Try \"%s --help\" for more information.\n", prog);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* Prints s as a JSON string: quotes, backslashes and control characters escaped. */
static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

static void json_row(FILE *out, const PGresult *res, int row)
{
	fputc('{', out);
	for (int f = 0; f < PQnfields(res); f++) {
		if (f)
			fputc(',', out);
		json_string(out, PQfname(res, f));
		fputc(':', out);
		if (PQgetisnull(res, row, f))
			fputs("null", out);
		else
			json_string(out, PQgetvalue(res, row, f));
	}
	fputc('}', out);
}

/* ---- text ------------------------------------------------------------------------------------ */

/* Display width of a UTF-8 string: one column per code point (good enough for the admin text). */
static size_t text_width(const char *s)
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xc0) != 0x80;
	return n;
}

static void print_padded(FILE *out, const char *s, size_t width)
{
	size_t w = text_width(s);

	fputs(s, out);
	for (; w < width; w++)
		fputc(' ', out);
}

/* psql-style aligned table with a row count. */
static void print_table(FILE *out, const PGresult *res)
{
	int nf = PQnfields(res), nt = PQntuples(res);
	size_t *width = calloc((size_t)(nf > 0 ? nf : 1), sizeof(*width));

	if (width == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return;
	}
	for (int f = 0; f < nf; f++) {
		width[f] = text_width(PQfname(res, f));
		for (int t = 0; t < nt; t++) {
			size_t w = text_width(PQgetvalue(res, t, f));

			if (w > width[f])
				width[f] = w;
		}
	}
	for (int f = 0; f < nf; f++) {
		fputs(f ? " | " : " ", out);
		print_padded(out, PQfname(res, f), width[f]);
	}
	fputc('\n', out);
	for (int f = 0; f < nf; f++) {
		fputs(f ? "-+-" : "-", out);
		for (size_t k = 0; k < width[f]; k++)
			fputc('-', out);
	}
	fputs("-\n", out);
	for (int t = 0; t < nt; t++) {
		for (int f = 0; f < nf; f++) {
			fputs(f ? " | " : " ", out);
			print_padded(out, PQgetvalue(res, t, f), width[f]);
		}
		fputc('\n', out);
	}
	fprintf(out, "(%d row%s)\n", nt, nt == 1 ? "" : "s");
	free(width);
}

/* `column: value` lines for one row (pcp_node_info style). */
static void print_record(FILE *out, const PGresult *res, int row)
{
	size_t w = 0;

	for (int f = 0; f < PQnfields(res); f++) {
		if (text_width(PQfname(res, f)) > w)
			w = text_width(PQfname(res, f));
	}
	for (int f = 0; f < PQnfields(res); f++) {
		print_padded(out, PQfname(res, f), w);
		fprintf(out, " : %s\n", PQgetisnull(res, row, f) ? "" : PQgetvalue(res, row, f));
	}
}

/* ---- talking to pgrelay ---------------------------------------------------------------------- */

struct ctl {
	bool json;
	bool no_wait; /* recover: return once accepted */
	int timeout_s;
	char notice[NOTICE_MAX]; /* the first NoticeResponse's message */
};

static void on_notice(void *arg, const PGresult *res)
{
	struct ctl *ctl = arg;
	const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	/* The command's own NOTICE comes first; later ones (a shutdown's goodbye) are not its. */
	if (ctl->notice[0] == '\0')
		snprintf(ctl->notice, sizeof(ctl->notice), "%s", m != NULL ? m : "");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for fd (events) until deadline; false on timeout or a poll error. */
static bool wait_fd(int fd, short events, double deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		double left = deadline - now_s();
		int r;

		if (left <= 0)
			return false;
		r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r > 0)
			return true;
		if (r < 0 && errno != EINTR)
			return false;
	}
}

/*
 * Sends sql and collects its last result, never waiting past deadline. Returns NULL (with the
 * reason in *why) on a timeout or a lost connection.
 */
static PGresult *run(PGconn *conn, const char *sql, double deadline, const char **why)
{
	PGresult *last = NULL, *r;

	if (!PQsendQuery(conn, sql)) {
		*why = PQerrorMessage(conn);
		return NULL;
	}
	for (;;) {
		int f = PQflush(conn);

		if (f < 0) {
			*why = PQerrorMessage(conn);
			return NULL;
		}
		if (f == 0)
			break;
		if (!wait_fd(PQsocket(conn), POLLOUT | POLLIN, deadline)) {
			*why = "timed out sending the command\n";
			return NULL;
		}
		if (!PQconsumeInput(conn)) {
			*why = PQerrorMessage(conn);
			return NULL;
		}
	}
	for (;;) {
		while (PQisBusy(conn)) {
			if (!wait_fd(PQsocket(conn), POLLIN, deadline)) {
				PQclear(last);
				*why = "timed out waiting for the answer\n";
				return NULL;
			}
			if (!PQconsumeInput(conn)) {
				PQclear(last);
				*why = PQerrorMessage(conn);
				return NULL;
			}
		}
		r = PQgetResult(conn);
		if (r == NULL)
			break;
		PQclear(last);
		last = r;
	}
	if (last == NULL)
		*why = PQerrorMessage(conn);
	return last;
}

/* Prints an ErrorResponse (or a lost connection) and returns the exit status it means. */
static int report_error(const struct ctl *ctl, PGconn *conn, const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (state == NULL || PQstatus(conn) == CONNECTION_BAD) {
		/* No SQLSTATE: libpq's own error, the connection was lost. */
		fprintf(stderr, "%s: %s", prog, PQresultErrorMessage(res));
		if (ctl->json) {
			printf("{\"ok\":false,\"sqlstate\":null,\"error\":");
			json_string(stdout, msg != NULL ? msg : PQresultErrorMessage(res));
			printf("}\n");
		}
		return EXIT_USAGE;
	}
	fprintf(stderr, "%s: ERROR %s: %s\n", prog, state, msg != NULL ? msg : "");
	if (ctl->json) {
		printf("{\"ok\":false,\"sqlstate\":");
		json_string(stdout, state);
		printf(",\"error\":");
		json_string(stdout, msg != NULL ? msg : "");
		printf("}\n");
	}
	return EXIT_REFUSED;
}

/* ---- commands -------------------------------------------------------------------------------- */

/* A node number: 0..9999 digits only. */
static bool parse_node(const char *s, int *out)
{
	long v = 0;

	if (s == NULL || *s == '\0' || strlen(s) > 4)
		return false;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return false;
		v = v * 10 + (*p - '0');
	}
	*out = (int)v;
	return true;
}

static bool is_word(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 64)
		return false;
	for (const char *p = s; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_')
			return false;
	}
	return true;
}

static const struct subcommand *find_subcommand(const char *name)
{
	for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
		if (strcmp(subcommands[i].name, name) == 0)
			return &subcommands[i];
	}
	return NULL;
}

/*
 * Builds the statement for cmd and its arguments into sql. Returns false (usage printed) on bad
 * arguments. *node_row is set for `node N` (the row to show), else -1.
 */
static bool build_sql(const struct subcommand *sc, int argc, char **argv, char *sql, size_t cap,
		      int *node_row, bool *no_wait)
{
	const char *name = sc->name;
	int node;

	*node_row = -1;
	if (strcmp(name, "nodes") == 0 || strcmp(name, "watchdog") == 0 ||
	    strcmp(name, "reload") == 0) {
		if (argc != 0) {
			usage_error("%s takes no argument", name);
			return false;
		}
		snprintf(sql, cap, "%s",
			 name[0] == 'n'	  ? "SHOW pool_nodes"
			 : name[0] == 'w' ? "SHOW pool_watchdog"
					  : "PGRELAY RELOAD");
		return true;
	}
	if (strcmp(name, "stop") == 0) {
		const char *mode = argc > 0 ? argv[0] : "smart";

		if (argc > 1 || (strcmp(mode, "smart") != 0 && strcmp(mode, "fast") != 0)) {
			usage_error("stop takes smart or fast, not \"%s\"",
				    argc > 1 ? argv[1] : mode);
			return false;
		}
		snprintf(sql, cap, "PGRELAY STOP %s", mode[0] == 's' ? "SMART" : "FAST");
		return true;
	}
	if (strcmp(name, "show") == 0) {
		if (argc != 1 || !is_word(argv[0])) {
			usage_error("show takes one name (letters, digits, _), e.g. show pools%s",
				    "");
			return false;
		}
		snprintf(sql, cap, "SHOW %s%s", strncmp(argv[0], "pool_", 5) == 0 ? "" : "pool_",
			 argv[0]);
		return true;
	}
	/* node, attach, detach, promote, recover: a node number. */
	bool switchover = false;
	const char *num = NULL;

	for (int i = 0; i < argc; i++) {
		if (strcmp(name, "promote") == 0 && strcmp(argv[i], "--switchover") == 0 &&
		    !switchover) {
			switchover = true;
		} else if (strcmp(name, "recover") == 0 && strcmp(argv[i], "--no-wait") == 0 &&
			   !*no_wait) {
			*no_wait = true;
		} else if (num == NULL) {
			num = argv[i];
		} else {
			usage_error("unexpected argument \"%s\"", argv[i]);
			return false;
		}
	}
	if (!parse_node(num, &node)) {
		usage_error(num == NULL ? "%s needs a node number" : "bad node number \"%s\"",
			    num == NULL ? name : num);
		return false;
	}
	if (strcmp(name, "node") == 0) {
		*node_row = node;
		snprintf(sql, cap, "SHOW pool_nodes");
	} else if (strcmp(name, "attach") == 0) {
		snprintf(sql, cap, "PGRELAY ATTACH NODE %d", node);
	} else if (strcmp(name, "detach") == 0) {
		snprintf(sql, cap, "PGRELAY DETACH NODE %d", node);
	} else if (strcmp(name, "promote") == 0) {
		snprintf(sql, cap, "PGRELAY PROMOTE NODE %d%s", node,
			 switchover ? " SWITCHOVER" : "");
	} else {
		snprintf(sql, cap, "PGRELAY RECOVER NODE %d", node);
	}
	return true;
}

/* ---- recover: waiting for the recovery to end --------------------------------------------------
 */

#define RECOVER_WAIT_S 3600 /* pgrelayctl's own bound; pgrelay's is recovery_timeout */

static const char *field(const PGresult *res, int row, const char *name)
{
	int f = PQfnumber(res, name);

	return f >= 0 && row < PQntuples(res) ? PQgetvalue(res, row, f) : "";
}

/*
 * Polls SHOW pool_recovery once a second until the row of node shows `done` or `failed`,
 * printing each new stage (text output). Returns the exit status: 0 done, 1 failed, 2 when the
 * connection broke or the bound passed. The row was already made when the command was accepted,
 * so a row of another node, or none, means the recovery was replaced or lost: reported as 2.
 */
static int recover_wait(const struct ctl *ctl, PGconn *conn, int node)
{
	char last_stage[32] = "";
	double give_up = now_s() + RECOVER_WAIT_S;

	for (;;) {
		const char *why = NULL;
		PGresult *res = run(conn, "SHOW pool_recovery", now_s() + ctl->timeout_s, &why);
		int rc = -1;

		if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
			fprintf(stderr, "%s: SHOW pool_recovery: %s", prog,
				res != NULL ? PQresultErrorMessage(res)
				: why	    ? why
					    : "no answer\n");
			rc = EXIT_USAGE;
		} else if (PQntuples(res) < 1 || atoi(field(res, 0, "node_id")) != node) {
			fprintf(stderr, "%s: SHOW pool_recovery no longer shows node %d\n", prog,
				node);
			rc = EXIT_USAGE;
		} else {
			const char *stage = field(res, 0, "stage");
			bool end = strcmp(stage, "done") == 0 || strcmp(stage, "failed") == 0;

			if (!ctl->json && strcmp(stage, last_stage) != 0)
				printf("node %d: %s (%s ms)%s%s\n", node, stage,
				       field(res, 0, "elapsed_ms"),
				       field(res, 0, "detail")[0] ? ": " : "",
				       field(res, 0, "detail"));
			fflush(stdout);
			snprintf(last_stage, sizeof(last_stage), "%s", stage);
			if (end) {
				rc = strcmp(stage, "done") == 0 ? 0 : EXIT_REFUSED;
				if (ctl->json) {
					printf("{\"ok\":%s,\"status\":\"PGRELAY "
					       "RECOVER\",\"stage\":",
					       rc == 0 ? "true" : "false");
					json_string(stdout, stage);
					printf(",\"elapsed_ms\":");
					json_string(stdout, field(res, 0, "elapsed_ms"));
					printf(",\"detail\":");
					json_string(stdout, field(res, 0, "detail"));
					printf("}\n");
				}
			}
		}
		PQclear(res);
		if (rc >= 0)
			return rc;
		if (now_s() > give_up) {
			fprintf(stderr, "%s: gave up waiting after %d s (the recovery may go on)\n",
				prog, RECOVER_WAIT_S);
			return EXIT_USAGE;
		}
		sleep(1);
	}
}

/* Prints a successful result; returns the exit status. */
static int print_result(const struct ctl *ctl, const PGresult *res, int node_row)
{
	if (PQresultStatus(res) == PGRES_COMMAND_OK) {
		if (ctl->json) {
			printf("{\"ok\":true,\"status\":");
			json_string(stdout, PQcmdStatus((PGresult *)res));
			if (ctl->notice[0]) {
				printf(",\"message\":");
				json_string(stdout, ctl->notice);
			}
			printf("}\n");
		} else if (ctl->notice[0]) {
			printf("%s: %s\n", PQcmdStatus((PGresult *)res), ctl->notice);
		} else {
			printf("%s\n", PQcmdStatus((PGresult *)res));
		}
		return 0;
	}
	if (node_row >= 0) {
		int nid = PQfnumber(res, "node_id");

		for (int t = 0; nid >= 0 && t < PQntuples(res); t++) {
			int v;

			if (!parse_node(PQgetvalue(res, t, nid), &v) || v != node_row)
				continue;
			if (ctl->json) {
				json_row(stdout, res, t);
				fputc('\n', stdout);
			} else {
				print_record(stdout, res, t);
			}
			return 0;
		}
		fprintf(stderr, "%s: no such node %d\n", prog, node_row);
		if (ctl->json)
			printf("{\"ok\":false,\"sqlstate\":null,\"error\":\"no such node\"}\n");
		return EXIT_REFUSED;
	}
	if (ctl->json) {
		fputc('[', stdout);
		for (int t = 0; t < PQntuples(res); t++) {
			if (t)
				fputc(',', stdout);
			json_row(stdout, res, t);
		}
		fputs("]\n", stdout);
	} else {
		print_table(stdout, res);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "username", required_argument, NULL, 'U' },
		{ "dbname", required_argument, NULL, 'd' },
		{ "password", no_argument, NULL, 'W' },
		{ "no-password", no_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl ctl = { .timeout_s = 30 };
	const char *keys[12], *vals[12];
	char timeout_text[16], sql[SQL_MAX];
	const char *why = NULL;
	bool ask_password = false;
	char *password = NULL;
	int n = 0, opt, rc, node_row;
	const struct subcommand *sc;
	PGconn *conn;
	PGresult *res;
	double deadline;

	/* Options before the command only: what follows it (e.g. --switchover) is the command's. */
	while ((opt = getopt_long(argc, argv, "+h:p:U:d:Wwt:?", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			keys[n] = "host";
			vals[n++] = optarg;
			break;
		case 'p':
			keys[n] = "port";
			vals[n++] = optarg;
			break;
		case 'U':
			keys[n] = "user";
			vals[n++] = optarg;
			break;
		case 'd':
			keys[n] = "dbname";
			vals[n++] = optarg;
			break;
		case 'W':
			ask_password = true;
			break;
		case 'w':
			ask_password = false;
			break;
		case 't': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*optarg == '\0' || *end != '\0' || v < 1 || v > 3600) {
				usage_error("bad --timeout \"%s\" (1 to 3600 seconds)", optarg);
				return EXIT_USAGE;
			}
			ctl.timeout_s = (int)v;
			break;
		}
		case 'j':
			ctl.json = true;
			break;
		case 'H':
			print_help(stdout);
			return 0;
		case '?':
			/* "-?" asks for help; anything else getopt refused (and said why). */
			if (optind > 0 && strcmp(argv[optind - 1], "-?") == 0) {
				print_help(stdout);
				return 0;
			}
			usage_error("bad option%s", "");
			return EXIT_USAGE;
		default:
			usage_error("bad option%s", "");
			return EXIT_USAGE;
		}
		if (n > 8) {
			usage_error("too many options%s", "");
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage_error("no command given%s", "");
		return EXIT_USAGE;
	}
	sc = find_subcommand(argv[optind]);
	if (sc == NULL) {
		usage_error("unknown command \"%s\"", argv[optind]);
		return EXIT_USAGE;
	}
	for (int i = optind + 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-?") == 0) {
			print_command_help(stdout, sc);
			return 0;
		}
	}
	if (!build_sql(sc, argc - optind - 1, argv + optind + 1, sql, sizeof(sql), &node_row,
		       &ctl.no_wait))
		return EXIT_USAGE;

	if (ask_password) {
		/* getpass reads /dev/tty without echo; libpq itself never prompts. */
		char *p = getpass("Password: ");

		if (p == NULL || (password = strdup(p)) == NULL) {
			fprintf(stderr, "%s: could not read the password\n", prog);
			return EXIT_USAGE;
		}
		memset(p, 0, strlen(p));
		keys[n] = "password";
		vals[n++] = password;
	}
	snprintf(timeout_text, sizeof(timeout_text), "%d", ctl.timeout_s);
	keys[n] = "connect_timeout";
	vals[n++] = timeout_text;
	keys[n] = "application_name";
	vals[n++] = "pgrelayctl";
	keys[n] = NULL;
	vals[n] = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (password != NULL) {
		memset(password, 0, strlen(password));
		free(password);
	}
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		const char *m = conn != NULL ? PQerrorMessage(conn) : "out of memory\n";

		fprintf(stderr, "%s: could not connect: %s", prog, m);
		if (conn != NULL && PQconnectionNeedsPassword(conn))
			fprintf(stderr,
				"%s: a password is needed: set PGPASSWORD, use ~/.pgpass, or "
				"give -W\n",
				prog);
		if (ctl.json) {
			printf("{\"ok\":false,\"sqlstate\":null,\"error\":");
			json_string(stdout, m);
			printf("}\n");
		}
		PQfinish(conn);
		return EXIT_USAGE;
	}
	PQsetNoticeReceiver(conn, on_notice, &ctl);
	if (PQsetnonblocking(conn, 1) != 0) {
		fprintf(stderr, "%s: %s", prog, PQerrorMessage(conn));
		PQfinish(conn);
		return EXIT_USAGE;
	}
	/* The connect got its own connect_timeout; the answer gets a fresh --timeout. */
	deadline = now_s() + ctl.timeout_s;
	res = run(conn, sql, deadline, &why);
	if (res == NULL) {
		fprintf(stderr, "%s: %s", prog, why != NULL ? why : "no answer\n");
		if (ctl.json) {
			printf("{\"ok\":false,\"sqlstate\":null,\"error\":");
			json_string(stdout, why != NULL ? why : "no answer");
			printf("}\n");
		}
		PQfinish(conn);
		return EXIT_USAGE;
	}
	switch (PQresultStatus(res)) {
	case PGRES_COMMAND_OK:
		if (strcmp(sc->name, "recover") == 0 && !ctl.no_wait) {
			int node = atoi(sql + strlen("PGRELAY RECOVER NODE "));

			if (!ctl.json)
				printf("PGRELAY RECOVER: %s\n", ctl.notice);
			rc = recover_wait(&ctl, conn, node);
			break;
		}
		rc = print_result(&ctl, res, node_row);
		break;
	case PGRES_TUPLES_OK:
		rc = print_result(&ctl, res, node_row);
		break;
	default:
		rc = report_error(&ctl, conn, res);
		break;
	}
	PQclear(res);
	PQfinish(conn);
	fflush(stdout);
	return rc;
}
