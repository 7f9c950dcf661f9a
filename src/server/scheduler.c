/* The scheduler: one thread that moves scheduled jobs (delayed, or waiting
 * out a retry's backoff) onto the queue when their run_at comes. It sleeps
 * until the earliest run_at it knows of, and is poked when a sooner one
 * appears. */
#include "server/app.h"

#include "core/jtime.h"
#include "core/log.h"
#include "core/mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define PROMOTE_BATCH 1000
#define MAX_SLEEP_MS 1000  /* rescan at least this often: another writer may add jobs */

struct jp_scheduler {
    jp_app *app;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int64_t wake_at_ms;  /* wall clock; the thread sleeps until then; 0 while scanning */
    int64_t poked_ms;    /* earliest run_at poked while scanning, 0 if none */
};

static void *run(void *arg)
{
    jp_scheduler *s = arg;
    jp_app *app = s->app;
    bool warned = false;

    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        jp_job **jobs = NULL;
        size_t n = 0;
        int64_t next_due = 0;
        jp_err err;
        jp_err_clear(&err);
        int rc = jp_store_promote_due(app->store, jp_now_ms(), app->runnable, PROMOTE_BATCH, &jobs, &n,
                                      &next_due, &err);
        if (rc < 0) {
            if (!warned)
                jp_warn("scheduler: %s; retrying every second", jp_err_msg(&err));
            warned = true;
            next_due = 0;
        } else {
            if (warned)
                jp_info("scheduler: database reachable again");
            warned = false;
            if (n)
                jp_app_enqueue(app, jobs, n);
            jp_jobs_free(jobs, n);
        }

        pthread_mutex_lock(&s->mu);
        if (rc == 0 && n == PROMOTE_BATCH)
            continue;  /* more are due right now */
        int64_t wake = jp_now_ms() + MAX_SLEEP_MS;
        if (next_due && next_due < wake)
            wake = next_due;
        if (s->poked_ms && s->poked_ms < wake)
            wake = s->poked_ms;
        s->poked_ms = 0;
        s->wake_at_ms = wake;
        while (!s->stop && jp_now_ms() < s->wake_at_ms) {
            struct timespec ts = {.tv_sec = s->wake_at_ms / 1000,
                                  .tv_nsec = (long)(s->wake_at_ms % 1000) * 1000000L};
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        s->wake_at_ms = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int jp_scheduler_start(jp_app *app, jp_scheduler **ret, jp_err *err)
{
    jp_scheduler *s = jp_xcalloc(1, sizeof *s);
    s->app = app;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);  /* CLOCK_REALTIME: run_at is wall-clock time */
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return jp_err_set(err, JP_EINTERNAL, "cannot start the scheduler thread");
    }
    *ret = s;
    return 0;
}

void jp_scheduler_poke(jp_scheduler *s, int64_t run_at_ms)
{
    pthread_mutex_lock(&s->mu);
    if (!s->wake_at_ms) {
        /* Scanning: the scan may or may not see the job; remember it. */
        if (!s->poked_ms || run_at_ms < s->poked_ms)
            s->poked_ms = run_at_ms;
    } else if (run_at_ms < s->wake_at_ms) {
        s->wake_at_ms = run_at_ms;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

void jp_scheduler_stop(jp_scheduler *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
