/*
 * The configuration key table, private to src/conf/. Every key pgrelay accepts is one row of
 * config_keys[] (config_keys.c); config.c walks it to parse and validate a file, to find unknown
 * keys and to tell which changes need a restart, and config_write_reference() walks it to write
 * doc/configuration.md. Adding a key means adding a field to struct config and one row here.
 *
 * A row's value lives at `offset` inside a base object: struct backend_conf for rows with
 * KF_BACKEND (keys of one entry of the backends list), struct config for all others.
 * Storage per type: KT_INT int, KT_DOUBLE double, KT_BOOL bool, KT_STRING char * (owned or NULL),
 * KT_DURATION uint32_t milliseconds, KT_SIZE uint32_t bytes, KT_ENUM int, KT_FLAGS unsigned,
 * KT_ADDRLIST struct config's listen_addresses/n_listen, KT_BACKENDS struct config's backends,
 * KT_CIDRS char * (owned, never NULL).
 */
#ifndef PGRELAY_CONF_CONFIG_KEYS_H
#define PGRELAY_CONF_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum key_type {
	KT_INT,	      /* libconfig integer */
	KT_DOUBLE,    /* libconfig float or integer */
	KT_BOOL,      /* libconfig true/false */
	KT_STRING,    /* libconfig string, copied */
	KT_DURATION,  /* "500ms", "3s", "2min", "1h", "1d", or an integer number of seconds */
	KT_SIZE,      /* "512B", "64kB", "16MB", "1GB", or an integer number of bytes */
	KT_ENUM,      /* string, one of choices (any case) */
	KT_ADDRLIST,  /* string "addr,addr,..." split into struct config's listen_addresses */
	KT_FLAGS,     /* string "FLAG|FLAG" of backend flags */
	KT_BACKENDS,  /* the list of backend groups; parsed by config.c */
	KT_LISTENERS, /* the list of role-pinned listener groups; parsed by config.c */
	KT_CIDRS,     /* a list of strings ( "10.0.0.0/8", ... ) or one string "a, b": IP networks
			 checked with cidr.h, stored as one comma-separated char * */
};

#define KF_RESTART	 0x1u  /* a change needs a restart (otherwise SIGHUP applies it) */
#define KF_REQUIRED	 0x2u  /* no default; missing or empty is an error */
#define KF_EMPTY_IS_NULL 0x4u  /* a string "" is stored as NULL ("unset") */
#define KF_BACKEND	 0x8u  /* a key inside one entry of backends; offset into backend_conf */
#define KF_SECRET	 0x10u /* never shown by config_foreach_value() */
#define KF_URL_LIST	 0x20u /* KT_CIDRS row whose entries are http(s):// URLs, not networks */

struct key_def {
	const char *group; /* "" for top level, "pool", ...; "backends" with KF_BACKEND */
	const char *name;  /* the key's name inside its group */
	enum key_type type;
	unsigned flags;		    /* KF_* */
	const char *def;	    /* default as a user writes it; NULL = unset or required */
	int64_t min, max;	    /* bounds in the stored unit (ms, bytes, plain number) */
	size_t offset;		    /* offsetof the field in the base object */
	const char *const *choices; /* KT_ENUM: NULL-terminated names, index = stored value */
	bool (*parse_enum)(const char *,
			   int *); /* KT_ENUM: optional parser used instead of choices */
	const char *desc;	   /* one sentence for the docs */
};

extern const struct key_def config_keys[];
extern const size_t config_key_count;

/*
 * Value setters. Each converts, checks the bounds, frees what the field held and stores. On
 * failure they leave the field alone and write a reason (without the key's name) into why.
 * key_set_text accepts any type in its textual form (the form defaults are written in).
 */
bool key_set_text(const struct key_def *k, void *base, const char *text, char *why, size_t cap);
/* KT_INT, KT_DURATION (v in ms), KT_SIZE (v in bytes) and KT_DOUBLE. */
bool key_set_int(const struct key_def *k, void *base, int64_t v, char *why, size_t cap);
bool key_set_double(const struct key_def *k, void *base, double v, char *why, size_t cap);
bool key_set_bool(const struct key_def *k, void *base, bool v, char *why, size_t cap);

/* Stores every default of the rows with (flags & KF_BACKEND) == backend_flag into base. */
void config_keys_set_defaults(void *base, unsigned backend_flag);
/* Frees what the rows with (flags & KF_BACKEND) == backend_flag own in base. */
void config_keys_free(void *base, unsigned backend_flag);
bool key_equal(const struct key_def *k, const void *a, const void *b);
/* The current value as a user would write it. */
void key_format(const struct key_def *k, const void *base, char *buf, size_t cap);
/* "port", "pool.mode", "backends[2].host" (backend_index < 0 gives "backends[].host"). */
void key_path(const struct key_def *k, int backend_index, char *buf, size_t cap);

void config_format_duration(uint64_t ms, char *buf, size_t cap);
void config_format_size(uint64_t bytes, char *buf, size_t cap);

#endif
