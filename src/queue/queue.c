/* Dispatch from the queue interface to the backend behind a handle. */
#include "queue/queue_impl.h"

#include <string.h>

void jp_qmsgs_done(jp_qmsg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(msgs[i].data);
        msgs[i].data = NULL;
    }
}

void jp_queue_free(jp_queue *q)
{
    if (q)
        q->ops->free(q);
}

int jp_queue_push(jp_queue *q, jp_job *const *jobs, size_t n, jp_err *err)
{
    return n ? q->ops->push(q, jobs, n, err) : 0;
}

int jp_queue_pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                 jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    return q->ops->pop(q, queues, max, timeout_ms, out, ret_n, err);
}

int jp_queue_claim(jp_queue *q, const char *const *queues, size_t max, size_t share,
                   int timeout_ms, jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    *ret_n = 0;
    if (max == 0)
        return 0;
    if (q->ops->claim)
        return q->ops->claim(q, queues, max, share ? share : 1, timeout_ms, out, ret_n, err);
    return q->ops->pop(q, queues, 1, timeout_ms, out, ret_n, err);
}

int jp_queue_ack(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err)
{
    return n ? q->ops->ack(q, msgs, n, err) : 0;
}

void jp_queue_wake(jp_queue *q)
{
    q->ops->wake(q);
}

int jp_queue_stats(jp_queue *q, json_t **ret_stats, jp_err *err)
{
    return q->ops->stats(q, ret_stats, err);
}

const char *jp_queue_backend(const jp_queue *q)
{
    return q->ops->name;
}

int jp_queue_ping(jp_queue *q, jp_err *err)
{
    return q->ops->ping ? q->ops->ping(q, err) : 0;
}

int jp_queue_renew(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err)
{
    return n && q->ops->renew ? q->ops->renew(q, msgs, n, err) : 0;
}

int jp_queue_reclaim(jp_queue *q, const char *const *queues, size_t max, jp_qmsg *out,
                     size_t *ret_n, jp_err *err)
{
    *ret_n = 0;
    return q->ops->reclaim ? q->ops->reclaim(q, queues, max, out, ret_n, err) : 0;
}

int jp_queue_open(const char *url, const jp_queue_options *opts, jp_queue **ret_queue,
                  jp_err *err)
{
    if (strncmp(url, "redis://", 8) == 0)
        return jp_queue_redis_open(url, opts, ret_queue, err);
    if (strcmp(url, "memory:") == 0) {
        *ret_queue = jp_queue_memory_new();
        return 0;
    }
    return jp_err_set(err, JP_EINVAL, "unknown queue URL scheme (want redis://host:port/db)");
}
