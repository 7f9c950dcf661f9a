/* Error codes and error details shared by every module.
 *
 * A function that can fail returns int: 0 on success or a negative JP_E* code.
 * The human-readable detail goes into a caller-provided jp_err (which may be
 * NULL when the caller does not care). The same table gives each code its API
 * error name and HTTP status, so the server never maps codes by hand. */
#ifndef JP_CORE_ERR_H
#define JP_CORE_ERR_H

#include <stddef.h>

/* X(name, value, api code, http status) */
#define JP_ERRORS(X)                                   \
    X(JP_EINVAL, -1, "invalid_argument", 400)          \
    X(JP_EUNAUTH, -2, "unauthenticated", 401)          \
    X(JP_EPERM, -3, "permission_denied", 403)          \
    X(JP_ENOTFOUND, -4, "not_found", 404)              \
    X(JP_ECONFLICT, -5, "conflict", 409)               \
    X(JP_ETOOBIG, -6, "too_large", 413)                \
    X(JP_ERATE, -7, "rate_limited", 429)               \
    X(JP_EUNAVAIL, -8, "unavailable", 503)             \
    X(JP_EINTERNAL, -9, "internal", 500)               \
    X(JP_ETIMEOUT, -10, "timeout", 504)                \
    X(JP_ECANCELLED, -11, "cancelled", 409)            \
    X(JP_EMETHOD, -12, "method_not_allowed", 405)

enum {
#define JP_X_ENUM(name, value, api, http) name = value,
    JP_ERRORS(JP_X_ENUM)
#undef JP_X_ENUM
};

#define JP_ERR_MSG_MAX 256

typedef struct jp_err {
    int code;                  /* the JP_E* code, 0 when unset */
    char msg[JP_ERR_MSG_MAX];  /* one line, no trailing newline */
} jp_err;

/* Records `code` and a printf-style message in `err` (if not NULL) and
 * returns `code`, so callers can write `return jp_err_set(err, JP_EINVAL, …)`. */
int jp_err_set(jp_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears `err` (if not NULL). */
void jp_err_clear(jp_err *err);

/* The API error code ("not_found", …) for a JP_E* code; "internal" for unknown. */
const char *jp_err_api_code(int code);

/* The HTTP status for a JP_E* code; 500 for unknown. */
int jp_err_http_status(int code);

/* The message in `err`, or a generic text for its code when none was set. */
const char *jp_err_msg(const jp_err *err);

#endif
