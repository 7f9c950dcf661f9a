/* The built-in strategies and the helpers they share (internal to the engine). */
#ifndef JP_ENGINE_STRATEGIES_H
#define JP_ENGINE_STRATEGIES_H

#include "engine/engine.h"

#include <stdbool.h>
#include <stddef.h>

/* Output cap when the configuration gives none: per stream (exec), per body (http). */
#define JP_ENGINE_DEFAULT_MAX_OUTPUT ((size_t)1 << 20)

/* What exec needs from the engine configuration; owned by the engine. */
typedef struct jp_exec_conf {
    char **allow;      /* absolute program paths; NULL-terminated; NULL = any program */
    size_t max_output; /* bytes per stream, > 0 */
    char *home;        /* HOME given to children */
} jp_exec_conf;

/* What http needs from the engine configuration; owned by the engine. */
typedef struct jp_http_conf {
    size_t max_body; /* bytes, > 0 */
} jp_http_conf;

/* Each returns the strategy with `ctx` as its context (which must outlive it). */
jp_strategy jp_strategy_noop(void);
jp_strategy jp_strategy_sleep(void);
jp_strategy jp_strategy_exec(jp_exec_conf *ctx);
jp_strategy jp_strategy_http(jp_http_conf *ctx);

/* Call once, single-threaded, before any http run: sets up curl and libxml2
 * now when curl's own set-up is not thread-safe, else leaves it to the
 * first run (the libraries cost memory an engine without http jobs need not
 * carry). */
void jp_http_global_init(void);

/* Fills out->error with {"code", "message"} and out->retryable; returns -1 so a
 * strategy can end with `return jp_engine_fail(out, …)`. */
int jp_engine_fail(jp_outcome *out, const char *code, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The usual invalid-payload failure (not retryable). */
#define jp_engine_bad_payload(out, ...) jp_engine_fail((out), "invalid_payload", false, __VA_ARGS__)

/* A JSON string of `len` bytes at `p`, with invalid UTF-8 replaced by U+FFFD
 * (jansson refuses invalid UTF-8). New reference, never NULL. */
json_t *jp_engine_utf8_string(const char *p, size_t len);

/* Refuses fields of `payload` (an object) not in the NULL-terminated `known`:
 * a misspelt field must not silently change what runs. Returns 0 or -1 with
 * out->error set. */
int jp_engine_check_fields(const json_t *payload, const char *const *known, jp_outcome *out);

/* poll() timeout (ms) for waiting on `task`, at most `want_ms` (< 0 = no
 * limit of its own): the task's remaining time, in short slices when the task
 * has no cancel fd. */
int jp_engine_poll_timeout(const jp_task *task, int64_t want_ms);

#endif
