/* Group commit on jp_batchers: everything submitted to a committer since
 * its last round becomes one transaction for creates and one for state
 * changes. A database that takes several writers at once gets as many
 * committers, so one transaction's round trips overlap another's. */
#include "store/group.h"

#include "core/batcher.h"
#include "core/mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { REQ_APPLY, REQ_CREATE };

/* What a create request carries besides the jobs (item.data) and count. */
typedef struct create_req {
    jp_job **jobs;
    bool *existed;  /* may be NULL */
} create_req;

#define GROUP_MAX_COMMITTERS 4

struct jp_group {
    jp_store *store;
    jp_batcher *batchers[GROUP_MAX_COMMITTERS];
    unsigned n;
    atomic_uint next;  /* round-robin choice of committer for waited submits */
};

/* The committer of the next waited submit. Async posts all go to the first
 * one, so they commit in the order posted. */
static jp_batcher *pick(jp_group *g)
{
    return g->batchers[atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed) % g->n];
}

/* Creates from several requests go in one transaction. A conflict in one
 * request must not fail the others, so on conflict each request is retried
 * alone (conflicts are rare: reused idempotency keys with other bodies). */
static void commit_creates(jp_group *g, jp_batch_item **reqs, size_t nreq)
{
    size_t total = 0, at = 0;
    for (size_t i = 0; i < nreq; i++)
        total += reqs[i]->n;
    if (nreq == 1) {
        create_req *c = reqs[0]->data;
        reqs[0]->rc = jp_store_create(g->store, c->jobs, reqs[0]->n, c->existed, &reqs[0]->err);
        return;
    }
    jp_job **jobs = jp_xmalloc(total * sizeof *jobs);
    bool *existed = jp_xcalloc(total, sizeof *existed);
    for (size_t i = 0; i < nreq; i++) {
        create_req *c = reqs[i]->data;
        memcpy(jobs + at, c->jobs, reqs[i]->n * sizeof *jobs);
        at += reqs[i]->n;
    }
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_store_create(g->store, jobs, total, existed, &err);
    at = 0;
    for (size_t i = 0; i < nreq; i++) {
        jp_batch_item *r = reqs[i];
        create_req *c = r->data;
        if (rc == JP_ECONFLICT) {
            r->rc = jp_store_create(g->store, c->jobs, r->n, c->existed, &r->err);
            continue;
        }
        /* The store may have swapped in stored records for reused keys. */
        memcpy(c->jobs, jobs + at, r->n * sizeof *jobs);
        if (c->existed)
            memcpy(c->existed, existed + at, r->n * sizeof *existed);
        at += r->n;
        r->rc = rc;
        r->err = err;
    }
    free(existed);
    free(jobs);
}

static void commit_applies(jp_group *g, jp_batch_item **reqs, size_t nreq)
{
    size_t total = 0, at = 0;
    for (size_t i = 0; i < nreq; i++)
        total += reqs[i]->n;
    if (total == 0)
        return; /* only jp_group_sync markers */
    if (nreq == 1) {
        reqs[0]->rc = jp_store_apply(g->store, reqs[0]->data, reqs[0]->n, &reqs[0]->err);
        return;
    }
    jp_store_op *ops = jp_xmalloc(total * sizeof *ops);
    for (size_t i = 0; i < nreq; i++) {
        if (reqs[i]->n)
            memcpy(ops + at, reqs[i]->data, reqs[i]->n * sizeof *ops);
        at += reqs[i]->n;
    }
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_store_apply(g->store, ops, total, &err);
    at = 0;
    for (size_t i = 0; i < nreq; i++) {
        if (reqs[i]->n)
            memcpy(reqs[i]->data, ops + at, reqs[i]->n * sizeof *ops);
        at += reqs[i]->n;
        reqs[i]->rc = rc;
        reqs[i]->err = err;
    }
    free(ops);
}

static void flush(void *arg, jp_batch_item **items, size_t n)
{
    jp_group *g = arg;
    jp_batch_item **creates = jp_xmalloc(n * sizeof *creates);
    jp_batch_item **applies = jp_xmalloc(n * sizeof *applies);
    size_t nc = 0, na = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i]->kind == REQ_CREATE)
            creates[nc++] = items[i];
        else
            applies[na++] = items[i];
    }
    /* Creates first: a job created and changed in the same round (an engine
     * that is quick) must exist when its change is applied. */
    if (nc)
        commit_creates(g, creates, nc);
    if (na)
        commit_applies(g, applies, na);
    free(applies);
    free(creates);
}

int jp_group_new(jp_store *s, jp_group **ret_group, jp_err *err)
{
    jp_group *g = jp_xcalloc(1, sizeof *g);
    int writers = jp_store_writers(s);
    g->store = s;
    g->n = writers < GROUP_MAX_COMMITTERS ? (unsigned)writers : GROUP_MAX_COMMITTERS;
    atomic_init(&g->next, 0);
    for (unsigned i = 0; i < g->n; i++) {
        int rc = jp_batcher_new(flush, g, &g->batchers[i], err);
        if (rc < 0) {
            jp_group_free(g);
            return rc;
        }
    }
    *ret_group = g;
    return 0;
}

void jp_group_free(jp_group *g)
{
    if (!g)
        return;
    for (unsigned i = 0; i < g->n; i++)
        jp_batcher_free(g->batchers[i]);
    free(g);
}

int jp_group_apply(jp_group *g, jp_store_op *ops, size_t n, jp_err *err)
{
    if (!n)
        return 0;
    jp_batch_item it = {.kind = REQ_APPLY, .data = ops, .n = n};
    return jp_batcher_submit(pick(g), &it, err);
}

typedef struct async_req {
    jp_batch_item item;  /* first, so the item is the request */
    jp_group_done_fn done;
    void *arg;
    jp_store_op ops[];
} async_req;

static void async_done(jp_batch_item *it)
{
    async_req *r = (async_req *)it;
    r->done(r->arg, r->ops, it->n, it->rc);
    free(r);
}

int jp_group_apply_async(jp_group *g, const jp_store_op *ops, size_t n, jp_group_done_fn done,
                         void *arg, jp_err *err)
{
    async_req *r = jp_xmalloc(sizeof *r + n * sizeof *ops);
    memset(&r->item, 0, sizeof r->item);
    memcpy(r->ops, ops, n * sizeof *ops);
    r->item.kind = REQ_APPLY;
    r->item.data = r->ops;
    r->item.n = n;
    r->item.on_done = async_done;
    r->done = done;
    r->arg = arg;
    int rc = jp_batcher_post(g->batchers[0], &r->item, err);
    if (rc < 0)
        free(r);
    return rc;
}

void jp_group_sync(jp_group *g)
{
    for (unsigned i = 0; i < g->n; i++) {
        jp_batch_item it = {.kind = REQ_APPLY, .data = NULL, .n = 0};
        jp_batcher_submit(g->batchers[i], &it, NULL);
    }
}

int jp_group_create(jp_group *g, jp_job **jobs, size_t n, bool *existed, jp_err *err)
{
    if (!n)
        return 0;
    create_req c = {.jobs = jobs, .existed = existed};
    jp_batch_item it = {.kind = REQ_CREATE, .data = &c, .n = n};
    return jp_batcher_submit(pick(g), &it, err);
}
