/*
 * Message type bytes and special codes of the v3 frontend/backend protocol, named as in
 * PostgreSQL's src/include/libpq/protocol.h so that readers recognise them.
 */
#ifndef PGRELAY_PROTOCOL_PQMSG_H
#define PGRELAY_PROTOCOL_PQMSG_H

/* Frontend (client -> server) */
#define PqMsg_Bind		  'B'
#define PqMsg_Close		  'C'
#define PqMsg_Describe		  'D'
#define PqMsg_Execute		  'E'
#define PqMsg_FunctionCall	  'F'
#define PqMsg_Flush		  'H'
#define PqMsg_Parse		  'P'
#define PqMsg_Query		  'Q'
#define PqMsg_Sync		  'S'
#define PqMsg_Terminate		  'X'
#define PqMsg_CopyFail		  'f'
#define PqMsg_GSSResponse	  'p'
#define PqMsg_PasswordMessage	  'p'
#define PqMsg_SASLInitialResponse 'p'
#define PqMsg_SASLResponse	  'p'

/* Backend (server -> client) */
#define PqMsg_ParseComplete	       '1'
#define PqMsg_BindComplete	       '2'
#define PqMsg_CloseComplete	       '3'
#define PqMsg_NotificationResponse     'A'
#define PqMsg_CommandComplete	       'C'
#define PqMsg_DataRow		       'D'
#define PqMsg_ErrorResponse	       'E'
#define PqMsg_CopyInResponse	       'G'
#define PqMsg_CopyOutResponse	       'H'
#define PqMsg_EmptyQueryResponse       'I'
#define PqMsg_BackendKeyData	       'K'
#define PqMsg_NoticeResponse	       'N'
#define PqMsg_AuthenticationRequest    'R'
#define PqMsg_ParameterStatus	       'S'
#define PqMsg_RowDescription	       'T'
#define PqMsg_FunctionCallResponse     'V'
#define PqMsg_CopyBothResponse	       'W'
#define PqMsg_ReadyForQuery	       'Z'
#define PqMsg_NoData		       'n'
#define PqMsg_PortalSuspended	       's'
#define PqMsg_ParameterDescription     't'
#define PqMsg_NegotiateProtocolVersion 'v'

/* Both directions */
#define PqMsg_CopyDone 'c'
#define PqMsg_CopyData 'd'

/* Authentication request codes */
#define AUTH_REQ_OK	   0
#define AUTH_REQ_PASSWORD  3
#define AUTH_REQ_MD5	   5
#define AUTH_REQ_GSS	   7
#define AUTH_REQ_SSPI	   9
#define AUTH_REQ_SASL	   10
#define AUTH_REQ_SASL_CONT 11
#define AUTH_REQ_SASL_FIN  12

/* Length-first packets with a code instead of a type byte */
#define PG_PROTOCOL_3_0	     0x00030000u
#define CANCEL_REQUEST_CODE  80877102u
#define NEGOTIATE_SSL_CODE   80877103u
#define TLS_RECORD_HANDSHAKE 0x16 /* first byte of a ClientHello: PostgreSQL 17 direct TLS */
#define NEGOTIATE_GSS_CODE   80877104u

/* Transaction status byte of ReadyForQuery */
#define TXN_IDLE   'I'
#define TXN_BLOCK  'T'
#define TXN_FAILED 'E'

#endif
