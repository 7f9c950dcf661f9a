/* The queue: transport of runnable jobs from the control plane to engines.
 *
 * Backends: "memory" (embedded mode: in-process, one priority FIFO per queue
 * name) and, in distributed mode, Redis Streams. The queue is only transport:
 * the store is the truth, and whatever a queue loses is put back from it.
 * A message carries the job's job_data (core/job.h), so the consumer needs
 * nothing else to run it. Safe to use from many threads. */
#ifndef JP_QUEUE_QUEUE_H
#define JP_QUEUE_QUEUE_H

#include "core/err.h"
#include "core/job.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jp_queue jp_queue;

typedef struct jp_qmsg {
    char job_id[JP_UUID_STR_LEN + 1];
    int attempt;         /* the attempt this delivery is (1-based) */
    int priority;        /* jp_priority */
    char queue[JP_NAME_MAX + 1];
    json_t *data;        /* owned reference: job_data; NULL if the message had none */
    char handle[64];     /* backend's id for ack (stream entry id, …) */
    int64_t enqueued_ms; /* wall-clock time it was put on the queue */
} jp_qmsg;

/* Frees the references held by msgs[0..n) (not the array). */
void jp_qmsgs_done(jp_qmsg *msgs, size_t n);

/* An in-process queue for embedded mode. Never fails. */
jp_queue *jp_queue_memory_new(void);

typedef struct jp_queue_options {
    /* The consumer name for reads (a worker's id); NULL for a producer only. */
    const char *consumer;
    /* How long a delivered message stays this consumer's without a renewal
     * before another consumer may take it over (jp_queue_reclaim). */
    int64_t lease_ms;
    /* Accept a Redis whose maxmemory-policy may evict keys (it can delete
     * queued jobs); refused by default. */
    bool allow_evicting;
    /* Connections kept for concurrent callers (default 4). */
    int pool_size;
} jp_queue_options;

/* Opens the queue at `url`: "redis://host:port[/db]" (Redis Streams, see
 * DESIGN.md §4). Connects and checks the server (JP_EUNAVAIL when it does not
 * answer; JP_EINVAL for a bad URL or an evicting Redis without
 * allow_evicting). Later calls reconnect by themselves after a failure. */
int jp_queue_open(const char *url, const jp_queue_options *opts, jp_queue **ret_queue,
                  jp_err *err);
void jp_queue_free(jp_queue *q);

/* The backend's name: "memory" or "redis". */
const char *jp_queue_backend(const jp_queue *q);

/* Checks that the transport answers: 0 or JP_EUNAVAIL. */
int jp_queue_ping(jp_queue *q, jp_err *err);

/* Puts jobs on the queue as deliveries of attempt jobs[i]->attempts + 1.
 * All or none. */
int jp_queue_push(jp_queue *q, jp_job *const *jobs, size_t n, jp_err *err);

/* Takes up to `max` messages, highest priority first, from the named queues
 * (`queues` NULL-terminated; NULL = every queue). Waits up to timeout_ms
 * (0 = do not wait, -1 = until something arrives or jp_queue_wake) when none
 * is ready. *ret_n may be 0. Messages are written to out[0..*ret_n). */
int jp_queue_pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                 jp_qmsg *out, size_t *ret_n, jp_err *err);

/* Like jp_queue_pop, for consumers that take batches: takes at most a fair
 * share, ceil(waiting / share) of the messages waiting in the named queues
 * (and at most `max`), so that `share` such consumers leave work for each
 * other instead of one taking everything. share 0 counts as 1. A backend
 * without it takes one message at a time. */
int jp_queue_claim(jp_queue *q, const char *const *queues, size_t max, size_t share,
                   int timeout_ms, jp_qmsg *out, size_t *ret_n, jp_err *err);

/* Acknowledges delivered messages: they are done and leave the queue. */
int jp_queue_ack(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err);

/* Renews the lease of messages this consumer is still working on (a
 * heartbeat), so nobody takes them over. */
int jp_queue_renew(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err);

/* Takes over up to `max` messages of the named queues whose lease lapsed
 * (their consumer died or was cut off). Each comes back as a new delivery:
 * msg.attempt is the attempt it was sent as plus the deliveries since. */
int jp_queue_reclaim(jp_queue *q, const char *const *queues, size_t max, jp_qmsg *out,
                     size_t *ret_n, jp_err *err);

/* For shutdown: wakes every thread blocked in jp_queue_pop, and later pops
 * return at once instead of waiting. */
void jp_queue_wake(jp_queue *q);

/* Per queue and priority: {"default": {"high": {"length": n, "pending": n,
 * "oldest_age_ms": n}, …}, …} with only non-empty entries. New reference. */
int jp_queue_stats(jp_queue *q, json_t **ret_stats, jp_err *err);

#endif
