/*
 * etcd v3 over its JSON gateway (see etcd.h). One libcurl easy handle, reused so the connection
 * to the current endpoint stays open; requests are built and replies parsed with json-c (depth
 * limited, size limited by ETCD_REPLY_MAX). Not thread-safe: one owner thread.
 */
#include "failover/etcd.h"

#include "failover/curl_api.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reply {
	char *buf; /* owned */
	size_t len;
	bool too_big;
};

struct etcd {
	const struct curl_api *cu;	/* libcurl (curl_api.h) */
	CURL *curl;			/* owned */
	char *urls[ETCD_MAX_ENDPOINTS]; /* owned, without a trailing '/' */
	int n_urls;
	int current; /* the endpoint tried first */
	uint32_t timeout_ms;
	char err[768];
};

/* ---- base64 -------------------------------------------------------------------------------- */

static char *b64_encode(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
	return out;
}

/* Decodes into out (cap bytes, NUL-terminated, cut when longer); false on bad input. */
static bool b64_decode(const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	if (n % 4 != 0 || n > 4 * ((ETCD_VALUE_MAX + 2) / 3) + 4)
		return false;
	unsigned char *tmp = malloc(n / 4 * 3 + 1);
	if (!tmp)
		return false;
	int len = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (len < 0) {
		free(tmp);
		return false;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if (n >= 1 && in[n - 1] == '=')
		len--;
	if (n >= 2 && in[n - 2] == '=')
		len--;
	size_t m = (size_t)len < cap - 1 ? (size_t)len : cap - 1;
	memcpy(out, tmp, m);
	out[m] = '\0';
	free(tmp);
	return true;
}

/* ---- transport ------------------------------------------------------------------------------ */

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct reply *r = arg;
	size_t n = size * nmemb;
	if (r->len + n > ETCD_REPLY_MAX) {
		r->too_big = true;
		return 0;
	}
	char *nb = realloc(r->buf, r->len + n + 1);
	if (!nb)
		return 0;
	memcpy(nb + r->len, ptr, n);
	r->buf = nb;
	r->len += n;
	r->buf[r->len] = '\0';
	return n;
}

/*
 * POSTs body to path on the current endpoint, then the others in turn; returns the parsed
 * reply (owned by the caller) or NULL with e->err set. An HTTP error status from etcd is an
 * answer (no other endpoint is tried): the cluster said no.
 */
static json_object *call(etcd_t *e, const char *path, json_object *req)
{
	const char *body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	for (int k = 0; k < e->n_urls; k++) {
		int idx = (e->current + k) % e->n_urls;
		char url[512];
		struct reply r = { 0 };
		long status = 0;
		snprintf(url, sizeof(url), "%s%s", e->urls[idx], path);
		e->cu->easy_setopt(e->curl, CURLOPT_URL, url);
		e->cu->easy_setopt(e->curl, CURLOPT_POSTFIELDS, body);
		e->cu->easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_data);
		e->cu->easy_setopt(e->curl, CURLOPT_WRITEDATA, &r);
		CURLcode rc = e->cu->easy_perform(e->curl);
		if (rc == CURLE_OK)
			e->cu->easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK || status >= 500 || status == 0) {
			snprintf(e->err, sizeof(e->err), "%.300s: %s", url,
				 rc != CURLE_OK ? e->cu->easy_strerror(rc)
				 : r.too_big	? "reply too large"
						: "server error");
			free(r.buf);
			continue;
		}
		e->current = idx;
		json_tokener *tok = json_tokener_new_ex(16);
		json_object *doc =
			tok && r.buf ? json_tokener_parse_ex(tok, r.buf, (int)r.len) : NULL;
		if (tok && json_tokener_get_error(tok) != json_tokener_success) {
			json_object_put(doc);
			doc = NULL;
		}
		json_tokener_free(tok);
		free(r.buf);
		if (!doc || !json_object_is_type(doc, json_type_object)) {
			json_object_put(doc);
			snprintf(e->err, sizeof(e->err), "%.300s: not a JSON object (HTTP %ld)",
				 url, status);
			return NULL;
		}
		if (status != 200) {
			json_object *m;
			snprintf(e->err, sizeof(e->err), "%.300s: HTTP %ld: %.200s", url, status,
				 json_object_object_get_ex(doc, "message", &m)
					 ? json_object_get_string(m)
					 : "error");
			json_object_put(doc);
			return NULL;
		}
		e->err[0] = '\0';
		return doc;
	}
	return NULL;
}

/* ---- JSON helpers --------------------------------------------------------------------------- */

static void add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

static void add_b64(json_object *o, const char *k, const char *v)
{
	char *b = b64_encode(v);
	add_str(o, k, b ? b : "");
	free(b);
}

static void add_i64(json_object *o, const char *k, int64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%" PRId64, v);
	add_str(o, k, buf);
}

/* A 64-bit number the gateway writes as a string (or a number); 0 when missing. */
static int64_t get_i64(json_object *o, const char *k)
{
	json_object *v;
	if (!json_object_object_get_ex(o, k, &v))
		return 0;
	if (json_object_is_type(v, json_type_string))
		return strtoll(json_object_get_string(v), NULL, 10);
	return json_object_get_int64(v);
}

static bool get_bool(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

static bool kv_from_json(json_object *j, struct etcd_kv *kv)
{
	json_object *k, *v;
	memset(kv, 0, sizeof(*kv));
	if (!json_object_object_get_ex(j, "key", &k) ||
	    !b64_decode(json_object_get_string(k), kv->key, sizeof(kv->key)))
		return false;
	if (json_object_object_get_ex(j, "value", &v) &&
	    !b64_decode(json_object_get_string(v), kv->value, sizeof(kv->value)))
		return false;
	kv->lease = get_i64(j, "lease");
	kv->create_revision = get_i64(j, "create_revision");
	kv->mod_revision = get_i64(j, "mod_revision");
	return true;
}

/* ---- API ------------------------------------------------------------------------------------ */

etcd_t *etcd_new(const char *endpoints, uint32_t timeout_ms)
{
	const struct curl_api *cu = curl_api_get(NULL, 0);
	if (!cu)
		return NULL;
	etcd_t *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cu = cu;
	e->timeout_ms = timeout_ms;
	const char *p = endpoints ? endpoints : "";
	while (*p && e->n_urls < ETCD_MAX_ENDPOINTS) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t len = strcspn(p, ", ");
		if (!len)
			break;
		while (len > 1 && p[len - 1] == '/')
			len--;
		e->urls[e->n_urls] = strndup(p, len);
		if (!e->urls[e->n_urls])
			goto fail;
		e->n_urls++;
		p += strcspn(p, ", ");
	}
	e->curl = e->cu->easy_init();
	if (!e->curl || e->n_urls == 0)
		goto fail;
	e->cu->easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L);
	e->cu->easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	e->cu->easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	e->cu->easy_setopt(e->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	e->cu->easy_setopt(e->curl, CURLOPT_FOLLOWLOCATION, 0L);
	return e;
fail:
	etcd_free(e);
	return NULL;
}

void etcd_free(etcd_t *e)
{
	if (!e)
		return;
	if (e->curl)
		e->cu->easy_cleanup(e->curl);
	for (int i = 0; i < e->n_urls; i++)
		free(e->urls[i]);
	free(e);
}

const char *etcd_last_error(const etcd_t *e)
{
	return e->err;
}

const char *etcd_current_endpoint(const etcd_t *e)
{
	return e->urls[e->current];
}

bool etcd_lease_grant(etcd_t *e, int ttl_s, int64_t *id)
{
	json_object *req = json_object_new_object();
	json_object_object_add(req, "TTL", json_object_new_int(ttl_s));
	json_object *rep = call(e, "/v3/lease/grant", req);
	json_object_put(req);
	if (!rep)
		return false;
	*id = get_i64(rep, "ID");
	json_object_put(rep);
	if (*id == 0) {
		snprintf(e->err, sizeof(e->err), "lease grant: no ID in the reply");
		return false;
	}
	return true;
}

bool etcd_lease_keepalive(etcd_t *e, int64_t id, int64_t *ttl_left)
{
	json_object *req = json_object_new_object(), *res;
	add_i64(req, "ID", id);
	json_object *rep = call(e, "/v3/lease/keepalive", req);
	json_object_put(req);
	if (!rep)
		return false;
	*ttl_left = json_object_object_get_ex(rep, "result", &res) ? get_i64(res, "TTL") : 0;
	json_object_put(rep);
	return true;
}

bool etcd_lease_revoke(etcd_t *e, int64_t id)
{
	json_object *req = json_object_new_object();
	add_i64(req, "ID", id);
	json_object *rep = call(e, "/v3/lease/revoke", req);
	json_object_put(req);
	json_object_put(rep);
	return rep != NULL;
}

static json_object *put_op(const char *key, const char *value, int64_t lease)
{
	json_object *put = json_object_new_object();
	add_b64(put, "key", key);
	add_b64(put, "value", value);
	if (lease)
		add_i64(put, "lease", lease);
	return put;
}

bool etcd_put(etcd_t *e, const char *key, const char *value, int64_t lease)
{
	json_object *req = put_op(key, value, lease);
	json_object *rep = call(e, "/v3/kv/put", req);
	json_object_put(req);
	json_object_put(rep);
	return rep != NULL;
}

/* {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": rev} */
static json_object *compare_create(const char *key, int64_t rev)
{
	json_object *c = json_object_new_object();
	add_b64(c, "key", key);
	add_str(c, "result", "EQUAL");
	add_str(c, "target", "CREATE");
	add_i64(c, "create_revision", rev);
	return c;
}

static json_object *one(const char *what, json_object *op)
{
	json_object *arr = json_object_new_array(), *wrap = json_object_new_object();
	json_object_object_add(wrap, what, op);
	json_object_array_add(arr, wrap);
	return arr;
}

bool etcd_create(etcd_t *e, const char *key, const char *value, int64_t lease, bool *created,
		 struct etcd_kv *holder)
{
	json_object *req = json_object_new_object(), *range = json_object_new_object();
	json_object *cmp = json_object_new_array();
	json_object_array_add(cmp, compare_create(key, 0));
	json_object_object_add(req, "compare", cmp);
	json_object_object_add(req, "success", one("request_put", put_op(key, value, lease)));
	add_b64(range, "key", key);
	json_object_object_add(req, "failure", one("request_range", range));
	json_object *rep = call(e, "/v3/kv/txn", req);
	json_object_put(req);
	if (!rep)
		return false;
	*created = get_bool(rep, "succeeded");
	memset(holder, 0, sizeof(*holder));
	json_object *resps, *r0, *rr, *kvs;
	if (!*created && json_object_object_get_ex(rep, "responses", &resps) &&
	    (r0 = json_object_array_get_idx(resps, 0)) &&
	    json_object_object_get_ex(r0, "response_range", &rr) &&
	    json_object_object_get_ex(rr, "kvs", &kvs) && json_object_array_length(kvs) > 0)
		(void)kv_from_json(json_object_array_get_idx(kvs, 0), holder);
	if (*created)
		holder->create_revision =
			get_i64(json_object_object_get(rep, "header"), "revision");
	json_object_put(rep);
	return true;
}

bool etcd_put_guarded(etcd_t *e, const char *guard_key, int64_t guard_rev, const char *key,
		      const char *value, bool *done)
{
	json_object *req = json_object_new_object(), *cmp = json_object_new_array();
	json_object_array_add(cmp, compare_create(guard_key, guard_rev));
	json_object_object_add(req, "compare", cmp);
	json_object_object_add(req, "success", one("request_put", put_op(key, value, 0)));
	json_object *rep = call(e, "/v3/kv/txn", req);
	json_object_put(req);
	if (!rep)
		return false;
	*done = get_bool(rep, "succeeded");
	json_object_put(rep);
	return true;
}

bool etcd_delete_guarded(etcd_t *e, const char *key, int64_t rev)
{
	json_object *req = json_object_new_object(), *cmp = json_object_new_array();
	json_object *del = json_object_new_object();
	json_object_array_add(cmp, compare_create(key, rev));
	json_object_object_add(req, "compare", cmp);
	add_b64(del, "key", key);
	json_object_object_add(req, "success", one("request_delete_range", del));
	json_object *rep = call(e, "/v3/kv/txn", req);
	json_object_put(req);
	json_object_put(rep);
	return rep != NULL;
}

int etcd_range_prefix(etcd_t *e, const char *prefix, struct etcd_kv *out, int cap)
{
	char end[ETCD_KEY_MAX];
	size_t n = strlen(prefix);
	if (n == 0 || n >= sizeof(end))
		return -1;
	memcpy(end, prefix, n + 1);
	end[n - 1]++; /* "/a/b/" .. "/a/b0": every key that starts with the prefix */
	json_object *req = json_object_new_object(), *kvs;
	add_b64(req, "key", prefix);
	add_b64(req, "range_end", end);
	add_i64(req, "limit", cap);
	json_object *rep = call(e, "/v3/kv/range", req);
	json_object_put(req);
	if (!rep)
		return -1;
	int got = 0;
	if (json_object_object_get_ex(rep, "kvs", &kvs) &&
	    json_object_is_type(kvs, json_type_array)) {
		size_t len = json_object_array_length(kvs);
		for (size_t i = 0; i < len && got < cap; i++)
			if (kv_from_json(json_object_array_get_idx(kvs, i), &out[got]))
				got++;
	}
	json_object_put(rep);
	return got;
}
