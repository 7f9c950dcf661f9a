/* Group commit: one committer thread turns the changes that many threads
 * submitted meanwhile into one transaction for creates and one for state
 * changes, then wakes the submitters with their own results. */
#include "store/group.h"

#include "core/mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef enum { REQ_APPLY, REQ_CREATE } req_kind;

typedef struct req {
    struct req *next;
    req_kind kind;
    jp_store_op *ops;   /* REQ_APPLY */
    jp_job **jobs;      /* REQ_CREATE */
    bool *existed;      /* REQ_CREATE, may be NULL */
    size_t n;
    int rc;
    jp_err err;
    bool done;
} req;

struct jp_group {
    jp_store *store;
    pthread_mutex_t mu;
    pthread_cond_t work;   /* committer waits here for requests */
    pthread_cond_t done;   /* submitters wait here for their results */
    req *head, *tail;
    bool stop;
    pthread_t thread;
};

/* Creates from several requests go in one transaction. A conflict in one
 * request must not fail the others, so on conflict each request is retried
 * alone (conflicts are rare: reused idempotency keys with other bodies). */
static void commit_creates(jp_group *g, req **reqs, size_t nreq)
{
    size_t total = 0;
    for (size_t i = 0; i < nreq; i++)
        total += reqs[i]->n;
    if (nreq == 1) {
        req *r = reqs[0];
        r->rc = jp_store_create(g->store, r->jobs, r->n, r->existed, &r->err);
        return;
    }
    jp_job **jobs = jp_xmalloc(total * sizeof *jobs);
    bool *existed = jp_xcalloc(total, sizeof *existed);
    size_t at = 0;
    for (size_t i = 0; i < nreq; i++) {
        memcpy(jobs + at, reqs[i]->jobs, reqs[i]->n * sizeof *jobs);
        at += reqs[i]->n;
    }
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_store_create(g->store, jobs, total, existed, &err);
    if (rc == JP_ECONFLICT) {
        for (size_t i = 0; i < nreq; i++) {
            req *r = reqs[i];
            r->rc = jp_store_create(g->store, r->jobs, r->n, r->existed, &r->err);
        }
    } else {
        at = 0;
        for (size_t i = 0; i < nreq; i++) {
            req *r = reqs[i];
            /* The store may have swapped in stored records for reused keys. */
            memcpy(r->jobs, jobs + at, r->n * sizeof *jobs);
            if (r->existed)
                memcpy(r->existed, existed + at, r->n * sizeof *existed);
            at += r->n;
            r->rc = rc;
            r->err = err;
        }
    }
    free(existed);
    free(jobs);
}

static void commit_applies(jp_group *g, req **reqs, size_t nreq)
{
    if (nreq == 1) {
        req *r = reqs[0];
        r->rc = jp_store_apply(g->store, r->ops, r->n, &r->err);
        return;
    }
    size_t total = 0;
    for (size_t i = 0; i < nreq; i++)
        total += reqs[i]->n;
    jp_store_op *ops = jp_xmalloc(total * sizeof *ops);
    size_t at = 0;
    for (size_t i = 0; i < nreq; i++) {
        memcpy(ops + at, reqs[i]->ops, reqs[i]->n * sizeof *ops);
        at += reqs[i]->n;
    }
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_store_apply(g->store, ops, total, &err);
    at = 0;
    for (size_t i = 0; i < nreq; i++) {
        req *r = reqs[i];
        memcpy(r->ops, ops + at, r->n * sizeof *ops);
        at += r->n;
        r->rc = rc;
        r->err = err;
    }
    free(ops);
}

static void *committer(void *arg)
{
    jp_group *g = arg;
    req **creates = NULL, **applies = NULL;
    size_t cap = 0;

    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->head && !g->stop)
            pthread_cond_wait(&g->work, &g->mu);
        if (!g->head && g->stop)
            break;
        req *batch = g->head;
        g->head = g->tail = NULL;
        pthread_mutex_unlock(&g->mu);

        size_t nc = 0, na = 0, count = 0;
        for (req *r = batch; r; r = r->next)
            count++;
        if (count > cap) {
            cap = count * 2;
            creates = jp_xrealloc(creates, cap * sizeof *creates);
            applies = jp_xrealloc(applies, cap * sizeof *applies);
        }
        for (req *r = batch; r; r = r->next) {
            if (r->kind == REQ_CREATE)
                creates[nc++] = r;
            else
                applies[na++] = r;
        }
        /* Creates first: a job created and changed in the same round (an
         * engine that is quick) must exist when its change is applied. */
        if (nc)
            commit_creates(g, creates, nc);
        if (na)
            commit_applies(g, applies, na);

        pthread_mutex_lock(&g->mu);
        for (req *r = batch; r; r = r->next)
            r->done = true;
        pthread_cond_broadcast(&g->done);
    }
    pthread_mutex_unlock(&g->mu);
    free(creates);
    free(applies);
    return NULL;
}

int jp_group_new(jp_store *s, jp_group **ret_group, jp_err *err)
{
    jp_group *g = jp_xcalloc(1, sizeof *g);
    g->store = s;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->work, NULL);
    pthread_cond_init(&g->done, NULL);
    if (pthread_create(&g->thread, NULL, committer, g) != 0) {
        pthread_cond_destroy(&g->done);
        pthread_cond_destroy(&g->work);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return jp_err_set(err, JP_EINTERNAL, "cannot start the commit thread");
    }
    *ret_group = g;
    return 0;
}

void jp_group_free(jp_group *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->work);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    pthread_cond_destroy(&g->done);
    pthread_cond_destroy(&g->work);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static int submit(jp_group *g, req *r, jp_err *err)
{
    jp_err_clear(&r->err);
    pthread_mutex_lock(&g->mu);
    if (g->stop) {
        pthread_mutex_unlock(&g->mu);
        return jp_err_set(err, JP_EUNAVAIL, "the server is shutting down");
    }
    if (g->tail)
        g->tail->next = r;
    else
        g->head = r;
    g->tail = r;
    pthread_cond_signal(&g->work);
    while (!r->done)
        pthread_cond_wait(&g->done, &g->mu);
    pthread_mutex_unlock(&g->mu);
    if (r->rc < 0 && err)
        *err = r->err;
    return r->rc;
}

int jp_group_apply(jp_group *g, jp_store_op *ops, size_t n, jp_err *err)
{
    if (!n)
        return 0;
    req r = {.kind = REQ_APPLY, .ops = ops, .n = n};
    return submit(g, &r, err);
}

int jp_group_create(jp_group *g, jp_job **jobs, size_t n, bool *existed, jp_err *err)
{
    if (!n)
        return 0;
    req r = {.kind = REQ_CREATE, .jobs = jobs, .existed = existed, .n = n};
    return submit(g, &r, err);
}
