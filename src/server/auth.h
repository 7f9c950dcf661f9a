/* Bearer tokens and their roles (DESIGN.md §3): client (create, read,
 * cancel), worker (status reports, read), admin (everything, retry). */
#ifndef JP_SERVER_AUTH_H
#define JP_SERVER_AUTH_H

#include "core/err.h"

typedef enum {
    JP_ROLE_CLIENT = 1 << 0,
    JP_ROLE_WORKER = 1 << 1,
    JP_ROLE_ADMIN = 1 << 2,
} jp_role;

typedef struct jp_auth jp_auth;

/* Reads a tokens file: one "<role> <token>" per line, '#' starts a comment.
 * Tokens are 16..256 printable characters without spaces. Returns 0 and
 * *ret (free with jp_auth_free), or JP_EINVAL naming the line, or
 * JP_EUNAVAIL when the file cannot be read. A file without tokens is an
 * error: it would leave the API open by mistake. */
int jp_auth_load(const char *path, jp_auth **ret, jp_err *err);
void jp_auth_free(jp_auth *a);

/* The role of the bearer token in an Authorization header value, or 0 when
 * it is missing, malformed or unknown. Compares in constant time, so the
 * time taken does not tell how much of a guess was right. */
int jp_auth_role(const jp_auth *a, const char *authorization);

/* Number of tokens loaded. */
size_t jp_auth_count(const jp_auth *a);

#endif
