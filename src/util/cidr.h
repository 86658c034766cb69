/*
 * Address allow lists: "10.0.0.0/8, ::1/128, 192.168.1.7" parsed into network/mask pairs and
 * matched against a peer's address. IPv4 peers that arrive on an IPv6 socket as ::ffff:a.b.c.d
 * match IPv4 entries, so one list works whatever the listener's family.
 */
#ifndef PGRELAY_UTIL_CIDR_H
#define PGRELAY_UTIL_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CIDR_LIST_MAX 32 /* entries in one list; an allow list longer than this is a mistake */

struct cidr {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, already masked; 4 bytes used for AF_INET */
	uint8_t mask[16]; /* netmask in the same layout */
};

struct cidr_list {
	struct cidr items[CIDR_LIST_MAX];
	int n;
};

/*
 * Parses comma-separated entries, each an IPv4 or IPv6 address with an optional /prefix (no
 * prefix: the host alone). Blanks around entries are ignored; "" gives an empty list. False with
 * a reason in why (out is then unspecified).
 */
bool cidr_list_parse(const char *text, struct cidr_list *out, char *why, size_t cap)
	__attribute__((warn_unused_result));

/* True if sa (AF_INET or AF_INET6) is inside one of the entries. */
bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa);

#endif
