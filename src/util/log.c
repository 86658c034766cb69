/*
 * Logging implementation: formats into a stack buffer and writes it with a single write(2) so
 * lines from the health thread and the worker never interleave.
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int log_current_level = LOG_LVL_LOG;

static const char *const level_names[] = { "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };

void log_set_level(enum log_level level)
{
	__atomic_store_n(&log_current_level, (int)level, __ATOMIC_RELAXED);
}

bool log_level_parse(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_LVL_NOISE; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

const char *log_level_name(enum log_level level)
{
	if ((int)level < 0 || level > LOG_LVL_NOISE)
		return "?";
	return level_names[level];
}

void log_write(enum log_level level, const char *component, uint64_t conn_id, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	int n = (int)strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
	if (conn_id)
		n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03d %s %s [c%llu] ",
			      (int)(tv.tv_usec / 1000), log_level_name(level), component,
			      (unsigned long long)conn_id);
	else
		n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03d %s %s ",
			      (int)(tv.tv_usec / 1000), log_level_name(level), component);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

const char *log_untrusted(const char *s, char *buf, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i = 0;
	if (!cap)
		return buf;
	for (; s && s[i] && i < LOG_UNTRUSTED_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];
		bool plain = ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"';
		if (o + (plain ? 1 : 4) + 4 > cap)
			break;
		if (plain) {
			buf[o++] = (char)ch;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		}
	}
	if (s && s[i] && o + 4 <= cap) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = 0;
	return buf;
}
