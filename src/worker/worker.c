/* The worker's threads: one fetches messages for free slots (taking over
 * lapsed ones first), runners run one job each, a heartbeat thread renews
 * the leases of everything in flight and the presence hash, and the cancel
 * subscription stops runs the control plane cancelled. A message is
 * acknowledged only after its job's outcome is durable. */
#include "worker/worker.h"

#include "core/batcher.h"
#include "core/job.h"
#include "core/jtime.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/state.h"
#include "core/uuid.h"
#include "engine/engine.h"
#include "engine/plugin.h"
#include "queue/queue.h"
#include "queue/redis.h"
#include "worker/reporter.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_QUEUES 64
/* Slots per runner: a slot is held from fetch to acknowledgement, which
 * for short jobs is mostly the two report round trips. */
#define SLOTS_PER_RUNNER 4
/* How much work, at the recent run time, may wait for a runner. */
#define READY_BUDGET_US 2000

typedef enum {
    SLOT_FREE,
    SLOT_STARTING,  /* fetched; its start being recorded */
    SLOT_READY,     /* started; waiting for a runner */
    SLOT_RUNNING,
    SLOT_DONE,      /* ran; its outcome being recorded */
} slot_state;

/* A message this worker holds, from fetch to acknowledgement. */
typedef struct slot {
    slot_state state;
    jp_qmsg msg;           /* owns msg.data unless free */
    jp_job *job;           /* parsed from msg.data once started */
    jp_task *task;         /* from the start on: cancel reaches it */
    jp_outcome out;        /* the run's outcome */
    bool ok;               /* the run succeeded */
    bool shutdown;         /* stopped by this worker's shutdown */
    json_t *shutdown_error;
} slot;

struct jp_worker {
    const jp_worker_config *cfg;
    char id[JP_WORKER_ID_MAX];
    char host[64];
    char *queue_names;               /* owned copy, split in place */
    const char *queues[MAX_QUEUES + 1];
    jp_queue *q;
    jp_engine *engine;
    jp_reporter *rep_start;  /* starts (and refusals), from the fetch thread */
    jp_reporter *rep_done;   /* outcomes, from the finisher */
    jp_redis_sub *sub;
    jp_batcher *acker;
    int64_t lease_ms;
    int64_t started_ms;

    pthread_mutex_t mu;
    pthread_cond_t slot_freed;  /* fetch waits for a free slot */
    pthread_cond_t work;        /* runners wait for a ready slot */
    pthread_cond_t done_cv;     /* the finisher waits for slots that ran */
    pthread_cond_t hb_cv;       /* heartbeat's sleep, cut short on stop */
    /* Slots outnumber runners: a slot stays held while its outcome is
     * being recorded, and the runner goes on meanwhile. */
    size_t nslots;
    slot *slots;
    size_t *ready;              /* ring of slot indexes ready to run */
    size_t ready_head, ready_n;
    size_t *done;               /* slots that ran, for the finisher */
    size_t done_n;
    size_t inflight;            /* slots not free */
    size_t starting;            /* slots whose start is being recorded */
    size_t running;             /* runners running a job */
    atomic_llong avg_run_us;    /* recent mean run time */
    bool runners_done;
    bool finisher_stop;
    bool hb_stop;

    atomic_bool stopping;       /* take no more messages */
    atomic_bool abandoning;     /* past the drain timeout */

    pthread_t fetch_thread, hb_thread, finisher_thread;
    pthread_t *runners;
    size_t nrunners;
};

const char *jp_worker_id(const jp_worker *w)
{
    return w->id;
}

/* --- acknowledgements, batched across runners --- */

/* Acknowledges msgs[0..n) in one round trip, with a few tries. */
static void ack_many(jp_worker *w, jp_qmsg *msgs, size_t n)
{
    jp_err err;
    jp_err_clear(&err);
    int rc = 0;
    for (int tries = 0; tries < 3; tries++) {
        if ((rc = jp_queue_ack(w->q, msgs, n, &err)) == 0)
            break;
        usleep(200 * 1000);
    }
    /* An unacknowledged message is taken over after its lease and then
     * dropped as stale: nothing is lost, so a failure is only logged. */
    if (rc < 0)
        jp_warn("cannot acknowledge %zu message(s): %s; they will be dropped after their lease",
                n, jp_err_msg(&err));
}

static void flush_acks(void *arg, jp_batch_item **items, size_t n)
{
    jp_worker *w = arg;
    jp_qmsg *msgs = jp_xmalloc(n * sizeof *msgs);
    for (size_t i = 0; i < n; i++)
        msgs[i] = *(jp_qmsg *)items[i]->data;
    ack_many(w, msgs, n);
    for (size_t i = 0; i < n; i++)
        items[i]->rc = 0;
    free(msgs);
}

static void ack(jp_worker *w, jp_qmsg *msg)
{
    jp_batch_item it = {.data = msg, .n = 1};
    jp_batcher_submit(w->acker, &it, NULL);
}

/* --- reports --- */

/* Sends until the report is durable. Gives up only when the worker is past
 * its drain timeout and the destination stays away, or, for starts (nothing
 * has run yet), when the worker is stopping: then the message stays
 * unacknowledged and the job runs again elsewhere after the lease. */
static int report(jp_worker *w, jp_reporter *rep, jp_store_op *ops, size_t n)
{
    jp_err err;
    int64_t first = jp_mono_ms();
    useconds_t pause = 50 * 1000;
    bool warned = false;
    for (;;) {
        jp_err_clear(&err);
        int rc = jp_reporter_send(rep, ops, n, &err);
        if (rc == 0) {
            if (warned)
                jp_info("job %s: report delivered", ops[0].job_id);
            return 0;
        }
        if (!warned)
            jp_warn("job %s: cannot report: %s; retrying", ops[0].job_id, jp_err_msg(&err));
        warned = true;
        if (atomic_load(&w->abandoning) && jp_mono_ms() - first > 5000)
            return rc;
        if (rep == w->rep_start && atomic_load(&w->stopping))
            return rc;
        usleep(pause);
        if (pause < 2000 * 1000)
            pause *= 2;
    }
}

static void init_op(jp_worker *w, jp_store_op *op, const char *job_id, jp_event_kind kind,
                    int attempt)
{
    memset(op, 0, sizeof *op);
    snprintf(op->job_id, sizeof op->job_id, "%s", job_id);
    op->ev.kind = kind;
    op->ev.attempt = attempt;
    op->ev.worker_id = w->id;
    op->ev.now_ms = jp_now_ms();
}

static int64_t backoff(jp_worker *w, int attempt)
{
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)jp_mono_ms() * 2654435761u;
    return jp_backoff_ms(attempt, w->cfg->retry_backoff_ms, w->cfg->retry_backoff_max_ms, rnd);
}

/* A message this worker cannot run: recorded as a failed attempt (when it
 * names a job and an attempt), then acknowledged. */
static void refuse_message(jp_worker *w, jp_qmsg *msg, const char *code, const char *why,
                           bool retryable)
{
    jp_warn("message %s for job %s: %s", msg->handle, msg->job_id[0] ? msg->job_id : "?", why);
    if (jp_uuid_valid(msg->job_id) && msg->attempt >= 1) {
        jp_store_op ops[2];
        json_t *error = jp_error_json(code, why);
        init_op(w, &ops[0], msg->job_id, JP_EV_START, msg->attempt);
        init_op(w, &ops[1], msg->job_id, JP_EV_FAIL, msg->attempt);
        ops[1].ev.error = error;
        ops[1].ev.retryable = retryable;
        ops[1].ev.backoff_ms = backoff(w, msg->attempt);
        report(w, w->rep_start, ops, 2);
        json_decref(error);
    }
    ack(w, msg);
}

/* --- the life of a slot: fetched → started → run → reported --- */

/* Frees what a slot holds and makes it free. Locked. */
static void slot_release(jp_worker *w, slot *s)
{
    jp_qmsgs_done(&s->msg, 1);
    jp_job_free(s->job);
    jp_task_free(s->task);
    jp_outcome_done(&s->out);
    json_decref(s->shutdown_error);
    s->job = NULL;
    s->task = NULL;
    s->shutdown_error = NULL;
    s->state = SLOT_FREE;
    w->inflight--;
    pthread_cond_broadcast(&w->slot_freed);
}

/* Parses a fetched message into its slot, or refuses it (recorded as a
 * failed attempt and acknowledged). true when the slot may start. */
static bool slot_prepare(jp_worker *w, slot *s)
{
    jp_qmsg *msg = &s->msg;
    jp_job *job = NULL;
    int carried = 0;
    jp_err err;

    jp_err_clear(&err);
    if (!msg->data) {
        refuse_message(w, msg, "bad_message", "the message has no usable job_data", false);
        return false;
    }
    if (jp_job_from_message(msg->data, &job, &carried, &err) < 0) {
        char why[JP_ERR_MSG_MAX + 32];
        snprintf(why, sizeof why, "bad job_data: %s", jp_err_msg(&err));
        refuse_message(w, msg, "bad_message", why, false);
        return false;
    }
    if (strcmp(job->id, msg->job_id) != 0) {
        refuse_message(w, msg, "bad_message", "job_data names another job", false);
        jp_job_free(job);
        return false;
    }
    if (!jp_engine_has(w->engine, job->strategy)) {
        char why[JP_NAME_MAX + 128];
        snprintf(why, sizeof why, "worker %s does not run strategy \"%s\"", w->id, job->strategy);
        refuse_message(w, msg, "unknown_strategy", why, true);
        jp_job_free(job);
        return false;
    }
    s->job = job;
    return true;
}

/* Records the start of every fetched slot in one report, then hands the
 * accepted ones to the runners. A job runs only once its start is durable:
 * a job cancelled meanwhile, run by someone else or poison is refused and
 * its message dropped. */
static void start_slots(jp_worker *w, size_t *idx, size_t n)
{
    jp_store_op *ops = jp_xcalloc(n ? n : 1, sizeof *ops);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        slot *s = &w->slots[idx[i]];
        if (!slot_prepare(w, s)) {
            pthread_mutex_lock(&w->mu);
            slot_release(w, s);
            pthread_mutex_unlock(&w->mu);
            continue;
        }
        /* Visible to cancel before the start is recorded, so none slips by. */
        jp_task *task = jp_task_new((int64_t)s->job->timeout_seconds * 1000);
        pthread_mutex_lock(&w->mu);
        s->task = task;
        pthread_mutex_unlock(&w->mu);
        init_op(w, &ops[k], s->job->id, JP_EV_START, s->msg.attempt);
        idx[k++] = idx[i];
    }
    bool sent = k == 0 || report(w, w->rep_start, ops, k) == 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < k; i++) {
        slot *s = &w->slots[idx[i]];
        if (!sent || atomic_load(&w->abandoning)) {
            /* Never recorded, or shutting down: the message goes to
             * another worker after its lease. */
            slot_release(w, s);
        } else if (ops[i].rc < 0 || ops[i].refused) {
            jp_debug("job %s attempt %d not run: %s", s->msg.job_id, s->msg.attempt,
                     jp_err_msg(&ops[i].err));
            ack(w, &s->msg);
            slot_release(w, s);
        } else {
            s->state = SLOT_READY;
            w->ready[(w->ready_head + w->ready_n) % w->nslots] = idx[i];
            w->ready_n++;
            pthread_cond_signal(&w->work);
        }
    }
    pthread_mutex_unlock(&w->mu);
    free(ops);
}

/* Runs a started slot's job and leaves its outcome in the slot. */
static void run_slot(jp_worker *w, slot *s)
{
    int64_t t0 = jp_mono_us();
    int rc = jp_engine_run(w->engine, s->job->strategy, s->job->payload, s->task, &s->out);
    /* A running mean over about the last 16 runs, racy by design: it only
     * sizes the next fetch. */
    int64_t took = jp_mono_us() - t0, avg = atomic_load(&w->avg_run_us);
    atomic_store(&w->avg_run_us, avg + (took - avg) / 16);
    s->ok = rc == 0;
    /* Stopped by our shutdown, not by the job: to run again at once. */
    s->shutdown = rc != 0 && atomic_load(&w->abandoning) && jp_task_cancelled(s->task);
}

static void *runner_main(void *arg)
{
    jp_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->ready_n == 0 && !w->runners_done)
            pthread_cond_wait(&w->work, &w->mu);
        if (w->ready_n == 0)
            break;
        size_t idx = w->ready[w->ready_head];
        w->ready_head = (w->ready_head + 1) % w->nslots;
        w->ready_n--;
        w->running++;
        w->slots[idx].state = SLOT_RUNNING;
        pthread_mutex_unlock(&w->mu);

        run_slot(w, &w->slots[idx]);

        pthread_mutex_lock(&w->mu);
        w->running--;
        w->slots[idx].state = SLOT_DONE;
        w->done[w->done_n++] = idx;
        pthread_cond_signal(&w->done_cv);
        pthread_cond_broadcast(&w->slot_freed);  /* a runner is free: fetch may take more */
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Reports the outcomes of the slots that ran, many in one report, then
 * acknowledges their messages: a runner never waits for a report. */
static void *finisher_main(void *arg)
{
    jp_worker *w = arg;
    size_t *idx = jp_xcalloc(w->nslots, sizeof *idx);
    jp_store_op *ops = jp_xcalloc(w->nslots, sizeof *ops);
    jp_qmsg *msgs = jp_xcalloc(w->nslots, sizeof *msgs);

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->done_n == 0 && !w->finisher_stop)
            pthread_cond_wait(&w->done_cv, &w->mu);
        if (w->done_n == 0)
            break;
        size_t n = w->done_n;
        memcpy(idx, w->done, n * sizeof *idx);
        w->done_n = 0;
        pthread_mutex_unlock(&w->mu);

        for (size_t i = 0; i < n; i++) {
            slot *s = &w->slots[idx[i]];
            jp_store_op *op = &ops[i];
            init_op(w, op, s->job->id, s->ok ? JP_EV_COMPLETE : JP_EV_FAIL, s->msg.attempt);
            op->ev.result = s->out.result;
            if (!s->ok) {
                op->ev.error = s->out.error;
                op->ev.retryable = s->out.retryable;
                op->ev.backoff_ms = backoff(w, s->msg.attempt);
                if (s->shutdown) {
                    s->shutdown_error = jp_error_json(
                        "worker_shutdown", "the worker stopped before the job finished");
                    op->ev.error = s->shutdown_error;
                    op->ev.retryable = true;
                    op->ev.backoff_ms = 0;
                }
            }
        }
        if (report(w, w->rep_done, ops, n) == 0) {
            for (size_t i = 0; i < n; i++)
                msgs[i] = w->slots[idx[i]].msg;
            ack_many(w, msgs, n);
        }

        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < n; i++)
            slot_release(w, &w->slots[idx[i]]);
    }
    pthread_mutex_unlock(&w->mu);
    free(msgs);
    free(ops);
    free(idx);
    return NULL;
}

/* --- fetching --- */

/* Whether a slot already holds a message for `job_id`. Locked. */
static bool held_here(jp_worker *w, const char *job_id)
{
    for (size_t i = 0; i < w->nslots; i++)
        if (w->slots[i].state != SLOT_FREE && strcmp(w->slots[i].msg.job_id, job_id) == 0)
            return true;
    return false;
}

/* How many messages to take now: as many as runners would be idle, plus
 * as many as all runners get through in READY_BUDGET_US at the recent run
 * time, and no more than free slots. A taken job is recorded running, so
 * the budget bounds how long one waits for a runner (and stays from idle
 * workers elsewhere); with short jobs it keeps the runners fed while the
 * next starts are being recorded. Locked. */
static size_t wanted(const jp_worker *w)
{
    size_t busy = w->running + w->ready_n + w->starting;
    size_t idle = busy < w->nrunners ? w->nrunners - busy : 0;
    int64_t avg = atomic_load(&w->avg_run_us);
    size_t ahead = (size_t)(READY_BUDGET_US * (int64_t)w->nrunners / (avg > 1 ? avg : 1));
    size_t queued = w->ready_n + w->starting;
    size_t extra = ahead > queued ? ahead - queued : 0;
    size_t free_slots = w->nslots - w->inflight;
    return idle + extra < free_slots ? idle + extra : free_slots;
}

static void *fetch_main(void *arg)
{
    jp_worker *w = arg;
    jp_qmsg *msgs = jp_xcalloc(w->nslots, sizeof *msgs);
    size_t *idx = jp_xcalloc(w->nslots, sizeof *idx);
    int64_t reclaim_every = w->lease_ms / 2 < 5000 ? w->lease_ms / 2 : 5000;
    int64_t next_reclaim = 0;
    bool down = false;

    if (reclaim_every < 100)
        reclaim_every = 100;
    while (!atomic_load(&w->stopping)) {
        pthread_mutex_lock(&w->mu);
        while (wanted(w) == 0 && !atomic_load(&w->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->slot_freed, &w->mu, &ts);
        }
        size_t want = wanted(w);
        pthread_mutex_unlock(&w->mu);
        if (atomic_load(&w->stopping))
            break;

        size_t n = 0;
        jp_err err;
        jp_err_clear(&err);
        int rc = 0;
        if (jp_mono_ms() >= next_reclaim) {
            rc = jp_queue_reclaim(w->q, w->queues, want, msgs, &n, &err);
            next_reclaim = jp_mono_ms() + reclaim_every;
            if (n)
                jp_info("took over %zu job(s) whose worker stopped renewing its lease", n);
        }
        if (rc == 0 && n == 0)
            rc = jp_queue_pop(w->q, w->queues, want, 1000, msgs, &n, &err);
        if (rc < 0) {
            if (!down)
                jp_warn("redis: %s; retrying", jp_err_msg(&err));
            down = true;
            usleep(500 * 1000);
            continue;
        }
        if (down)
            jp_info("redis: reachable again");
        down = false;

        pthread_mutex_lock(&w->mu);
        size_t at = 0, k = 0;
        for (size_t i = 0; i < n; i++) {
            if (held_here(w, msgs[i].job_id)) {
                /* A second message for a job this worker already has (the
                 * reconciler sent it again): the first one covers it. */
                pthread_mutex_unlock(&w->mu);
                ack(w, &msgs[i]);
                jp_qmsgs_done(&msgs[i], 1);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            while (w->slots[at].state != SLOT_FREE)
                at++;
            slot *s = &w->slots[at];
            memset(s, 0, sizeof *s);
            s->state = SLOT_STARTING;
            s->msg = msgs[i];
            w->inflight++;
            idx[k++] = at;
        }
        w->starting = k;
        pthread_mutex_unlock(&w->mu);

        start_slots(w, idx, k);
        pthread_mutex_lock(&w->mu);
        w->starting = 0;
        pthread_mutex_unlock(&w->mu);
    }
    free(idx);
    free(msgs);
    return NULL;
}

/* --- heartbeats and presence --- */

static void presence(jp_worker *w, size_t inflight)
{
    char started[JP_TIME_STR_MAX], now[JP_TIME_STR_MAX];
    jp_time_format(w->started_ms, started);
    jp_time_format(jp_now_ms(), now);
    json_t *f = json_pack("{s:s,s:s,s:I,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:I}", "id", w->id, "host",
                          w->host, "pid", (json_int_t)getpid(), "queues", w->cfg->queues,
                          "strategies", jp_engine_names(w->engine), "concurrency",
                          (json_int_t)w->cfg->concurrency, "in_flight", (json_int_t)inflight, "started_at",
                          started, "last_heartbeat", now, "report", w->cfg->report,
                          "lease_ms", (json_int_t)w->lease_ms);
    int64_t ttl = 3 * (w->lease_ms / 3 < 5000 ? w->lease_ms / 3 : 5000) / 1000 + 5;
    jp_redis_presence_set(w->q, w->id, f, (int)ttl, NULL);
    json_decref(f);
}

static void *heartbeat_main(void *arg)
{
    jp_worker *w = arg;
    int64_t every = w->lease_ms / 3 < 5000 ? w->lease_ms / 3 : 5000;
    jp_qmsg *msgs = jp_xcalloc(w->nslots, sizeof *msgs);
    if (every < 50)
        every = 50;

    pthread_mutex_lock(&w->mu);
    while (!w->hb_stop) {
        size_t n = 0;
        for (size_t i = 0; i < w->nslots; i++) {
            if (w->slots[i].state == SLOT_FREE)
                continue;
            msgs[n] = w->slots[i].msg;
            msgs[n].data = NULL;  /* the renewal needs only the entry */
            n++;
        }
        size_t inflight = w->inflight;
        pthread_mutex_unlock(&w->mu);

        jp_err err;
        jp_err_clear(&err);
        if (n && jp_queue_renew(w->q, msgs, n, &err) < 0)
            jp_warn("cannot renew the leases of %zu job(s): %s", n, jp_err_msg(&err));
        presence(w, inflight);

        pthread_mutex_lock(&w->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (every % 1000) * 1000000L;
        ts.tv_sec += every / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (!w->hb_stop)
            pthread_cond_timedwait(&w->hb_cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    free(msgs);
    jp_redis_presence_del(w->q, w->id, NULL);
    return NULL;
}

static void on_cancel(void *arg, const char *job_id)
{
    jp_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nslots; i++) {
        slot *s = &w->slots[i];
        if (s->state != SLOT_FREE && s->task && strcmp(s->msg.job_id, job_id) == 0) {
            jp_info("job %s: cancelled by request; stopping it", job_id);
            jp_task_cancel(s->task);
        }
    }
    pthread_mutex_unlock(&w->mu);
}

/* --- start and stop --- */

static int split_queues(jp_worker *w, jp_err *err)
{
    w->queue_names = jp_xstrdup(w->cfg->queues);
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(w->queue_names, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!jp_name_valid(tok))
            return jp_err_set(err, JP_EINVAL, "bad queue name \"%s\" in --queues", tok);
        if (n == MAX_QUEUES)
            return jp_err_set(err, JP_EINVAL, "at most %d queues", MAX_QUEUES);
        w->queues[n++] = tok;
    }
    if (n == 0)
        return jp_err_set(err, JP_EINVAL, "--queues names no queue");
    w->queues[n] = NULL;
    return 0;
}

static int load_plugins(jp_worker *w, jp_err *err)
{
    if (!w->cfg->plugins || !*w->cfg->plugins)
        return 0;
    char *list = jp_xstrdup(w->cfg->plugins);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && rc == 0;
         tok = strtok_r(NULL, ",", &save))
        rc = jp_plugin_load(w->engine, tok, err);
    free(list);
    return rc;
}

static void destroy(jp_worker *w)
{
    jp_redis_cancel_unsubscribe(w->sub);
    jp_batcher_free(w->acker);
    jp_reporter_free(w->rep_start);
    jp_reporter_free(w->rep_done);
    jp_queue_free(w->q);
    jp_engine_free(w->engine);
    pthread_cond_destroy(&w->hb_cv);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done_cv);
    pthread_cond_destroy(&w->slot_freed);
    pthread_mutex_destroy(&w->mu);
    free(w->runners);
    free(w->ready);
    free(w->done);
    free(w->slots);
    free(w->queue_names);
    free(w);
}

int jp_worker_start(const jp_worker_config *cfg, jp_worker **ret, jp_err *err)
{
    jp_worker *w = jp_xcalloc(1, sizeof *w);
    int rc;
    w->cfg = cfg;
    w->started_ms = jp_now_ms();
    w->lease_ms = cfg->lease_s * 1000;
    w->nrunners = (size_t)cfg->concurrency;
    w->nslots = SLOTS_PER_RUNNER * w->nrunners;
    atomic_init(&w->avg_run_us, 1000000);  /* until measured: as if jobs were long */
    w->slots = jp_xcalloc(w->nslots, sizeof *w->slots);
    w->ready = jp_xcalloc(w->nslots, sizeof *w->ready);
    w->done = jp_xcalloc(w->nslots, sizeof *w->done);
    w->runners = jp_xcalloc(w->nrunners, sizeof *w->runners);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->slot_freed, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    pthread_cond_init(&w->hb_cv, NULL);
    gethostname(w->host, sizeof w->host - 1);
    if (cfg->id && *cfg->id)
        snprintf(w->id, sizeof w->id, "%s", cfg->id);
    else
        snprintf(w->id, sizeof w->id, "%s:%ld", w->host, (long)getpid());

    if ((rc = split_queues(w, err)) < 0)
        goto fail;
    jp_engine_config ecfg = {.strategies = cfg->strategies,
                             .exec_allow = cfg->exec_allow,
                             .max_output_bytes = (size_t)cfg->max_output_bytes};
    if ((rc = jp_engine_new(&ecfg, &w->engine, err)) < 0 || (rc = load_plugins(w, err)) < 0)
        goto fail;
    jp_queue_options qo = {.consumer = w->id,
                           .lease_ms = w->lease_ms,
                           .allow_evicting = cfg->allow_evicting,
                           .pool_size = 4};
    if ((rc = jp_queue_open(cfg->redis, &qo, &w->q, err)) < 0)
        goto fail;
    if (cfg->weighted)
        jp_redis_set_weighted(w->q, true);
    /* Starts and outcomes go by separate reporters, so neither waits for
     * the other's round trip. */
    for (int i = 0; i < 2; i++) {
        jp_reporter **rep = i == 0 ? &w->rep_start : &w->rep_done;
        if (strcmp(cfg->report, "db") == 0)
            rc = jp_reporter_db_new(cfg->database, rep, err);
        else
            rc = jp_reporter_api_new(cfg->control_plane, cfg->token, rep, err);
        if (rc < 0)
            goto fail;
    }
    if ((rc = jp_batcher_new(flush_acks, w, &w->acker, err)) < 0)
        goto fail;
    if ((rc = jp_redis_cancel_subscribe(cfg->redis, on_cancel, w, &w->sub, err)) < 0)
        goto fail;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    size_t started = 0;
    while (started < w->nrunners &&
           pthread_create(&w->runners[started], &attr, runner_main, w) == 0)
        started++;
    pthread_attr_destroy(&attr);
    bool finisher = started == w->nrunners &&
                    pthread_create(&w->finisher_thread, NULL, finisher_main, w) == 0;
    bool hb = finisher && pthread_create(&w->hb_thread, NULL, heartbeat_main, w) == 0;
    bool fetch = hb && pthread_create(&w->fetch_thread, NULL, fetch_main, w) == 0;
    if (!fetch) {
        /* Unreachable in practice; stop what runs and report it. */
        atomic_store(&w->stopping, true);
        pthread_mutex_lock(&w->mu);
        w->runners_done = w->finisher_stop = w->hb_stop = true;
        pthread_cond_broadcast(&w->work);
        pthread_cond_broadcast(&w->done_cv);
        pthread_cond_broadcast(&w->hb_cv);
        pthread_mutex_unlock(&w->mu);
        for (size_t i = 0; i < started; i++)
            pthread_join(w->runners[i], NULL);
        if (finisher)
            pthread_join(w->finisher_thread, NULL);
        if (hb)
            pthread_join(w->hb_thread, NULL);
        rc = jp_err_set(err, JP_EINTERNAL, "cannot start the worker's threads");
        goto fail;
    }
    *ret = w;
    return 0;
fail:
    destroy(w);
    return rc;
}

void jp_worker_stop(jp_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stopping, true);
    jp_queue_wake(w->q);
    pthread_join(w->fetch_thread, NULL);

    int64_t deadline = jp_mono_ms() + w->cfg->drain_timeout_s * 1000;
    pthread_mutex_lock(&w->mu);
    if (w->inflight)
        jp_info("waiting up to %llds for %zu running job(s)",
                (long long)w->cfg->drain_timeout_s, w->inflight);
    while (w->inflight > 0 && jp_mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->slot_freed, &w->mu, &ts);
    }
    if (w->inflight > 0) {
        jp_warn("drain timeout passed: stopping %zu running job(s); they will run again",
                w->inflight);
        atomic_store(&w->abandoning, true);
        for (size_t i = 0; i < w->nslots; i++)
            if (w->slots[i].state != SLOT_FREE && w->slots[i].task)
                jp_task_cancel(w->slots[i].task);
    }
    w->runners_done = true;  /* they end once nothing is ready */
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->nrunners; i++)
        pthread_join(w->runners[i], NULL);
    pthread_mutex_lock(&w->mu);
    w->finisher_stop = true;  /* it ends once every outcome is reported */
    pthread_cond_broadcast(&w->done_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->finisher_thread, NULL);

    pthread_mutex_lock(&w->mu);
    w->hb_stop = true;
    pthread_cond_broadcast(&w->hb_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->hb_thread, NULL);
    destroy(w);
}
