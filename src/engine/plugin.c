/* The plugin loader: opens a shared object, checks its ABI, and adapts each
 * strategy it registers (JSON text in, JSON text out) to a jp_strategy. */
#include "engine/plugin.h"

#include "core/job.h"
#include "core/mem.h"
#include "engine/strategies/strategies.h"
#include "jobplane/plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The engine holds at most 64 strategies in all; this only bounds a plugin
 * that registers in a loop by mistake. */
#define MAX_PLUGIN_STRATEGIES 64

/* The bytes of a jobplane_strategy that ABI 1 defines. */
#define STRATEGY_V1_SIZE \
    (offsetof(jobplane_strategy, run) + sizeof(((jobplane_strategy *)0)->run))

typedef int (*plugin_init_fn)(const jobplane_host *host, jobplane_registry *reg);
typedef int (*plugin_run_fn)(void *ctx, const char *payload_json, size_t payload_len,
                             const jobplane_task *task, jobplane_output *out);

/* One plugin strategy: the ctx of the jp_strategy the engine runs. */
typedef struct wrapped {
    char name[JOBPLANE_NAME_MAX + 1]; /* a copy; the engine borrows it for good */
    const char *path;                 /* the plugin's file, for messages */
    void *ctx;                        /* the plugin's, handed back to run */
    plugin_run_fn run;
} wrapped;

/* The strategies of one load, kept once any of them is registered. */
typedef struct loaded {
    struct loaded *next;
    char *path;
    wrapped *strategies;
    size_t n;
} loaded;

/* Engines borrow each wrapped strategy for as long as they live and do not
 * say when they are freed, and the code it points into is never unloaded:
 * so the loader keeps them for the life of the process, reachable from here. */
static pthread_mutex_t loaded_lock = PTHREAD_MUTEX_INITIALIZER;
static loaded *loaded_list;

struct jobplane_registry {
    jp_engine *engine;
    wrapped *staged; /* registered by init, given to the engine after it */
    size_t n;
    jp_err err;      /* the first refused registration */
    char *init_msg;  /* from set_init_error */
};

struct jobplane_task {
    jp_task *task;
};

struct jobplane_output {
    const wrapped *strategy;
    json_t *result;  /* the last valid set_result */
    json_t *error;   /* {"code","message"} from set_error */
    bool retryable;
    char *bad;       /* why the last set_result was refused; result is then NULL */
};

/* ---- the host table ---- */

static int refuse(jobplane_registry *reg, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(jobplane_registry *reg, int code, const char *fmt, ...)
{
    va_list ap;

    if (!reg->err.code) {
        reg->err.code = code;
        va_start(ap, fmt);
        vsnprintf(reg->err.msg, sizeof reg->err.msg, fmt, ap);
        va_end(ap);
    }
    return code == JP_ECONFLICT ? JOBPLANE_ECONFLICT : JOBPLANE_EINVAL;
}

static int host_register(jobplane_registry *reg, const jobplane_strategy *s)
{
    jobplane_strategy copy;
    wrapped *w;

    if (!reg)
        return JOBPLANE_EINVAL;
    if (!s)
        return refuse(reg, JP_EINVAL, "registered a NULL strategy");
    if (s->abi != JOBPLANE_PLUGIN_ABI)
        return refuse(reg, JP_EINVAL, "registered a strategy of ABI %d (expected %d)", s->abi,
                      JOBPLANE_PLUGIN_ABI);
    if (s->size < STRATEGY_V1_SIZE)
        return refuse(reg, JP_EINVAL, "registered a strategy struct of %zu bytes (at least %zu)",
                      s->size, STRATEGY_V1_SIZE);
    /* A newer plugin's struct may be longer: read only what this host knows. */
    memset(&copy, 0, sizeof copy);
    memcpy(&copy, s, s->size < sizeof copy ? s->size : sizeof copy);
    if (!jp_name_valid(copy.name))
        return refuse(reg, JP_EINVAL, "strategy name \"%.64s\" is not [a-z0-9_-]{1,64}",
                      copy.name ? copy.name : "(null)");
    if (!copy.run)
        return refuse(reg, JP_EINVAL, "strategy \"%s\" has no run function", copy.name);
    for (size_t i = 0; i < reg->n; i++)
        if (strcmp(reg->staged[i].name, copy.name) == 0)
            return refuse(reg, JP_ECONFLICT, "registers strategy \"%s\" twice", copy.name);
    /* Catches most conflicts before the engine is touched; a disabled
     * built-in is only found when registering for real. */
    if (jp_engine_has(reg->engine, copy.name))
        return refuse(reg, JP_ECONFLICT, "strategy \"%s\" is already registered", copy.name);
    if (reg->n == MAX_PLUGIN_STRATEGIES)
        return refuse(reg, JP_EINVAL, "registers more than %d strategies",
                      MAX_PLUGIN_STRATEGIES);

    reg->staged = jp_xrealloc(reg->staged, (reg->n + 1) * sizeof *reg->staged);
    w = &reg->staged[reg->n++];
    memset(w, 0, sizeof *w);
    memcpy(w->name, copy.name, strlen(copy.name) + 1);
    w->ctx = copy.ctx;
    w->run = copy.run;
    return JOBPLANE_OK;
}

static int host_set_init_error(jobplane_registry *reg, const char *message)
{
    if (!reg || !message)
        return JOBPLANE_EINVAL;
    free(reg->init_msg);
    reg->init_msg = jp_xstrndup(message, strnlen(message, JP_ERR_MSG_MAX));
    return JOBPLANE_OK;
}

static int host_cancelled(const jobplane_task *t)
{
    return t && jp_task_cancelled(t->task);
}

static long long host_remaining_ms(const jobplane_task *t)
{
    return t ? (long long)jp_task_remaining_ms(t->task) : 0;
}

static int host_cancel_fd(const jobplane_task *t)
{
    return t ? jp_task_cancel_fd(t->task) : -1;
}

static void set_bad(jobplane_output *o, char *why)
{
    json_decref(o->result);
    o->result = NULL;
    free(o->bad);
    o->bad = why;
}

static int host_set_result(jobplane_output *o, const char *json, size_t len)
{
    json_error_t jerr;
    json_t *v;

    if (!o)
        return JOBPLANE_EINVAL;
    if (!json) {
        set_bad(o, jp_xstrdup("set a NULL result"));
        return JOBPLANE_EINVAL;
    }
    if (len > JOBPLANE_RESULT_MAX) {
        set_bad(o, jp_xasprintf("set a result of %zu bytes (at most %zu)", len,
                                JOBPLANE_RESULT_MAX));
        return JOBPLANE_ETOOBIG;
    }
    v = json_loadb(json, len, JSON_DECODE_ANY, &jerr);
    if (!v) {
        set_bad(o, jp_xasprintf("set a result that is not valid JSON: %s (line %d, column %d)",
                                jerr.text, jerr.line, jerr.column));
        return JOBPLANE_EINVAL;
    }
    set_bad(o, NULL);
    o->result = v;
    return JOBPLANE_OK;
}

static int host_set_error(jobplane_output *o, const char *code, const char *message,
                          int retryable)
{
    size_t mlen;
    json_t *error;
    int rc = JOBPLANE_OK;

    if (!o)
        return JOBPLANE_EINVAL;
    if (!message)
        message = "";
    mlen = strnlen(message, JOBPLANE_MESSAGE_MAX);
    error = json_object();
    if (jp_name_valid(code)) {
        json_object_set_new(error, "code", json_string(code));
        json_object_set_new(error, "message", jp_engine_utf8_string(message, mlen));
    } else {
        /* The plugin meant to fail; say so rather than drop its message. */
        char *text = jp_xasprintf("strategy \"%s\" of plugin %s set an error with an invalid "
                                  "code \"%.64s\": %.*s",
                                  o->strategy->name, o->strategy->path, code ? code : "(null)",
                                  (int)mlen, message);
        json_object_set_new(error, "code", json_string("plugin_error"));
        json_object_set_new(error, "message", jp_engine_utf8_string(text, strlen(text)));
        free(text);
        retryable = 0;
        rc = JOBPLANE_EINVAL;
    }
    json_decref(o->error);
    o->error = error;
    o->retryable = retryable != 0;
    return rc;
}

static const jobplane_host host_table = {
    .abi = JOBPLANE_PLUGIN_ABI,
    .size = sizeof(jobplane_host),
    .register_strategy = host_register,
    .set_init_error = host_set_init_error,
    .cancelled = host_cancelled,
    .remaining_ms = host_remaining_ms,
    .cancel_fd = host_cancel_fd,
    .set_result = host_set_result,
    .set_error = host_set_error,
};

/* ---- running ---- */

static int run_plugin(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    const wrapped *w = ctx;
    struct jobplane_task t = {task};
    struct jobplane_output o = {.strategy = w};
    char *text;
    int rc;

    text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return jp_engine_fail(out, "plugin_error", false,
                              "cannot encode the payload for strategy \"%s\"", w->name);
    rc = w->run(w->ctx, text, strlen(text), &t, &o);
    free(text);

    if (o.error) {
        out->error = o.error;
        out->retryable = o.retryable;
        o.error = NULL;
        rc = -1;
    } else if (o.bad) {
        rc = jp_engine_fail(out, "plugin_error", false, "strategy \"%s\" of plugin %s %s",
                            w->name, w->path, o.bad);
    } else if (rc != 0) {
        rc = jp_engine_fail(out, "plugin_error", false,
                            "strategy \"%s\" of plugin %s failed (returned %d) without "
                            "setting an error",
                            w->name, w->path, rc);
    } else if (!o.result) {
        rc = jp_engine_fail(out, "plugin_error", false,
                            "strategy \"%s\" of plugin %s returned neither a result nor an "
                            "error",
                            w->name, w->path);
    }
    /* On failure a result is partial output, kept for inspection. */
    out->result = o.result;
    free(o.bad);
    return rc;
}

/* ---- loading ---- */

/* dlerror() text without the file name it often starts with, which the
 * caller's message already gives. */
static const char *dl_reason(const char *file)
{
    const char *why = dlerror();
    size_t n = strlen(file);

    if (!why)
        return "unknown error";
    if (strncmp(why, file, n) == 0 && strncmp(why + n, ": ", 2) == 0)
        return why + n + 2;
    return why;
}

static void keep_loaded(loaded *rec)
{
    pthread_mutex_lock(&loaded_lock);
    rec->next = loaded_list;
    loaded_list = rec;
    pthread_mutex_unlock(&loaded_lock);
}

/* Hands the staged strategies to the engine. Returns 0 or the engine's error. */
static int commit(jp_engine *e, const char *path, jobplane_registry *reg, jp_err *err)
{
    loaded *rec = jp_xcalloc(1, sizeof *rec);
    size_t done = 0;
    int rc = 0;

    rec->path = jp_xstrdup(path);
    rec->strategies = reg->staged;
    rec->n = reg->n;
    reg->staged = NULL;
    reg->n = 0;
    for (; done < rec->n; done++) {
        wrapped *w = &rec->strategies[done];
        jp_strategy s = {.abi = JP_STRATEGY_ABI, .name = w->name, .ctx = w, .run = run_plugin};
        jp_err why = {0};

        w->path = rec->path;
        rc = jp_engine_register(e, &s, &why);
        if (rc < 0) {
            rc = jp_err_set(err, rc, "plugin %s: %s", path, jp_err_msg(&why));
            break;
        }
    }
    if (done > 0) {
        keep_loaded(rec);
    } else {
        free(rec->strategies);
        free(rec->path);
        free(rec);
    }
    return rc;
}

int jp_plugin_load(jp_engine *e, const char *path, jp_err *err)
{
    jobplane_registry reg = {0};
    char *file = NULL;
    void *handle = NULL;
    void *sym;
    plugin_init_fn init;
    int init_rc, rc = 0;

    if (!e || !path || !*path)
        return jp_err_set(err, JP_EINVAL, "plugin path is empty");
    if (strlen(path) >= PATH_MAX)
        return jp_err_set(err, JP_EINVAL, "plugin path is longer than %d bytes", PATH_MAX - 1);
    /* dlopen would search the library path for a bare name; a user giving
     * --plugin x.so means the file here. */
    file = strchr(path, '/') ? jp_xstrdup(path) : jp_xasprintf("./%s", path);

    dlerror();
    handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        rc = jp_err_set(err, JP_EINVAL, "cannot load plugin %s: %s", path, dl_reason(file));
        goto out;
    }
    dlerror();
    sym = dlsym(handle, "jobplane_plugin_abi");
    if (!sym) {
        rc = jp_err_set(err, JP_EINVAL, "%s is not a jobplane plugin: %s", path,
                        dl_reason(file));
        goto out;
    }
    if (*(const int *)sym != JOBPLANE_PLUGIN_ABI) {
        rc = jp_err_set(err, JP_EINVAL,
                        "plugin %s was built for plugin ABI %d; this host speaks ABI %d", path,
                        *(const int *)sym, JOBPLANE_PLUGIN_ABI);
        goto out;
    }
    dlerror();
    sym = dlsym(handle, "jobplane_plugin_init");
    if (!sym) {
        rc = jp_err_set(err, JP_EINVAL, "%s is not a jobplane plugin: %s", path,
                        dl_reason(file));
        goto out;
    }
    init = (plugin_init_fn)sym;

    reg.engine = e;
    init_rc = init(&host_table, &reg);
    /* From here on the plugin's code may be referenced from anywhere (threads
     * it started, its strategies), so it is never unloaded. */
    handle = NULL;
    if (reg.init_msg) {
        rc = jp_err_set(err, JP_EINVAL, "plugin %s failed to start: %s", path, reg.init_msg);
    } else if (reg.err.code) {
        rc = jp_err_set(err, reg.err.code, "plugin %s: %s", path, reg.err.msg);
    } else if (init_rc != 0) {
        rc = jp_err_set(err, JP_EINVAL, "plugin %s failed to start (init returned %d)", path,
                        init_rc);
    } else if (reg.n == 0) {
        rc = jp_err_set(err, JP_EINVAL, "plugin %s registered no strategy", path);
    } else {
        rc = commit(e, path, &reg, err);
    }
out:
    if (handle)
        dlclose(handle);
    free(reg.staged);
    free(reg.init_msg);
    free(file);
    return rc;
}
