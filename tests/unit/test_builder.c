/*
 * Unit tests of src/protocol/builder.c: every helper produces the bytes PostgreSQL sends (written
 * out by hand from the protocol documentation's "Message Formats"), finish patches the length of
 * typed and length-first packets, storage grows from inline to heap, BUILDER_MAX sets the sticky
 * failure flag, and builder_steal hands over the bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/builder.h"
#include "protocol/frame.h"
#include "protocol/pqmsg.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* A byte-string literal and its length without the literal's own trailing NUL. */
#define BYTES(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static void assert_bytes(const struct builder *b, const uint8_t *want, size_t want_len)
{
	assert_true(builder_ok(b));
	if (b->len != want_len)
		fail_msg("built %zu bytes, expected %zu", b->len, want_len);
	for (size_t i = 0; i < want_len; i++)
		if (b->data[i] != want[i])
			fail_msg("byte %zu: built 0x%02x, expected 0x%02x", i, b->data[i], want[i]);
}

/* ---- one test per helper ---- */

static void test_error_response(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_error(&b, "ERROR", "42601", "syntax error");
	assert_bytes(&b, BYTES("E\x00\x00\x00\x28"
			       "SERROR\0"
			       "VERROR\0"
			       "C42601\0"
			       "Msyntax error\0"
			       "\0"));
	builder_free(&b);

	builder_init(&b, NULL, 0);
	builder_error(&b, "FATAL", "28P01", "");
	assert_bytes(&b, BYTES("E\x00\x00\x00\x1c"
			       "SFATAL\0"
			       "VFATAL\0"
			       "C28P01\0"
			       "M\0"
			       "\0"));
	builder_free(&b);
}

static void test_notice_response(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_notice(&b, "01000", "hello");
	assert_bytes(&b, BYTES("N\x00\x00\x00\x23"
			       "SNOTICE\0"
			       "VNOTICE\0"
			       "C01000\0"
			       "Mhello\0"
			       "\0"));
	builder_free(&b);
}

static void test_ready_for_query(void **state)
{
	(void)state;
	static const struct {
		char status;
		const uint8_t *bytes;
		size_t len;
	} cases[] = {
		{ TXN_IDLE, BYTES("Z\x00\x00\x00\x05I") },
		{ TXN_BLOCK, BYTES("Z\x00\x00\x00\x05T") },
		{ TXN_FAILED, BYTES("Z\x00\x00\x00\x05"
				    "E") },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		uint8_t store[16];
		struct builder b;
		builder_init(&b, store, sizeof(store));
		builder_ready(&b, cases[i].status);
		assert_bytes(&b, cases[i].bytes, cases[i].len);
		assert_ptr_equal(b.data, store); /* fits inline: no allocation */
		builder_free(&b);
	}
}

static void test_parameter_status(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_param_status(&b, "server_version", "16.2");
	assert_bytes(&b, BYTES("S\x00\x00\x00\x18"
			       "server_version\0"
			       "16.2\0"));
	builder_free(&b);

	builder_init(&b, NULL, 0);
	builder_param_status(&b, "application_name", "");
	assert_bytes(&b, BYTES("S\x00\x00\x00\x16"
			       "application_name\0"
			       "\0"));
	builder_free(&b);
}

static void test_backend_key_data(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_backend_key(&b, 12345, 0xdeadbeefu);
	assert_bytes(&b, BYTES("K\x00\x00\x00\x0c\x00\x00\x30\x39\xde\xad\xbe\xef"));
	builder_free(&b);
}

static void test_row_description(void **state)
{
	(void)state;
	static const char *const names[] = { "a", "bc" };
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_row_description(&b, names, 2);
	/* name, table oid 0, attnum 0, type oid 25 (text), typlen -1, typmod -1, format 0 */
	assert_bytes(&b, BYTES("T\x00\x00\x00\x2f\x00\x02"
			       "a\0"
			       "\x00\x00\x00\x00"
			       "\x00\x00"
			       "\x00\x00\x00\x19"
			       "\xff\xff"
			       "\xff\xff\xff\xff"
			       "\x00\x00"
			       "bc\0"
			       "\x00\x00\x00\x00"
			       "\x00\x00"
			       "\x00\x00\x00\x19"
			       "\xff\xff"
			       "\xff\xff\xff\xff"
			       "\x00\x00"));
	builder_free(&b);

	builder_init(&b, NULL, 0);
	builder_row_description(&b, NULL, 0);
	assert_bytes(&b, BYTES("T\x00\x00\x00\x06\x00\x00"));
	builder_free(&b);
}

static void test_data_row(void **state)
{
	(void)state;
	static const char *const values[] = { "1", NULL, "" };
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_data_row(&b, values, 3);
	/* "1"; NULL as length -1 with no bytes; "" as length 0 */
	assert_bytes(&b, BYTES("D\x00\x00\x00\x13\x00\x03"
			       "\x00\x00\x00\x01"
			       "1"
			       "\xff\xff\xff\xff"
			       "\x00\x00\x00\x00"));
	builder_free(&b);

	builder_init(&b, NULL, 0);
	builder_data_row(&b, NULL, 0);
	assert_bytes(&b, BYTES("D\x00\x00\x00\x06\x00\x00"));
	builder_free(&b);
}

static void test_command_complete(void **state)
{
	(void)state;
	static const struct {
		const char *tag;
		const uint8_t *bytes;
		size_t len;
	} cases[] = {
		{ "SELECT 1", BYTES("C\x00\x00\x00\x0dSELECT 1\0") },
		{ "SHOW", BYTES("C\x00\x00\x00\x09SHOW\0") },
		{ "", BYTES("C\x00\x00\x00\x05\0") },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct builder b;
		builder_init(&b, NULL, 0);
		builder_command_complete(&b, cases[i].tag);
		assert_bytes(&b, cases[i].bytes, cases[i].len);
		builder_free(&b);
	}
}

static void test_auth_requests(void **state)
{
	(void)state;
	static const uint8_t salt[] = { 0x01, 0x02, 0x03, 0x04 };
	static const char sasl_mechs[] = "SCRAM-SHA-256\0"; /* list ends with an empty name */
	static const char server_first[] = "r=abc";
	static const struct {
		const char *name;
		uint32_t code;
		const void *extra;
		size_t extra_len;
		const uint8_t *bytes;
		size_t len;
	} cases[] = {
		{ "Ok", AUTH_REQ_OK, NULL, 0, BYTES("R\x00\x00\x00\x08\x00\x00\x00\x00") },
		{ "CleartextPassword", AUTH_REQ_PASSWORD, NULL, 0,
		  BYTES("R\x00\x00\x00\x08\x00\x00\x00\x03") },
		{ "MD5Password", AUTH_REQ_MD5, salt, sizeof(salt),
		  BYTES("R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04") },
		{ "SASL", AUTH_REQ_SASL, sasl_mechs, sizeof(sasl_mechs),
		  BYTES("R\x00\x00\x00\x17\x00\x00\x00\x0a"
			"SCRAM-SHA-256\0"
			"\0") },
		{ "SASLContinue", AUTH_REQ_SASL_CONT, server_first, sizeof(server_first) - 1,
		  BYTES("R\x00\x00\x00\x0d\x00\x00\x00\x0br=abc") },
		{ "SASLFinal", AUTH_REQ_SASL_FIN, "v=x", 3,
		  BYTES("R\x00\x00\x00\x0b\x00\x00\x00\x0cv=x") },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct builder b;
		builder_init(&b, NULL, 0);
		builder_auth_request(&b, cases[i].code, cases[i].extra, cases[i].extra_len);
		if (b.len != cases[i].len)
			fail_msg("%s: %zu bytes, expected %zu", cases[i].name, b.len, cases[i].len);
		assert_bytes(&b, cases[i].bytes, cases[i].len);
		builder_free(&b);
	}
}

/* ---- start / put / finish ---- */

static void test_startup_packet(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_start(&b, 0);
	builder_put_u32(&b, PG_PROTOCOL_3_0);
	builder_put_cstr(&b, "user");
	builder_put_cstr(&b, "alice");
	builder_put_cstr(&b, "database");
	builder_put_cstr(&b, "db1");
	builder_put_u8(&b, 0);
	builder_finish(&b);
	/* The length of a length-first packet counts itself and there is no type byte. */
	assert_bytes(&b, BYTES("\x00\x00\x00\x21\x00\x03\x00\x00"
			       "user\0"
			       "alice\0"
			       "database\0"
			       "db1\0"
			       "\0"));
	/* And frame_parse_startup reads it back. */
	struct frame f;
	assert_int_equal(frame_parse_startup(b.data, b.len, &f), FRAME_OK);
	assert_int_equal(f.code, PG_PROTOCOL_3_0);
	assert_int_equal(f.total, b.len);
	builder_free(&b);
}

static void test_length_first_requests(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_start(&b, 0);
	builder_put_u32(&b, NEGOTIATE_SSL_CODE);
	builder_finish(&b);
	builder_start(&b, 0);
	builder_put_u32(&b, CANCEL_REQUEST_CODE);
	builder_put_u32(&b, 12345);
	builder_put_u32(&b, 0xdeadbeefu);
	builder_finish(&b);
	assert_bytes(&b, BYTES("\x00\x00\x00\x08\x04\xd2\x16\x2f"
			       "\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef"));
	builder_free(&b);
}

/* The NegotiateProtocolVersion client.c builds for a 3.x client, x > 0. */
static void test_negotiate_protocol_version(void **state)
{
	(void)state;
	uint8_t store[64];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_start(&b, PqMsg_NegotiateProtocolVersion);
	builder_put_u32(&b, 0x00030000u);
	builder_put_u32(&b, 0);
	builder_finish(&b);
	assert_bytes(&b, BYTES("v\x00\x00\x00\x0c\x00\x03\x00\x00\x00\x00\x00\x00"));
	builder_free(&b);
}

/* Several messages in one builder: each finish patches its own length only. */
static void test_several_messages(void **state)
{
	(void)state;
	uint8_t store[24]; /* too small on purpose: the sequence crosses the growth */
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_auth_request(&b, AUTH_REQ_OK, NULL, 0);
	builder_param_status(&b, "client_encoding", "UTF8");
	builder_backend_key(&b, 1, 2);
	builder_ready(&b, TXN_IDLE);
	assert_bytes(&b, BYTES("R\x00\x00\x00\x08\x00\x00\x00\x00"
			       "S\x00\x00\x00\x19"
			       "client_encoding\0"
			       "UTF8\0"
			       "K\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x02"
			       "Z\x00\x00\x00\x05I"));
	assert_true(b.heap);
	builder_free(&b);
}

static void test_put_big_endian(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_put_u8(&b, 0xab);
	builder_put_u16(&b, 0x1234);
	builder_put_u32(&b, 0x89abcdefu);
	builder_put_bytes(&b, "xy", 2);
	builder_put_bytes(&b, NULL, 0);
	builder_put_cstr(&b, "");
	assert_bytes(&b, BYTES("\xab\x12\x34\x89\xab\xcd\xef"
			       "xy\0"));
	builder_free(&b);
}

/* finish without a started message, or twice, changes nothing. */
static void test_finish_without_start(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_put_u32(&b, 0x01020304u);
	builder_finish(&b);
	assert_bytes(&b, BYTES("\x01\x02\x03\x04"));
	builder_ready(&b, TXN_IDLE);
	builder_put_u8(&b, 0x55); /* after the message: must not be counted on a second finish */
	builder_finish(&b);
	assert_bytes(&b, BYTES("\x01\x02\x03\x04"
			       "Z\x00\x00\x00\x05I"
			       "\x55"));
	builder_free(&b);
}

/* ---- storage ---- */

static void test_inline_storage_no_allocation(void **state)
{
	(void)state;
	uint8_t store[64];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_error(&b, "ERROR", "42601", "syntax error"); /* 41 bytes */
	assert_true(builder_ok(&b));
	assert_ptr_equal(b.data, store);
	assert_false(b.heap);
	assert_int_equal(b.len, 41);
	builder_free(&b); /* must not free the caller's storage */
}

static void test_growth_beyond_inline(void **state)
{
	(void)state;
	uint8_t store[32];
	memset(store, 0xcc, sizeof(store));
	struct builder b;
	builder_init(&b, store, 16); /* bytes 16..31 of store are a canary */
	char text[1000];
	memset(text, 'q', sizeof(text) - 1);
	text[sizeof(text) - 1] = 0;
	builder_ready(&b, TXN_BLOCK); /* 6 bytes inline */
	assert_ptr_equal(b.data, store);
	builder_command_complete(&b, text); /* needs 1005 more: moves to the heap */
	assert_true(builder_ok(&b));
	assert_true(b.heap);
	assert_ptr_not_equal(b.data, store);
	assert_true(b.cap >= b.len);
	assert_int_equal(b.len, 6 + 5 + 1000);
	assert_memory_equal(b.data, "Z\x00\x00\x00\x05T", 6); /* the inline bytes moved too */
	assert_int_equal(b.data[6], 'C');
	assert_int_equal(frame_get_u32(b.data + 7), 1004);
	assert_memory_equal(b.data + 11, text, 1000);
	for (size_t i = 16; i < sizeof(store); i++)
		assert_int_equal(store[i], 0xcc);
	/* Keeps growing on the heap (realloc). */
	for (int i = 0; i < 100; i++)
		builder_command_complete(&b, text);
	assert_true(builder_ok(&b));
	assert_int_equal(b.len, 6 + 1005 * 101);
	assert_memory_equal(b.data + 6 + 1005 * 100, "C\x00\x00\x03\xec", 5);
	builder_free(&b);
	assert_null(b.data);
}

static void test_no_storage(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 100); /* cap is ignored without storage */
	assert_int_equal(b.cap, 0);
	builder_ready(&b, TXN_IDLE);
	assert_bytes(&b, BYTES("Z\x00\x00\x00\x05I"));
	assert_true(b.heap);
	builder_free(&b);
}

static void test_builder_max_exact(void **state)
{
	(void)state;
	uint8_t *big = malloc(BUILDER_MAX);
	assert_non_null(big);
	memset(big, 'd', BUILDER_MAX);
	/* From no storage (capacity doubles from 256 to exactly BUILDER_MAX) and from inline
	 * storage of 24 bytes (doubling passes BUILDER_MAX and is clamped to it). */
	uint8_t store[24];
	static const size_t caps[] = { 0, sizeof(store) };
	for (size_t i = 0; i < ARRAY_LEN(caps); i++) {
		struct builder b;
		builder_init(&b, caps[i] ? store : NULL, caps[i]);
		/* A typed message of exactly BUILDER_MAX bytes is allowed. */
		builder_start(&b, PqMsg_CopyData);
		builder_put_bytes(&b, big, BUILDER_MAX - FRAME_HEADER_LEN);
		builder_finish(&b);
		assert_true(builder_ok(&b));
		assert_int_equal(b.len, BUILDER_MAX);
		assert_int_equal(b.cap, BUILDER_MAX);
		assert_int_equal(b.data[0], 'd');
		assert_int_equal(frame_get_u32(b.data + 1), BUILDER_MAX - 1);
		/* One more byte is not, and the failure sticks. */
		builder_put_u8(&b, 0);
		assert_false(builder_ok(&b));
		assert_int_equal(b.len, BUILDER_MAX);
		builder_ready(&b, TXN_IDLE);
		builder_put_bytes(&b, "x", 1);
		assert_false(builder_ok(&b));
		assert_int_equal(b.len, BUILDER_MAX);
		size_t n = 123;
		assert_null(builder_steal(&b, &n));
		builder_free(&b); /* still owns the heap buffer after a failed steal */
	}
	free(big);
}

static void test_builder_max_single_put(void **state)
{
	(void)state;
	uint8_t *big = calloc(1, BUILDER_MAX + 1);
	assert_non_null(big);
	uint8_t store[64];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_put_bytes(&b, big, BUILDER_MAX + 1);
	assert_false(builder_ok(&b));
	assert_int_equal(b.len, 0);
	builder_free(&b);

	/* A helper whose message would cross the bound: failed, and finish leaves it alone. */
	char *text = malloc(BUILDER_MAX);
	assert_non_null(text);
	memset(text, 'm', BUILDER_MAX - 1);
	text[BUILDER_MAX - 1] = 0;
	builder_init(&b, store, sizeof(store));
	builder_error(&b, "ERROR", "XX000", text);
	assert_false(builder_ok(&b));
	builder_free(&b);
	free(text);
	free(big);
}

static void test_failed_start_then_finish(void **state)
{
	(void)state;
	uint8_t *big = calloc(1, BUILDER_MAX);
	assert_non_null(big);
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_put_bytes(&b, big, BUILDER_MAX - 2); /* room for 2 more bytes, not a header */
	assert_true(builder_ok(&b));
	builder_start(&b, PqMsg_ReadyForQuery);
	builder_finish(&b);
	assert_false(builder_ok(&b));
	/* Nothing was patched into the bytes before the failed message. */
	for (size_t i = 0; i < BUILDER_MAX - 2; i++)
		if (b.data[i] != 0)
			fail_msg("byte %zu changed to 0x%02x", i, b.data[i]);
	builder_free(&b);
	free(big);
}

static void test_steal_inline(void **state)
{
	(void)state;
	uint8_t store[64];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_ready(&b, TXN_IDLE);
	size_t n = 0;
	uint8_t *out = builder_steal(&b, &n);
	assert_non_null(out);
	assert_ptr_not_equal(out, store); /* a heap copy the caller frees */
	assert_int_equal(n, 6);
	assert_memory_equal(out, "Z\x00\x00\x00\x05I", 6);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	/* The builder is usable again, on the heap. */
	builder_ready(&b, TXN_FAILED);
	assert_bytes(&b, BYTES("Z\x00\x00\x00\x05"
			       "E"));
	builder_free(&b);
	free(out);
}

static void test_steal_heap(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	builder_backend_key(&b, 7, 8);
	uint8_t *heap = b.data;
	size_t n = 0;
	uint8_t *out = builder_steal(&b, &n);
	assert_ptr_equal(out, heap); /* no copy */
	assert_int_equal(n, 13);
	assert_memory_equal(out, "K\x00\x00\x00\x0c\x00\x00\x00\x07\x00\x00\x00\x08", 13);
	assert_null(b.data);
	assert_false(b.heap);
	builder_free(&b); /* does not free the stolen buffer */
	free(out);
}

/*
 * Guards builder_steal's copy of an empty builder that never had storage: it must not call
 * memcpy(out, NULL, 0) (undefined behaviour; UBSan's nonnull-attribute check stops on it).
 */
static void test_steal_empty(void **state)
{
	(void)state;
	struct builder b;
	builder_init(&b, NULL, 0);
	size_t n = 99;
	uint8_t *out = builder_steal(&b, &n);
	assert_non_null(out);
	assert_int_equal(n, 0);
	free(out);
	builder_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_response),
		cmocka_unit_test(test_notice_response),
		cmocka_unit_test(test_ready_for_query),
		cmocka_unit_test(test_parameter_status),
		cmocka_unit_test(test_backend_key_data),
		cmocka_unit_test(test_row_description),
		cmocka_unit_test(test_data_row),
		cmocka_unit_test(test_command_complete),
		cmocka_unit_test(test_auth_requests),
		cmocka_unit_test(test_startup_packet),
		cmocka_unit_test(test_length_first_requests),
		cmocka_unit_test(test_negotiate_protocol_version),
		cmocka_unit_test(test_several_messages),
		cmocka_unit_test(test_put_big_endian),
		cmocka_unit_test(test_finish_without_start),
		cmocka_unit_test(test_inline_storage_no_allocation),
		cmocka_unit_test(test_growth_beyond_inline),
		cmocka_unit_test(test_no_storage),
		cmocka_unit_test(test_builder_max_exact),
		cmocka_unit_test(test_builder_max_single_put),
		cmocka_unit_test(test_failed_start_then_finish),
		cmocka_unit_test(test_steal_inline),
		cmocka_unit_test(test_steal_heap),
		cmocka_unit_test(test_steal_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
