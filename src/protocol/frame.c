/*
 * Message boundary detection for both directions. Nothing here allocates or copies; the caller
 * owns the bytes and decides what to do with the frame.
 */
#include "protocol/frame.h"

#include "protocol/pqmsg.h"

#include <stdbool.h>

/* Types that may carry arbitrary user data and so get the large ceiling. */
static bool frame_is_long_type(uint8_t type, enum frame_side side)
{
	if (side == FRAME_FROM_CLIENT) {
		switch (type) {
		case PqMsg_Query:
		case PqMsg_Parse:
		case PqMsg_Bind:
		case PqMsg_FunctionCall:
		case PqMsg_CopyData:
		case PqMsg_CopyFail:
		case PqMsg_PasswordMessage:
			return true;
		default:
			return false;
		}
	}
	switch (type) {
	case PqMsg_CopyData:
	case PqMsg_DataRow:
	case PqMsg_ErrorResponse:
	case PqMsg_FunctionCallResponse:
	case PqMsg_NoticeResponse:
	case PqMsg_NotificationResponse:
	case PqMsg_RowDescription:
	case PqMsg_CommandComplete:
	case PqMsg_ParameterDescription:
	case PqMsg_AuthenticationRequest:
		return true;
	default:
		return false;
	}
}

static bool frame_is_known_type(uint8_t type, enum frame_side side)
{
	if (side == FRAME_FROM_CLIENT) {
		switch (type) {
		case PqMsg_Bind:
		case PqMsg_Close:
		case PqMsg_Describe:
		case PqMsg_Execute:
		case PqMsg_FunctionCall:
		case PqMsg_Flush:
		case PqMsg_Parse:
		case PqMsg_Query:
		case PqMsg_Sync:
		case PqMsg_Terminate:
		case PqMsg_CopyFail:
		case PqMsg_CopyData:
		case PqMsg_CopyDone:
		case PqMsg_PasswordMessage:
			return true;
		default:
			return false;
		}
	}
	switch (type) {
	case PqMsg_ParseComplete:
	case PqMsg_BindComplete:
	case PqMsg_CloseComplete:
	case PqMsg_NotificationResponse:
	case PqMsg_CommandComplete:
	case PqMsg_DataRow:
	case PqMsg_ErrorResponse:
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_EmptyQueryResponse:
	case PqMsg_BackendKeyData:
	case PqMsg_NoticeResponse:
	case PqMsg_AuthenticationRequest:
	case PqMsg_ParameterStatus:
	case PqMsg_RowDescription:
	case PqMsg_FunctionCallResponse:
	case PqMsg_CopyBothResponse:
	case PqMsg_ReadyForQuery:
	case PqMsg_NoData:
	case PqMsg_PortalSuspended:
	case PqMsg_ParameterDescription:
	case PqMsg_NegotiateProtocolVersion:
	case PqMsg_CopyData:
	case PqMsg_CopyDone:
		return true;
	default:
		return false;
	}
}

uint32_t frame_type_ceiling(uint8_t type, enum frame_side side)
{
	return frame_is_long_type(type, side) ? 0x3fffffffu : FRAME_SHORT_MAX;
}

enum frame_status frame_parse(const uint8_t *bytes, size_t avail, enum frame_side side,
			      uint32_t max_len, struct frame *out)
{
	if (avail < FRAME_HEADER_LEN)
		return FRAME_NEED_MORE;
	uint8_t type = bytes[0];
	uint32_t len = frame_get_u32(bytes + 1);
	if (!frame_is_known_type(type, side))
		return FRAME_BAD;
	if (len < 4)
		return FRAME_BAD;
	uint32_t ceiling = frame_type_ceiling(type, side);
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
