/*
 * libFuzzer harness for src/protocol/frame.c, reader.c and builder.c.
 *
 * The input (after a first byte that picks the configured maximum) is read as a stream of typed
 * messages from each side in turn and as a length-first packet. Every frame is checked against an
 * independent statement of the rules (type tables, ceilings, header-only decisions), and every
 * complete body is walked with the reader the way its message format says, so that a getter
 * reading past a body is an ASan error. Then the same input is cut into strings for the builder
 * helpers and their output is parsed back and compared.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/builder.h"
#include "protocol/frame.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* The protocol's type tables, written independently of frame.c. */
static const char client_known[] = "BCDEFHPQSXcdfp";
static const char client_long[] = "QPBFdfp";
static const char server_known[] = "123ACDEGHIKNRSTVWZnstvcd";
static const char server_long[] = "TDdVENACtR";

static bool in_set(const char *set, uint8_t t)
{
	return t != 0 && strchr(set, t) != NULL;
}

/* ---- reader walks, one per message format ---- */

/* The last getter of a walk: its result only matters through the reader's state. */
static void step(bool ok)
{
	(void)ok;
}

/* Reads n values of a fixed width; false as soon as one is missing. */
static bool read_u16s(struct reader *r, uint16_t n)
{
	uint16_t v;
	for (uint16_t i = 0; i < n; i++)
		if (!reader_u16(r, &v))
			return false;
	return true;
}

/* n (length, bytes) values as in Bind, FunctionCall and DataRow; length -1 is NULL. */
static bool read_values(struct reader *r, uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		int32_t len;
		const uint8_t *p;
		if (!reader_i32(r, &len))
			return false;
		if (len >= 0 && !reader_bytes(r, (size_t)len, &p))
			return false;
	}
	return true;
}

static void walk_client(struct reader *r, uint8_t type)
{
	const char *s;
	size_t n;
	uint8_t u8;
	uint16_t u16, cnt;
	uint32_t u32;
	int32_t i32;
	const uint8_t *p;
	switch (type) {
	case PqMsg_Query:
		step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_Parse:
		if (reader_cstr(r, &s, &n) && reader_cstr(r, &s, &n) && reader_u16(r, &cnt))
			for (uint16_t i = 0; i < cnt && reader_u32(r, &u32); i++)
				;
		break;
	case PqMsg_Bind:
		if (reader_cstr(r, &s, &n) && reader_cstr(r, &s, &n) && reader_u16(r, &cnt) &&
		    read_u16s(r, cnt) && reader_u16(r, &cnt) && read_values(r, cnt) &&
		    reader_u16(r, &cnt))
			step(read_u16s(r, cnt));
		break;
	case PqMsg_Execute:
		if (reader_cstr(r, &s, &n))
			step(reader_u32(r, &u32));
		break;
	case PqMsg_Describe:
	case PqMsg_Close:
		if (reader_u8(r, &u8))
			step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_FunctionCall:
		if (reader_u32(r, &u32) && reader_u16(r, &cnt) && read_u16s(r, cnt) &&
		    reader_u16(r, &cnt) && read_values(r, cnt))
			step(reader_u16(r, &u16));
		break;
	case PqMsg_CopyFail:
		step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_PasswordMessage:
		/* As client_auth.c: a password, or a SASL initial response. */
		if (reader_cstr(r, &s, &n) && reader_remaining(r) > 0 && reader_i32(r, &i32) &&
		    i32 >= 0)
			step(reader_bytes(r, (size_t)i32, &p));
		break;
	default:
		step(reader_bytes(r, reader_remaining(r), &p));
		break;
	}
}

static void walk_server(struct reader *r, uint8_t type)
{
	const char *s;
	size_t n;
	uint8_t u8;
	uint16_t u16, cnt;
	uint32_t u32;
	int32_t i32;
	const uint8_t *p;
	switch (type) {
	case PqMsg_AuthenticationRequest:
		if (reader_u32(r, &u32)) {
			if (u32 == AUTH_REQ_MD5)
				step(reader_bytes(r, 4, &p));
			else if (u32 == AUTH_REQ_SASL)
				while (reader_cstr(r, &s, &n) && n)
					;
			else
				step(reader_bytes(r, reader_remaining(r), &p));
		}
		break;
	case PqMsg_ParameterStatus:
		if (reader_cstr(r, &s, &n))
			step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_BackendKeyData:
		if (reader_u32(r, &u32))
			step(reader_u32(r, &u32));
		break;
	case PqMsg_ReadyForQuery:
		step(reader_u8(r, &u8));
		break;
	case PqMsg_RowDescription:
		if (reader_u16(r, &cnt))
			for (uint16_t i = 0; i < cnt; i++)
				if (!reader_cstr(r, &s, &n) || !reader_u32(r, &u32) ||
				    !reader_u16(r, &u16) || !reader_u32(r, &u32) ||
				    !reader_u16(r, &u16) || !reader_i32(r, &i32) ||
				    !reader_u16(r, &u16))
					break;
		break;
	case PqMsg_DataRow:
		if (reader_u16(r, &cnt))
			step(read_values(r, cnt));
		break;
	case PqMsg_ErrorResponse:
	case PqMsg_NoticeResponse:
		while (reader_u8(r, &u8) && u8 != 0 && reader_cstr(r, &s, &n))
			;
		break;
	case PqMsg_CommandComplete:
		step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_ParameterDescription:
		if (reader_u16(r, &cnt))
			for (uint16_t i = 0; i < cnt && reader_u32(r, &u32); i++)
				;
		break;
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_CopyBothResponse:
		if (reader_u8(r, &u8) && reader_u16(r, &cnt))
			step(read_u16s(r, cnt));
		break;
	case PqMsg_NotificationResponse:
		if (reader_u32(r, &u32) && reader_cstr(r, &s, &n))
			step(reader_cstr(r, &s, &n));
		break;
	case PqMsg_NegotiateProtocolVersion:
		if (reader_u32(r, &u32) && reader_u32(r, &u32))
			for (uint32_t i = 0; i < u32 && reader_cstr(r, &s, &n); i++)
				;
		break;
	case PqMsg_FunctionCallResponse:
		if (reader_i32(r, &i32) && i32 >= 0)
			step(reader_bytes(r, (size_t)i32, &p));
		break;
	default:
		step(reader_bytes(r, reader_remaining(r), &p));
		break;
	}
}

/* Walks a body and checks the reader's own invariants on the way out. */
static void walk_body(const uint8_t *body, uint32_t len, uint8_t type, enum frame_side side)
{
	struct reader r;
	reader_init(&r, body, len);
	CHECK(reader_remaining(&r) == len);
	CHECK(reader_end(&r) == (len == 0));
	if (side == FRAME_FROM_CLIENT)
		walk_client(&r, type);
	else
		walk_server(&r, type);
	CHECK(r.p >= body && r.p <= body + len);
	if (r.failed) {
		CHECK(reader_remaining(&r) == 0);
		CHECK(!reader_end(&r));
		uint8_t u8;
		CHECK(!reader_u8(&r, &u8)); /* sticky */
	} else {
		CHECK(reader_remaining(&r) == (size_t)(body + len - r.p));
		CHECK(reader_end(&r) == (r.p == body + len));
	}
}

/* ---- framing ---- */

static void walk_typed(const uint8_t *data, size_t size, enum frame_side side, uint32_t max_len)
{
	const char *known = side == FRAME_FROM_CLIENT ? client_known : server_known;
	const char *longs = side == FRAME_FROM_CLIENT ? client_long : server_long;
	size_t off = 0;
	for (;;) {
		const uint8_t *p = data + off;
		size_t avail = size - off;
		struct frame f;
		enum frame_status st = frame_parse(p, avail, side, max_len, &f);
		if (avail < FRAME_HEADER_LEN) {
			CHECK(st == FRAME_NEED_MORE);
			return;
		}
		/* The verdict comes from the header alone. */
		struct frame g;
		CHECK(frame_parse(p, FRAME_HEADER_LEN, side, max_len, &g) == st);

		uint32_t wire_len = frame_get_u32(p + 1);
		bool is_known = in_set(known, p[0]);
		uint32_t ceiling = in_set(longs, p[0]) ? 0x3fffffffu : FRAME_SHORT_MAX;
		CHECK(frame_type_ceiling(p[0], side) == ceiling);
		if (ceiling > max_len)
			ceiling = max_len;
		bool valid = is_known && wire_len >= 4 && wire_len - 4 <= ceiling;
		CHECK(st == (valid ? FRAME_OK : FRAME_BAD));
		if (st != FRAME_OK)
			return;

		CHECK(f.type == p[0]);
		CHECK(f.len == wire_len - 4);
		CHECK(f.total == f.len + FRAME_HEADER_LEN);
		CHECK(f.code == 0);
		CHECK(f.body == p + FRAME_HEADER_LEN);
		size_t have = avail - FRAME_HEADER_LEN;
		CHECK(f.body_avail == (have < f.len ? have : f.len));
		if (f.body_avail < f.len)
			return;
		walk_body(f.body, f.len, f.type, side);
		off += f.total;
	}
}

static void walk_startup(const uint8_t *data, size_t size)
{
	struct frame f;
	enum frame_status st = frame_parse_startup(data, size, &f);
	if (size < 4) {
		CHECK(st == FRAME_NEED_MORE);
		return;
	}
	uint32_t len = frame_get_u32(data);
	if (len < 8 || len > FRAME_STARTUP_MAX) {
		CHECK(st == FRAME_BAD);
		return;
	}
	if (size < len) {
		CHECK(st == FRAME_NEED_MORE);
		return;
	}
	CHECK(st == FRAME_OK);
	CHECK(f.type == 0 && f.total == len && f.len == len - 8 && f.body_avail == f.len);
	CHECK(f.code == frame_get_u32(data + 4) && f.body == data + 8);
	/* A StartupMessage body: name/value pairs and a terminating NUL. */
	struct reader r;
	reader_init(&r, f.body, f.len);
	const char *name, *value;
	size_t nlen;
	while (reader_cstr(&r, &name, &nlen) && nlen && reader_cstr(&r, &value, NULL))
		CHECK(strlen(name) == nlen);
	step(reader_end(&r));
	/* A CancelRequest body. */
	uint32_t pid, key;
	reader_init(&r, f.body, f.len);
	if (reader_u32(&r, &pid) && reader_u32(&r, &key))
		CHECK(reader_end(&r) == (f.len == 8));
}

/* ---- builder round trip ---- */

/* Cuts the input into up to n NUL-free strings (copied, NUL-terminated). */
static size_t cut_strings(const uint8_t *data, size_t size, char **out, size_t n)
{
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= size && k < n; i++) {
		if (i == size || data[i] == 0 || data[i] == '|') {
			char *s = malloc(i - start + 1);
			CHECK(s != NULL);
			for (size_t j = start; j < i; j++)
				s[j - start] = data[j] ? (char)data[j] : 'x';
			s[i - start] = 0;
			out[k++] = s;
			start = i + 1;
		}
	}
	return k;
}

static void expect_cstr(struct reader *r, const char *want)
{
	const char *s;
	size_t n;
	CHECK(reader_cstr(r, &s, &n));
	CHECK(n == strlen(want) && memcmp(s, want, n) == 0);
}

/* Steps past the frame f at *p, parses the next server frame, checks its type, starts r on it. */
static void next_server_frame(const uint8_t **p, size_t *avail, uint8_t type, struct frame *f,
			      struct reader *r)
{
	*p += f->total;
	*avail -= f->total;
	CHECK(frame_parse(*p, *avail, FRAME_FROM_SERVER, 0x3fffffffu, f) == FRAME_OK);
	CHECK(f->type == type);
	reader_init(r, f->body, f->len);
}

static void roundtrip(const uint8_t *data, size_t size)
{
	char *str[6];
	size_t n = cut_strings(data, size, str, 6);
	static const char *const fallback = "";
	const char *a = n > 0 ? str[0] : fallback;
	const char *b = n > 1 ? str[1] : fallback;
	const char *c = n > 2 ? str[2] : fallback;

	uint8_t store[64];
	struct builder bld;
	builder_init(&bld, store, sizeof(store));
	builder_error(&bld, a, b, c);
	builder_param_status(&bld, b, c);
	builder_command_complete(&bld, a);
	const char *row[3] = { a, NULL, c };
	builder_data_row(&bld, row, 3);
	builder_row_description(&bld, row + 2, 1);
	builder_ready(&bld, size ? (char)data[0] : 'I');
	CHECK(builder_ok(&bld));

	const uint8_t *p = bld.data;
	size_t avail = bld.len;
	struct frame f;
	struct reader r;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	int32_t i32;
	const uint8_t *raw;

	CHECK(frame_parse(p, avail, FRAME_FROM_SERVER, 0x3fffffffu, &f) == FRAME_OK);
	CHECK(f.type == 'E' && f.body_avail == f.len);
	reader_init(&r, f.body, f.len);
	static const char fields[] = "SVCM";
	for (int i = 0; i < 4; i++) {
		CHECK(reader_u8(&r, &u8) && u8 == (uint8_t)fields[i]);
		expect_cstr(&r, i < 2 ? a : i == 2 ? b : c);
	}
	CHECK(reader_u8(&r, &u8) && u8 == 0 && reader_end(&r));

	next_server_frame(&p, &avail, 'S', &f, &r);
	expect_cstr(&r, b);
	expect_cstr(&r, c);
	CHECK(reader_end(&r));

	next_server_frame(&p, &avail, 'C', &f, &r);
	expect_cstr(&r, a);
	CHECK(reader_end(&r));

	next_server_frame(&p, &avail, 'D', &f, &r);
	CHECK(reader_u16(&r, &u16) && u16 == 3);
	CHECK(reader_i32(&r, &i32) && (size_t)i32 == strlen(a));
	CHECK(reader_bytes(&r, (size_t)i32, &raw) && memcmp(raw, a, (size_t)i32) == 0);
	CHECK(reader_i32(&r, &i32) && i32 == -1);
	CHECK(reader_i32(&r, &i32) && (size_t)i32 == strlen(c));
	CHECK(reader_bytes(&r, (size_t)i32, &raw));
	CHECK(reader_end(&r));

	next_server_frame(&p, &avail, 'T', &f, &r);
	CHECK(reader_u16(&r, &u16) && u16 == 1);
	expect_cstr(&r, c);
	CHECK(reader_u32(&r, &u32) && u32 == 0);
	CHECK(reader_u16(&r, &u16) && u16 == 0);
	CHECK(reader_u32(&r, &u32) && u32 == 25);
	CHECK(reader_u16(&r, &u16) && u16 == 0xffff);
	CHECK(reader_i32(&r, &i32) && i32 == -1);
	CHECK(reader_u16(&r, &u16) && u16 == 0);
	CHECK(reader_end(&r));
	p += f.total;
	avail -= f.total;

	CHECK(frame_parse(p, avail, FRAME_FROM_SERVER, 0x3fffffffu, &f) == FRAME_OK);
	CHECK(f.type == 'Z' && f.len == 1 && f.total == avail);

	size_t stolen_len = 0;
	uint8_t *stolen = builder_steal(&bld, &stolen_len);
	CHECK(stolen != NULL && stolen_len > 0);
	free(stolen);
	builder_free(&bld);
	for (size_t i = 0; i < n; i++)
		free(str[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	/* First byte: the configured maximum (high bit set: small maxima to hit the cap). */
	uint32_t max_len = data[0] & 0x80 ? (uint32_t)(data[0] & 0x7f) * 97 : 0x3fffffffu;
	data++;
	size--;
	walk_typed(data, size, FRAME_FROM_CLIENT, max_len);
	walk_typed(data, size, FRAME_FROM_SERVER, max_len);
	walk_startup(data, size);
	/* A startup packet followed by pipelined typed messages, as a client sends them. */
	struct frame f;
	if (frame_parse_startup(data, size, &f) == FRAME_OK)
		walk_typed(data + f.total, size - f.total, FRAME_FROM_CLIENT, max_len);
	roundtrip(data, size < 4096 ? size : 4096);
	return 0;
}
