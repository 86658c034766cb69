/*
 * pg_hba.conf subset (see hba.h). Lines are split into tokens the way PostgreSQL's next_token()
 * does: blanks separate tokens, '#' outside quotes starts a comment, double quotes protect blanks,
 * commas and '#', "" inside quotes is a literal quote, and a token ending in ',' continues its
 * field with the next token ("db1, db2" is one field). A quoted keyword ("all") is a plain name.
 *
 * Anything PostgreSQL understands but pgrelay cannot honour (host names, samehost/samenet, +group,
 * @file, regular expressions, auth options but clientcert, methods other than hba.h's) is an error
 * rather than being ignored, because silently widening or narrowing access is worse than refusing
 * to load. The one leniency: "local" lines keep any PostgreSQL method and options, since they never
 * match anything here and copied server files are full of "local all all peer".
 *
 * A loaded struct hba is immutable, so hba_match may run on any thread.
 */
#include "auth/hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/errbuf.h"

#define HBA_MAX_LINE   4096
#define HBA_MAX_NAME   63 /* PostgreSQL's NAMEDATALEN - 1 */
#define HBA_MAX_FIELDS 16
#define HBA_MAX_TOKENS 512 /* comma-separated items per line, all fields together */

enum hba_conn_type { HBA_LOCAL, HBA_HOST, HBA_HOSTSSL, HBA_HOSTNOSSL };

/* One comma-separated item of a field. */
struct hba_token {
	char *text;  /* points into the line buffer being parsed */
	bool quoted; /* any part was quoted: never a keyword */
};

/* A field: tokens joined by commas. */
struct hba_field {
	struct hba_token *tokens; /* points into the tokenizer's array */
	size_t n;
};

/* A DATABASE or USER column. */
struct hba_names {
	bool all;      /* "all" was listed */
	bool sameuser; /* DATABASE only: "sameuser" was listed, matches database == user */
	char **names;  /* owned array of owned names; quoted keywords land here as names */
	size_t n;
};

struct hba_rule {
	int line;		 /* for messages */
	enum hba_conn_type type; /* HBA_LOCAL never matches */
	struct hba_names databases;
	struct hba_names users;
	bool any_addr;	  /* ADDRESS "all" */
	int family;	  /* AF_INET or AF_INET6 when !any_addr */
	uint8_t addr[16]; /* network address, already masked; 4 bytes used for AF_INET */
	uint8_t mask[16]; /* netmask in the same layout */
	enum hba_method method;
	enum hba_clientcert clientcert;
};

struct hba {
	struct hba_rule *rules; /* owned, in file order: first match wins */
	size_t n;
	size_t cap;
};

/* ---- tokenizer ---- */

/*
 * Splits line (modified in place) into fields. Returns the number of fields, -1 after reporting
 * an error. tokens has room for HBA_MAX_TOKENS items.
 */
static int hba_split_line(struct errbuf *err, int lineno, char *line, struct hba_token *tokens,
			  struct hba_field *fields)
{
	char *r = line, *w;
	size_t ntok = 0;
	int nfields = 0;
	bool continues = false, comment = false;

	while (!comment) {
		bool in_quote = false, quoted = false;
		char term;

		r += strspn(r, " \t");
		if (*r == '\0' || *r == '#')
			break;
		if (ntok == HBA_MAX_TOKENS) {
			errbuf_add(err, lineno, "more than %d items on one line", HBA_MAX_TOKENS);
			return -1;
		}
		w = r;
		tokens[ntok].text = w;
		/* Characters are copied down over removed quotes, so w never passes r. */
		for (; *r; r++) {
			if (!in_quote && strchr(" \t#,", *r))
				break;
			if (*r == '"' && in_quote && r[1] == '"') {
				*w++ = *r++; /* "" inside quotes is one literal quote */
			} else if (*r == '"') {
				in_quote = !in_quote;
				quoted = true;
			} else {
				*w++ = *r;
			}
		}
		if (in_quote) {
			errbuf_add(err, lineno, "unterminated quoted string");
			return -1;
		}
		term = *r;
		if (term != '\0')
			r++; /* so that terminating the token at w cannot erase what comes next */
		*w = '\0';
		comment = term == '#';
		if (!quoted && tokens[ntok].text[0] == '\0') {
			errbuf_add(err, lineno, "empty item in a comma-separated list");
			return -1;
		}
		tokens[ntok].quoted = quoted;
		if (!continues) {
			if (nfields == HBA_MAX_FIELDS) {
				errbuf_add(err, lineno, "too many fields");
				return -1;
			}
			fields[nfields].tokens = &tokens[ntok];
			fields[nfields].n = 0;
			nfields++;
		}
		fields[nfields - 1].n++;
		ntok++;
		continues = term == ',';
	}
	if (continues) {
		errbuf_add(err, lineno, "line ends with a comma");
		return -1;
	}
	return nfields;
}

/* ---- fields ---- */

static bool hba_token_is(const struct hba_token *t, const char *keyword)
{
	return !t->quoted && strcmp(t->text, keyword) == 0;
}

/* The field must be one token (TYPE, ADDRESS, mask, METHOD). */
static const struct hba_token *hba_single(struct errbuf *err, int lineno, const struct hba_field *f,
					  const char *what)
{
	if (f->n != 1) {
		errbuf_add(err, lineno, "%s must be a single value", what);
		return NULL;
	}
	return &f->tokens[0];
}

static bool hba_parse_type(struct errbuf *err, int lineno, const struct hba_field *f,
			   enum hba_conn_type *out)
{
	static const struct {
		const char *name;
		enum hba_conn_type type;
	} types[] = { { "local", HBA_LOCAL },
		      { "host", HBA_HOST },
		      { "hostssl", HBA_HOSTSSL },
		      { "hostnossl", HBA_HOSTNOSSL } };
	const struct hba_token *t = hba_single(err, lineno, f, "connection type");

	if (!t)
		return false;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (hba_token_is(t, types[i].name)) {
			*out = types[i].type;
			return true;
		}
	}
	errbuf_add(err, lineno, "unsupported connection type \"%s\"", t->text);
	return false;
}

static bool hba_names_add(struct hba_names *names, const char *text)
{
	char **grown = realloc(names->names, (names->n + 1) * sizeof(*grown));

	if (!grown)
		return false;
	names->names = grown;
	names->names[names->n] = strdup(text);
	if (!names->names[names->n])
		return false;
	names->n++;
	return true;
}

/* Unquoted keywords and prefixes PostgreSQL gives a meaning pgrelay cannot implement. */
static const char *hba_name_unsupported(const struct hba_token *t, bool database)
{
	if (t->quoted)
		return NULL;
	if (t->text[0] == '+')
		return "group membership (+role) is not supported";
	if (t->text[0] == '@')
		return "file inclusion (@file) is not supported";
	if (t->text[0] == '/')
		return "regular expressions are not supported";
	if (database && (strcmp(t->text, "samerole") == 0 || strcmp(t->text, "samegroup") == 0))
		return "samerole is not supported";
	return NULL;
}

static bool hba_parse_names(struct errbuf *err, int lineno, const struct hba_field *f,
			    bool database, struct hba_names *out)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct hba_token *t = &f->tokens[i];
		const char *why = hba_name_unsupported(t, database);

		if (why) {
			errbuf_add(err, lineno, "%s: \"%s\"", why, t->text);
			return false;
		}
		if (hba_token_is(t, "all")) {
			out->all = true;
		} else if (database && hba_token_is(t, "sameuser")) {
			out->sameuser = true;
		} else if (database && hba_token_is(t, "replication")) {
			/* Only matches replication connections, which pgrelay does not accept. */
		} else if (t->text[0] == '\0' || strlen(t->text) > HBA_MAX_NAME) {
			errbuf_add(err, lineno, "%s name \"%s\" is empty or longer than %d bytes",
				   database ? "database" : "user", t->text, HBA_MAX_NAME);
			return false;
		} else if (!hba_names_add(out, t->text)) {
			errbuf_add(err, lineno, "out of memory");
			return false;
		}
	}
	return true;
}

static void hba_names_free(struct hba_names *names)
{
	for (size_t i = 0; i < names->n; i++)
		free(names->names[i]);
	free(names->names);
}

/* Parses a numeric IPv4 or IPv6 address into bytes; false for anything else. */
static bool hba_parse_ip(const char *text, int *family, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, text, out) == 1) {
		*family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, text, out) == 1) {
		*family = AF_INET6;
		return true;
	}
	return false;
}

static bool hba_prefix_to_mask(const char *text, int family, uint8_t mask[16])
{
	int max = family == AF_INET ? 32 : 128, bits = 0;

	if (text[0] == '\0' || strlen(text) > 3)
		return false;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		bits = bits * 10 + (*p - '0');
	}
	if (bits > max)
		return false;
	memset(mask, 0, 16);
	for (int i = 0; i < bits; i++)
		mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
	return true;
}

/*
 * ADDRESS is "all", "ip/prefix", or "ip" followed by a netmask field. *used tells how many fields
 * were consumed (1 or 2).
 */
static bool hba_parse_address(struct errbuf *err, int lineno, const struct hba_field *f, int nleft,
			      struct hba_rule *rule, int *used)
{
	const struct hba_token *t = hba_single(err, lineno, &f[0], "address");
	char text[HBA_MAX_LINE + 1];
	char *slash;
	int mask_family;

	*used = 1;
	if (!t)
		return false;
	if (hba_token_is(t, "all")) {
		rule->any_addr = true;
		return true;
	}
	if (hba_token_is(t, "samehost") || hba_token_is(t, "samenet")) {
		errbuf_add(err, lineno, "\"%s\" is not supported", t->text);
		return false;
	}
	snprintf(text, sizeof(text), "%s", t->text);
	slash = strchr(text, '/');
	if (slash)
		*slash = '\0';
	if (!hba_parse_ip(text, &rule->family, rule->addr)) {
		errbuf_add(err, lineno, "invalid IP address \"%s\" (host names are not supported)",
			   text);
		return false;
	}
	if (slash) {
		if (!hba_prefix_to_mask(slash + 1, rule->family, rule->mask)) {
			errbuf_add(err, lineno, "invalid CIDR mask in address \"%s\"", t->text);
			return false;
		}
	} else {
		if (nleft < 2) {
			errbuf_add(err, lineno, "end of line before netmask");
			return false;
		}
		t = hba_single(err, lineno, &f[1], "netmask");
		if (!t)
			return false;
		if (!hba_parse_ip(t->text, &mask_family, rule->mask) ||
		    mask_family != rule->family) {
			errbuf_add(err, lineno, "invalid IP mask \"%s\"", t->text);
			return false;
		}
		*used = 2;
	}
	for (int i = 0; i < 16; i++)
		rule->addr[i] &= rule->mask[i];
	return true;
}

static const struct {
	const char *name;
	enum hba_method method;
} hba_methods[] = { { "trust", HBA_TRUST },	  { "reject", HBA_REJECT },
		    { "md5", HBA_MD5 },		  { "scram-sha-256", HBA_SCRAM },
		    { "password", HBA_PASSWORD }, { "cert", HBA_CERT } };

/* PostgreSQL methods pgrelay cannot run; tolerated on "local" lines only. */
static const char *const hba_foreign_methods[] = { "peer", "ident", "gss",    "sspi",
						   "pam",  "ldap",  "radius", "bsd" };

static bool hba_parse_method(struct errbuf *err, int lineno, const struct hba_field *f, bool local,
			     enum hba_method *out)
{
	const struct hba_token *t = hba_single(err, lineno, f, "authentication method");

	if (!t)
		return false;
	for (size_t i = 0; i < sizeof(hba_methods) / sizeof(hba_methods[0]); i++) {
		if (hba_token_is(t, hba_methods[i].name)) {
			*out = hba_methods[i].method;
			return true;
		}
	}
	for (size_t i = 0; local && i < sizeof(hba_foreign_methods) / sizeof(char *); i++) {
		if (hba_token_is(t, hba_foreign_methods[i])) {
			*out = HBA_REJECT; /* never used: local lines do not match */
			return true;
		}
	}
	errbuf_add(err, lineno, "unsupported authentication method \"%s\"", t->text);
	return false;
}

/* NAME=VALUE options after the method: only clientcert, as PostgreSQL spells it. */
static bool hba_parse_option(struct errbuf *err, int lineno, const struct hba_field *f,
			     struct hba_rule *rule)
{
	const struct hba_token *t = hba_single(err, lineno, f, "authentication option");
	if (!t)
		return false;
	static const char prefix[] = "clientcert=";
	if (strncmp(t->text, prefix, sizeof(prefix) - 1) != 0) {
		errbuf_add(err, lineno, "authentication option \"%s\" is not supported", t->text);
		return false;
	}
	const char *v = t->text + sizeof(prefix) - 1;
	if (rule->type != HBA_HOSTSSL) {
		errbuf_add(err, lineno, "clientcert can only be configured for hostssl rows");
		return false;
	}
	if (strcmp(v, "verify-ca") == 0 && rule->method != HBA_CERT) {
		rule->clientcert = HBA_CLIENTCERT_VERIFY_CA;
	} else if (strcmp(v, "verify-full") == 0) {
		rule->clientcert = HBA_CLIENTCERT_VERIFY_FULL;
	} else {
		errbuf_add(err, lineno, "invalid value for clientcert: \"%s\"", v);
		return false;
	}
	return true;
}

/* Fills rule from a line's fields; false after reporting an error. */
static bool hba_parse_rule(struct errbuf *err, int lineno, const struct hba_field *f, int nf,
			   struct hba_rule *rule)
{
	int i = 3, used;
	bool local;

	rule->line = lineno;
	if (!hba_parse_type(err, lineno, &f[0], &rule->type))
		return false;
	local = rule->type == HBA_LOCAL;
	if (nf < (local ? 4 : 5)) {
		errbuf_add(err, lineno, "missing fields (need TYPE DATABASE USER %sMETHOD)",
			   local ? "" : "ADDRESS ");
		return false;
	}
	if (!hba_parse_names(err, lineno, &f[1], true, &rule->databases) ||
	    !hba_parse_names(err, lineno, &f[2], false, &rule->users))
		return false;
	if (!local) {
		if (!hba_parse_address(err, lineno, &f[3], nf - 3, rule, &used))
			return false;
		i += used;
	}
	if (i >= nf) {
		errbuf_add(err, lineno, "end of line before authentication method");
		return false;
	}
	if (!hba_parse_method(err, lineno, &f[i], local, &rule->method))
		return false;
	if (rule->method == HBA_CERT && rule->type != HBA_HOSTSSL && !local) {
		errbuf_add(err, lineno, "cert authentication is only supported on hostssl lines");
		return false;
	}
	if (rule->method == HBA_CERT)
		rule->clientcert = HBA_CLIENTCERT_VERIFY_FULL;
	for (int o = i + 1; !local && o < nf; o++)
		if (!hba_parse_option(err, lineno, &f[o], rule))
			return false;
	return true;
}

static void hba_rule_free(struct hba_rule *rule)
{
	hba_names_free(&rule->databases);
	hba_names_free(&rule->users);
}

static bool hba_append(struct hba *hba, const struct hba_rule *rule)
{
	if (hba->n == hba->cap) {
		size_t cap = hba->cap ? 2 * hba->cap : 16;
		struct hba_rule *rules = realloc(hba->rules, cap * sizeof(*rules));

		if (!rules)
			return false;
		hba->rules = rules;
		hba->cap = cap;
	}
	hba->rules[hba->n++] = *rule;
	return true;
}

/* Handles one line (without newline, len bytes, may hold NULs). */
static void hba_parse_line(struct errbuf *err, struct hba *hba, int lineno, char *line, size_t len)
{
	struct hba_token tokens[HBA_MAX_TOKENS];
	struct hba_field fields[HBA_MAX_FIELDS];
	struct hba_rule rule = { 0 };
	int nf;

	if (len > HBA_MAX_LINE) {
		errbuf_add(err, lineno, "line longer than %d bytes", HBA_MAX_LINE);
		return;
	}
	if (memchr(line, '\0', len)) {
		errbuf_add(err, lineno, "NUL byte in line");
		return;
	}
	nf = hba_split_line(err, lineno, line, tokens, fields);
	if (nf <= 0)
		return;
	if (!hba_parse_rule(err, lineno, fields, nf, &rule)) {
		hba_rule_free(&rule);
		return;
	}
	if (!hba_append(hba, &rule)) {
		errbuf_add(err, lineno, "out of memory");
		hba_rule_free(&rule);
	}
}

struct hba *hba_load(const char *path, char *err, size_t errcap)
{
	struct errbuf eb;
	struct hba *hba = calloc(1, sizeof(*hba));
	FILE *f;
	char *buf = NULL;
	size_t bufcap = 0;
	ssize_t n;
	int lineno = 0;

	errbuf_init(&eb, err, errcap, path);
	if (!hba) {
		errbuf_add(&eb, 0, "out of memory");
		return NULL;
	}
	f = fopen(path, "r");
	if (!f) {
		errbuf_add(&eb, 0, "could not open: %s", strerror(errno));
		free(hba);
		return NULL;
	}
	while ((n = getline(&buf, &bufcap, f)) >= 0) {
		size_t len = (size_t)n;

		lineno++;
		if (len && buf[len - 1] == '\n')
			buf[--len] = '\0';
		if (len && buf[len - 1] == '\r')
			buf[--len] = '\0';
		hba_parse_line(&eb, hba, lineno, buf, len);
	}
	if (ferror(f))
		errbuf_add(&eb, 0, "read error: %s", strerror(errno));
	free(buf);
	fclose(f);
	if (eb.count) {
		hba_free(hba);
		return NULL;
	}
	return hba;
}

void hba_free(struct hba *hba)
{
	if (!hba)
		return;
	for (size_t i = 0; i < hba->n; i++)
		hba_rule_free(&hba->rules[i]);
	free(hba->rules);
	free(hba);
}

/* ---- matching ---- */

static bool hba_names_match(const struct hba_names *names, const char *name, const char *user)
{
	if (names->all || (names->sameuser && strcmp(name, user) == 0))
		return true;
	for (size_t i = 0; i < names->n; i++)
		if (strcmp(names->names[i], name) == 0)
			return true;
	return false;
}

/*
 * Client address as (family, bytes). An IPv4-mapped IPv6 address (a dual-stack listener's view of
 * an IPv4 client) is matched as the IPv4 address it is. False for non-IP sockets.
 */
static bool hba_client_addr(const struct sockaddr *addr, int *family, uint8_t out[16])
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(out, 0, 16);
	if (!addr)
		return false;
	if (addr->sa_family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, 4);
		*family = AF_INET;
		return true;
	}
	if (addr->sa_family == AF_INET6) {
		const uint8_t *a =
			((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr.s6_addr;

		if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
			memcpy(out, a + 12, 4);
			*family = AF_INET;
		} else {
			memcpy(out, a, 16);
			*family = AF_INET6;
		}
		return true;
	}
	return false;
}

static bool hba_addr_match(const struct hba_rule *rule, int family, const uint8_t addr[16])
{
	if (rule->any_addr)
		return true;
	if (rule->family != family)
		return false;
	for (int i = 0; i < 16; i++)
		if ((addr[i] & rule->mask[i]) != rule->addr[i])
			return false;
	return true;
}

enum hba_method hba_match(const struct hba *hba, const char *database, const char *user,
			  const struct sockaddr *addr, bool tls)
{
	enum hba_clientcert cert;
	return hba_match_cert(hba, database, user, addr, tls, &cert);
}

enum hba_method hba_match_cert(const struct hba *hba, const char *database, const char *user,
			       const struct sockaddr *addr, bool tls, enum hba_clientcert *cert)
{
	*cert = HBA_CLIENTCERT_NONE;
	uint8_t bytes[16];
	int family = 0;

	if (!hba || !hba_client_addr(addr, &family, bytes))
		return HBA_NOMATCH;
	for (size_t i = 0; i < hba->n; i++) {
		const struct hba_rule *r = &hba->rules[i];

		if (r->type == HBA_LOCAL || (r->type == HBA_HOSTSSL && !tls) ||
		    (r->type == HBA_HOSTNOSSL && tls))
			continue;
		if (hba_names_match(&r->databases, database, user) &&
		    hba_names_match(&r->users, user, user) && hba_addr_match(r, family, bytes)) {
			*cert = r->clientcert;
			return r->method;
		}
	}
	return HBA_NOMATCH;
}

const char *hba_method_name(enum hba_method m)
{
	for (size_t i = 0; i < sizeof(hba_methods) / sizeof(hba_methods[0]); i++)
		if (hba_methods[i].method == m)
			return hba_methods[i].name;
	return "no match";
}
