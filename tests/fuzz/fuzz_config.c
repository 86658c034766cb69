/*
 * libFuzzer harness for the files pgrelay loads: the configuration (src/conf/config.c with
 * config_keys.c, through libconfig), the users file (src/auth/users.c) and the hba file
 * (src/auth/hba.c).
 *
 * Input: up to three parts separated by a line "%%%" (i.e. the bytes "\n%%%\n"):
 *   pgrelay.conf, users.txt, pool_hba.conf
 * written into a private temporary directory (created once per process), so that a config naming
 * users_file = "users.txt" and hba_file = "pool_hba.conf" loads them as the daemon would. The
 * users and hba parts are also loaded on their own (a config that fails leaves them unread).
 * What loads is then used: users looked up and checked, hba rules matched for a few peers,
 * the config printed back (config_foreach_value) and compared with itself.
 *
 * Checks: a load gives a result or an error text, never both or neither (on failure err names
 * the problem); the result's invariants hold (n_backends >= 1, users sorted and unique).
 * Plain-text users cost one PBKDF2 each at load (users.h), 4096 rounds: at that price the fuzzer
 * ran 3 inputs a second, so PKCS5_PBKDF2_HMAC is replaced here by the real one with 1 round
 * (verifiers are made and checked by the same function, so every comparison still holds).
 *
 * LeakSanitizer: libconfig 1.5 leaks on some syntax errors; see tests/fuzz/lsan.supp.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dlfcn.h>

#include <openssl/evp.h>

#include "auth/hba.h"
#include "auth/users.h"
#include "conf/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* PBKDF2 with one round: the real function, found behind this one. */
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
		      int iter, const EVP_MD *digest, int keylen, unsigned char *out)
{
	typedef int (*pbkdf2_fn)(const char *, int, const unsigned char *, int, int, const EVP_MD *,
				 int, unsigned char *);
	static pbkdf2_fn real;
	if (!real) {
		void *sym = dlsym(RTLD_NEXT, "PKCS5_PBKDF2_HMAC");
		CHECK(sym != NULL);
		memcpy(&real, &sym, sizeof(real));
	}
	CHECK(iter >= 1);
	return real(pass, passlen, salt, saltlen, 1, digest, keylen, out);
}

static char dir[64];
static char conf_path[128], users_path[128], hba_path[128];

static void cleanup(void)
{
	unlink(conf_path);
	unlink(users_path);
	unlink(hba_path);
	rmdir(dir);
}

static void init_once(void)
{
	if (dir[0])
		return;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/pgrelay-fuzz-config.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(conf_path, sizeof(conf_path), "%s/pgrelay.conf", dir);
	snprintf(users_path, sizeof(users_path), "%s/users.txt", dir);
	snprintf(hba_path, sizeof(hba_path), "%s/pool_hba.conf", dir);
	atexit(cleanup);
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	CHECK(f != NULL);
	CHECK(n == 0 || fwrite(p, 1, n, f) == n);
	CHECK(fclose(f) == 0);
}

/* A load either succeeds with an empty error text or fails with a non-empty one. */
static void check_err(bool ok, const char *err)
{
	CHECK(memchr(err, '\0', 4096) != NULL);
	if (!ok)
		CHECK(err[0] != '\0');
}

static void use_users(const struct userlist *u)
{
	for (size_t i = 0; i < u->count; i++) {
		const struct user_entry *e = &u->users[i];
		CHECK(e->name && e->name[0]);
		if (i)
			CHECK(strcmp(u->users[i - 1].name, e->name) < 0); /* sorted, unique */
		CHECK(users_find(u, e->name) == e);
		enum hba_method d = users_default_method(e);
		CHECK(d == HBA_SCRAM || d == HBA_MD5);
		for (int m = HBA_TRUST; m <= HBA_NOMATCH; m++)
			(void)users_pick_method(e, (enum hba_method)m);
		/* Plain and md5 secrets check without PBKDF2; verifiers would run it. */
		if (e->kind != SECRET_SCRAM) {
			if (e->kind == SECRET_PLAIN)
				CHECK(users_check_password(e, e->plain));
			bool wrong = users_check_password(e, "wrong");
			CHECK(!wrong || e->kind == SECRET_MD5 ||
			      (e->kind == SECRET_PLAIN && strcmp(e->plain, "wrong") == 0));
		}
	}
	(void)users_find(u, "nobody-with-this-name");
}

static void use_hba(const struct hba *h)
{
	static const char *const addrs[] = { "127.0.0.1", "10.1.2.3",	 "192.168.1.7",
					     "::1",	  "2001:db8::1", "::ffff:10.0.0.1" };
	static const char *const names[] = { "all", "postgres", "alice", "db1", "bob smith", "" };
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		if (strchr(addrs[i], ':')) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			a->sin6_family = AF_INET6;
			CHECK(inet_pton(AF_INET6, addrs[i], &a->sin6_addr) == 1);
		} else {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			a->sin_family = AF_INET;
			CHECK(inet_pton(AF_INET, addrs[i], &a->sin_addr) == 1);
		}
		const char *db = names[i % 6], *user = names[(i + 1) % 6];
		enum hba_method m = hba_match(h, db, user, (struct sockaddr *)&ss, i & 1);
		CHECK(m >= HBA_TRUST && m <= HBA_NOMATCH);
		CHECK(hba_method_name(m) != NULL);
		m = hba_match(h, user, user, (struct sockaddr *)&ss, !(i & 1));
		CHECK(m >= HBA_TRUST && m <= HBA_NOMATCH);
	}
}

static void count_value(void *arg, const char *key, const char *value, bool reloadable)
{
	(void)reloadable;
	CHECK(key && key[0] && value);
	(*(int *)arg)++;
}

static void use_config(const struct config *cfg)
{
	CHECK(cfg->n_backends >= 1 && cfg->n_backends <= CONFIG_MAX_BACKENDS);
	CHECK(cfg->users != NULL);
	int p = config_primary_backend(cfg);
	CHECK(p >= 0 && p < cfg->n_backends);
	char diff[1024];
	config_diff_restart_keys(cfg, cfg, diff, sizeof(diff));
	CHECK(diff[0] == '\0'); /* a config does not differ from itself */
	int n = 0;
	config_foreach_value(cfg, count_value, &n);
	CHECK(n > 0);
	use_users(cfg->users);
	if (cfg->hba)
		use_hba(cfg->hba);
}

/* The next part of [*p, end): up to "\n%%%\n" or the end. */
static const uint8_t *next_part(const uint8_t **p, const uint8_t *end, size_t *len)
{
	static const char sep[] = "\n%%%\n";
	const uint8_t *start = *p;
	const uint8_t *hit = memmem(start, (size_t)(end - start), sep, 5);
	if (hit) {
		*len = (size_t)(hit - start);
		*p = hit + 5;
	} else {
		*len = (size_t)(end - start);
		*p = end;
	}
	return start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	if (size > 16384)
		return 0;
	const uint8_t *p = data, *end = data + size;
	size_t clen, ulen, hlen;
	const uint8_t *conf = next_part(&p, end, &clen);
	const uint8_t *users = next_part(&p, end, &ulen);
	const uint8_t *hba = next_part(&p, end, &hlen);
	write_file(conf_path, conf, clen);
	write_file(users_path, users, ulen);
	write_file(hba_path, hba, hlen);

	char err[4096];
	err[0] = '\0';
	struct userlist *u = users_load(users_path, err, sizeof(err));
	check_err(u != NULL, err);
	if (u) {
		use_users(u);
		users_free(u);
	}
	err[0] = '\0';
	struct hba *h = hba_load(hba_path, err, sizeof(err));
	check_err(h != NULL, err);
	if (h) {
		use_hba(h);
		hba_free(h);
	}
	err[0] = '\0';
	struct config *cfg = config_load(conf_path, err, sizeof(err));
	check_err(cfg != NULL, err);
	if (cfg) {
		use_config(cfg);
		config_free(cfg);
	}
	/* The unit parsers on the config text itself (its first line). */
	char text[64];
	const uint8_t *nl = memchr(conf, '\n', clen);
	size_t n = nl ? (size_t)(nl - conf) : clen;
	n = n < sizeof(text) - 1 ? n : sizeof(text) - 1;
	memcpy(text, conf, n);
	text[n] = '\0';
	uint32_t ms;
	uint64_t bytes;
	bool dur = config_parse_duration(text, &ms), sz = config_parse_size(text, &bytes);
	(void)dur;
	(void)sz;
	return 0;
}
