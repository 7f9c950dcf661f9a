/* The tokens file and constant-time token lookup. */
#include "server/auth.h"

#include "core/mem.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MIN 16
#define TOKEN_MAX 256
#define TOKENS_MAX 1024

typedef struct entry {
    char token[TOKEN_MAX + 1];
    size_t len;
    int role;
} entry;

struct jp_auth {
    entry *entries;
    size_t n;
};

static int parse_role(const char *s)
{
    if (strcmp(s, "client") == 0)
        return JP_ROLE_CLIENT;
    if (strcmp(s, "worker") == 0)
        return JP_ROLE_WORKER;
    if (strcmp(s, "admin") == 0)
        return JP_ROLE_ADMIN;
    return 0;
}

int jp_auth_load(const char *path, jp_auth **ret, jp_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return jp_err_set(err, JP_EUNAVAIL, "cannot read tokens file %s", path);
    jp_auth *a = jp_xcalloc(1, sizeof *a);
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        /* A comment starts the line or follows blanks; inside a token '#'
         * is an ordinary character. */
        for (char *h = line; (h = strchr(h, '#')); h++) {
            if (h == line || isspace((unsigned char)h[-1])) {
                *h = '\0';
                break;
            }
        }
        char role[32], token[TOKEN_MAX + 2], extra[2];
        int got = sscanf(line, "%31s %257s %1s", role, token, extra);
        if (got <= 0)
            continue;
        if (got != 2) {
            rc = jp_err_set(err, JP_EINVAL, "%s:%d: want \"<role> <token>\"", path, lineno);
            goto out;
        }
        int r = parse_role(role);
        size_t len = strlen(token);
        if (!r) {
            rc = jp_err_set(err, JP_EINVAL, "%s:%d: role must be client, worker or admin", path,
                            lineno);
            goto out;
        }
        if (len < TOKEN_MIN || len > TOKEN_MAX) {
            rc = jp_err_set(err, JP_EINVAL, "%s:%d: a token has %d to %d characters", path,
                            lineno, TOKEN_MIN, TOKEN_MAX);
            goto out;
        }
        if (a->n == TOKENS_MAX) {
            rc = jp_err_set(err, JP_EINVAL, "%s: more than %d tokens", path, TOKENS_MAX);
            goto out;
        }
        a->entries = jp_xrealloc(a->entries, (a->n + 1) * sizeof *a->entries);
        entry *e = &a->entries[a->n++];
        memset(e, 0, sizeof *e);
        memcpy(e->token, token, len);
        e->len = len;
        e->role = r;
    }
    if (a->n == 0)
        rc = jp_err_set(err, JP_EINVAL, "%s holds no tokens", path);
out:
    fclose(f);
    if (rc < 0) {
        jp_auth_free(a);
        return rc;
    }
    *ret = a;
    return 0;
}

void jp_auth_free(jp_auth *a)
{
    if (!a)
        return;
    if (a->entries)
        memset(a->entries, 0, a->n * sizeof *a->entries);
    free(a->entries);
    free(a);
}

size_t jp_auth_count(const jp_auth *a)
{
    return a->n;
}

/* Compares the whole fixed-size buffers whatever the lengths, so the time
 * depends on neither where the first difference is nor the length. */
static int same(const entry *e, const char *tok, size_t len)
{
    unsigned char diff = (unsigned char)(e->len != len);
    for (size_t i = 0; i < TOKEN_MAX; i++) {
        unsigned char c = i < len ? (unsigned char)tok[i] : 0;
        diff |= (unsigned char)(c ^ (unsigned char)e->token[i]);
    }
    return diff == 0;
}

int jp_auth_role(const jp_auth *a, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return 0;
    const char *tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && isspace((unsigned char)tok[len - 1]))
        len--;
    if (len == 0 || len > TOKEN_MAX)
        return 0;
    int role = 0;
    /* Every entry is compared, so the time does not tell which one matched. */
    for (size_t i = 0; i < a->n; i++)
        if (same(&a->entries[i], tok, len))
            role |= a->entries[i].role;
    return role;
}
