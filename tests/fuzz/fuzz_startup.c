/*
 * libFuzzer harness for the startup phase of a client connection: the input is what a client sends
 * first (SSLRequest / GSSENCRequest answered with 'N', then a StartupMessage or CancelRequest), and
 * then the body of a StartupMessage given a correct header.
 *
 * The parameters and the pool key go through the real code (src/protocol/startup.c); the
 * packet sequence around them mirrors client_login_scan (CLS_STARTUP), client_startup_packet and
 * client_handle_cancel, which need a connection.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/frame.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "protocol/startup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

struct login {
	bool ssl_answered, gss_answered;
	uint8_t *startup; /* owned copy of the StartupMessage body */
	uint32_t startup_len;
	struct startup_params params; /* into startup */
};

/* client_parse_startup_params: the real parser, on an owned copy as client.c keeps it */
static bool parse_startup_params(struct login *c, const struct frame *f, char *err, size_t errcap)
{
	c->startup = malloc(f->len ? f->len : 1);
	CHECK(c->startup != NULL);
	memcpy(c->startup, f->body, f->len);
	c->startup_len = f->len;
	return startup_parse(c->startup, c->startup_len, &c->params, err, errcap) == STARTUP_OK;
}

static volatile unsigned key_sink;

/* client_find_pool: the real key builder, then pool_get's copy of the key */
static bool find_pool(struct login *c)
{
	char key[2048];
	size_t n;
	if (!startup_pool_key(c->startup, c->startup_len, &c->params, key, sizeof(key), &n))
		return false;
	CHECK(n <= sizeof(key));
	char *copy = malloc(n ? n : 1);
	CHECK(copy != NULL);
	memcpy(copy, key, n);
	unsigned sum = 0;
	for (size_t i = 0; i < n; i++) /* used, so that the copy is not optimised away */
		sum = sum * 31 + (unsigned char)copy[i];
	key_sink = sum;
	free(copy);
	return true;
}

/* client_handle_startup, without the network */
static bool handle_startup(struct login *c, const struct frame *f)
{
	uint32_t major = f->code >> 16;
	if (major != 3)
		return false;
	char err[160];
	if (!parse_startup_params(c, f, err, sizeof(err))) {
		CHECK(strlen(err) < sizeof(err));
		return false;
	}
	CHECK(c->params.user && c->params.user[0] && c->params.database && c->params.database[0] &&
	      c->params.application_name);
	return find_pool(c);
}

/* client_handle_cancel */
static void handle_cancel(const struct frame *f)
{
	struct reader r;
	uint32_t pid, key;
	reader_init(&r, f->body, f->len);
	if (!reader_u32(&r, &pid) || !reader_u32(&r, &key) || !reader_end(&r)) {
		CHECK(f->len != 8);
		return;
	}
	CHECK(f->len == 8);
}

/* The input as what a client sends first: length-first packets, one after another. */
static void login_scan(const uint8_t *data, size_t size)
{
	struct login c;
	memset(&c, 0, sizeof(c));
	size_t parsed = 0;
	/* client_login_scan in CLS_STARTUP: one length-first packet after another. */
	while (parsed < size) {
		const uint8_t *p = data + parsed;
		size_t avail = size - parsed;
		struct frame f;
		enum frame_status st = frame_parse_startup(p, avail, &f);
		if (st != FRAME_OK)
			break; /* bad: disconnect; need more: wait */
		CHECK(f.total >= 8 && f.total <= FRAME_STARTUP_MAX && f.total <= avail);
		parsed += f.total;
		if (f.code == NEGOTIATE_SSL_CODE || f.code == NEGOTIATE_GSS_CODE) {
			bool ssl = f.code == NEGOTIATE_SSL_CODE;
			if (f.len != 0 || (ssl ? c.ssl_answered : c.gss_answered))
				break;
			/*
			 * client.c also rejects bytes already buffered behind the request
			 * (plaintext injected before TLS); that depends on how the bytes were split
			 * into reads, so here the rest of the input is taken as sent after our 'N'.
			 */
			if (ssl)
				c.ssl_answered = true;
			else
				c.gss_answered = true;
			continue;
		}
		if (f.code == CANCEL_REQUEST_CODE)
			handle_cancel(&f);
		else
			(void)handle_startup(&c, &f);
		break; /* either way the startup step is over */
	}
	free(c.startup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	login_scan(data, size);
	/*
	 * The input again as the body of a 3.0 StartupMessage with a correct header, so that the
	 * fuzzer can grow and shrink parameters without also having to fix the length. An input
	 * that starts with a 3.x header (as the seeds do) gives its own header up for the new one.
	 */
	if (size >= 8 && data[4] == 0 && data[5] == 3) {
		data += 8;
		size -= 8;
	}
	if (size <= FRAME_STARTUP_MAX - 8) {
		uint8_t *pkt = malloc(size + 8);
		CHECK(pkt != NULL);
		uint32_t len = (uint32_t)size + 8;
		pkt[0] = (uint8_t)(len >> 24);
		pkt[1] = (uint8_t)(len >> 16);
		pkt[2] = (uint8_t)(len >> 8);
		pkt[3] = (uint8_t)len;
		pkt[4] = 0;
		pkt[5] = 3;
		pkt[6] = 0;
		pkt[7] = 0;
		if (size)
			memcpy(pkt + 8, data, size);
		login_scan(pkt, size + 8);
		free(pkt);
	}
	return 0;
}
