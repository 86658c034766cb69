/*
 * Message boundary detection for both directions. Nothing here allocates or copies; the caller
 * owns the bytes and decides what to do with the frame.
 */
#include "protocol/frame.h"

#include "protocol/pqmsg.h"

/*
 * What each type byte is, per side: a table, because this runs for every message in both
 * directions (frame_parse, frame.h).
 */
const uint8_t frame_type_bits[2][256] = {
	[FRAME_FROM_CLIENT] = {
		[PqMsg_Bind] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_Close] = FRAME_T_KNOWN,
		[PqMsg_Describe] = FRAME_T_KNOWN,
		[PqMsg_Execute] = FRAME_T_KNOWN,
		[PqMsg_FunctionCall] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_Flush] = FRAME_T_KNOWN,
		[PqMsg_Parse] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_Query] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_Sync] = FRAME_T_KNOWN,
		[PqMsg_Terminate] = FRAME_T_KNOWN,
		[PqMsg_CopyFail] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CopyData] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CopyDone] = FRAME_T_KNOWN,
		[PqMsg_PasswordMessage] = FRAME_T_KNOWN | FRAME_T_LONG,
	},
	[FRAME_FROM_SERVER] = {
		[PqMsg_ParseComplete] = FRAME_T_KNOWN,
		[PqMsg_BindComplete] = FRAME_T_KNOWN,
		[PqMsg_CloseComplete] = FRAME_T_KNOWN,
		[PqMsg_NotificationResponse] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CommandComplete] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_DataRow] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_ErrorResponse] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CopyInResponse] = FRAME_T_KNOWN,
		[PqMsg_CopyOutResponse] = FRAME_T_KNOWN,
		[PqMsg_EmptyQueryResponse] = FRAME_T_KNOWN,
		[PqMsg_BackendKeyData] = FRAME_T_KNOWN,
		[PqMsg_NoticeResponse] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_AuthenticationRequest] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_ParameterStatus] = FRAME_T_KNOWN,
		[PqMsg_RowDescription] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_FunctionCallResponse] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CopyBothResponse] = FRAME_T_KNOWN,
		[PqMsg_ReadyForQuery] = FRAME_T_KNOWN,
		[PqMsg_NoData] = FRAME_T_KNOWN,
		[PqMsg_PortalSuspended] = FRAME_T_KNOWN,
		[PqMsg_ParameterDescription] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_NegotiateProtocolVersion] = FRAME_T_KNOWN,
		[PqMsg_CopyData] = FRAME_T_KNOWN | FRAME_T_LONG,
		[PqMsg_CopyDone] = FRAME_T_KNOWN,
	},
};

uint32_t frame_type_ceiling(uint8_t type, enum frame_side side)
{
	return frame_type_bits[side][type] & FRAME_T_LONG ? FRAME_LONG_MAX : FRAME_SHORT_MAX;
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
