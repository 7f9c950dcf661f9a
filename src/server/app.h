/* The control plane's state and the operations every entry point shares
 * (HTTP routes, the scheduler, the embedded engine): creating jobs and
 * applying state changes, with what must follow each change (putting a job
 * on the queue, waking the scheduler, stopping a cancelled run). */
#ifndef JP_SERVER_APP_H
#define JP_SERVER_APP_H

#include "core/err.h"
#include "core/job.h"
#include "queue/queue.h"
#include "server/waiters.h"
#include "store/group.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct jp_scheduler jp_scheduler;
typedef struct jp_embedded jp_embedded;
typedef struct jp_reconciler jp_reconciler;
typedef struct jp_auth jp_auth;

typedef struct jp_config {
    const char *listen;
    const char *database;
    int64_t workers;            /* embedded engine threads */
    const char *strategies;
    const char *exec_allow;
    int64_t max_body_bytes;
    int64_t max_connections;
    int64_t idle_timeout_s;
    int64_t retry_backoff_ms;
    int64_t retry_backoff_max_ms;
    int64_t max_output_bytes;
    int64_t drain_timeout_s;
    const char *log_level;
    const char *redis;          /* distributed mode when set */
    const char *tokens;         /* tokens file, or NULL */
    int64_t reconcile_interval_s;
    int64_t lease_s;            /* the workers' lease, to judge stale runs */
    bool allow_evicting;
} jp_config;

typedef struct jp_app {
    jp_config cfg;
    jp_store *store;
    jp_group *group;
    jp_queue *queue;
    jp_scheduler *sched;
    jp_embedded *engine;  /* embedded mode; NULL in distributed mode */
    jp_reconciler *reconciler;  /* distributed mode */
    jp_auth *auth;        /* NULL: no tokens, every caller may do everything */
    jp_waiters *waiters;  /* requests waiting for jobs to end; NULL: none may wait */
    bool distributed;     /* jobs go through Redis to jobplane-worker processes */
    jp_status runnable;   /* what a runnable job becomes: QUEUED, or PENDING
                             until it is on a Redis stream */
    bool crash_before_enqueue; /* fault seam (JOBPLANE_FAULT=crash-before-enqueue):
                                  die between the commit and the XADD, as a
                                  crash would, so tests can show the job runs */
    int64_t started_ms;
} jp_app;

/* Validates and records jobs (already built by jp_job_from_request), then
 * puts the runnable ones on the queue. existed[i] tells which were found by
 * idempotency key. Strategy names are checked against the engine. */
int jp_app_create(jp_app *app, jp_job **jobs, size_t n, bool *existed, jp_err *err);

/* Applies changes through group commit and does what follows each: queue
 * jobs that became queued, wake the scheduler for scheduled ones, stop runs
 * that were cancelled, wake the requests waiting for jobs that ended. Same
 * contract as jp_store_apply. */
int jp_app_apply(jp_app *app, jp_store_op *ops, size_t n, jp_err *err);

/* Like jp_app_apply without waiting for the commit (embedded mode only:
 * what follows runs on the committer thread). The ops are copied; their
 * event's result and error are referenced, not borrowed; worker_id must be
 * a string that outlives the app. The outcome of each op is not reported. */
int jp_app_apply_async(jp_app *app, jp_store_op *ops, size_t n, jp_err *err);

/* The delay before retrying after `attempt` failed: exponential, capped,
 * jittered (core/state.h jp_backoff_ms) with the configured base and cap. */
int64_t jp_app_backoff_ms(jp_app *app, int attempt);

/* Puts runnable jobs (QUEUED in embedded mode; PENDING in distributed mode,
 * which become QUEUED once on a stream) on the queue. In distributed mode a
 * job Redis did not take stays PENDING for the reconciler; jobs[i]->status
 * tells which. */
void jp_app_enqueue(jp_app *app, jp_job **jobs, size_t n);

/* Whether jobs of this strategy can run here (0, or JP_EINVAL naming it). */
int jp_app_check_strategy(jp_app *app, const char *strategy, jp_err *err);

/* Puts jobs that are queued in the store back on the queue, and requeues
 * jobs left running by a previous process (each such attempt ends "lost"):
 * run once at start, before the engine. Counts go to *ret_queued and
 * *ret_lost. */
int jp_app_recover(jp_app *app, size_t *ret_queued, size_t *ret_lost, jp_err *err);

/* Scheduler: promotes due jobs; jp_scheduler_poke says a run_at may be sooner. */
int jp_scheduler_start(jp_app *app, jp_scheduler **ret, jp_err *err);
void jp_scheduler_poke(jp_scheduler *s, int64_t run_at_ms);
void jp_scheduler_stop(jp_scheduler *s);

/* The reconciler (distributed mode): puts back from the database whatever
 * Redis lost, enqueues jobs left pending, requeues runs nobody finishes. */
int jp_reconciler_start(jp_app *app, jp_reconciler **ret, jp_err *err);
/* One pass now (also used at start); returns the number of jobs put back. */
size_t jp_reconciler_pass(jp_app *app);
void jp_reconciler_stop(jp_reconciler *r);

/* The in-process engine (embedded mode); absent when built without it. */
#ifdef JP_WITH_ENGINE
int jp_embedded_start(jp_app *app, jp_embedded **ret, jp_err *err);
bool jp_embedded_has(jp_embedded *e, const char *strategy);
/* The engine as GET /api/v1/workers shows it. New reference. */
json_t *jp_embedded_info(jp_embedded *e);
/* Stops the run of job `id` if it is running here. */
void jp_embedded_cancel(jp_embedded *e, const char *id);
/* Stops taking jobs, waits for running ones up to the drain timeout, then
 * stops the rest and puts them back as queued. Frees. */
void jp_embedded_stop(jp_embedded *e);
#endif

#endif
