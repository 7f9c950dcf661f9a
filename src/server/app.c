/* The operations every entry point of the control plane shares, and what
 * must follow a committed change: the database is written first, then the
 * requests waiting for a job, the queue, the scheduler and the engine (or
 * the workers) hear of it. */
#include "server/app.h"

#include "core/jtime.h"
#include "core/log.h"
#include "core/mem.h"
#include "queue/redis.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

int64_t jp_app_backoff_ms(jp_app *app, int attempt)
{
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)jp_mono_ms() * 2654435761u;
    return jp_backoff_ms(attempt, app->cfg.retry_backoff_ms, app->cfg.retry_backoff_max_ms, rnd);
}

int jp_app_check_strategy(jp_app *app, const char *strategy, jp_err *err)
{
    /* Workers may run strategies this process has never heard of (plugins);
     * a worker that lacks one records a failed attempt saying so. */
    if (app->distributed)
        return 0;
#ifdef JP_WITH_ENGINE
    if (app->engine && jp_embedded_has(app->engine, strategy))
        return 0;
#endif
    return jp_err_set(err, JP_EINVAL, "unknown strategy \"%s\" (enabled here: %s)", strategy,
                      app->cfg.strategies ? app->cfg.strategies : "none");
}

/* Wakes the requests waiting for the jobs that these committed ops ended.
 * A few ids at a time from the stack: this runs on the committer thread. */
static void notify_ended(jp_app *app, const jp_store_op *ops, size_t n)
{
    const char *ids[64];
    size_t k = 0;
    if (!app->waiters)
        return;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].rc != 0 || !jp_status_terminal(ops[i].after))
            continue;
        ids[k++] = ops[i].job_id;
        if (k == sizeof ids / sizeof ids[0]) {
            jp_waiters_notify(app->waiters, ids, k);
            k = 0;
        }
    }
    jp_waiters_notify(app->waiters, ids, k);
}

/* Logs a transport failure once per outage, not once per job. */
static atomic_bool transport_down;

void jp_app_enqueue(jp_app *app, jp_job **jobs, size_t n)
{
    if (!n)
        return;
    jp_err err;
    jp_err_clear(&err);
    if (app->crash_before_enqueue)
        _exit(137);
    if (jp_queue_push(app->queue, jobs, n, &err) < 0) {
        if (!atomic_exchange(&transport_down, true))
            jp_warn("cannot enqueue: %s; jobs stay %s until it is back", jp_err_msg(&err),
                    jp_status_name(app->runnable));
        return;
    }
    if (atomic_exchange(&transport_down, false))
        jp_info("queue reachable again");
    if (!app->distributed)
        return;

    /* On a stream now: record it. A crash before this commit leaves the job
     * pending and the reconciler sends it again; the duplicate message is
     * dropped by whichever worker sees its stale attempt. */
    jp_store_op *ops = jp_xcalloc(n, sizeof *ops);
    size_t nops = 0;
    int64_t now = jp_now_ms();
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->status != JP_ST_PENDING)
            continue;
        memcpy(ops[nops].job_id, jobs[i]->id, sizeof ops[nops].job_id);
        ops[nops].ev.kind = JP_EV_ENQUEUED;
        ops[nops].ev.now_ms = now;
        nops++;
    }
    if (nops && jp_group_apply(app->group, ops, nops, &err) == 0) {
        /* ENQUEUED ends no job; every commit passes the hook all the same. */
        notify_ended(app, ops, nops);
        size_t k = 0;
        for (size_t i = 0; i < n && k < nops; i++) {
            if (jobs[i]->status != JP_ST_PENDING)
                continue;
            jp_job *now_job = NULL;
            if (ops[k].rc == 0) {
                jobs[i]->status = JP_ST_QUEUED;
                jobs[i]->updated_at_ms = now;
            } else if (jp_store_get(app->store, jobs[i]->id, &now_job, NULL) == 0) {
                /* A worker was quicker than this commit (rare): the caller's
                 * record becomes the job as it now stands. */
                jp_job tmp = *jobs[i];
                *jobs[i] = *now_job;
                *now_job = tmp;
                jp_job_free(now_job);
            }
            k++;
        }
    }
    free(ops);
}

/* Queues what became runnable and wakes the scheduler for what waits. */
static void follow_up(jp_app *app, jp_job **jobs, size_t n)
{
    jp_job **runnable = jp_xmalloc((n ? n : 1) * sizeof *runnable);
    size_t nr = 0;
    int64_t earliest = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->status == JP_ST_QUEUED || jobs[i]->status == JP_ST_PENDING)
            runnable[nr++] = jobs[i];
        else if (jobs[i]->status == JP_ST_SCHEDULED &&
                 (!earliest || jobs[i]->run_at_ms < earliest))
            earliest = jobs[i]->run_at_ms;
    }
    jp_app_enqueue(app, runnable, nr);
    if (earliest && app->sched)
        jp_scheduler_poke(app->sched, earliest);
    free(runnable);
}

int jp_app_create(jp_app *app, jp_job **jobs, size_t n, bool *existed, jp_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->status == JP_ST_QUEUED)
            jobs[i]->status = app->runnable;
    int rc = jp_group_create(app->group, jobs, n, existed, err);
    if (rc < 0)
        return rc;
    /* A job found by its idempotency key is already wherever it belongs.
     * (A new job is never terminal, so nobody waiting needs waking here.) */
    jp_job **fresh = jp_xmalloc((n ? n : 1) * sizeof *fresh);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (!existed || !existed[i])
            fresh[nf++] = jobs[i];
    follow_up(app, fresh, nf);
    free(fresh);
    return 0;
}

static void stop_run(jp_app *app, const char *job_id)
{
    if (app->distributed) {
        jp_err err;
        jp_err_clear(&err);
        if (jp_redis_publish_cancel(app->queue, job_id, &err) < 0)
            jp_warn("job %s: cannot tell the workers to stop it: %s; its report will be refused",
                    job_id, jp_err_msg(&err));
        return;
    }
#ifdef JP_WITH_ENGINE
    if (app->engine)
        jp_embedded_cancel(app->engine, job_id);
#endif
}

/* Changes that can make a job runnable need the job to queue it. */
static bool needs_job(const jp_app *app, const jp_store_op *op)
{
    jp_event_kind k = op->ev.kind;
    return k == JP_EV_RETRY || k == JP_EV_REQUEUE || k == JP_EV_DUE ||
           (k == JP_EV_ENQUEUED && !app->distributed);
}

/* What follows committed changes: answer those waiting for the ended, queue
 * the runnable, wake the scheduler for the scheduled, stop the cancelled. */
static void after_apply(jp_app *app, jp_store_op *ops, size_t n)
{
    notify_ended(app, ops, n);  /* first: a waiting client is the latency that counts */
    jp_job **changed = jp_xmalloc((n ? n : 1) * sizeof *changed);
    size_t nc = 0;
    int64_t earliest = 0;
    for (size_t i = 0; i < n; i++) {
        jp_store_op *op = &ops[i];
        if (op->rc < 0)
            continue;
        /* In distributed mode ENQUEUED follows the push; elsewhere it precedes it. */
        bool runnable = op->after == JP_ST_PENDING ||
                        (op->after == JP_ST_QUEUED &&
                         !(op->ev.kind == JP_EV_ENQUEUED && app->distributed));
        if (runnable && op->job)
            changed[nc++] = op->job;
        if (op->after == JP_ST_SCHEDULED) {
            int64_t at = op->job ? op->job->run_at_ms : op->ev.now_ms + op->ev.backoff_ms;
            if (!earliest || at < earliest)
                earliest = at;
        }
        if (op->before == JP_ST_RUNNING && op->after == JP_ST_CANCELLED)
            stop_run(app, op->job_id);
    }
    jp_app_enqueue(app, changed, nc);
    if (earliest && app->sched)
        jp_scheduler_poke(app->sched, earliest);
    free(changed);
}

int jp_app_apply(jp_app *app, jp_store_op *ops, size_t n, jp_err *err)
{
    bool *asked = jp_xmalloc((n ? n : 1) * sizeof *asked);
    for (size_t i = 0; i < n; i++) {
        asked[i] = ops[i].want_job;
        if (needs_job(app, &ops[i]))
            ops[i].want_job = true;
    }
    int rc = jp_group_apply(app->group, ops, n, err);
    if (rc == 0)
        after_apply(app, ops, n);
    for (size_t i = 0; i < n; i++) {
        if (!asked[i]) {
            jp_job_free(ops[i].job);
            ops[i].job = NULL;
            ops[i].want_job = false;
        }
    }
    free(asked);
    return rc;
}

static void async_applied(void *arg, jp_store_op *ops, size_t n, int rc)
{
    jp_app *app = arg;
    if (rc < 0)
        jp_warn("cannot record %zu outcome(s): the database is unavailable", n);
    else
        after_apply(app, ops, n);
    for (size_t i = 0; i < n; i++) {
        jp_job_free(ops[i].job);
        json_decref((json_t *)ops[i].ev.result);
        json_decref((json_t *)ops[i].ev.error);
    }
}

int jp_app_apply_async(jp_app *app, jp_store_op *ops, size_t n, jp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        ops[i].want_job = needs_job(app, &ops[i]);
        json_incref((json_t *)ops[i].ev.result);
        json_incref((json_t *)ops[i].ev.error);
    }
    int rc = jp_group_apply_async(app->group, ops, n, async_applied, app, err);
    if (rc < 0)
        for (size_t i = 0; i < n; i++) {
            json_decref((json_t *)ops[i].ev.result);
            json_decref((json_t *)ops[i].ev.error);
        }
    return rc;
}

#define RECOVER_BATCH 500

/* Applies `kind` to every job in `status`, a batch at a time (kind 0 with
 * QUEUED: only put them back on the in-process queue). */
static int recover_status(jp_app *app, jp_status status, jp_event_kind kind, size_t *ret_count,
                          jp_err *err)
{
    char after[JP_UUID_STR_LEN + 1] = "";
    size_t count = 0;
    for (;;) {
        jp_job **jobs = NULL;
        size_t n = 0;
        int rc = jp_store_scan(app->store, status, after[0] ? after : NULL, RECOVER_BATCH, &jobs,
                               &n, err);
        if (rc < 0)
            return rc;
        if (n == 0) {
            free(jobs);
            break;
        }
        memcpy(after, jobs[n - 1]->id, sizeof after);
        if (status == JP_ST_PENDING && app->distributed) {
            jp_app_enqueue(app, jobs, n);
        } else if (kind == JP_EV_ENQUEUED && status == JP_ST_QUEUED) {
            jp_app_enqueue(app, jobs, n); /* only the in-process queue was lost */
        } else {
            jp_store_op *ops = jp_xcalloc(n, sizeof *ops);
            int64_t now = jp_now_ms();
            for (size_t i = 0; i < n; i++) {
                memcpy(ops[i].job_id, jobs[i]->id, sizeof ops[i].job_id);
                ops[i].ev.kind = kind;
                ops[i].ev.attempt = jobs[i]->attempts;
                ops[i].ev.now_ms = now;
            }
            rc = jp_app_apply(app, ops, n, err);
            free(ops);
            if (rc < 0) {
                jp_jobs_free(jobs, n);
                return rc;
            }
        }
        count += n;
        jp_jobs_free(jobs, n);
        if (n < RECOVER_BATCH)
            break;
    }
    *ret_count = count;
    return 0;
}

int jp_app_recover(jp_app *app, size_t *ret_queued, size_t *ret_lost, jp_err *err)
{
    size_t lost = 0, queued = 0, pending = 0;
    int rc;
    if (app->distributed) {
        /* Queued and running jobs live in Redis and in the workers; the
         * reconciler checks on them. Pending ones never made it there. */
        if ((rc = recover_status(app, JP_ST_PENDING, JP_EV_ENQUEUED, &pending, err)) < 0)
            return rc;
    } else {
        /* Queued first, so that requeued jobs are not pushed twice. */
        if ((rc = recover_status(app, JP_ST_QUEUED, JP_EV_ENQUEUED, &queued, err)) < 0 ||
            (rc = recover_status(app, JP_ST_PENDING, JP_EV_ENQUEUED, &pending, err)) < 0 ||
            (rc = recover_status(app, JP_ST_RUNNING, JP_EV_REQUEUE, &lost, err)) < 0)
            return rc;
    }
    *ret_queued = queued + pending;
    *ret_lost = lost;
    return 0;
}
