/*
 * Framing: finds message boundaries in bytes we do not trust.
 *
 * Typed messages are 1 type byte + 4-byte big-endian length (which counts itself). The first
 * packet of a connection has no type byte: 4-byte length + 4-byte code (protocol version,
 * SSLRequest, GSSENCRequest, CancelRequest). Lengths are checked before anything else is read:
 * at least 4, at most a per-type ceiling (small for most types, large only for types that carry
 * user data, as libpq's VALID_LONG_MESSAGE_TYPE), and at most the configured maximum.
 */
#ifndef PGRELAY_PROTOCOL_FRAME_H
#define PGRELAY_PROTOCOL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_LEN  5
#define FRAME_STARTUP_MAX 10000 /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define FRAME_SHORT_MAX	  30000 /* ceiling for types that never carry user data */

enum frame_status { FRAME_OK, FRAME_NEED_MORE, FRAME_BAD };

enum frame_side { FRAME_FROM_CLIENT, FRAME_FROM_SERVER };

struct frame {
	uint8_t type;	     /* type byte; 0 for startup-style packets */
	uint32_t len;	     /* body length (excluding type and length fields) */
	uint32_t total;	     /* bytes of the whole packet on the wire */
	uint32_t code;	     /* startup-style packets: the 4-byte code after the length */
	const uint8_t *body; /* points into the caller's bytes; only len_avail bytes are present */
	uint32_t body_avail; /* body bytes present in the input (<= len) */
};

static inline uint32_t frame_get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/*
 * Per side and type byte: FRAME_T_KNOWN, a type the protocol defines for that side;
 * FRAME_T_LONG, it may carry arbitrary user data, so it gets the large ceiling.
 */
enum { FRAME_T_KNOWN = 1, FRAME_T_LONG = 2 };
#define FRAME_LONG_MAX 0x3fffffffu
extern const uint8_t frame_type_bits[2][256];

/*
 * Parses a typed message header at bytes[0..avail). FRAME_OK once the 5 header bytes are present
 * (the body may be incomplete: see body_avail), FRAME_NEED_MORE before that, FRAME_BAD when the
 * length is invalid for the type or above max_len, or the type is not one that side may send.
 * Inline: it runs for every message in both directions.
 */
static inline __attribute__((warn_unused_result)) enum frame_status
frame_parse(const uint8_t *bytes, size_t avail, enum frame_side side, uint32_t max_len,
	    struct frame *out)
{
	if (avail < FRAME_HEADER_LEN)
		return FRAME_NEED_MORE;
	uint8_t type = bytes[0];
	uint32_t len = frame_get_u32(bytes + 1);
	uint8_t what = frame_type_bits[side][type];
	if (!(what & FRAME_T_KNOWN) || len < 4)
		return FRAME_BAD;
	uint32_t ceiling = what & FRAME_T_LONG ? FRAME_LONG_MAX : FRAME_SHORT_MAX;
	if (ceiling > max_len)
		ceiling = max_len;
	if (len - 4 > ceiling)
		return FRAME_BAD;
	out->type = type;
	out->len = len - 4;
	out->total = len + 1;
	out->code = 0;
	out->body = bytes + FRAME_HEADER_LEN;
	size_t have = avail - FRAME_HEADER_LEN;
	out->body_avail = have < out->len ? (uint32_t)have : out->len;
	return FRAME_OK;
}

/* Parses a length-first startup-style packet; FRAME_OK only when it is complete. */
enum frame_status frame_parse_startup(const uint8_t *bytes, size_t avail, struct frame *out)
	__attribute__((warn_unused_result));

/* The largest body length a message of this type may carry (before the configured maximum). */
uint32_t frame_type_ceiling(uint8_t type, enum frame_side side);

#endif
