/* libcurl loaded on first use (see curl_api.h). */
#include "failover/curl_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

static pthread_once_t curl_api_once = PTHREAD_ONCE_INIT;
static struct curl_api api;
static bool api_ok;
static char api_err[256];

/* dlsym into *slot; false (with api_err set) when the symbol is missing. */
static bool curl_api_sym(void *lib, const char *name, void **slot)
{
	*slot = dlsym(lib, name);
	if (*slot)
		return true;
	snprintf(api_err, sizeof(api_err), "%s has no %s", CURL_API_SONAME, name);
	return false;
}

static void curl_api_load(void)
{
	void *lib = dlopen(CURL_API_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *why = dlerror();
		snprintf(api_err, sizeof(api_err), "cannot load %s (the libcurl4 package): %s",
			 CURL_API_SONAME, why ? why : "unknown error");
		return;
	}
	void *global_init = NULL;
	/* Function pointers are stored through void * slots: POSIX guarantees dlsym's result
	 * converts to the function's type. */
	if (!curl_api_sym(lib, "curl_global_init", &global_init) ||
	    !curl_api_sym(lib, "curl_easy_init", (void **)&api.easy_init) ||
	    !curl_api_sym(lib, "curl_easy_setopt", (void **)&api.easy_setopt) ||
	    !curl_api_sym(lib, "curl_easy_perform", (void **)&api.easy_perform) ||
	    !curl_api_sym(lib, "curl_easy_getinfo", (void **)&api.easy_getinfo) ||
	    !curl_api_sym(lib, "curl_easy_strerror", (void **)&api.easy_strerror) ||
	    !curl_api_sym(lib, "curl_easy_cleanup", (void **)&api.easy_cleanup)) {
		dlclose(lib);
		return;
	}
	CURLcode (*init)(long flags) = (CURLcode(*)(long))global_init;
	CURLcode rc = init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(api_err, sizeof(api_err), "curl_global_init failed (code %d)", (int)rc);
		return; /* the library stays loaded: curl_global_init may have started threads */
	}
	api_ok = true; /* lib is never closed: handles live as long as the process */
}

const struct curl_api *curl_api_get(char *err, size_t errcap)
{
	pthread_once(&curl_api_once, curl_api_load);
	if (api_ok)
		return &api;
	if (err && errcap)
		snprintf(err, errcap, "%s", api_err);
	return NULL;
}
