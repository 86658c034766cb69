/*
 * pgrelayctl: the admin CLI. It connects to pgrelay's SQL interface with libpq and prints the
 * result of one admin command, e.g. `pgrelayctl -p 9999 show pool_nodes`.
 * Connection parameters come from -h/-p/-U and the usual PG* environment variables.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: pgrelayctl [-h HOST] [-p PORT] [-U USER] [-d DBNAME] COMMAND ...\n"
		"Sends COMMAND (e.g. \"show pool_nodes\") to pgrelay and prints the result.\n");
}

static int print_result(PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK) {
		printf("%s\n", PQcmdStatus(res));
		return 0;
	}
	if (st != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgrelayctl: %s", PQresultErrorMessage(res));
		return 1;
	}
	int nf = PQnfields(res), nt = PQntuples(res);
	for (int f = 0; f < nf; f++)
		printf("%s%s", f ? " | " : "", PQfname(res, f));
	printf("\n");
	for (int t = 0; t < nt; t++) {
		for (int f = 0; f < nf; f++)
			printf("%s%s", f ? " | " : "",
			       PQgetisnull(res, t, f) ? "" : PQgetvalue(res, t, f));
		printf("\n");
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *keys[8], *vals[8];
	int n = 0, opt;
	while ((opt = getopt(argc, argv, "h:p:U:d:")) != -1 && n < 6) {
		switch (opt) {
		case 'h':
			keys[n] = "host";
			break;
		case 'p':
			keys[n] = "port";
			break;
		case 'U':
			keys[n] = "user";
			break;
		case 'd':
			keys[n] = "dbname";
			break;
		default:
			usage(stderr);
			return 2;
		}
		vals[n++] = optarg;
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	keys[n] = "connect_timeout";
	vals[n++] = "10";
	keys[n] = NULL;
	vals[n] = NULL;
	char cmd[4096] = "";
	for (int i = optind; i < argc; i++) {
		if (strlen(cmd) + strlen(argv[i]) + 2 >= sizeof(cmd)) {
			fprintf(stderr, "pgrelayctl: command too long\n");
			return 2;
		}
		if (i > optind)
			strcat(cmd, " ");
		strcat(cmd, argv[i]);
	}
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pgrelayctl: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return 1;
	}
	PGresult *res = PQexec(conn, cmd);
	int rc = print_result(res);
	PQclear(res);
	PQfinish(conn);
	return rc;
}
