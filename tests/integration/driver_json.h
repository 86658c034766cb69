/*
 * JSON output helpers shared by the integration test drivers (health_probe_main.c,
 * cluster_main.c). Header-only: each driver is compiled alone by its test.
 */
#ifndef PGRELAY_TESTS_DRIVER_JSON_H
#define PGRELAY_TESTS_DRIVER_JSON_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

static inline void json_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* ,"key":"X/Y" or ,"key":null for 0 (InvalidXLogRecPtr). */
static inline void json_lsn(const char *key, uint64_t lsn)
{
	printf(",\"%s\":", key);
	if (lsn == 0)
		printf("null");
	else
		printf("\"%" PRIX64 "/%" PRIX64 "\"", lsn >> 32, lsn & 0xFFFFFFFFu);
}

#endif
