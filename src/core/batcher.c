/* The batching thread behind jp_batcher. */
#include "core/batcher.h"

#include "core/mem.h"

#include <pthread.h>
#include <stdlib.h>

struct jp_batcher {
    jp_batch_flush_fn flush;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t work;  /* the batching thread waits here for items */
    bool idle;            /* the batching thread waits on work: a submit wakes it */
    jp_batch_item *head, *tail;
    bool stop;
    pthread_t thread;
};

static void *run(void *arg)
{
    jp_batcher *b = arg;
    jp_batch_item **items = NULL;
    size_t cap = 0;

    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop) {
            b->idle = true;
            pthread_cond_wait(&b->work, &b->mu);
            b->idle = false;
        }
        if (!b->head)
            break;
        jp_batch_item *batch = b->head;
        b->head = b->tail = NULL;
        pthread_mutex_unlock(&b->mu);

        size_t n = 0;
        for (jp_batch_item *it = batch; it; it = it->next)
            n++;
        if (n > cap) {
            cap = n * 2;
            items = jp_xrealloc(items, cap * sizeof *items);
        }
        n = 0;
        for (jp_batch_item *it = batch; it; it = it->next)
            items[n++] = it;
        b->flush(b->arg, items, n);
        /* Posted items go back to their owners here, outside the lock; they
         * may be freed, so the waited-for ones are marked done separately. */
        size_t waited = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i]->on_done)
                items[i]->on_done(items[i]);
            else
                items[waited++] = items[i];
        }

        /* Each submitter waits on its own condition variable, so only those
         * whose items were in this round wake, not those of the next one. */
        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < waited; i++) {
            items[i]->done = true;
            pthread_cond_signal(items[i]->waiter);
        }
    }
    pthread_mutex_unlock(&b->mu);
    free(items);
    return NULL;
}

int jp_batcher_new(jp_batch_flush_fn flush, void *arg, jp_batcher **ret, jp_err *err)
{
    jp_batcher *b = jp_xcalloc(1, sizeof *b);
    b->flush = flush;
    b->arg = arg;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    if (pthread_create(&b->thread, NULL, run, b) != 0) {
        pthread_cond_destroy(&b->work);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return jp_err_set(err, JP_EINTERNAL, "cannot start a batching thread");
    }
    *ret = b;
    return 0;
}

void jp_batcher_free(jp_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static int enqueue(jp_batcher *b, jp_batch_item *it, jp_err *err)
{
    if (b->stop)
        return jp_err_set(err, JP_EUNAVAIL, "shutting down");
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    if (b->idle)
        pthread_cond_signal(&b->work);
    return 0;
}

int jp_batcher_post(jp_batcher *b, jp_batch_item *it, jp_err *err)
{
    it->next = NULL;
    it->done = false;
    it->rc = 0;
    jp_err_clear(&it->err);
    pthread_mutex_lock(&b->mu);
    int rc = enqueue(b, it, err);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int jp_batcher_submit(jp_batcher *b, jp_batch_item *it, jp_err *err)
{
    pthread_cond_t waiter;
    pthread_cond_init(&waiter, NULL);
    it->on_done = NULL;
    it->next = NULL;
    it->done = false;
    it->waiter = &waiter;
    it->rc = 0;
    jp_err_clear(&it->err);
    pthread_mutex_lock(&b->mu);
    if (enqueue(b, it, err) < 0) {
        pthread_mutex_unlock(&b->mu);
        pthread_cond_destroy(&waiter);
        return JP_EUNAVAIL;
    }
    while (!it->done)
        pthread_cond_wait(&waiter, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&waiter);
    if (it->rc < 0 && err)
        *err = it->err;
    return it->rc;
}
