/* Batching of work that many threads submit: one thread takes everything
 * submitted since its last round and hands it to a flush function in one
 * call, then wakes each submitter with its own result. Group commit of
 * store changes and batched status reports are both built on it. */
#ifndef JP_CORE_BATCHER_H
#define JP_CORE_BATCHER_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct jp_batcher jp_batcher;

/* One submission. The submitter owns it (usually on its stack) and fills
 * kind/data/n; the flush function sets rc and err. */
typedef struct jp_batch_item {
    struct jp_batch_item *next;  /* private */
    int kind;                    /* the caller's tag */
    void *data;                  /* the caller's payload */
    size_t n;                    /* the caller's count */
    int rc;                      /* set by flush: 0 or a JP_E* code */
    jp_err err;                  /* set by flush when rc < 0 */
    bool done;                   /* private */
    void *waiter;                /* private: what wakes jp_batcher_submit */
    /* For jp_batcher_post: called on the batching thread after the flush;
     * it owns the item from then on. NULL for jp_batcher_submit. */
    void (*on_done)(struct jp_batch_item *it);
} jp_batch_item;

/* Handles items[0..n) and sets each one's rc (and err). Runs on the
 * batcher's thread, never concurrently with itself. */
typedef void (*jp_batch_flush_fn)(void *arg, jp_batch_item **items, size_t n);

/* Starts the batching thread. */
int jp_batcher_new(jp_batch_flush_fn flush, void *arg, jp_batcher **ret, jp_err *err);
/* Flushes what is pending, stops the thread, frees. NULL is fine. */
void jp_batcher_free(jp_batcher *b);

/* Queues `it` for the next round and waits for it; returns it->rc (and
 * copies it->err to err). JP_EUNAVAIL after jp_batcher_free began. */
int jp_batcher_submit(jp_batcher *b, jp_batch_item *it, jp_err *err);

/* Queues `it` for the next round without waiting: it->on_done (required)
 * gets it back on the batching thread once flushed. `it` must stay valid
 * until then (allocate it). JP_EUNAVAIL after jp_batcher_free began (then
 * on_done is not called). */
int jp_batcher_post(jp_batcher *b, jp_batch_item *it, jp_err *err);

#endif
