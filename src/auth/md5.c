/*
 * PostgreSQL's md5 password scheme through OpenSSL's EVP interface (the low-level MD5_* calls are
 * deprecated in OpenSSL 3). The stored secret is already password-equivalent on the wire, which is
 * why pgrelay can answer a backend's md5 challenge from it without knowing the password.
 *
 * The void functions cannot report a digest failure (only possible when OpenSSL cannot allocate or
 * has no MD5, e.g. in FIPS mode); they then write an empty string, which md5_secret_is_valid and
 * md5_check_response reject and no server accepts.
 */
#include "auth/md5.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define MD5_DIGEST_BYTES 16
#define MD5_PREFIX	 "md5"

/* out = "md5" + hex(md5(a || b)); out[0] = '\0' on failure. */
static bool md5_hex2(const void *a, size_t alen, const void *b, size_t blen,
		     char out[MD5_PASSWD_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t digest[MD5_DIGEST_BYTES];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	out[0] = '\0';
	if (!ctx)
		return false;
	ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
	     EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, digest, &n) == 1 &&
	     n == MD5_DIGEST_BYTES;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return false;
	memcpy(out, MD5_PREFIX, 3);
	for (size_t i = 0; i < MD5_DIGEST_BYTES; i++) {
		out[3 + 2 * i] = hex[digest[i] >> 4];
		out[4 + 2 * i] = hex[digest[i] & 15];
	}
	out[MD5_PASSWD_LEN] = '\0';
	OPENSSL_cleanse(digest, sizeof(digest));
	return true;
}

void md5_secret_from_password(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1])
{
	(void)md5_hex2(password, strlen(password), user, strlen(user), out);
}

/* Same test as PostgreSQL's get_password_type: "md5" and exactly 32 lower-case hex digits. */
bool md5_secret_is_valid(const char *text)
{
	return strlen(text) == MD5_PASSWD_LEN && strncmp(text, MD5_PREFIX, 3) == 0 &&
	       strspn(text + 3, "0123456789abcdef") == MD5_PASSWD_LEN - 3;
}

void md5_response_from_secret(const char *secret, const uint8_t salt[4],
			      char out[MD5_PASSWD_LEN + 1])
{
	out[0] = '\0';
	if (!md5_secret_is_valid(secret))
		return;
	/* The hex digits after "md5" are hashed, not the prefix. */
	(void)md5_hex2(secret + 3, MD5_PASSWD_LEN - 3, salt, 4, out);
}

bool md5_check_response(const char *secret, const uint8_t salt[4], const char *response, size_t len)
{
	char expected[MD5_PASSWD_LEN + 1];
	bool ok;

	if (len != MD5_PASSWD_LEN)
		return false;
	md5_response_from_secret(secret, salt, expected);
	ok = expected[0] != '\0' && CRYPTO_memcmp(expected, response, MD5_PASSWD_LEN) == 0;
	OPENSSL_cleanse(expected, sizeof(expected));
	return ok;
}
