/* The strategy registry, the runner that enforces the outcome conventions, and
 * helpers shared by the built-in strategies. */
#include "engine/engine.h"

#include "core/mem.h"
#include "engine/strategies/strategies.h"

#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_STRATEGIES 64

typedef struct entry {
    jp_strategy s; /* a copy; s.name is borrowed from whoever registered */
    bool enabled;  /* built-ins may be registered but switched off */
} entry;

struct jp_engine {
    pthread_rwlock_t lock; /* guards entries, n, names, retired */
    entry entries[MAX_STRATEGIES];
    size_t n;
    char *names;    /* enabled names, comma-separated */
    char **retired; /* earlier names strings: callers may still hold them */
    size_t n_retired;
    jp_exec_conf exec;
    jp_http_conf http;
};

static const char *const builtin_names = "noop, sleep, exec, http";

/* ---- helpers for strategies ---- */

int jp_engine_fail(jp_outcome *out, const char *code, bool retryable, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_decref(out->error);
    out->error = json_object();
    json_object_set_new(out->error, "code", json_string(code));
    /* The message may quote payload text cut at an arbitrary byte. */
    json_object_set_new(out->error, "message", jp_engine_utf8_string(msg, strlen(msg)));
    out->retryable = retryable;
    return -1;
}

/* Length of the valid UTF-8 sequence at p (n bytes available), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    /* Overlong forms, surrogates and code points past U+10FFFF. */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

json_t *jp_engine_utf8_string(const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    jp_buf b;
    json_t *v;

    if (!p)
        return json_string("");
    while (i < len) {
        size_t k = utf8_seq(s + i, len - i);
        if (!k)
            break;
        i += k;
    }
    if (i == len) {
        v = json_stringn(p, len);
        return v ? v : json_string("");
    }
    jp_buf_init(&b, 0);
    jp_buf_append(&b, p, i);
    while (i < len) {
        size_t k = utf8_seq(s + i, len - i);
        if (k) {
            jp_buf_append(&b, s + i, k);
            i += k;
        } else {
            jp_buf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    v = json_stringn(jp_buf_cstr(&b), b.len);
    jp_buf_done(&b);
    return v ? v : json_string("");
}

int jp_engine_check_fields(const json_t *payload, const char *const *known, jp_outcome *out)
{
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)payload, key, value) {
        size_t i;
        for (i = 0; known[i]; i++)
            if (strcmp(key, known[i]) == 0)
                break;
        if (!known[i])
            return jp_engine_bad_payload(out, "unknown field \"%.64s\" in payload", key);
    }
    return 0;
}

int jp_engine_poll_timeout(const jp_task *task, int64_t want_ms)
{
    int64_t ms = jp_task_remaining_ms(task);

    if (want_ms >= 0 && want_ms < ms)
        ms = want_ms;
    /* Without a cancel fd, cancellation is only seen between waits. */
    if (jp_task_cancel_fd(task) < 0 && ms > 50)
        ms = 50;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- configuration ---- */

static bool name_valid(const char *s)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return n >= 1 && n <= 64;
}

/* Splits a comma-separated list into trimmed, non-empty items (NULL-terminated). */
static char **split_list(const char *s, size_t *ret_n)
{
    size_t cap = 1, n = 0;
    char **items;

    for (const char *p = s; *p; p++)
        if (*p == ',')
            cap++;
    items = jp_xcalloc(cap + 1, sizeof *items);
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *a = s, *z = s + len;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        if (z > a)
            items[n++] = jp_xstrndup(a, (size_t)(z - a));
        s += len;
        if (*s == ',')
            s++;
    }
    *ret_n = n;
    return items;
}

static void free_list(char **items)
{
    if (!items)
        return;
    for (size_t i = 0; items[i]; i++)
        free(items[i]);
    free(items);
}

/* The home directory of the user we run as, from the password database rather
 * than our own environment, which children must not see. */
static char *home_dir(void)
{
    struct passwd pw, *res = NULL;
    char buf[4096];

    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_dir &&
        res->pw_dir[0] == '/')
        return jp_xstrdup(res->pw_dir);
    return jp_xstrdup("/");
}

static void rebuild_names(jp_engine *e)
{
    jp_buf b;

    jp_buf_init(&b, 0);
    for (size_t i = 0; i < e->n; i++) {
        if (!e->entries[i].enabled)
            continue;
        if (b.len)
            jp_buf_append(&b, ",", 1);
        jp_buf_append(&b, e->entries[i].s.name, strlen(e->entries[i].s.name));
    }
    if (e->names) {
        e->retired = jp_xrealloc(e->retired, (e->n_retired + 1) * sizeof *e->retired);
        e->retired[e->n_retired++] = e->names;
    }
    e->names = jp_buf_steal(&b);
}

static entry *find(const jp_engine *e, const char *name)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->entries[i].s.name, name) == 0)
            return (entry *)&e->entries[i];
    return NULL;
}

static pthread_once_t http_once = PTHREAD_ONCE_INIT;

int jp_engine_new(const jp_engine_config *cfg, jp_engine **ret_engine, jp_err *err)
{
    static const jp_engine_config defaults = {0};
    const char *enable;
    char **want = NULL, **allow = NULL;
    size_t n_want = 0, n_allow = 0;
    jp_engine *e = NULL;
    int rc = 0;

    if (!cfg)
        cfg = &defaults;
    enable = cfg->strategies ? cfg->strategies : "noop,sleep,http";
    want = split_list(enable, &n_want);
    for (size_t i = 0; i < n_want; i++) {
        if (strcmp(want[i], "noop") && strcmp(want[i], "sleep") && strcmp(want[i], "exec") &&
            strcmp(want[i], "http")) {
            rc = jp_err_set(err, JP_EINVAL, "unknown strategy \"%.64s\" (known: %s)", want[i],
                            builtin_names);
            goto out;
        }
    }
    if (cfg->exec_allow) {
        allow = split_list(cfg->exec_allow, &n_allow);
        for (size_t i = 0; i < n_allow; i++) {
            if (allow[i][0] != '/') {
                rc = jp_err_set(err, JP_EINVAL,
                                "exec allow-list entry \"%.200s\" is not an absolute path",
                                allow[i]);
                goto out;
            }
        }
    }

    pthread_once(&http_once, jp_http_global_init);

    e = jp_xcalloc(1, sizeof *e);
    pthread_rwlock_init(&e->lock, NULL);
    e->exec.max_output =
        cfg->max_output_bytes ? cfg->max_output_bytes : JP_ENGINE_DEFAULT_MAX_OUTPUT;
    e->exec.home = home_dir();
    if (n_allow) {
        e->exec.allow = allow;
        allow = NULL;
    }
    e->http.max_body = e->exec.max_output;

    jp_strategy builtins[] = {jp_strategy_noop(), jp_strategy_sleep(), jp_strategy_exec(&e->exec),
                              jp_strategy_http(&e->http)};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        entry *en = &e->entries[e->n++];
        en->s = builtins[i];
        for (size_t k = 0; k < n_want; k++)
            if (strcmp(want[k], en->s.name) == 0)
                en->enabled = true;
    }
    rebuild_names(e);
    *ret_engine = e;
    e = NULL;
out:
    free_list(want);
    free_list(allow);
    jp_engine_free(e);
    return rc;
}

void jp_engine_free(jp_engine *e)
{
    if (!e)
        return;
    pthread_rwlock_destroy(&e->lock);
    free(e->names);
    for (size_t i = 0; i < e->n_retired; i++)
        free(e->retired[i]);
    free(e->retired);
    free_list(e->exec.allow);
    free(e->exec.home);
    free(e);
}

int jp_engine_register(jp_engine *e, const jp_strategy *s, jp_err *err)
{
    int rc = 0;

    if (!s || s->abi != JP_STRATEGY_ABI)
        return jp_err_set(err, JP_EINVAL, "strategy ABI %d is not supported (expected %d)",
                          s ? s->abi : 0, JP_STRATEGY_ABI);
    if (!name_valid(s->name))
        return jp_err_set(err, JP_EINVAL, "strategy name \"%.64s\" is not [a-z0-9_-]{1,64}",
                          s->name ? s->name : "");
    if (!s->run)
        return jp_err_set(err, JP_EINVAL, "strategy \"%s\" has no run function", s->name);

    pthread_rwlock_wrlock(&e->lock);
    if (find(e, s->name)) {
        rc = jp_err_set(err, JP_ECONFLICT, "strategy \"%s\" is already registered", s->name);
    } else if (e->n == MAX_STRATEGIES) {
        rc = jp_err_set(err, JP_EINVAL, "too many strategies (at most %d)", MAX_STRATEGIES);
    } else {
        e->entries[e->n].s = *s;
        e->entries[e->n].enabled = true;
        e->n++;
        rebuild_names(e);
    }
    pthread_rwlock_unlock(&e->lock);
    return rc;
}

bool jp_engine_has(const jp_engine *e, const char *name)
{
    bool has;

    if (!name)
        return false;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&e->lock);
    entry *en = find(e, name);
    has = en && en->enabled;
    pthread_rwlock_unlock((pthread_rwlock_t *)&e->lock);
    return has;
}

const char *jp_engine_names(const jp_engine *e)
{
    const char *names;

    pthread_rwlock_rdlock((pthread_rwlock_t *)&e->lock);
    names = e->names;
    pthread_rwlock_unlock((pthread_rwlock_t *)&e->lock);
    return names;
}

void jp_outcome_done(jp_outcome *o)
{
    if (!o)
        return;
    json_decref(o->result);
    json_decref(o->error);
    o->result = NULL;
    o->error = NULL;
    o->retryable = false;
}

static const char *error_code(const json_t *error)
{
    const char *code = json_string_value(json_object_get(error, "code"));
    return code ? code : "";
}

/* Makes a failure's error a proper {"code","message"} whatever the strategy left. */
static void normalise_error(jp_outcome *out)
{
    json_t *e = out->error;
    json_t *code = json_object_get(e, "code");
    json_t *msg = json_object_get(e, "message");

    if (json_is_string(code) && json_string_length(code) > 0 && json_is_string(msg))
        return;
    json_t *fixed = json_object();
    json_object_set_new(fixed, "code",
                        json_string(json_is_string(code) && json_string_length(code)
                                        ? json_string_value(code)
                                        : "strategy_error"));
    if (json_is_string(msg)) {
        json_object_set(fixed, "message", msg);
    } else if (json_is_string(e)) {
        json_object_set(fixed, "message", e);
    } else {
        json_object_set_new(fixed, "message", json_string("the strategy failed without a message"));
    }
    json_decref(out->error);
    out->error = fixed;
}

int jp_engine_run(jp_engine *e, const char *name, const json_t *payload, jp_task *task,
                  jp_outcome *out)
{
    jp_strategy s = {0};
    bool found = false, enabled = false;
    int rc;

    out->result = NULL;
    out->error = NULL;
    out->retryable = false;
    if (name) {
        pthread_rwlock_rdlock(&e->lock);
        entry *en = find(e, name);
        if (en) {
            found = true;
            enabled = en->enabled;
            s = en->s;
        }
        pthread_rwlock_unlock(&e->lock);
    }
    if (!enabled) {
        if (found)
            return jp_engine_fail(out, "unknown_strategy", false,
                                  "strategy \"%s\" is not enabled here (enabled: %s)", name,
                                  jp_engine_names(e));
        return jp_engine_fail(out, "unknown_strategy", false, "unknown strategy \"%.64s\"",
                              name ? name : "");
    }
    if (jp_task_cancelled(task))
        return jp_engine_fail(out, "cancelled", false, "cancelled before it started");
    if (jp_task_remaining_ms(task) == 0)
        return jp_engine_fail(out, "timeout", true, "the deadline passed before it started");

    json_t *null_payload = payload ? NULL : json_null();
    rc = s.run(s.ctx, payload ? payload : null_payload, task, out);
    json_decref(null_payload);

    if (rc == 0) {
        json_decref(out->error);
        out->error = NULL;
        out->retryable = false;
        if (!out->result)
            out->result = json_object();
        return 0;
    }
    if (!out->error)
        out->error = json_object();
    normalise_error(out);
    /* Whatever a strategy reports, a run that was cancelled or outlived its
     * deadline failed for that reason: the job's state depends on it. */
    const char *code = error_code(out->error);
    if (jp_task_cancelled(task) && strcmp(code, "cancelled") != 0) {
        jp_engine_fail(out, "cancelled", false, "cancelled");
    } else if (jp_task_remaining_ms(task) == 0 && strcmp(code, "timeout") != 0 &&
               strcmp(code, "cancelled") != 0 && strcmp(code, "invalid_payload") != 0) {
        char *was = jp_xstrdup(json_string_value(json_object_get(out->error, "message")));
        jp_engine_fail(out, "timeout", true, "timed out (%s)", was);
        free(was);
    } else if (strcmp(code, "timeout") == 0) {
        out->retryable = true;
    } else if (strcmp(code, "cancelled") == 0) {
        out->retryable = false;
    }
    return -1;
}
