/* The backend side of the queue interface: what a backend implements. */
#ifndef JP_QUEUE_IMPL_H
#define JP_QUEUE_IMPL_H

#include "queue/queue.h"

typedef struct jp_queue_ops {
    int abi;           /* 1 */
    const char *name;  /* "memory", "redis" */
    int (*push)(jp_queue *q, jp_job *const *jobs, size_t n, jp_err *err);
    int (*pop)(jp_queue *q, const char *const *queues, size_t max, int timeout_ms, jp_qmsg *out,
               size_t *ret_n, jp_err *err);
    int (*ack)(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err);
    int (*renew)(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err);
    int (*reclaim)(jp_queue *q, const char *const *queues, size_t max, jp_qmsg *out,
                   size_t *ret_n, jp_err *err);
    int (*ping)(jp_queue *q, jp_err *err);
    void (*wake)(jp_queue *q);
    int (*stats)(jp_queue *q, json_t **ret_stats, jp_err *err);
    void (*free)(jp_queue *q);
    /* Optional (NULL: jp_queue_claim takes one message with pop). */
    int (*claim)(jp_queue *q, const char *const *queues, size_t max, size_t share,
                 int timeout_ms, jp_qmsg *out, size_t *ret_n, jp_err *err);
} jp_queue_ops;

/* The Redis Streams backend's constructor (queue/redis.c). */
int jp_queue_redis_open(const char *url, const jp_queue_options *opts, jp_queue **ret_queue,
                        jp_err *err);

/* Every backend's handle starts with this. */
struct jp_queue {
    const jp_queue_ops *ops;
};

#endif
