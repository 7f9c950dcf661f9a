/* The registry of requests waiting for a job to end: hash buckets of
 * waiters under one mutex, each waiter with its own condition variable so a
 * notification wakes only the requests that wait for that job. */
#include "server/waiters.h"

#include "core/jtime.h"
#include "core/mem.h"
#include "core/uuid.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBUCKETS 256  /* a power of two; waits are few, so chains stay short */

struct jp_waiter {
    char id[JP_UUID_STR_LEN + 1];  /* the job waited for */
    size_t bucket;
    jp_waiter *prev, *next;        /* the bucket's chain */
    bool notified;                 /* set by notify, consumed by wait */
    pthread_cond_t cv;             /* monotonic clock */
};

struct jp_waiters {
    pthread_mutex_t mu;  /* guards everything below and every waiter's links and flag */
    size_t count;        /* registered waiters */
    size_t max;          /* ceiling on count */
    bool closed;         /* shutting down: no new waits, every wait returns */
    pthread_cond_t idle; /* signalled when closed and count reaches 0; monotonic clock */
    jp_waiter *buckets[NBUCKETS];
};

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

static struct timespec mono_abs(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    return ts;
}

static size_t bucket_of(const char *id)
{
    /* FNV-1a: ids share their time prefix, so every byte counts. */
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h & (NBUCKETS - 1);
}

jp_waiters *jp_waiters_new(size_t max_waiters)
{
    jp_waiters *ws = jp_xcalloc(1, sizeof *ws);
    pthread_mutex_init(&ws->mu, NULL);
    cond_init_monotonic(&ws->idle);
    ws->max = max_waiters ? max_waiters : 1;
    return ws;
}

void jp_waiters_free(jp_waiters *ws)
{
    if (!ws)
        return;
    pthread_cond_destroy(&ws->idle);
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}

jp_waiter *jp_waiters_add(jp_waiters *ws, const char *id)
{
    if (!ws)
        return NULL;
    jp_waiter *w = jp_xcalloc(1, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    w->bucket = bucket_of(w->id);
    cond_init_monotonic(&w->cv);

    pthread_mutex_lock(&ws->mu);
    bool full = ws->closed || ws->count >= ws->max;
    if (!full) {
        w->next = ws->buckets[w->bucket];
        if (w->next)
            w->next->prev = w;
        ws->buckets[w->bucket] = w;
        ws->count++;
    }
    pthread_mutex_unlock(&ws->mu);
    if (full) {
        pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    return w;
}

jp_wait_result jp_waiters_wait(jp_waiters *ws, jp_waiter *w, int64_t deadline_ms)
{
    struct timespec ts = mono_abs(deadline_ms);
    bool timed_out = deadline_ms <= jp_mono_ms();
    jp_wait_result r;

    pthread_mutex_lock(&ws->mu);
    for (;;) {
        if (w->notified) {
            w->notified = false;
            r = JP_WAIT_NOTIFIED;
            break;
        }
        if (ws->closed) {
            r = JP_WAIT_CLOSED;
            break;
        }
        if (timed_out) {
            r = JP_WAIT_TIMEOUT;
            break;
        }
        if (pthread_cond_timedwait(&w->cv, &ws->mu, &ts) == ETIMEDOUT)
            timed_out = true;
    }
    pthread_mutex_unlock(&ws->mu);
    return r;
}

void jp_waiters_remove(jp_waiters *ws, jp_waiter *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&ws->mu);
    if (w->prev)
        w->prev->next = w->next;
    else
        ws->buckets[w->bucket] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (--ws->count == 0 && ws->closed)
        pthread_cond_broadcast(&ws->idle);
    pthread_mutex_unlock(&ws->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void jp_waiters_notify(jp_waiters *ws, const char *const *ids, size_t n)
{
    if (!ws || !n)
        return;
    /* Always under the lock, even to learn that nobody waits: a waiter
     * added before this lock is taken is then sure to be found, and one
     * added after it reads the job after the commit that led here. */
    pthread_mutex_lock(&ws->mu);
    for (size_t i = 0; i < n && ws->count; i++) {
        for (jp_waiter *w = ws->buckets[bucket_of(ids[i])]; w; w = w->next) {
            if (strcmp(w->id, ids[i]) == 0) {
                w->notified = true;
                pthread_cond_signal(&w->cv);
            }
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

size_t jp_waiters_shutdown(jp_waiters *ws, int64_t timeout_ms)
{
    if (!ws)
        return 0;
    struct timespec ts = mono_abs(jp_mono_ms() + timeout_ms);
    pthread_mutex_lock(&ws->mu);
    ws->closed = true;
    size_t released = ws->count;
    for (size_t b = 0; b < NBUCKETS; b++)
        for (jp_waiter *w = ws->buckets[b]; w; w = w->next)
            pthread_cond_signal(&w->cv);
    while (ws->count > 0)
        if (pthread_cond_timedwait(&ws->idle, &ws->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&ws->mu);
    return released;
}
