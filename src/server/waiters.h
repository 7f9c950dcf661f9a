/* Requests waiting for a job to end (GET /api/v1/jobs/{id}?wait_ms=N): a
 * registry keyed by job id that the app notifies once a change that leaves
 * a job completed, failed or cancelled is committed. */
#ifndef JP_SERVER_WAITERS_H
#define JP_SERVER_WAITERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct jp_waiters jp_waiters;
typedef struct jp_waiter jp_waiter;

/* Why jp_waiters_wait returned. */
typedef enum {
    JP_WAIT_NOTIFIED,  /* the job was notified (it may have moved on since) */
    JP_WAIT_TIMEOUT,   /* the deadline passed */
    JP_WAIT_CLOSED,    /* the registry is shutting down: answer now */
} jp_wait_result;

/* A registry for at most `max_waiters` waits at once (at least 1). Free with
 * jp_waiters_free. */
jp_waiters *jp_waiters_new(size_t max_waiters);

/* Frees the registry; no waiter may remain (shut down and stop serving
 * first). NULL is fine. */
void jp_waiters_free(jp_waiters *ws);

/* Registers interest in job `id` (a job id string). Register before reading
 * the job, so that a change committed after the read is sure to be seen.
 * Returns the waiter (release it with jp_waiters_remove), or NULL when `ws`
 * is NULL, already holds max_waiters waits, or is shut down: then do not
 * wait. */
jp_waiter *jp_waiters_add(jp_waiters *ws, const char *id);

/* Blocks until `w`'s job is notified, `deadline_ms` (monotonic clock,
 * jp_mono_ms) passes, or the registry shuts down. A notification that came
 * before the call counts (and is consumed by it). */
jp_wait_result jp_waiters_wait(jp_waiters *ws, jp_waiter *w, int64_t deadline_ms);

/* Unregisters and frees `w`. NULL is fine. */
void jp_waiters_remove(jp_waiters *ws, jp_waiter *w);

/* Wakes the waiters of each of the `n` job ids. Cheap when nobody waits;
 * never blocks for long (safe on the group committer's thread). NULL `ws`
 * is fine. */
void jp_waiters_notify(jp_waiters *ws, const char *const *ids, size_t n);

/* Wakes every waiter with JP_WAIT_CLOSED, now and from then on, refuses new
 * waits, and returns once every waiter is removed (its request answered) or
 * `timeout_ms` has passed. Called before the HTTP front stops, which would
 * otherwise wait out each long poll, or cut it off unanswered. Returns how
 * many waiters there were. NULL is fine (0). */
size_t jp_waiters_shutdown(jp_waiters *ws, int64_t timeout_ms);

#endif
