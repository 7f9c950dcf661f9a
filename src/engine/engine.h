/* The execution engine: a registry of strategies by name, and the task
 * handle through which a running job is timed out or cancelled.
 *
 * A strategy turns a payload into a result within the job's deadline and
 * stops promptly when its task is cancelled. The built-ins are noop, sleep,
 * exec and http; a plugin loader registers more through jp_engine_register.
 * An engine only runs the strategies it was configured to enable. */
#ifndef JP_ENGINE_ENGINE_H
#define JP_ENGINE_ENGINE_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct jp_engine jp_engine;
typedef struct jp_task jp_task;

/* What a run produced. On success `result` is set; on failure `error` is
 * {"code","message"} and `result` may carry partial output (an exec's
 * stdout/stderr, an http response), which the job keeps for inspection. */
typedef struct jp_outcome {
    json_t *result;   /* owned reference or NULL */
    json_t *error;    /* owned reference or NULL */
    bool retryable;   /* a failure that may succeed if run again */
} jp_outcome;

void jp_outcome_done(jp_outcome *o);

#define JP_STRATEGY_ABI 1

typedef struct jp_strategy {
    int abi;           /* JP_STRATEGY_ABI */
    const char *name;  /* [a-z0-9_-]{1,64}; must outlive the engine */
    void *ctx;         /* passed to run; owned by whoever registered */
    /* Runs one job. Returns 0 with out->result set, or -1 with out->error
     * set (and out->retryable). Must be safe to call from many threads. */
    int (*run)(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out);
} jp_strategy;

typedef struct jp_engine_config {
    /* Strategies to enable, comma-separated; NULL = "noop,sleep,http".
     * "exec" must be named to be enabled. */
    const char *strategies;
    /* Programs exec may run, comma-separated absolute paths; NULL or "" = any
     * (when exec is enabled at all). */
    const char *exec_allow;
    /* Cap on captured output per stream (exec) and response body (http),
     * unless a payload asks for less. */
    size_t max_output_bytes;
} jp_engine_config;

/* Builds an engine with the built-in strategies that `cfg` enables.
 * JP_EINVAL names an unknown strategy in cfg->strategies. */
int jp_engine_new(const jp_engine_config *cfg, jp_engine **ret_engine, jp_err *err);
void jp_engine_free(jp_engine *e);

/* Adds a strategy (from a plugin). JP_ECONFLICT if the name is taken,
 * JP_EINVAL for a bad name or ABI. */
int jp_engine_register(jp_engine *e, const jp_strategy *s, jp_err *err);

/* True if `name` is registered and enabled. */
bool jp_engine_has(const jp_engine *e, const char *name);

/* Enabled strategy names, comma-separated (for logs and worker presence).
 * The string belongs to the engine. */
const char *jp_engine_names(const jp_engine *e);

/* Runs `payload` with strategy `name` under `task`. Returns 0 on success or
 * -1 on failure, with `out` filled either way (caller releases with
 * jp_outcome_done). An unknown strategy, a timeout and a cancellation are
 * failures with error codes "unknown_strategy", "timeout", "cancelled". */
int jp_engine_run(jp_engine *e, const char *name, const json_t *payload, jp_task *task,
                  jp_outcome *out);

/* A task: one run's deadline and cancellation. */

/* timeout_ms > 0. Never NULL. */
jp_task *jp_task_new(int64_t timeout_ms);
void jp_task_free(jp_task *t);
/* Asks the run to stop; safe from any thread, any number of times. */
void jp_task_cancel(jp_task *t);
bool jp_task_cancelled(const jp_task *t);
/* Milliseconds left before the deadline (0 when past it). */
int64_t jp_task_remaining_ms(const jp_task *t);
/* A file descriptor that becomes readable when the task is cancelled, for
 * strategies that wait in poll(). Belongs to the task. */
int jp_task_cancel_fd(const jp_task *t);

#endif
