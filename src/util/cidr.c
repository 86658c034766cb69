/*
 * Allow-list parsing and matching (cidr.h). Pure functions over caller-owned structs; the
 * parser never writes past CIDR_LIST_MAX entries and rejects anything it does not fully consume.
 */
#include "util/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIDR_TEXT_MAX 64 /* longest entry: an IPv6 address with a prefix fits in 50 */

/* Parses one trimmed entry "addr[/prefix]" of len bytes. */
static bool cidr_parse_one(const char *s, size_t len, struct cidr *out)
{
	char text[CIDR_TEXT_MAX];
	if (len == 0 || len >= sizeof(text))
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	char *slash = strchr(text, '/');
	if (slash)
		*slash = '\0';
	memset(out, 0, sizeof(*out));
	int bits;
	if (inet_pton(AF_INET, text, out->addr) == 1) {
		out->family = AF_INET;
		bits = 32;
	} else if (inet_pton(AF_INET6, text, out->addr) == 1) {
		out->family = AF_INET6;
		bits = 128;
	} else {
		return false;
	}
	int prefix = bits;
	if (slash) {
		char *end;
		long v = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end || v < 0 || v > bits)
			return false;
		prefix = (int)v;
	}
	for (int i = 0; i < prefix; i++)
		out->mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
	for (int i = 0; i < 16; i++)
		out->addr[i] &= out->mask[i];
	return true;
}

bool cidr_list_parse(const char *text, struct cidr_list *out, char *why, size_t cap)
{
	out->n = 0;
	const char *p = text;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p)
		return true;
	for (;;) {
		const char *end = strchr(p, ',');
		const char *s = p, *e = end ? end : p + strlen(p);
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (out->n == CIDR_LIST_MAX) {
			snprintf(why, cap, "more than %d entries", CIDR_LIST_MAX);
			return false;
		}
		if (!cidr_parse_one(s, (size_t)(e - s), &out->items[out->n])) {
			snprintf(why, cap,
				 "\"%.*s\" is not an IP address or network (a.b.c.d/n or an IPv6 "
				 "address/n)",
				 (int)(e - s), s);
			return false;
		}
		out->n++;
		if (!end)
			return true;
		p = end + 1;
	}
}

/* The peer's family and address bytes, with IPv4-mapped IPv6 turned into IPv4. */
static int cidr_peer(const struct sockaddr *sa, uint8_t addr[16])
{
	memset(addr, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(addr, a6->s6_addr + 12, 4);
		return AF_INET;
	}
	memcpy(addr, a6->s6_addr, 16);
	return AF_INET6;
}

bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa)
{
	uint8_t addr[16];
	int family = cidr_peer(sa, addr);
	for (int i = 0; i < l->n; i++) {
		const struct cidr *c = &l->items[i];
		if (c->family != family)
			continue;
		bool in = true;
		for (int j = 0; j < 16 && in; j++)
			in = (addr[j] & c->mask[j]) == c->addr[j];
		if (in)
			return true;
	}
	return false;
}
