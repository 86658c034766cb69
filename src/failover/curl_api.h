/*
 * libcurl, loaded the first time something needs it (dlopen of its soname) instead of at
 * process start. Only the watchdog speaks HTTP as a client (etcd, peers' /watchdog), while
 * linking libcurl brings its own dependencies (libssh2, nghttp2, librtmp, brotli, zstd, libpsl)
 * into every pgrelay process: about 0.8 MB of resident memory for a feature most deployments
 * do not turn on (doc/performance.md, "Memory at rest").
 *
 * Only the calls pgrelay makes are resolved. Thread-safe: loaded once (pthread_once), then
 * read-only.
 */
#ifndef PGRELAY_FAILOVER_CURL_API_H
#define PGRELAY_FAILOVER_CURL_API_H

#include <curl/curl.h>
#include <stddef.h>

/* libcurl's ABI has been soname 4 since 2006 (7.16); Debian's packages of every TLS flavour. */
#define CURL_API_SONAME "libcurl.so.4"

struct curl_api {
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *h);
	CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
	const char *(*easy_strerror)(CURLcode rc);
	void (*easy_cleanup)(CURL *h);
};

/*
 * The loaded library (curl_global_init done), or NULL when it cannot be loaded, with the reason
 * in err (e.g. the package is not installed). The answer is the same for the whole process.
 */
const struct curl_api *curl_api_get(char *err, size_t errcap);

#endif
