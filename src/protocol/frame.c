/*
 * Message boundary detection for both directions. Nothing here allocates or copies; the caller
 * owns the bytes and decides what to do with the frame.
 */
#include "protocol/frame.h"

#include "protocol/pqmsg.h"

#include <stdbool.h>

/*
 * What each type byte is, per side: a table, because this runs for every message in both
 * directions. F_KNOWN: a type the protocol defines for that side. F_LONG: it may carry arbitrary
 * user data, so it gets the large ceiling.
 */
enum { F_KNOWN = 1, F_LONG = 2 };
static const uint8_t frame_types[2][256] = {
	[FRAME_FROM_CLIENT] = {
		[PqMsg_Bind] = F_KNOWN | F_LONG,
		[PqMsg_Close] = F_KNOWN,
		[PqMsg_Describe] = F_KNOWN,
		[PqMsg_Execute] = F_KNOWN,
		[PqMsg_FunctionCall] = F_KNOWN | F_LONG,
		[PqMsg_Flush] = F_KNOWN,
		[PqMsg_Parse] = F_KNOWN | F_LONG,
		[PqMsg_Query] = F_KNOWN | F_LONG,
		[PqMsg_Sync] = F_KNOWN,
		[PqMsg_Terminate] = F_KNOWN,
		[PqMsg_CopyFail] = F_KNOWN | F_LONG,
		[PqMsg_CopyData] = F_KNOWN | F_LONG,
		[PqMsg_CopyDone] = F_KNOWN,
		[PqMsg_PasswordMessage] = F_KNOWN | F_LONG,
	},
	[FRAME_FROM_SERVER] = {
		[PqMsg_ParseComplete] = F_KNOWN,
		[PqMsg_BindComplete] = F_KNOWN,
		[PqMsg_CloseComplete] = F_KNOWN,
		[PqMsg_NotificationResponse] = F_KNOWN | F_LONG,
		[PqMsg_CommandComplete] = F_KNOWN | F_LONG,
		[PqMsg_DataRow] = F_KNOWN | F_LONG,
		[PqMsg_ErrorResponse] = F_KNOWN | F_LONG,
		[PqMsg_CopyInResponse] = F_KNOWN,
		[PqMsg_CopyOutResponse] = F_KNOWN,
		[PqMsg_EmptyQueryResponse] = F_KNOWN,
		[PqMsg_BackendKeyData] = F_KNOWN,
		[PqMsg_NoticeResponse] = F_KNOWN | F_LONG,
		[PqMsg_AuthenticationRequest] = F_KNOWN | F_LONG,
		[PqMsg_ParameterStatus] = F_KNOWN,
		[PqMsg_RowDescription] = F_KNOWN | F_LONG,
		[PqMsg_FunctionCallResponse] = F_KNOWN | F_LONG,
		[PqMsg_CopyBothResponse] = F_KNOWN,
		[PqMsg_ReadyForQuery] = F_KNOWN,
		[PqMsg_NoData] = F_KNOWN,
		[PqMsg_PortalSuspended] = F_KNOWN,
		[PqMsg_ParameterDescription] = F_KNOWN | F_LONG,
		[PqMsg_NegotiateProtocolVersion] = F_KNOWN,
		[PqMsg_CopyData] = F_KNOWN | F_LONG,
		[PqMsg_CopyDone] = F_KNOWN,
	},
};

uint32_t frame_type_ceiling(uint8_t type, enum frame_side side)
{
	return frame_types[side][type] & F_LONG ? 0x3fffffffu : FRAME_SHORT_MAX;
}

enum frame_status frame_parse(const uint8_t *bytes, size_t avail, enum frame_side side,
			      uint32_t max_len, struct frame *out)
{
	if (avail < FRAME_HEADER_LEN)
		return FRAME_NEED_MORE;
	uint8_t type = bytes[0];
	uint32_t len = frame_get_u32(bytes + 1);
	uint8_t what = frame_types[side][type];
	if (!(what & F_KNOWN) || len < 4)
		return FRAME_BAD;
	uint32_t ceiling = what & F_LONG ? 0x3fffffffu : FRAME_SHORT_MAX;
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

enum frame_status frame_parse_startup(const uint8_t *bytes, size_t avail, struct frame *out)
{
	if (avail < 4)
		return FRAME_NEED_MORE;
	uint32_t len = frame_get_u32(bytes);
	/* length + code at least; PostgreSQL's own ceiling for the startup packet. */
	if (len < 8 || len > FRAME_STARTUP_MAX)
		return FRAME_BAD;
	if (avail < len)
		return FRAME_NEED_MORE;
	out->type = 0;
	out->len = len - 8;
	out->total = len;
	out->code = frame_get_u32(bytes + 4);
	out->body = bytes + 8;
	out->body_avail = out->len;
	return FRAME_OK;
}
