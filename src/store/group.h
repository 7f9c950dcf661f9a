/* Group commit: many threads' store changes, one transaction.
 *
 * HTTP handlers and engine threads each submit a change and wait; one
 * committer thread takes everything submitted since its last transaction and
 * writes it in the next one. Under load, a transaction carries many jobs'
 * changes, so throughput is bounded by statements, not by fsyncs.
 *
 * A database that takes several writers at once (jp_store_writers) gets as
 * many committers, and waited submits are spread over them: a change is
 * ordered after another only if it was submitted after the other returned.
 * Async applies all go to one committer and commit in the order posted. */
#ifndef JP_STORE_GROUP_H
#define JP_STORE_GROUP_H

#include "store/store.h"

typedef struct jp_group jp_group;

/* Starts the committer threads over `s` (borrowed; must outlive the group). */
int jp_group_new(jp_store *s, jp_group **ret_group, jp_err *err);
/* Commits what is pending, stops the thread, frees. NULL is fine. */
void jp_group_free(jp_group *g);

/* Applies ops[0..n) in the next transaction and waits for it. Same contract
 * as jp_store_apply. */
int jp_group_apply(jp_group *g, jp_store_op *ops, size_t n, jp_err *err);

/* Called on the committer thread once an async apply is done: ops are the
 * group's copies, with their results (rc < 0 for the whole batch when the
 * transaction failed). The callback must not wait for the group. */
typedef void (*jp_group_done_fn)(void *arg, jp_store_op *ops, size_t n, int rc);

/* Applies ops[0..n) (copied) in the next transaction without waiting, then
 * calls done(arg, …) on the committer thread. Returns JP_EUNAVAIL when the
 * group is shutting down (done is not called). */
int jp_group_apply_async(jp_group *g, const jp_store_op *ops, size_t n, jp_group_done_fn done,
                         void *arg, jp_err *err);

/* Waits until everything submitted before it (async applies included) is
 * committed. */
void jp_group_sync(jp_group *g);

/* Inserts jobs in the next transaction and waits. Same contract as
 * jp_store_create: a conflict fails only this call's jobs. */
int jp_group_create(jp_group *g, jp_job **jobs, size_t n, bool *existed, jp_err *err);

#endif
