/* What only the Redis transport has, beyond the queue interface: worker
 * presence hashes, the cancel channel, and the views the control plane's
 * reconciler needs to find what Redis lost. Key names are DESIGN.md §4's
 * and are the API for workers in other languages:
 *   jobplane:{<queue>}:<priority>   stream per queue and priority
 *   jobplane                        the consumer group on every stream
 *   jobplane:cancel                 pub/sub channel of cancelled running jobs
 *   jobplane:worker:<id>            presence hash with a TTL
 * Every function here takes a queue opened by jp_queue_open("redis://…"). */
#ifndef JP_QUEUE_REDIS_H
#define JP_QUEUE_REDIS_H

#include "queue/queue.h"

#include <jansson.h>
#include <stdbool.h>

/* The stream key of a queue and priority, into out (at least 96 bytes). */
void jp_redis_stream_key(const char *queue, int priority, char *out, size_t outlen);

/* Weighted dispatch (a worker option): each pop reads a queue's streams in
 * an order drawn at random with weights 8, 4, 2, 1 (emergency to low), so
 * emergency dominates and low is never starved. Off: strict priority.
 * No effect on other backends. */
void jp_redis_set_weighted(jp_queue *q, bool on);

/* Writes the presence hash jobplane:worker:<id> from the string, number and
 * array members of `fields` (arrays stored comma-joined) and sets its TTL. */
int jp_redis_presence_set(jp_queue *q, const char *worker_id, const json_t *fields, int ttl_s,
                          jp_err *err);
/* Removes the presence hash (a clean worker exit). */
int jp_redis_presence_del(jp_queue *q, const char *worker_id, jp_err *err);
/* Every live worker's presence hash, as an array of objects (SCAN over
 * jobplane:worker:*); the object has "id" plus the hash's fields, with
 * numeric-looking values as numbers and comma lists (queues, strategies)
 * as arrays. New reference. */
int jp_redis_workers(jp_queue *q, json_t **ret_workers, jp_err *err);

/* Publishes a cancelled running job's id on jobplane:cancel. */
int jp_redis_publish_cancel(jp_queue *q, const char *job_id, jp_err *err);

/* A subscription to jobplane:cancel on a thread and connection of its own,
 * which reconnects and resubscribes when Redis goes away. `fn` runs on that
 * thread for every id published. */
typedef struct jp_redis_sub jp_redis_sub;
typedef void (*jp_cancel_fn)(void *arg, const char *job_id);
int jp_redis_cancel_subscribe(const char *url, jp_cancel_fn fn, void *arg, jp_redis_sub **ret,
                              jp_err *err);
void jp_redis_cancel_unsubscribe(jp_redis_sub *s);

/* The job ids that have a message in the stream of `queue` and `priority`,
 * waiting or delivered-but-unacknowledged, as a JSON object used as a set
 * ({id: true}). At most `limit` entries are read; *ret_complete says whether
 * that was all of them. New reference. */
int jp_redis_stream_job_ids(jp_queue *q, const char *queue, int priority, size_t limit,
                            json_t **ret_ids, bool *ret_complete, jp_err *err);

/* An epoch marker the control plane sets in Redis (jobplane:epoch) to notice
 * that Redis lost its data (a restart without persistence, a FLUSHALL):
 * jp_redis_epoch_check returns 1 when the marker it set is gone (and sets it
 * again), 0 when it is there. */
int jp_redis_epoch_check(jp_queue *q, jp_err *err);

#endif
