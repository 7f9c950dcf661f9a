/* The reconciler of distributed mode. The database is the truth and Redis
 * only transport, so on a timer it puts back what the transport lost:
 *   - everything queued, when Redis lost its data (its epoch marker is gone:
 *     a restart without persistence, a FLUSHALL);
 *   - pending jobs, which never reached a stream (Redis was down, or this
 *     process died between the commit and the XADD);
 *   - queued jobs that have waited a while and whose message is not in
 *     their stream (a deleted stream or entry);
 *   - running jobs nobody finished: past their timeout plus two leases, no
 *     worker is running them any more (its message was lost with it).
 * Duplicates are harmless: a worker drops a message whose attempt is stale. */
#include "server/app.h"

#include "core/jtime.h"
#include "core/log.h"
#include "core/mem.h"
#include "queue/redis.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCAN_BATCH 500
#define PENDING_GRACE_MS 2000     /* a create may still be pushing it */
#define QUEUED_CHECK_AGE_MS 30000 /* queued this long without a message: lost */
#define STREAM_ID_LIMIT 200000

struct jp_reconciler {
    jp_app *app;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

typedef bool (*want_fn)(jp_app *app, const jp_job *job, int64_t now, void *arg);

/* Scans jobs in `status` and hands those `want` picks to `act`, a batch at a time. */
static size_t sweep(jp_app *app, jp_status status, want_fn want, void *arg,
                    size_t (*act)(jp_app *, jp_job **, size_t))
{
    char after[JP_UUID_STR_LEN + 1] = "";
    size_t total = 0;
    int64_t now = jp_now_ms();
    for (;;) {
        jp_job **jobs = NULL;
        size_t n = 0;
        jp_err err;
        jp_err_clear(&err);
        if (jp_store_scan(app->store, status, after[0] ? after : NULL, SCAN_BATCH, &jobs, &n,
                          &err) < 0) {
            jp_warn("reconciler: %s", jp_err_msg(&err));
            break;
        }
        if (n == 0) {
            free(jobs);
            break;
        }
        memcpy(after, jobs[n - 1]->id, sizeof after);
        jp_job **picked = jp_xmalloc(n * sizeof *picked);
        size_t np = 0;
        for (size_t i = 0; i < n; i++)
            if (!want || want(app, jobs[i], now, arg))
                picked[np++] = jobs[i];
        if (np)
            total += act(app, picked, np);
        free(picked);
        jp_jobs_free(jobs, n);
        if (n < SCAN_BATCH)
            break;
    }
    return total;
}

static size_t push(jp_app *app, jp_job **jobs, size_t n)
{
    jp_app_enqueue(app, jobs, n);
    return n;
}

static bool pending_stale(jp_app *app, const jp_job *job, int64_t now, void *arg)
{
    (void)app;
    (void)arg;
    return job->updated_at_ms < now - PENDING_GRACE_MS;
}

static bool run_abandoned(jp_app *app, const jp_job *job, int64_t now, void *arg)
{
    (void)arg;
    int64_t limit = (int64_t)job->timeout_seconds * 1000 + 2 * app->cfg.lease_s * 1000 + 10000;
    return job->started_at_ms && job->started_at_ms < now - limit;
}

static size_t requeue(jp_app *app, jp_job **jobs, size_t n)
{
    jp_store_op *ops = jp_xcalloc(n, sizeof *ops);
    int64_t now = jp_now_ms();
    for (size_t i = 0; i < n; i++) {
        memcpy(ops[i].job_id, jobs[i]->id, sizeof ops[i].job_id);
        ops[i].ev.kind = JP_EV_REQUEUE;
        ops[i].ev.attempt = jobs[i]->attempts;
        ops[i].ev.now_ms = now;
    }
    size_t done = 0;
    if (jp_app_apply(app, ops, n, NULL) == 0)
        for (size_t i = 0; i < n; i++)
            done += ops[i].rc == 0;
    free(ops);
    if (done)
        jp_warn("reconciler: %zu running job(s) past their timeout with no report; "
                "running them again",
                done);
    return done;
}

/* Which (queue, priority) streams hold which job ids, read once per pass. */
typedef struct stream_ids {
    json_t *by_stream; /* "queue/prio" -> {id: true}, or null when unreadable */
} stream_ids;

static bool message_lost(jp_app *app, const jp_job *job, int64_t now, void *arg)
{
    stream_ids *ids = arg;
    if (job->updated_at_ms > now - QUEUED_CHECK_AGE_MS)
        return false;
    char key[JP_NAME_MAX + 8];
    snprintf(key, sizeof key, "%s/%d", job->queue, job->priority);
    json_t *set = json_object_get(ids->by_stream, key);
    if (!set) {
        bool complete = false;
        if (jp_redis_stream_job_ids(app->queue, job->queue, job->priority, STREAM_ID_LIMIT, &set,
                                    &complete, NULL) < 0 ||
            !complete) {
            json_decref(set);
            set = json_null(); /* unknown: leave this stream alone this pass */
        }
        json_object_set_new(ids->by_stream, key, set);
    }
    return json_is_object(set) && !json_object_get(set, job->id);
}

/* Reading every stream's ids is costly under a backlog, so it is done only
 * when Redis holds fewer messages (waiting or delivered) than the database
 * has queued jobs: then some message must be missing. */
static bool messages_may_be_missing(jp_app *app)
{
    int64_t queued = 0, running = 0;
    json_t *stats = NULL;
    /* Counted by status, not all at once: finished jobs pile up. */
    if (jp_store_count(app->store, JP_ST_QUEUED, &queued, NULL) < 0 || queued == 0 ||
        jp_store_count(app->store, JP_ST_RUNNING, &running, NULL) < 0 ||
        jp_queue_stats(app->queue, &stats, NULL) < 0)
        return false;
    int64_t in_redis = 0;
    const char *qname, *pname;
    json_t *per, *st;
    json_object_foreach(stats, qname, per) {
        json_object_foreach(per, pname, st) {
            in_redis += json_integer_value(json_object_get(st, "length"));
            in_redis += json_integer_value(json_object_get(st, "pending"));
        }
    }
    json_decref(stats);
    /* A running job keeps its message until its outcome is recorded. */
    return in_redis < queued + running;
}

size_t jp_reconciler_pass(jp_app *app)
{
    size_t total = 0;
    jp_err err;
    jp_err_clear(&err);
    int lost = jp_redis_epoch_check(app->queue, &err);
    if (lost < 0)
        return 0; /* Redis is away: nothing can be put back now */
    if (lost == 1) {
        size_t n = sweep(app, JP_ST_QUEUED, NULL, NULL, push);
        if (n)
            jp_warn("reconciler: Redis lost its data; put %zu queued job(s) back", n);
        total += n;
    }
    size_t n = sweep(app, JP_ST_PENDING, pending_stale, NULL, push);
    if (n)
        jp_info("reconciler: enqueued %zu pending job(s)", n);
    total += n;
    if (lost != 1 && messages_may_be_missing(app)) {
        stream_ids ids = {json_object()};
        n = sweep(app, JP_ST_QUEUED, message_lost, &ids, push);
        json_decref(ids.by_stream);
        if (n)
            jp_warn("reconciler: %zu queued job(s) had no message in Redis; sent again", n);
        total += n;
    }
    total += sweep(app, JP_ST_RUNNING, run_abandoned, NULL, requeue);
    return total;
}

static void *run(void *arg)
{
    jp_reconciler *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        jp_reconciler_pass(r->app);
        pthread_mutex_lock(&r->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += r->app->cfg.reconcile_interval_s;
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int jp_reconciler_start(jp_app *app, jp_reconciler **ret, jp_err *err)
{
    jp_reconciler *r = jp_xcalloc(1, sizeof *r);
    r->app = app;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return jp_err_set(err, JP_EINTERNAL, "cannot start the reconciler thread");
    }
    *ret = r;
    return 0;
}

void jp_reconciler_stop(jp_reconciler *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
