/*
 * Client authentication rules in pg_hba.conf syntax, first match wins:
 *   TYPE  DATABASE  USER  ADDRESS  METHOD
 * TYPE is host, hostssl, hostnossl (local lines are accepted and never match a TCP client);
 * DATABASE and USER are comma lists of names, "all", or (DATABASE only) "sameuser"; quoted names
 * allowed; ADDRESS is "all", an IPv4/IPv6 CIDR, or an address followed by a separate netmask
 * column. METHOD is trust, reject, md5, scram-sha-256, password or cert; the one option accepted
 * is clientcert=verify-ca|verify-full on hostssl lines. No file = every user may log in
 * with the method their users_file secret allows (scram for verifiers and plain text, md5 for md5).
 */
#ifndef PGRELAY_AUTH_HBA_H
#define PGRELAY_AUTH_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum hba_method {
	HBA_TRUST,
	HBA_REJECT,
	HBA_MD5,
	HBA_SCRAM,
	HBA_PASSWORD,
	HBA_CERT, /* the client certificate's CN is the user name; no password */
	HBA_NOMATCH,
};

/* What a rule asks of the client certificate (option clientcert, implied verify-full by cert). */
enum hba_clientcert { HBA_CLIENTCERT_NONE, HBA_CLIENTCERT_VERIFY_CA, HBA_CLIENTCERT_VERIFY_FULL };

struct hba; /* opaque, immutable after load */

/* NULL and "FILE:LINE: message" lines in err on error. */
struct hba *hba_load(const char *path, char *err, size_t errcap);
void hba_free(struct hba *hba);
/* First matching rule's method, HBA_NOMATCH if none. addr is the client's peer address. */
enum hba_method hba_match(const struct hba *hba, const char *database, const char *user,
			  const struct sockaddr *addr, bool tls);
/* hba_match, also telling what the matching rule asks of the client certificate. */
enum hba_method hba_match_cert(const struct hba *hba, const char *database, const char *user,
			       const struct sockaddr *addr, bool tls, enum hba_clientcert *cert);
const char *hba_method_name(enum hba_method m);

#endif
