/*
 * Logging: one line per event on stderr, "time level component [conn] message".
 *
 * Levels (doc/logging.md): ERROR something failed that an operator must fix; WARNING something
 * unexpected that pgrelay handled; LOG state changes an operator wants to see (start, reload, node
 * up/down, failover steps); DEBUG per-connection events; NOISE per-message tracing.
 * The level is checked before anything is formatted, so disabled levels cost one compare.
 * log_set_level() may be called from any thread; lines are written with one write(2) each.
 */
#ifndef PGRELAY_UTIL_LOG_H
#define PGRELAY_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARNING, LOG_LVL_LOG, LOG_LVL_DEBUG, LOG_LVL_NOISE };

extern int log_current_level;

void log_set_level(enum log_level level);
/* Parses "error", "warning", "log", "debug", "noise" (any case). */
bool log_level_parse(const char *name, enum log_level *out) __attribute__((warn_unused_result));
const char *log_level_name(enum log_level level);

/* conn_id 0 means "not about one connection". */
void log_write(enum log_level level, const char *component, uint64_t conn_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Client-supplied text (user and database names before authentication) made safe for a log
 * line: bytes outside printable ASCII, backslash and double quote become \xNN, and at most
 * LOG_UNTRUSTED_MAX input bytes are shown ("..." marks the cut). Writes into buf (cap bytes,
 * LOG_UNTRUSTED_BUF is always enough) and returns buf; s may be NULL.
 */
#define LOG_UNTRUSTED_MAX 63
#define LOG_UNTRUSTED_BUF (LOG_UNTRUSTED_MAX * 4 + 4)
const char *log_untrusted(const char *s, char *buf, size_t cap);

/* Read by the health and manager threads while a reload on the loop may change it. */
#define log_enabled(lvl) ((int)(lvl) <= __atomic_load_n(&log_current_level, __ATOMIC_RELAXED))
#define LOGF(lvl, comp, id, ...)                                                                   \
	do {                                                                                       \
		if (log_enabled(lvl))                                                              \
			log_write((lvl), (comp), (id), __VA_ARGS__);                               \
	} while (0)
#define log_error(comp, id, ...)   LOGF(LOG_LVL_ERROR, comp, id, __VA_ARGS__)
#define log_warning(comp, id, ...) LOGF(LOG_LVL_WARNING, comp, id, __VA_ARGS__)
#define log_info(comp, id, ...)	   LOGF(LOG_LVL_LOG, comp, id, __VA_ARGS__)
#define log_debug(comp, id, ...)   LOGF(LOG_LVL_DEBUG, comp, id, __VA_ARGS__)
#define log_noise(comp, id, ...)   LOGF(LOG_LVL_NOISE, comp, id, __VA_ARGS__)

#endif
