/* The in-process engine of embedded mode: N threads take jobs from the
 * memory queue, claim them in the store (a START event, so every run is a
 * recorded attempt), run their strategy, and record the outcome. */
#include "server/app.h"

#include "core/jtime.h"
#include "core/log.h"
#include "core/mem.h"
#include "engine/engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What one thread is running, so a cancel can reach it. */
typedef struct slot {
    char job_id[JP_UUID_STR_LEN + 1];  /* "" when idle */
    jp_task *task;
} slot;

typedef struct thread_arg {
    jp_embedded *e;
    size_t index;
} thread_arg;

struct jp_embedded {
    jp_app *app;
    jp_engine *engine;
    char worker_id[JP_WORKER_ID_MAX];
    size_t nthreads;
    pthread_t *threads;
    thread_arg *args;
    atomic_bool stopping;    /* take no more jobs */
    atomic_bool abandoning;  /* past the drain timeout: stop running ones */
    pthread_mutex_t mu;      /* guards slots */
    slot *slots;
    atomic_size_t live;      /* threads not yet finished */
};

static void set_slot(jp_embedded *e, size_t i, const char *id, jp_task *task)
{
    pthread_mutex_lock(&e->mu);
    snprintf(e->slots[i].job_id, sizeof e->slots[i].job_id, "%s", id ? id : "");
    e->slots[i].task = task;
    pthread_mutex_unlock(&e->mu);
}

void jp_embedded_cancel(jp_embedded *e, const char *id)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nthreads; i++)
        if (e->slots[i].task && strcmp(e->slots[i].job_id, id) == 0)
            jp_task_cancel(e->slots[i].task);
    pthread_mutex_unlock(&e->mu);
}

json_t *jp_embedded_info(jp_embedded *e)
{
    size_t busy = 0;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nthreads; i++)
        busy += e->slots[i].task != NULL;
    pthread_mutex_unlock(&e->mu);
    char started[JP_TIME_STR_MAX], now[JP_TIME_STR_MAX];
    jp_time_format(e->app->started_ms, started);
    jp_time_format(jp_now_ms(), now);
    json_t *strategies = json_array();
    char *names = jp_xstrdup(jp_engine_names(e->engine));
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(strategies, json_string(t));
    free(names);
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    return json_pack("{s:s,s:s,s:I,s:b,s:[s],s:o,s:I,s:I,s:s,s:s}", "id", e->worker_id, "host",
                     host, "pid", (json_int_t)getpid(), "embedded", 1, "queues", "*",
                     "strategies", strategies, "concurrency", (json_int_t)e->nthreads,
                     "in_flight", (json_int_t)busy, "started_at", started, "last_heartbeat",
                     now);
}

bool jp_embedded_has(jp_embedded *e, const char *strategy)
{
    return jp_engine_has(e->engine, strategy);
}

/* Applies one event for this run and logs what cannot be recorded. */
static int record(jp_embedded *e, jp_store_op *op)
{
    jp_err err;
    jp_err_clear(&err);
    for (int tries = 0;; tries++) {
        int rc = jp_app_apply(e->app, op, 1, &err);
        if (rc == 0)
            return op->rc < 0 || op->refused ? -1 : 0;
        /* The database is away: hold on to the outcome and try again, since
         * dropping it would leave the job running forever. */
        if (tries == 0)
            jp_warn("job %s: cannot record its state: %s; retrying", op->job_id,
                    jp_err_msg(&err));
        if (atomic_load(&e->abandoning) && tries > 50)
            return -1;
        usleep(100 * 1000);
    }
}

static void run_one(jp_embedded *e, size_t idx, const jp_qmsg *msg)
{
    jp_job *job = NULL;
    int attempt = 0;
    jp_err err;
    jp_outcome out = {0};
    jp_store_op op;

    jp_err_clear(&err);
    if (!msg->data || jp_job_from_message(msg->data, &job, &attempt, &err) < 0) {
        jp_warn("job %s: unusable queue message: %s", msg->job_id, jp_err_msg(&err));
        return;
    }
    attempt = msg->attempt;
    jp_task *task = jp_task_new((int64_t)job->timeout_seconds * 1000);
    /* Visible to cancel before the claim commits, so no cancel slips by. */
    set_slot(e, idx, job->id, task);

    memset(&op, 0, sizeof op);
    memcpy(op.job_id, job->id, sizeof op.job_id);
    op.ev.kind = JP_EV_START;
    op.ev.attempt = attempt;
    op.ev.worker_id = e->worker_id;
    op.ev.now_ms = jp_now_ms();
    if (record(e, &op) < 0)
        goto out;  /* cancelled, already run, or poison: not ours to run */

    int rc = jp_engine_run(e->engine, job->strategy, job->payload, task, &out);

    memset(&op, 0, sizeof op);
    memcpy(op.job_id, job->id, sizeof op.job_id);
    op.ev.attempt = attempt;
    op.ev.worker_id = e->worker_id;
    op.ev.now_ms = jp_now_ms();
    op.ev.result = out.result;
    if (rc == 0) {
        op.ev.kind = JP_EV_COMPLETE;
    } else if (atomic_load(&e->abandoning) && jp_task_cancelled(task)) {
        op.ev.kind = JP_EV_REQUEUE;  /* stopped by shutdown, not by the job */
    } else {
        op.ev.kind = JP_EV_FAIL;
        op.ev.error = out.error;
        op.ev.retryable = out.retryable;
        op.ev.backoff_ms = jp_app_backoff_ms(e->app, attempt);
    }
    /* The outcome need not be waited for: nothing here depends on its
     * verdict, and the next job can start while it commits. */
    if (jp_app_apply_async(e->app, &op, 1, NULL) < 0)
        record(e, &op);
out:
    set_slot(e, idx, NULL, NULL);
    jp_outcome_done(&out);
    jp_task_free(task);
    jp_job_free(job);
}

static void *thread_main(void *arg)
{
    thread_arg *ta = arg;
    jp_embedded *e = ta->e;
    while (!atomic_load(&e->stopping)) {
        jp_qmsg msg;
        size_t n = 0;
        if (jp_queue_pop(e->app->queue, NULL, 1, -1, &msg, &n, NULL) < 0 || n == 0)
            continue;
        run_one(e, ta->index, &msg);
        jp_queue_ack(e->app->queue, &msg, 1, NULL);
        jp_qmsgs_done(&msg, 1);
    }
    atomic_fetch_sub(&e->live, 1);
    return NULL;
}

int jp_embedded_start(jp_app *app, jp_embedded **ret, jp_err *err)
{
    jp_engine_config ecfg = {
        .strategies = app->cfg.strategies,
        .exec_allow = app->cfg.exec_allow,
        .max_output_bytes = (size_t)app->cfg.max_output_bytes,
    };
    jp_engine *engine = NULL;
    int rc = jp_engine_new(&ecfg, &engine, err);
    if (rc < 0)
        return rc;

    jp_embedded *e = jp_xcalloc(1, sizeof *e);
    e->app = app;
    e->engine = engine;
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(e->worker_id, sizeof e->worker_id, "%s:%ld", host, (long)getpid());
    e->nthreads = (size_t)app->cfg.workers;
    e->threads = jp_xcalloc(e->nthreads ? e->nthreads : 1, sizeof *e->threads);
    e->args = jp_xcalloc(e->nthreads ? e->nthreads : 1, sizeof *e->args);
    e->slots = jp_xcalloc(e->nthreads ? e->nthreads : 1, sizeof *e->slots);
    pthread_mutex_init(&e->mu, NULL);
    app->engine = e;  /* threads may cancel through the app from here on */

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    for (size_t i = 0; i < e->nthreads; i++) {
        e->args[i].e = e;
        e->args[i].index = i;
        if (pthread_create(&e->threads[i], &attr, thread_main, &e->args[i]) != 0) {
            pthread_attr_destroy(&attr);
            e->nthreads = i;
            jp_embedded_stop(e);
            app->engine = NULL;
            return jp_err_set(err, JP_EINTERNAL, "cannot start engine thread %zu", i);
        }
        atomic_fetch_add(&e->live, 1);
    }
    pthread_attr_destroy(&attr);
    *ret = e;
    return 0;
}

void jp_embedded_stop(jp_embedded *e)
{
    if (!e)
        return;
    atomic_store(&e->stopping, true);
    jp_queue_wake(e->app->queue);

    int64_t deadline = jp_mono_ms() + e->app->cfg.drain_timeout_s * 1000;
    while (atomic_load(&e->live) > 0 && jp_mono_ms() < deadline)
        usleep(10 * 1000);
    if (atomic_load(&e->live) > 0) {
        jp_warn("drain timeout passed: stopping %zu running job(s); they will run again",
                (size_t)atomic_load(&e->live));
        atomic_store(&e->abandoning, true);
        pthread_mutex_lock(&e->mu);
        for (size_t i = 0; i < e->nthreads; i++)
            if (e->slots[i].task)
                jp_task_cancel(e->slots[i].task);
        pthread_mutex_unlock(&e->mu);
    }
    for (size_t i = 0; i < e->nthreads; i++)
        pthread_join(e->threads[i], NULL);
    /* Outcomes still being committed borrow this engine's worker id. */
    jp_group_sync(e->app->group);
    pthread_mutex_destroy(&e->mu);
    jp_engine_free(e->engine);
    free(e->slots);
    free(e->args);
    free(e->threads);
    free(e);
}
