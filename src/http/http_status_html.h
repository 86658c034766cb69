/*
 * The bytes of src/http/status.html, compiled into the binary by embed.py (src/http/meson.build):
 * the /status page needs no file at run time and no external asset.
 */
#ifndef PGRELAY_HTTP_HTTP_STATUS_HTML_H
#define PGRELAY_HTTP_HTTP_STATUS_HTML_H

#include <stddef.h>

extern const char http_status_html[];	  /* NUL-terminated */
extern const size_t http_status_html_len; /* without the NUL */

#endif
