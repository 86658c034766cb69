/* Message builder; see builder.h. */
#include "protocol/builder.h"

#include "protocol/pqmsg.h"

#include <stdlib.h>
#include <string.h>

void builder_init(struct builder *b, uint8_t *storage, size_t cap)
{
	b->data = storage;
	b->cap = storage ? cap : 0;
	b->len = 0;
	b->msg_start = SIZE_MAX;
	b->heap = false;
	b->failed = false;
}

void builder_free(struct builder *b)
{
	if (b->heap)
		free(b->data);
	b->data = NULL;
	b->cap = b->len = 0;
	b->heap = false;
}

uint8_t *builder_steal(struct builder *b, size_t *len)
{
	if (b->failed)
		return NULL;
	uint8_t *out = b->data;
	if (!b->heap) {
		out = malloc(b->len ? b->len : 1);
		if (!out)
			return NULL;
		if (b->len)
			memcpy(out, b->data, b->len);
	}
	*len = b->len;
	b->data = NULL;
	b->heap = false;
	b->cap = b->len = 0;
	return out;
}

static bool builder_reserve(struct builder *b, size_t n)
{
	if (b->failed)
		return false;
	if (b->len + n <= b->cap)
		return true;
	size_t want = b->cap ? b->cap * 2 : 256;
	while (want < b->len + n)
		want *= 2;
	if (want > BUILDER_MAX) {
		if (b->len + n > BUILDER_MAX) {
			b->failed = true;
			return false;
		}
		want = BUILDER_MAX;
	}
	uint8_t *p;
	if (b->heap) {
		p = realloc(b->data, want);
	} else {
		p = malloc(want);
		if (p && b->len)
			memcpy(p, b->data, b->len);
	}
	if (!p) {
		b->failed = true;
		return false;
	}
	b->data = p;
	b->cap = want;
	b->heap = true;
	return true;
}

void builder_put_bytes(struct builder *b, const void *p, size_t n)
{
	if (!builder_reserve(b, n))
		return;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

void builder_put_u8(struct builder *b, uint8_t v)
{
	builder_put_bytes(b, &v, 1);
}

void builder_put_u16(struct builder *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	builder_put_bytes(b, x, 2);
}

void builder_put_u32(struct builder *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	builder_put_bytes(b, x, 4);
}

void builder_put_cstr(struct builder *b, const char *s)
{
	builder_put_bytes(b, s, strlen(s) + 1);
}

void builder_start(struct builder *b, uint8_t type)
{
	b->msg_start = b->len;
	b->msg_typed = type != 0;
	if (type)
		builder_put_u8(b, type);
	builder_put_u32(b, 0); /* length, patched by builder_finish */
}

void builder_finish(struct builder *b)
{
	if (b->failed || b->msg_start == SIZE_MAX)
		return;
	size_t len_at = b->msg_start + (b->msg_typed ? 1 : 0);
	uint32_t len = (uint32_t)(b->len - len_at);
	b->data[len_at] = (uint8_t)(len >> 24);
	b->data[len_at + 1] = (uint8_t)(len >> 16);
	b->data[len_at + 2] = (uint8_t)(len >> 8);
	b->data[len_at + 3] = (uint8_t)len;
	b->msg_start = SIZE_MAX;
}

bool builder_ok(const struct builder *b)
{
	return !b->failed;
}

void builder_error(struct builder *b, const char *severity, const char *sqlstate,
		   const char *message)
{
	builder_start(b, PqMsg_ErrorResponse);
	builder_put_u8(b, 'S');
	builder_put_cstr(b, severity);
	builder_put_u8(b, 'V');
	builder_put_cstr(b, severity);
	builder_put_u8(b, 'C');
	builder_put_cstr(b, sqlstate);
	builder_put_u8(b, 'M');
	builder_put_cstr(b, message);
	builder_put_u8(b, 0);
	builder_finish(b);
}

void builder_notice(struct builder *b, const char *sqlstate, const char *message)
{
	builder_start(b, PqMsg_NoticeResponse);
	builder_put_u8(b, 'S');
	builder_put_cstr(b, "NOTICE");
	builder_put_u8(b, 'V');
	builder_put_cstr(b, "NOTICE");
	builder_put_u8(b, 'C');
	builder_put_cstr(b, sqlstate);
	builder_put_u8(b, 'M');
	builder_put_cstr(b, message);
	builder_put_u8(b, 0);
	builder_finish(b);
}

void builder_ready(struct builder *b, char txn_status)
{
	builder_start(b, PqMsg_ReadyForQuery);
	builder_put_u8(b, (uint8_t)txn_status);
	builder_finish(b);
}

void builder_auth_request(struct builder *b, uint32_t code, const void *extra, size_t extra_len)
{
	builder_start(b, PqMsg_AuthenticationRequest);
	builder_put_u32(b, code);
	builder_put_bytes(b, extra, extra_len);
	builder_finish(b);
}

void builder_param_status(struct builder *b, const char *name, const char *value)
{
	builder_start(b, PqMsg_ParameterStatus);
	builder_put_cstr(b, name);
	builder_put_cstr(b, value);
	builder_finish(b);
}

void builder_backend_key(struct builder *b, uint32_t pid, uint32_t key)
{
	builder_start(b, PqMsg_BackendKeyData);
	builder_put_u32(b, pid);
	builder_put_u32(b, key);
	builder_finish(b);
}

void builder_row_description(struct builder *b, const char *const *names, int ncols)
{
	builder_start(b, PqMsg_RowDescription);
	builder_put_u16(b, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		builder_put_cstr(b, names[i]);
		builder_put_u32(b, 0);	/* table oid */
		builder_put_u16(b, 0);	/* column number */
		builder_put_u32(b, 25); /* text */
		builder_put_u16(b, 0xffff);
		builder_put_u32(b, 0xffffffffu); /* typmod -1 */
		builder_put_u16(b, 0);		 /* text format */
	}
	builder_finish(b);
}

void builder_data_row(struct builder *b, const char *const *values, int ncols)
{
	builder_start(b, PqMsg_DataRow);
	builder_put_u16(b, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!values[i]) {
			builder_put_u32(b, 0xffffffffu);
			continue;
		}
		size_t n = strlen(values[i]);
		builder_put_u32(b, (uint32_t)n);
		builder_put_bytes(b, values[i], n);
	}
	builder_finish(b);
}

void builder_command_complete(struct builder *b, const char *tag)
{
	builder_start(b, PqMsg_CommandComplete);
	builder_put_cstr(b, tag);
	builder_finish(b);
}
