/*
 * Message builder: start / put / finish into a growable, owned buffer with a sticky failure flag
 * checked once before sending (PgBouncer's pktbuf). Used for every message pgrelay synthesises;
 * relayed messages are never rebuilt. The buffer grows up to a bound (BUILDER_MAX) so a bug cannot
 * eat memory; growth failure sets the flag instead of aborting.
 */
#ifndef PGRELAY_PROTOCOL_BUILDER_H
#define PGRELAY_PROTOCOL_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUILDER_MAX (1u << 20)

struct builder {
	uint8_t *data;	  /* owned (heap) or the caller's inline storage, see builder_init */
	size_t len;	  /* bytes written */
	size_t cap;	  /* bytes available in data */
	size_t msg_start; /* offset of the message being built (its type byte), or SIZE_MAX */
	bool msg_typed;	  /* the message being built has a type byte before its length */
	bool heap;	  /* data was malloc'ed by the builder */
	bool failed;	  /* sticky: an allocation or bound failed */
};

/* Starts with caller storage (may be NULL/0); grows onto the heap when needed. */
void builder_init(struct builder *b, uint8_t *storage, size_t cap);
void builder_free(struct builder *b);
/* Detaches the heap buffer (copying inline storage if needed); returns NULL if failed. */
uint8_t *builder_steal(struct builder *b, size_t *len);

/* type 0 starts a length-first (startup-style) packet. */
void builder_start(struct builder *b, uint8_t type);
void builder_put_u8(struct builder *b, uint8_t v);
void builder_put_u16(struct builder *b, uint16_t v);
void builder_put_u32(struct builder *b, uint32_t v);
void builder_put_bytes(struct builder *b, const void *p, size_t n);
void builder_put_cstr(struct builder *b, const char *s); /* with the NUL */
void builder_finish(struct builder *b);			 /* patches the length */
bool builder_ok(const struct builder *b);

/* One helper per synthesised message. */
/* severity "ERROR"/"FATAL"; sqlstate 5 chars; message text. */
void builder_error(struct builder *b, const char *severity, const char *sqlstate,
		   const char *message);
void builder_notice(struct builder *b, const char *sqlstate, const char *message);
void builder_ready(struct builder *b, char txn_status);
void builder_auth_request(struct builder *b, uint32_t code, const void *extra, size_t extra_len);
void builder_param_status(struct builder *b, const char *name, const char *value);
void builder_backend_key(struct builder *b, uint32_t pid, uint32_t key);
/* RowDescription with text columns (type oid 25). */
void builder_row_description(struct builder *b, const char *const *names, int ncols);
/* DataRow; a NULL value is sent as SQL NULL. */
void builder_data_row(struct builder *b, const char *const *values, int ncols);
void builder_command_complete(struct builder *b, const char *tag);

#endif
