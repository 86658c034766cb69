/*
 * Unit tests of src/protocol/frame.c and src/protocol/reader.c.
 *
 * The tables of message types below are written from the PostgreSQL protocol documentation
 * ("Message Formats", protocol.sgml) and libpq's VALID_LONG_MESSAGE_TYPE, not copied from frame.c,
 * so that a type added or dropped there by mistake shows up here. Packets are byte arrays; every
 * valid packet is also fed split at every byte offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/frame.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Every type byte a frontend may send in protocol 3.0. */
static const char client_types[] = {
	'B', /* Bind */
	'C', /* Close */
	'D', /* Describe */
	'E', /* Execute */
	'F', /* FunctionCall */
	'H', /* Flush */
	'P', /* Parse */
	'Q', /* Query */
	'S', /* Sync */
	'X', /* Terminate */
	'c', /* CopyDone */
	'd', /* CopyData */
	'f', /* CopyFail */
	'p', /* PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse */
};

/* Client types that carry user data (SQL text, parameters, COPY data, passwords). */
static const char client_long_types[] = { 'Q', 'P', 'B', 'F', 'd', 'f', 'p' };

/* Every type byte a backend may send in protocol 3.0. */
static const char server_types[] = {
	'1', /* ParseComplete */
	'2', /* BindComplete */
	'3', /* CloseComplete */
	'A', /* NotificationResponse */
	'C', /* CommandComplete */
	'D', /* DataRow */
	'E', /* ErrorResponse */
	'G', /* CopyInResponse */
	'H', /* CopyOutResponse */
	'I', /* EmptyQueryResponse */
	'K', /* BackendKeyData */
	'N', /* NoticeResponse */
	'R', /* Authentication* */
	'S', /* ParameterStatus */
	'T', /* RowDescription */
	'V', /* FunctionCallResponse */
	'W', /* CopyBothResponse */
	'Z', /* ReadyForQuery */
	'n', /* NoData */
	's', /* PortalSuspended */
	't', /* ParameterDescription */
	'v', /* NegotiateProtocolVersion */
	'c', /* CopyDone */
	'd', /* CopyData */
};

/* libpq's VALID_LONG_MESSAGE_TYPE ('T','D','d','V','E','N','A') plus C, t and R (SASL data). */
static const char server_long_types[] = { 'T', 'D', 'd', 'V', 'E', 'N', 'A', 'C', 't', 'R' };

#define LONG_CEILING 0x3fffffffu

static bool in_set(const char *set, size_t n, uint8_t type)
{
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)set[i] == type)
			return true;
	return false;
}

static bool type_known(enum frame_side side, uint8_t type)
{
	if (side == FRAME_FROM_CLIENT)
		return in_set(client_types, sizeof(client_types), type);
	return in_set(server_types, sizeof(server_types), type);
}

static uint32_t type_ceiling(enum frame_side side, uint8_t type)
{
	bool is_long = side == FRAME_FROM_CLIENT
			       ? in_set(client_long_types, sizeof(client_long_types), type)
			       : in_set(server_long_types, sizeof(server_long_types), type);
	return is_long ? LONG_CEILING : FRAME_SHORT_MAX;
}

static void put_header(uint8_t *p, uint8_t type, uint32_t len)
{
	p[0] = type;
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
}

/* A frame filled with a pattern, so that a field parse left untouched is noticed. */
static void poison(struct frame *f)
{
	memset(f, 0xa5, sizeof(*f));
}

/* ---- frame_parse: types ---- */

static void test_every_type_byte_both_sides(void **state)
{
	(void)state;
	static const enum frame_side sides[] = { FRAME_FROM_CLIENT, FRAME_FROM_SERVER };
	for (size_t s = 0; s < ARRAY_LEN(sides); s++) {
		for (unsigned t = 0; t < 256; t++) {
			uint8_t msg[FRAME_HEADER_LEN];
			put_header(msg, (uint8_t)t, 4);
			struct frame f = { 0 };
			poison(&f);
			enum frame_status st =
				frame_parse(msg, sizeof(msg), sides[s], UINT32_MAX, &f);
			if (!type_known(sides[s], (uint8_t)t)) {
				if (st != FRAME_BAD)
					fail_msg("side %zu type 0x%02x: expected FRAME_BAD", s, t);
				continue;
			}
			if (st != FRAME_OK)
				fail_msg("side %zu type '%c': expected FRAME_OK, got %d", s, t, st);
			assert_int_equal(f.type, t);
			assert_int_equal(f.len, 0);
			assert_int_equal(f.total, 5);
			assert_int_equal(f.code, 0);
			assert_ptr_equal(f.body, msg + FRAME_HEADER_LEN);
			assert_int_equal(f.body_avail, 0);
		}
	}
}

static void test_type_ceilings(void **state)
{
	(void)state;
	static const enum frame_side sides[] = { FRAME_FROM_CLIENT, FRAME_FROM_SERVER };
	for (size_t s = 0; s < ARRAY_LEN(sides); s++) {
		const char *types = s == 0 ? client_types : server_types;
		size_t ntypes = s == 0 ? sizeof(client_types) : sizeof(server_types);
		for (size_t i = 0; i < ntypes; i++) {
			uint8_t t = (uint8_t)types[i];
			uint32_t ceiling = type_ceiling(sides[s], t);
			if (frame_type_ceiling(t, sides[s]) != ceiling)
				fail_msg("side %zu type '%c': ceiling %u, expected %u", s, t,
					 frame_type_ceiling(t, sides[s]), ceiling);

			/* Body exactly at the ceiling: accepted, only the header present. */
			uint8_t msg[FRAME_HEADER_LEN];
			struct frame f = { 0 };
			put_header(msg, t, ceiling + 4);
			poison(&f);
			assert_int_equal(frame_parse(msg, sizeof(msg), sides[s], UINT32_MAX, &f),
					 FRAME_OK);
			assert_int_equal(f.len, ceiling);
			assert_int_equal(f.total, ceiling + 5);
			assert_int_equal(f.body_avail, 0);

			/* One byte above: rejected before the body arrives. */
			put_header(msg, t, ceiling + 5);
			if (frame_parse(msg, sizeof(msg), sides[s], UINT32_MAX, &f) != FRAME_BAD)
				fail_msg("side %zu type '%c': body %u above the ceiling accepted",
					 s, t, ceiling + 1);
		}
	}
}

static void test_len_below_four(void **state)
{
	(void)state;
	for (uint32_t len = 0; len < 4; len++) {
		uint8_t msg[16] = { 0 };
		struct frame f = { 0 };
		put_header(msg, 'Q', len);
		assert_int_equal(frame_parse(msg, sizeof(msg), FRAME_FROM_CLIENT, UINT32_MAX, &f),
				 FRAME_BAD);
		put_header(msg, 'Z', len);
		assert_int_equal(frame_parse(msg, sizeof(msg), FRAME_FROM_SERVER, UINT32_MAX, &f),
				 FRAME_BAD);
	}
}

static void test_len_extremes(void **state)
{
	(void)state;
	static const uint32_t lens[] = { 0x40000004u, 0x7fffffffu, 0x80000000u, 0xfffffffbu,
					 0xffffffffu };
	for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
		uint8_t msg[FRAME_HEADER_LEN];
		struct frame f = { 0 };
		put_header(msg, 'd', lens[i]);
		assert_int_equal(frame_parse(msg, sizeof(msg), FRAME_FROM_CLIENT, UINT32_MAX, &f),
				 FRAME_BAD);
		assert_int_equal(frame_parse(msg, sizeof(msg), FRAME_FROM_SERVER, UINT32_MAX, &f),
				 FRAME_BAD);
	}
}

struct max_len_case {
	enum frame_side side;
	uint8_t type;
	uint32_t max_len;
	uint32_t body; /* body length in the header */
	enum frame_status want;
};

static const struct max_len_case max_len_cases[] = {
	/* The configured maximum caps long types... */
	{ FRAME_FROM_CLIENT, 'Q', 100, 100, FRAME_OK },
	{ FRAME_FROM_CLIENT, 'Q', 100, 101, FRAME_BAD },
	{ FRAME_FROM_SERVER, 'D', 1000000, 1000000, FRAME_OK },
	{ FRAME_FROM_SERVER, 'D', 1000000, 1000001, FRAME_BAD },
	/* ...and short ones, when it is below their ceiling... */
	{ FRAME_FROM_CLIENT, 'S', 0, 0, FRAME_OK },
	{ FRAME_FROM_CLIENT, 'S', 0, 1, FRAME_BAD },
	{ FRAME_FROM_SERVER, 'Z', 1, 1, FRAME_OK },
	{ FRAME_FROM_SERVER, 'Z', 1, 2, FRAME_BAD },
	/* ...but never raises a short type's ceiling. */
	{ FRAME_FROM_CLIENT, 'S', 50000, FRAME_SHORT_MAX, FRAME_OK },
	{ FRAME_FROM_CLIENT, 'S', 50000, FRAME_SHORT_MAX + 1, FRAME_BAD },
	{ FRAME_FROM_SERVER, 'K', UINT32_MAX, FRAME_SHORT_MAX + 1, FRAME_BAD },
	/* Nor a long type's. */
	{ FRAME_FROM_CLIENT, 'd', UINT32_MAX, LONG_CEILING, FRAME_OK },
	{ FRAME_FROM_CLIENT, 'd', UINT32_MAX, LONG_CEILING + 1, FRAME_BAD },
	/* A maximum of zero leaves only empty bodies. */
	{ FRAME_FROM_CLIENT, 'Q', 0, 0, FRAME_OK },
	{ FRAME_FROM_CLIENT, 'Q', 0, 1, FRAME_BAD },
};

static void test_max_len_cap(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(max_len_cases); i++) {
		const struct max_len_case *c = &max_len_cases[i];
		uint8_t msg[FRAME_HEADER_LEN];
		struct frame f = { 0 };
		put_header(msg, c->type, c->body + 4);
		enum frame_status st = frame_parse(msg, sizeof(msg), c->side, c->max_len, &f);
		if (st != c->want)
			fail_msg("case %zu ('%c', max %u, body %u): got %d, want %d", i, c->type,
				 c->max_len, c->body, st, c->want);
		if (st == FRAME_OK)
			assert_int_equal(f.len, c->body);
	}
}

/* ---- frame_parse: partial input ---- */

struct packet {
	const char *name;
	enum frame_side side;
	const uint8_t *bytes;
	size_t len;
};

#define PKT(name, side, lit)                                                                       \
	{                                                                                          \
		name, side, (const uint8_t *)(lit), sizeof(lit) - 1                                \
	}

static const struct packet typed_packets[] = {
	PKT("Query", FRAME_FROM_CLIENT, "Q\x00\x00\x00\x0dSELECT 1\x00"),
	PKT("Sync", FRAME_FROM_CLIENT, "S\x00\x00\x00\x04"),
	PKT("Terminate", FRAME_FROM_CLIENT, "X\x00\x00\x00\x04"),
	PKT("Parse", FRAME_FROM_CLIENT,
	    "P\x00\x00\x00\x17"
	    "s1\x00"
	    "SELECT $1\x00"
	    "\x00\x01\x00\x00\x00\x17"),
	PKT("Bind", FRAME_FROM_CLIENT,
	    "B\x00\x00\x00\x13"
	    "\x00"
	    "s1\x00"
	    "\x00\x00"
	    "\x00\x01\x00\x00\x00\x01"
	    "7"
	    "\x00\x00"),
	PKT("Execute", FRAME_FROM_CLIENT, "E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
	PKT("CopyData", FRAME_FROM_CLIENT,
	    "d\x00\x00\x00\x07"
	    "1\t2"),
	PKT("SASLInitialResponse", FRAME_FROM_CLIENT,
	    "p\x00\x00\x00\x1a"
	    "SCRAM-SHA-256\x00"
	    "\x00\x00\x00\x04n,,x"),
	PKT("ReadyForQuery", FRAME_FROM_SERVER, "Z\x00\x00\x00\x05I"),
	PKT("ParameterStatus", FRAME_FROM_SERVER,
	    "S\x00\x00\x00\x19"
	    "client_encoding\x00UTF8\x00"),
	PKT("BackendKeyData", FRAME_FROM_SERVER,
	    "K\x00\x00\x00\x0c\x00\x00\x30\x39\xde\xad\xbe\xef"),
	PKT("AuthenticationOk", FRAME_FROM_SERVER, "R\x00\x00\x00\x08\x00\x00\x00\x00"),
	PKT("CommandComplete", FRAME_FROM_SERVER, "C\x00\x00\x00\x0dSELECT 1\x00"),
	PKT("DataRow", FRAME_FROM_SERVER,
	    "D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x01"
	    "1\xff\xff\xff\xff"),
	PKT("NoData", FRAME_FROM_SERVER, "n\x00\x00\x00\x04"),
};

static void test_typed_split_at_every_offset(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(typed_packets); i++) {
		const struct packet *p = &typed_packets[i];
		/* The header agrees with the array length: the table itself is right. */
		assert_int_equal(frame_get_u32(p->bytes + 1) + 1, p->len);
		for (size_t k = 0; k <= p->len; k++) {
			/* An exact-size copy so that a read past avail is an ASan error. */
			uint8_t *copy = malloc(k ? k : 1);
			assert_non_null(copy);
			memcpy(copy, p->bytes, k);
			struct frame f = { 0 };
			poison(&f);
			enum frame_status st = frame_parse(copy, k, p->side, UINT32_MAX, &f);
			if (k < FRAME_HEADER_LEN) {
				if (st != FRAME_NEED_MORE)
					fail_msg("%s: %zu bytes: expected NEED_MORE, got %d",
						 p->name, k, st);
			} else {
				if (st != FRAME_OK)
					fail_msg("%s: %zu bytes: expected OK, got %d", p->name, k,
						 st);
				assert_int_equal(f.type, p->bytes[0]);
				assert_int_equal(f.len, p->len - FRAME_HEADER_LEN);
				assert_int_equal(f.total, p->len);
				assert_ptr_equal(f.body, copy + FRAME_HEADER_LEN);
				assert_int_equal(f.body_avail, k - FRAME_HEADER_LEN);
			}
			free(copy);
		}
	}
}

/* Before the header is complete nothing is judged, not even the type byte. */
static void test_need_more_before_header(void **state)
{
	(void)state;
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff };
	struct frame f = { 0 };
	for (size_t k = 0; k <= sizeof(junk); k++) {
		assert_int_equal(frame_parse(junk, k, FRAME_FROM_CLIENT, UINT32_MAX, &f),
				 FRAME_NEED_MORE);
		assert_int_equal(frame_parse(junk, k, FRAME_FROM_SERVER, UINT32_MAX, &f),
				 FRAME_NEED_MORE);
	}
}

/* Bytes after the message are the next message's: body_avail stops at len. */
static void test_back_to_back_messages(void **state)
{
	(void)state;
	static const uint8_t stream[] =
		"1\x00\x00\x00\x04"
		"2\x00\x00\x00\x04"
		"T\x00\x00\x00\x1a\x00\x01"
		"a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff"
		"\xff\xff\x00\x00"
		"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01x"
		"C\x00\x00\x00\x0dSELECT 1\x00"
		"Z\x00\x00\x00\x05I";
	static const struct {
		uint8_t type;
		uint32_t len;
	} want[] = { { '1', 0 }, { '2', 0 }, { 'T', 22 }, { 'D', 7 }, { 'C', 9 }, { 'Z', 1 } };
	size_t off = 0, n = sizeof(stream) - 1;
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		struct frame f = { 0 };
		assert_int_equal(
			frame_parse(stream + off, n - off, FRAME_FROM_SERVER, UINT32_MAX, &f),
			FRAME_OK);
		assert_int_equal(f.type, want[i].type);
		assert_int_equal(f.len, want[i].len);
		assert_int_equal(f.body_avail, want[i].len);
		off += f.total;
	}
	assert_int_equal(off, n);
}

/* ---- frame_parse_startup ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

struct startup_len_case {
	uint32_t len;
	enum frame_status want; /* with the whole packet (or 10001 bytes) present */
};

static const struct startup_len_case startup_len_cases[] = {
	{ 0, FRAME_BAD },
	{ 4, FRAME_BAD },
	{ 7, FRAME_BAD },
	{ 8, FRAME_OK },
	{ 9, FRAME_OK },
	{ 9999, FRAME_OK },
	{ 10000, FRAME_OK },
	{ 10001, FRAME_BAD },
	{ 0x7fffffffu, FRAME_BAD },
	{ 0xffffffffu, FRAME_BAD },
};

static void test_startup_lengths(void **state)
{
	(void)state;
	size_t cap = FRAME_STARTUP_MAX + 1;
	uint8_t *buf = calloc(1, cap);
	assert_non_null(buf);
	for (size_t i = 0; i < ARRAY_LEN(startup_len_cases); i++) {
		const struct startup_len_case *c = &startup_len_cases[i];
		put_u32(buf, c->len);
		put_u32(buf + 4, PG_PROTOCOL_3_0);
		size_t avail = c->len >= 8 && c->len <= cap ? c->len : cap;
		struct frame f = { 0 };
		poison(&f);
		enum frame_status st = frame_parse_startup(buf, avail, &f);
		if (st != c->want)
			fail_msg("length %u: got %d, want %d", c->len, st, c->want);
		if (st == FRAME_OK) {
			assert_int_equal(f.type, 0);
			assert_int_equal(f.len, c->len - 8);
			assert_int_equal(f.total, c->len);
			assert_int_equal(f.code, PG_PROTOCOL_3_0);
			assert_ptr_equal(f.body, buf + 8);
			assert_int_equal(f.body_avail, c->len - 8);
		}
		/* An invalid length is known from its 4 bytes: no need to wait for more. */
		if (c->want == FRAME_BAD)
			assert_int_equal(frame_parse_startup(buf, 4, &f), FRAME_BAD);
	}
	/* A valid maximal packet one byte short waits. */
	put_u32(buf, FRAME_STARTUP_MAX);
	struct frame f = { 0 };
	assert_int_equal(frame_parse_startup(buf, FRAME_STARTUP_MAX - 1, &f), FRAME_NEED_MORE);
	free(buf);
}

struct startup_packet {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	uint32_t code;
};

#define SPKT(name, lit, code)                                                                      \
	{                                                                                          \
		name, (const uint8_t *)(lit), sizeof(lit) - 1, code                                \
	}

static const struct startup_packet startup_packets[] = {
	SPKT("SSLRequest", "\x00\x00\x00\x08\x04\xd2\x16\x2f", 80877103u),
	SPKT("GSSENCRequest", "\x00\x00\x00\x08\x04\xd2\x16\x30", 80877104u),
	SPKT("CancelRequest", "\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef",
	     80877102u),
	SPKT("StartupMessage 3.0",
	     "\x00\x00\x00\x21\x00\x03\x00\x00"
	     "user\x00"
	     "alice\x00"
	     "database\x00"
	     "db1\x00"
	     "\x00",
	     0x00030000u),
	SPKT("StartupMessage 3.2", "\x00\x00\x00\x09\x00\x03\x00\x02\x00", 0x00030002u),
};

static void test_startup_codes_split_at_every_offset(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(startup_packets); i++) {
		const struct startup_packet *p = &startup_packets[i];
		assert_int_equal(frame_get_u32(p->bytes), p->len);
		for (size_t k = 0; k <= p->len; k++) {
			uint8_t *copy = malloc(k ? k : 1);
			assert_non_null(copy);
			memcpy(copy, p->bytes, k);
			struct frame f = { 0 };
			poison(&f);
			enum frame_status st = frame_parse_startup(copy, k, &f);
			if (k < p->len) {
				if (st != FRAME_NEED_MORE)
					fail_msg("%s: %zu bytes: expected NEED_MORE, got %d",
						 p->name, k, st);
			} else {
				assert_int_equal(st, FRAME_OK);
				assert_int_equal(f.type, 0);
				assert_int_equal(f.code, p->code);
				assert_int_equal(f.len, p->len - 8);
				assert_int_equal(f.total, p->len);
				assert_ptr_equal(f.body, copy + 8);
				assert_int_equal(f.body_avail, p->len - 8);
			}
			free(copy);
		}
	}
	assert_int_equal(NEGOTIATE_SSL_CODE, 80877103u);
	assert_int_equal(NEGOTIATE_GSS_CODE, 80877104u);
	assert_int_equal(CANCEL_REQUEST_CODE, 80877102u);
}

/* A pipelined typed message after the startup packet is not part of it. */
static void test_startup_trailing_bytes(void **state)
{
	(void)state;
	static const uint8_t in[] = "\x00\x00\x00\x08\x04\xd2\x16\x2fQ\x00\x00\x00\x04";
	struct frame f = { 0 };
	assert_int_equal(frame_parse_startup(in, sizeof(in) - 1, &f), FRAME_OK);
	assert_int_equal(f.total, 8);
	assert_int_equal(f.len, 0);
	assert_int_equal(f.body_avail, 0);
}

/* ---- reader ---- */

static void test_reader_values(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0x7f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff,
					0xff, 0xfe, 'a',  'b',	0x00, 0x00, 0x01, 0x02, 0x03 };
	struct reader r;
	reader_init(&r, body, sizeof(body));
	assert_int_equal(reader_remaining(&r), sizeof(body));

	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	int32_t i32;
	const char *s;
	size_t slen;
	const uint8_t *raw;
	assert_true(reader_u8(&r, &u8));
	assert_int_equal(u8, 0x7f);
	assert_true(reader_u16(&r, &u16));
	assert_int_equal(u16, 0x1234);
	assert_true(reader_u32(&r, &u32));
	assert_int_equal(u32, 0xdeadbeefu);
	assert_true(reader_i32(&r, &i32));
	assert_int_equal(i32, -2);
	assert_true(reader_cstr(&r, &s, &slen));
	assert_ptr_equal(s, (const char *)body + 11);
	assert_int_equal(slen, 2);
	assert_string_equal(s, "ab");
	assert_true(reader_cstr(&r, &s, NULL)); /* empty string, length not wanted */
	assert_string_equal(s, "");
	assert_false(reader_end(&r));
	assert_int_equal(reader_remaining(&r), 3);
	assert_true(reader_bytes(&r, 0, &raw));
	assert_true(reader_bytes(&r, 3, &raw));
	assert_ptr_equal(raw, body + 15);
	assert_int_equal(reader_remaining(&r), 0);
	assert_true(reader_end(&r));
}

static void test_reader_signed_extremes(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0x80, 0x00, 0x00, 0x00, 0xff, 0xff,
					0xff, 0xff, 0x7f, 0xff, 0xff, 0xff };
	struct reader r;
	int32_t v;
	reader_init(&r, body, sizeof(body));
	assert_true(reader_i32(&r, &v));
	assert_int_equal(v, INT32_MIN);
	assert_true(reader_i32(&r, &v));
	assert_int_equal(v, -1);
	assert_true(reader_i32(&r, &v));
	assert_int_equal(v, INT32_MAX);
	assert_true(reader_end(&r));
}

enum getter { G_U8, G_U16, G_U32, G_I32, G_BYTES, G_CSTR };

static bool run_getter(struct reader *r, enum getter g, size_t n)
{
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	int32_t i32;
	const uint8_t *raw;
	const char *s;
	size_t slen;
	switch (g) {
	case G_U8:
		return reader_u8(r, &u8);
	case G_U16:
		return reader_u16(r, &u16);
	case G_U32:
		return reader_u32(r, &u32);
	case G_I32:
		return reader_i32(r, &i32);
	case G_BYTES:
		return reader_bytes(r, n, &raw);
	case G_CSTR:
		return reader_cstr(r, &s, &slen);
	}
	return false;
}

struct short_case {
	const char *name;
	enum getter g;
	size_t n;     /* for G_BYTES */
	size_t avail; /* bytes in the body: one fewer than needed */
};

static const struct short_case short_cases[] = {
	{ "u8 on empty", G_U8, 0, 0 },
	{ "u16 on 1", G_U16, 0, 1 },
	{ "u16 on 0", G_U16, 0, 0 },
	{ "u32 on 3", G_U32, 0, 3 },
	{ "u32 on 0", G_U32, 0, 0 },
	{ "i32 on 3", G_I32, 0, 3 },
	{ "bytes 5 on 4", G_BYTES, 5, 4 },
	{ "bytes 1 on 0", G_BYTES, 1, 0 },
	{ "bytes SIZE_MAX on 4", G_BYTES, SIZE_MAX, 4 },
	{ "cstr without NUL", G_CSTR, 0, 4 },
	{ "cstr on empty", G_CSTR, 0, 0 },
};

static void test_reader_short_input(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(short_cases); i++) {
		const struct short_case *c = &short_cases[i];
		/* Exact-size heap copy: reading one byte too far is an ASan error. */
		uint8_t *body = malloc(c->avail ? c->avail : 1);
		assert_non_null(body);
		memset(body, 'x', c->avail ? c->avail : 1);
		struct reader r;
		reader_init(&r, body, c->avail);
		if (run_getter(&r, c->g, c->n))
			fail_msg("%s: succeeded", c->name);
		assert_true(r.failed);
		assert_int_equal(reader_remaining(&r), 0);
		assert_false(reader_end(&r));
		free(body);
	}
}

/* After one failure every getter fails, even those the remaining bytes would satisfy. */
static void test_reader_sticky_failure(void **state)
{
	(void)state;
	static const uint8_t body[] = { 'a', 0, 1, 2 };
	static const enum getter all[] = { G_U8, G_U16, G_U32, G_I32, G_BYTES, G_CSTR };
	for (size_t i = 0; i < ARRAY_LEN(all); i++) {
		struct reader r;
		reader_init(&r, body, sizeof(body));
		uint32_t u32;
		assert_true(reader_u8(&r, &(uint8_t){ 0 }));
		assert_false(reader_u32(&r, &u32)); /* 3 left */
		assert_false(run_getter(&r, all[i], 1));
		assert_int_equal(reader_remaining(&r), 0);
		assert_false(reader_end(&r));
	}
	/* The failed getter does not move the cursor either. */
	struct reader r;
	reader_init(&r, body, sizeof(body));
	assert_false(reader_bytes(&r, 5, &(const uint8_t *){ NULL }));
	assert_ptr_equal(r.p, body);
}

static void test_reader_cstr_edges(void **state)
{
	(void)state;
	/* The NUL is the last byte: consumed, and the reader is at the end. */
	static const uint8_t last[] = { 'u', 's', 'e', 'r', 0 };
	struct reader r;
	const char *s;
	size_t n;
	reader_init(&r, last, sizeof(last));
	assert_true(reader_cstr(&r, &s, &n));
	assert_int_equal(n, 4);
	assert_true(reader_end(&r));
	assert_false(reader_cstr(&r, &s, &n)); /* nothing left */
	assert_false(reader_end(&r));

	/* A string, then an unterminated one: the second fails, the first stays valid. */
	static const uint8_t two[] = { 'a', 0, 'b', 'c' };
	reader_init(&r, two, sizeof(two));
	assert_true(reader_cstr(&r, &s, &n));
	assert_string_equal(s, "a");
	assert_false(reader_cstr(&r, &s, &n));
	assert_false(reader_end(&r));

	/* Only NULs: a sequence of empty strings. */
	static const uint8_t nuls[] = { 0, 0, 0 };
	reader_init(&r, nuls, sizeof(nuls));
	for (int i = 0; i < 3; i++) {
		assert_true(reader_cstr(&r, &s, &n));
		assert_int_equal(n, 0);
	}
	assert_true(reader_end(&r));
}

static void test_reader_end_exactness(void **state)
{
	(void)state;
	static const uint8_t body[] = { 1, 2, 3, 4, 5 };
	struct reader r;
	uint32_t u32;
	uint8_t u8;

	reader_init(&r, body, 0);
	assert_true(reader_end(&r)); /* an empty body is consumed by reading nothing */

	reader_init(&r, body, sizeof(body));
	assert_false(reader_end(&r));
	assert_true(reader_u32(&r, &u32));
	assert_false(reader_end(&r)); /* one byte left */
	assert_true(reader_u8(&r, &u8));
	assert_true(reader_end(&r));
	assert_false(reader_u8(&r, &u8)); /* reading past the end fails and stays failed */
	assert_false(reader_end(&r));

	/* reader_end does not consume: asking twice gives the same answer. */
	reader_init(&r, body, 4);
	assert_true(reader_u32(&r, &u32));
	assert_true(reader_end(&r));
	assert_true(reader_end(&r));
}

/* A realistic walk: a CancelRequest body as client.c reads it, and the same with one extra byte. */
static void test_reader_cancel_body(void **state)
{
	(void)state;
	static const uint8_t pkt[] =
		"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef";
	static const uint8_t longer[] = "\x00\x00\x00\x11\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad"
					"\xbe\xef\x00";
	struct frame f = { 0 };
	struct reader r;
	uint32_t pid = 0, key = 0;

	assert_int_equal(frame_parse_startup(pkt, sizeof(pkt) - 1, &f), FRAME_OK);
	reader_init(&r, f.body, f.len);
	assert_true(reader_u32(&r, &pid) && reader_u32(&r, &key) && reader_end(&r));
	assert_int_equal(pid, 12345);
	assert_int_equal(key, 0xdeadbeefu);

	assert_int_equal(frame_parse_startup(longer, sizeof(longer) - 1, &f), FRAME_OK);
	reader_init(&r, f.body, f.len);
	assert_true(reader_u32(&r, &pid) && reader_u32(&r, &key));
	assert_false(reader_end(&r));
}

/* msg_body_is_parse against the rule spelled with the reader, over every short body made of a
 * few interesting bytes, and over Parse bodies with 0-3 parameter types, cut and extended. */
static bool parse_body_by_reader(const uint8_t *body, size_t len)
{
	struct reader r;
	const char *name, *query;
	uint16_t n;
	const uint8_t *types;
	reader_init(&r, body, len);
	return reader_cstr(&r, &name, NULL) && reader_cstr(&r, &query, NULL) &&
	       reader_u16(&r, &n) && reader_bytes(&r, (size_t)n * 4, &types) && reader_end(&r);
}

static void test_body_is_parse(void **state)
{
	(void)state;
	static const uint8_t alphabet[] = { 0, 1, 'S', 4 };
	uint8_t body[8];
	for (size_t len = 0; len <= 7; len++) {
		size_t combos = 1;
		for (size_t k = 0; k < len; k++)
			combos *= sizeof(alphabet);
		for (size_t m = 0; m < combos; m++) {
			size_t x = m;
			for (size_t k = 0; k < len; k++, x /= sizeof(alphabet))
				body[k] = alphabet[x % sizeof(alphabet)];
			assert_int_equal(msg_body_is_parse(body, len),
					 parse_body_by_reader(body, len));
		}
	}
	uint8_t msg[64];
	for (int named = 0; named < 2; named++) {
		for (uint16_t nparams = 0; nparams < 4; nparams++) {
			size_t len = 0;
			if (named)
				msg[len++] = 's';
			msg[len++] = 0;
			memcpy(msg + len, "SELECT $1", 10);
			len += 10;
			msg[len++] = 0;
			msg[len++] = (uint8_t)nparams;
			memset(msg + len, 0, (size_t)nparams * 4);
			len += (size_t)nparams * 4;
			assert_true(msg_body_is_parse(msg, len));
			for (size_t cut = 0; cut < len; cut++)
				assert_false(msg_body_is_parse(msg, cut));
			msg[len] = 0;
			assert_false(msg_body_is_parse(msg, len + 1)); /* a byte after the types */
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_type_byte_both_sides),
		cmocka_unit_test(test_type_ceilings),
		cmocka_unit_test(test_len_below_four),
		cmocka_unit_test(test_len_extremes),
		cmocka_unit_test(test_max_len_cap),
		cmocka_unit_test(test_typed_split_at_every_offset),
		cmocka_unit_test(test_need_more_before_header),
		cmocka_unit_test(test_back_to_back_messages),
		cmocka_unit_test(test_startup_lengths),
		cmocka_unit_test(test_startup_codes_split_at_every_offset),
		cmocka_unit_test(test_startup_trailing_bytes),
		cmocka_unit_test(test_reader_values),
		cmocka_unit_test(test_reader_signed_extremes),
		cmocka_unit_test(test_reader_short_input),
		cmocka_unit_test(test_reader_sticky_failure),
		cmocka_unit_test(test_reader_cstr_edges),
		cmocka_unit_test(test_reader_end_exactness),
		cmocka_unit_test(test_reader_cancel_body),
		cmocka_unit_test(test_body_is_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
