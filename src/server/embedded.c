/* The in-process engine of embedded mode: N threads take jobs from the
 * memory queue, claim them in the store (a START event, so every run is a
 * recorded attempt), run their strategy, and record the outcome.
 *
 * Jobs are claimed in batches: a thread takes several from the queue and
 * records all their STARTs in one commit, and the started jobs go on a ready
 * list that every thread runs from. A commit costs the committer thread
 * about as much for one job as for dozens, so short jobs drain many times
 * faster; and since any idle thread takes the next ready job, a long job
 * holds up only its own thread. Outcomes gather in an outbox that the next
 * claim's commit carries, or that goes on its own when nothing else would
 * carry it soon. */
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
#include <unistd.h>

/* Most jobs one claim takes. */
#define BATCH_MAX 128
/* A claim takes about as many jobs as all threads run in this long at the
 * recent run time: short jobs come in batches, long ones one at a time. A
 * claimed job is recorded running from its claim's commit, so this bounds
 * how early that is, as long as some thread is free to take it. */
#define BATCH_BUDGET_US 1000
/* How long an outcome may wait in the outbox for a claim to carry it. */
#define OUTCOME_WAIT_US 1000

/* One claimed job. What it runs is borrowed from its message's data. */
typedef struct run {
    struct run *next;              /* on the ready list */
    struct run *live_prev, *live_next;  /* on the live list (mu) */
    jp_qmsg msg;                   /* the delivery; its data is owned */
    const char *strategy;
    const json_t *payload;         /* NULL: none */
    int64_t timeout_ms;
    jp_task *task;                 /* while it runs (mu) */
    bool cancelled;                /* a cancel came before its task was made (mu) */
} run;

struct jp_embedded {
    jp_app *app;
    jp_engine *engine;
    char worker_id[JP_WORKER_ID_MAX];
    size_t nthreads;
    pthread_t *threads;
    atomic_bool stopping;    /* take no more jobs */
    atomic_bool abandoning;  /* past the drain timeout: stop running ones */
    atomic_size_t running;   /* threads not yet finished */

    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv;       /* the helper waits here for ready jobs or a turn in the queue */
    size_t idle;             /* threads waiting on cv */
    /* Threads waiting in the queue for jobs: all idle ones but one, which
     * waits on cv to help run a claim that brought several jobs. */
    size_t waiters, waiters_max;
    run *ready, *ready_tail; /* started, not yet running, in claim order */
    run live;                /* list head: claimed and not finished, what cancel looks at */
    size_t nlive;
    int64_t avg_run_us;      /* recent mean run time, which sizes claims */
    /* Outcomes not yet handed to group commit; they hold their result and
     * error references. */
    jp_store_op *outbox;
    size_t nout, capout;
    int64_t outbox_since_us; /* when the oldest of them was made */
};

/* What one thread keeps between its claims. */
typedef struct worker {
    jp_embedded *e;
    jp_qmsg msgs[BATCH_MAX];  /* a claim as the queue delivers it */
    run *claimed[BATCH_MAX];
    jp_store_op *ops;         /* a claim's commit: the outbox it took, then its STARTs */
    size_t nops, capops;
} worker;


/* Stops every live run of job id (all of them when id is NULL): the running
 * one through its task, the others before they begin. Locked. */
static void cancel_locked(jp_embedded *e, const char *id)
{
    for (run *r = e->live.live_next; r != &e->live; r = r->live_next) {
        if (id && strcmp(r->msg.job_id, id) != 0)
            continue;
        if (r->task)
            jp_task_cancel(r->task);
        else
            r->cancelled = true;
    }
}

void jp_embedded_cancel(jp_embedded *e, const char *id)
{
    pthread_mutex_lock(&e->mu);
    cancel_locked(e, id);
    pthread_mutex_unlock(&e->mu);
}

json_t *jp_embedded_info(jp_embedded *e)
{
    pthread_mutex_lock(&e->mu);
    size_t busy = e->nlive;
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

/* Applies ops[0..n) and waits for the commit; logs what cannot be recorded.
 * Returns 0 once committed (each op has its own rc), -1 when it gave up. */
static int record(jp_embedded *e, jp_store_op *ops, size_t n)
{
    jp_err err;
    jp_err_clear(&err);
    for (int tries = 0;; tries++) {
        if (jp_app_apply(e->app, ops, n, &err) == 0)
            return 0;
        /* The database is away: hold on to the changes and try again, since
         * dropping an outcome would leave its job running forever. */
        if (tries == 0)
            jp_warn("job %s%s: cannot record its state: %s; retrying", ops[0].job_id,
                    n > 1 ? " and others" : "", jp_err_msg(&err));
        if (atomic_load(&e->abandoning) && tries > 50)
            return -1;
        usleep(100 * 1000);
    }
}

/* Lets go of the result and error references of outcomes. */
static void drop_outcomes(jp_store_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref((json_t *)ops[i].ev.result);
        json_decref((json_t *)ops[i].ev.error);
    }
}

/* Hands outcomes to group commit without waiting: nothing here depends on
 * their verdict. */
static void post_outcomes(jp_embedded *e, jp_store_op *ops, size_t n)
{
    if (!n)
        return;
    if (jp_app_apply_async(e->app, ops, n, NULL) < 0)
        record(e, ops, n);
    drop_outcomes(ops, n);
}

/* Moves the outbox into w->ops (which must be empty), leaving w's old
 * buffer as the outbox. Locked. */
static void take_outbox(jp_embedded *e, worker *w)
{
    jp_store_op *ops = w->ops;
    size_t cap = w->capops;
    w->ops = e->outbox;
    w->capops = e->capout;
    w->nops = e->nout;
    e->outbox = ops;
    e->capout = cap;
    e->nout = 0;
}

/* Posts the outbox on its own. Called locked; unlocks meanwhile. */
static void flush_outbox(jp_embedded *e, worker *w)
{
    take_outbox(e, w);
    pthread_mutex_unlock(&e->mu);
    post_outcomes(e, w->ops, w->nops);
    w->nops = 0;
    pthread_mutex_lock(&e->mu);
}

static void grow_ops(worker *w, size_t need)
{
    if (need <= w->capops)
        return;
    w->capops = need > 2 * w->capops ? need : 2 * w->capops;
    w->ops = jp_xrealloc(w->ops, w->capops * sizeof *w->ops);
}

/* Reads what to run from a message (job_data, core/job.h) without copying:
 * the job's own checks were made when it was created. */
static int read_message(run *r, jp_err *err)
{
    const json_t *data = r->msg.data;
    if (!json_is_object(data))
        return jp_err_set(err, JP_EINVAL, "job_data must be a JSON object");
    const char *id = json_string_value(json_object_get(data, "id"));
    if (!id || strcmp(id, r->msg.job_id) != 0)
        return jp_err_set(err, JP_EINVAL, "job_data field \"id\" is not the message's job");
    r->strategy = json_string_value(json_object_get(data, "strategy"));
    if (!r->strategy)
        return jp_err_set(err, JP_EINVAL, "job_data field \"strategy\" must be a string");
    const json_t *t = json_object_get(data, "timeout_seconds");
    json_int_t secs = json_is_integer(t) ? json_integer_value(t) : 0;
    if (secs < 1 || secs > JP_TIMEOUT_LIMIT_S)
        return jp_err_set(err, JP_EINVAL, "job_data field \"timeout_seconds\" must be 1 to %d",
                          JP_TIMEOUT_LIMIT_S);
    r->timeout_ms = (int64_t)secs * 1000;
    r->payload = json_object_get(data, "payload");
    return 0;
}

/* Acknowledges a run's message and frees it. Unlocked. */
static void run_free(jp_embedded *e, run *r)
{
    jp_queue_ack(e->app->queue, &r->msg, 1, NULL);
    jp_qmsgs_done(&r->msg, 1);
    free(r);
}

static void unlink_live(jp_embedded *e, run *r)
{
    r->live_prev->live_next = r->live_next;
    r->live_next->live_prev = r->live_prev;
    e->nlive--;
}

/* How many jobs a claim takes: about what all threads run in
 * BATCH_BUDGET_US at the recent run time. Locked. */
static size_t claim_size(const jp_embedded *e)
{
    if (e->avg_run_us <= 0)
        return BATCH_MAX;
    int64_t k = (int64_t)e->nthreads * BATCH_BUDGET_US / e->avg_run_us;
    return k < 1 ? 1 : k > BATCH_MAX ? BATCH_MAX : (size_t)k;
}

/* Takes jobs from the queue (waiting for some if `wait`: the caller counted
 * this thread in e->waiters, and the count is given back here), records
 * their STARTs (with the outbox taken into w->ops, in the same commit) and
 * puts the started ones on the ready list. Returns how many it took. Called
 * locked; unlocks meanwhile. */
static size_t claim(jp_embedded *e, worker *w, bool wait)
{
    jp_queue *q = e->app->queue;
    size_t want = claim_size(e);
    size_t n = 0;
    jp_err err;

    take_outbox(e, w);
    pthread_mutex_unlock(&e->mu);
    /* Threads claiming at once share what is waiting rather than one taking
     * it all. */
    if (jp_queue_claim(q, NULL, want, e->nthreads, 0, w->msgs, &n, NULL) < 0 || n == 0) {
        /* Nothing at once: the outcomes go now, not after a wait. */
        post_outcomes(e, w->ops, w->nops);
        w->nops = 0;
        if (!wait || jp_queue_claim(q, NULL, want, e->nthreads, -1, w->msgs, &n, NULL) < 0)
            n = 0;
    }

    size_t nclaimed = 0;
    for (size_t i = 0; i < n; i++) {
        run *r = jp_xcalloc(1, sizeof *r);
        r->msg = w->msgs[i];
        jp_err_clear(&err);
        if (read_message(r, &err) < 0) {
            jp_warn("job %s: unusable queue message: %s", r->msg.job_id, jp_err_msg(&err));
            run_free(e, r);
            continue;
        }
        w->claimed[nclaimed++] = r;
    }

    pthread_mutex_lock(&e->mu);
    if (wait) {
        e->waiters--;
        /* Someone must go on waiting in the queue: the helper does. */
        if (e->idle)
            pthread_cond_signal(&e->cv);
    }
    /* Visible to cancel before the claim commits, so no cancel slips by. */
    for (size_t i = 0; i < nclaimed; i++) {
        run *r = w->claimed[i];
        r->live_next = &e->live;
        r->live_prev = e->live.live_prev;
        e->live.live_prev->live_next = r;
        e->live.live_prev = r;
    }
    e->nlive += nclaimed;
    pthread_mutex_unlock(&e->mu);

    size_t nouts = w->nops;
    grow_ops(w, nouts + nclaimed);
    int64_t now = jp_now_ms();
    for (size_t i = 0; i < nclaimed; i++) {
        jp_store_op *op = &w->ops[nouts + i];
        memset(op, 0, sizeof *op);
        memcpy(op->job_id, w->claimed[i]->msg.job_id, sizeof op->job_id);
        op->ev.kind = JP_EV_START;
        op->ev.attempt = w->claimed[i]->msg.attempt;
        op->ev.worker_id = e->worker_id;
        op->ev.now_ms = now;
    }
    int rc = nouts + nclaimed ? record(e, w->ops, nouts + nclaimed) : 0;
    drop_outcomes(w->ops, nouts);
    w->nops = 0;

    size_t nstarted = 0, nrefused = 0;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < nclaimed; i++) {
        run *r = w->claimed[i];
        const jp_store_op *op = &w->ops[nouts + i];
        if (rc == 0 && op->rc == 0 && !op->refused) {
            r->next = NULL;
            if (e->ready_tail)
                e->ready_tail->next = r;
            else
                e->ready = r;
            e->ready_tail = r;
            nstarted++;
        } else {
            /* Refused: cancelled, already run, or poison: not ours to run. */
            unlink_live(e, r);
            w->claimed[nrefused++] = r;
        }
    }
    /* This thread runs one of them itself; others wake for the rest. */
    for (size_t i = 1; i < nstarted && i <= e->idle; i++)
        pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < nrefused; i++)
        run_free(e, w->claimed[i]);
    pthread_mutex_lock(&e->mu);
    return n;
}

/* Runs r and builds its outcome in *op (holding the result and error
 * references). Unlocked. */
static void run_one(jp_embedded *e, run *r, jp_store_op *op, int64_t *ret_us)
{
    jp_outcome out = {0};
    jp_task *task = jp_task_new(r->timeout_ms);

    pthread_mutex_lock(&e->mu);
    r->task = task;
    if (r->cancelled)
        jp_task_cancel(task);
    pthread_mutex_unlock(&e->mu);

    int64_t t0 = jp_mono_us();
    int rc = jp_engine_run(e->engine, r->strategy, r->payload, task, &out);
    *ret_us = jp_mono_us() - t0;

    memset(op, 0, sizeof *op);
    memcpy(op->job_id, r->msg.job_id, sizeof op->job_id);
    op->ev.attempt = r->msg.attempt;
    op->ev.worker_id = e->worker_id;
    op->ev.now_ms = jp_now_ms();
    op->ev.result = out.result;  /* the references move to the outcome */
    if (rc == 0) {
        op->ev.kind = JP_EV_COMPLETE;
        json_decref(out.error);
    } else if (atomic_load(&e->abandoning) && jp_task_cancelled(task)) {
        op->ev.kind = JP_EV_REQUEUE;  /* stopped by shutdown, not by the job */
        json_decref(out.error);
    } else {
        op->ev.kind = JP_EV_FAIL;
        op->ev.error = out.error;
        op->ev.retryable = out.retryable;
        op->ev.backoff_ms = jp_app_backoff_ms(e->app, r->msg.attempt);
    }
}

/* Retires a finished run: its outcome into the outbox, and the run off the
 * live list. Locked. */
static void retire(jp_embedded *e, run *r, const jp_store_op *op, int64_t took_us)
{
    jp_task *task = r->task;
    r->task = NULL;
    unlink_live(e, r);
    /* A long run makes the next claims small at once; short ones grow them
     * back within a few runs. */
    if (took_us >= e->avg_run_us)
        e->avg_run_us = took_us;
    else
        e->avg_run_us -= (e->avg_run_us - took_us + 1) / 2;
    if (e->nout == e->capout) {
        e->capout = e->capout ? 2 * e->capout : BATCH_MAX;
        e->outbox = jp_xrealloc(e->outbox, e->capout * sizeof *e->outbox);
    }
    if (!e->nout)
        e->outbox_since_us = jp_mono_us();
    e->outbox[e->nout++] = *op;
    pthread_mutex_unlock(&e->mu);
    jp_task_free(task);
    run_free(e, r);
    pthread_mutex_lock(&e->mu);
}

static void *thread_main(void *arg)
{
    worker *w = arg;
    jp_embedded *e = w->e;

    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (e->ready) {
            run *r = e->ready;
            e->ready = r->next;
            if (!e->ready)
                e->ready_tail = NULL;
            /* Outcomes wait for a claim to carry them, but not long: not past
             * OUTCOME_WAIT_US, and not at all behind runs that lately took
             * about as long (nothing would carry them meanwhile). */
            if (e->nout && (e->avg_run_us * 2 > OUTCOME_WAIT_US ||
                            jp_mono_us() - e->outbox_since_us > OUTCOME_WAIT_US))
                flush_outbox(e, w);
            pthread_mutex_unlock(&e->mu);
            jp_store_op op;
            int64_t took_us;
            run_one(e, r, &op, &took_us);
            pthread_mutex_lock(&e->mu);
            retire(e, r, &op, took_us);
            continue;
        }
        if (atomic_load(&e->stopping))
            break;
        bool wait = e->waiters < e->waiters_max;
        if (wait)
            e->waiters++;
        size_t got = claim(e, w, wait);
        if (got || wait)
            continue;
        if (e->nout) {
            flush_outbox(e, w);
            continue;
        }
        e->idle++;
        pthread_cond_wait(&e->cv, &e->mu);
        e->idle--;
    }
    if (e->nout)
        flush_outbox(e, w);
    pthread_mutex_unlock(&e->mu);
    free(w->ops);
    free(w);
    atomic_fetch_sub(&e->running, 1);
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
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->live.live_next = e->live.live_prev = &e->live;
    e->waiters_max = e->nthreads > 1 ? e->nthreads - 1 : 1;
    /* Unknown jobs are claimed a few at a time until their run time is known. */
    e->avg_run_us = BATCH_BUDGET_US;
    app->engine = e;  /* threads may cancel through the app from here on */

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    for (size_t i = 0; i < e->nthreads; i++) {
        worker *w = jp_xcalloc(1, sizeof *w);
        w->e = e;
        if (pthread_create(&e->threads[i], &attr, thread_main, w) != 0) {
            free(w);
            pthread_attr_destroy(&attr);
            e->nthreads = i;
            jp_embedded_stop(e);
            app->engine = NULL;
            return jp_err_set(err, JP_EINTERNAL, "cannot start engine thread %zu", i);
        }
        atomic_fetch_add(&e->running, 1);
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
    pthread_mutex_lock(&e->mu);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);

    int64_t deadline = jp_mono_ms() + e->app->cfg.drain_timeout_s * 1000;
    while (atomic_load(&e->running) > 0 && jp_mono_ms() < deadline)
        usleep(10 * 1000);
    if (atomic_load(&e->running) > 0) {
        pthread_mutex_lock(&e->mu);
        jp_warn("drain timeout passed: stopping %zu running job(s); they will run again",
                e->nlive);
        atomic_store(&e->abandoning, true);
        /* Started jobs not begun yet stop too: they fail as cancelled at
         * once and are put back like the running ones. */
        cancel_locked(e, NULL);
        pthread_mutex_unlock(&e->mu);
    }
    for (size_t i = 0; i < e->nthreads; i++)
        pthread_join(e->threads[i], NULL);
    /* Outcomes still being committed borrow this engine's worker id. */
    jp_group_sync(e->app->group);
    drop_outcomes(e->outbox, e->nout);
    free(e->outbox);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    jp_engine_free(e->engine);
    free(e->threads);
    free(e);
}
