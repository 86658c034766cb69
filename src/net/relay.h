/*
 * The relay scanner: walks the messages in a connection's read buffer, asks the owner what to do
 * with each (send, skip, stop) and forwards the "send" ranges to the peer without copying. Large
 * messages are streamed: only the 5-byte header must be present to decide, unless the owner asks
 * for a prefix of the body (which always fits in a buffer).
 */
#ifndef PGRELAY_NET_RELAY_H
#define PGRELAY_NET_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"
#include "protocol/frame.h"

enum relay_verdict {
	RELAY_SEND, /* forward the message to the peer */
	RELAY_SKIP, /* consume the message without forwarding it */
	RELAY_STOP, /* leave this message unscanned and stop (the owner resumes later) */
	RELAY_GONE, /* the owner closed the connection in the handler: stop touching it */
};

struct relay_ops {
	enum frame_side side;
	/*
	 * How many body bytes the handler must see to decide (0: the header is enough; at most
	 * len, and at most IOBUF_SIZE - FRAME_HEADER_LEN so that they always fit in a buffer).
	 * Asked only while the body is not all here. NULL means 0 for every message.
	 */
	uint32_t (*needs_bytes)(const void *owner, uint8_t type, uint32_t len);
	enum relay_verdict (*on_message)(void *owner, const struct frame *f);
	/*
	 * Where the scanned messages go when the scan started without a peer (dst NULL): a
	 * handler may pick one for the message it is shown (a pooled client takes its backend
	 * as it reads a unit's first message). Asked once, after the scan; NULL: none.
	 */
	struct conn *(*late_dst)(void *owner);
};

enum relay_result {
	RELAY_DRAINED,	   /* everything scanned was sent; waiting for more bytes */
	RELAY_WRITING,	   /* a forward is in flight; CONN_EV_FORWARD_DONE resumes */
	RELAY_STOPPED,	   /* the handler said stop (RELAY_WRITING instead when the bytes before
			    * the stop are still being written: the handler is asked again after) */
	RELAY_CLOSED,	   /* the handler closed the connection */
	RELAY_BAD_MESSAGE, /* framing violation (bad length or type): a protocol error */
	RELAY_WRITE_FAILED /* the peer could not be written */
};

/*
 * Scans src's buffer and forwards to dst (which may be NULL only if the handler never says
 * RELAY_SEND before ops->late_dst has a peer to give). max_len bounds every message body.
 */
enum relay_result relay_scan(struct conn *src, struct conn *dst, uint32_t max_len,
			     const struct relay_ops *ops, void *owner);

#endif
