/* The in-process queue of embedded mode: per queue name, one FIFO per
 * priority, taken strictly by priority. Nothing here is durable: after a
 * restart the server refills it from the store. */
#include "core/jtime.h"
#include "core/mem.h"
#include "queue/queue_impl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct node {
    struct node *next;
    char job_id[JP_UUID_STR_LEN + 1];
    int attempt;
    json_t *data;        /* owned */
    int64_t enqueued_ms;
} node;

typedef struct fifo {
    node *head, *tail;
    size_t length;       /* waiting */
    size_t pending;      /* delivered, not yet acknowledged */
} fifo;

typedef struct mqueue {
    char name[JP_NAME_MAX + 1];
    fifo prio[JP_PRIO__COUNT];
} mqueue;

typedef struct memq {
    jp_queue base;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled when messages arrive or on wake */
    mqueue *queues;          /* a handful of names in practice: linear search */
    size_t nqueues, capqueues;
    size_t waiting;          /* messages waiting over all queues */
    bool woken;              /* jp_queue_wake was called: pops no longer wait */
} memq;

static mqueue *find_queue(memq *m, const char *name, bool create)
{
    for (size_t i = 0; i < m->nqueues; i++)
        if (strcmp(m->queues[i].name, name) == 0)
            return &m->queues[i];
    if (!create)
        return NULL;
    if (m->nqueues == m->capqueues) {
        m->capqueues = m->capqueues ? m->capqueues * 2 : 8;
        m->queues = jp_xrealloc(m->queues, m->capqueues * sizeof *m->queues);
    }
    mqueue *mq = &m->queues[m->nqueues++];
    memset(mq, 0, sizeof *mq);
    snprintf(mq->name, sizeof mq->name, "%s", name);
    return mq;
}

static int mem_push(jp_queue *q, jp_job *const *jobs, size_t n, jp_err *err)
{
    memq *m = (memq *)q;
    int64_t now = jp_now_ms();
    node **nodes = jp_xmalloc(n * sizeof *nodes);

    /* Build the messages outside the lock: it is the costly part. */
    for (size_t i = 0; i < n; i++) {
        node *nd = jp_xmalloc(sizeof *nd);
        nd->next = NULL;
        memcpy(nd->job_id, jobs[i]->id, sizeof nd->job_id);
        nd->attempt = jobs[i]->attempts + 1;
        nd->data = jp_job_to_message(jobs[i], nd->attempt);
        nd->enqueued_ms = now;
        nodes[i] = nd;
    }
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        int p = jobs[i]->priority;
        if (p < 0 || p >= JP_PRIO__COUNT)
            p = JP_PRIO_NORMAL;
        fifo *f = &find_queue(m, jobs[i]->queue, true)->prio[p];
        if (f->tail)
            f->tail->next = nodes[i];
        else
            f->head = nodes[i];
        f->tail = nodes[i];
        f->length++;
    }
    m->waiting += n;
    if (n == 1)
        pthread_cond_signal(&m->cv);
    else
        pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    free(nodes);
    (void)err;
    return 0;
}

static bool wanted(const char *name, const char *const *queues)
{
    if (!queues)
        return true;
    for (; *queues; queues++)
        if (strcmp(*queues, name) == 0)
            return true;
    return false;
}

/* Takes up to max messages, priority first, then queue order. Locked. */
static size_t take(memq *m, const char *const *queues, size_t max, jp_qmsg *out)
{
    size_t got = 0;
    for (int p = 0; p < JP_PRIO__COUNT && got < max; p++) {
        for (size_t qi = 0; qi < m->nqueues && got < max; qi++) {
            mqueue *mq = &m->queues[qi];
            fifo *f = &mq->prio[p];
            if (!f->head || !wanted(mq->name, queues))
                continue;
            while (f->head && got < max) {
                node *nd = f->head;
                f->head = nd->next;
                if (!f->head)
                    f->tail = NULL;
                f->length--;
                f->pending++;
                m->waiting--;
                jp_qmsg *msg = &out[got++];
                memcpy(msg->job_id, nd->job_id, sizeof msg->job_id);
                msg->attempt = nd->attempt;
                msg->priority = p;
                snprintf(msg->queue, sizeof msg->queue, "%s", mq->name);
                msg->data = nd->data;  /* ownership moves to the message */
                msg->handle[0] = '\0';
                msg->enqueued_ms = nd->enqueued_ms;
                free(nd);
            }
        }
    }
    return got;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int mem_pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                   jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    memq *m = (memq *)q;
    struct timespec deadline;
    size_t got;

    if (timeout_ms > 0)
        deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&m->mu);
    for (;;) {
        got = m->waiting ? take(m, queues, max, out) : 0;
        if (got || timeout_ms == 0 || m->woken)
            break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&m->cv, &m->mu);
        } else if (pthread_cond_timedwait(&m->cv, &m->mu, &deadline) != 0) {
            got = m->waiting ? take(m, queues, max, out) : 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    *ret_n = got;
    (void)err;
    return 0;
}

static int mem_ack(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err)
{
    memq *m = (memq *)q;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        mqueue *mq = find_queue(m, msgs[i].queue, false);
        int p = msgs[i].priority;
        if (mq && p >= 0 && p < JP_PRIO__COUNT && mq->prio[p].pending > 0)
            mq->prio[p].pending--;
    }
    pthread_mutex_unlock(&m->mu);
    (void)err;
    return 0;
}

static void mem_wake(jp_queue *q)
{
    memq *m = (memq *)q;
    pthread_mutex_lock(&m->mu);
    m->woken = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static int mem_stats(jp_queue *q, json_t **ret_stats, jp_err *err)
{
    memq *m = (memq *)q;
    json_t *all = json_object();
    int64_t now = jp_now_ms();

    pthread_mutex_lock(&m->mu);
    for (size_t qi = 0; qi < m->nqueues; qi++) {
        mqueue *mq = &m->queues[qi];
        json_t *per = NULL;
        for (int p = 0; p < JP_PRIO__COUNT; p++) {
            fifo *f = &mq->prio[p];
            if (!f->length && !f->pending)
                continue;
            if (!per)
                per = json_object();
            int64_t age = f->head ? now - f->head->enqueued_ms : 0;
            json_object_set_new(per, jp_priority_name(p),
                                json_pack("{s:I,s:I,s:I}", "length", (json_int_t)f->length,
                                          "pending", (json_int_t)f->pending, "oldest_age_ms",
                                          (json_int_t)(age > 0 ? age : 0)));
        }
        if (per)
            json_object_set_new(all, mq->name, per);
    }
    pthread_mutex_unlock(&m->mu);
    *ret_stats = all;
    (void)err;
    return 0;
}

static void mem_free(jp_queue *q)
{
    memq *m = (memq *)q;
    for (size_t qi = 0; qi < m->nqueues; qi++) {
        for (int p = 0; p < JP_PRIO__COUNT; p++) {
            node *nd = m->queues[qi].prio[p].head;
            while (nd) {
                node *next = nd->next;
                json_decref(nd->data);
                free(nd);
                nd = next;
            }
        }
    }
    free(m->queues);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static const jp_queue_ops memory_ops = {
    .abi = 1,
    .name = "memory",
    .push = mem_push,
    .pop = mem_pop,
    .ack = mem_ack,
    .wake = mem_wake,
    .stats = mem_stats,
    .free = mem_free,
};

jp_queue *jp_queue_memory_new(void)
{
    memq *m = jp_xcalloc(1, sizeof *m);
    pthread_condattr_t ca;
    m->base.ops = &memory_ops;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    return &m->base;
}
