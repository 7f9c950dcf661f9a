/* The in-process queue of embedded mode: per queue name, one FIFO per
 * priority, taken strictly by priority. Nothing here is durable: after a
 * restart the server refills it from the store.
 *
 * A waiting message is kept as the few job fields its job_data needs, in one
 * allocation; the JSON is built when it is taken, by the consumer's thread
 * and outside the lock. A restart pushes every queued job at once, before
 * anything runs, so what a push costs delays the whole restart. */
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
    json_t *payload;     /* owned reference; NULL if none */
    const char *key;     /* in text; NULL if none */
    int timeout_seconds;
    int max_attempts;
    int64_t enqueued_ms;
    char strategy[];     /* then the key, if any: both NUL-terminated */
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

_Static_assert(sizeof ((jp_qmsg *)0)->queue == sizeof ((mqueue *)0)->name,
               "a message carries its queue's whole name");

typedef struct memq {
    jp_queue base;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled when messages arrive or on wake */
    size_t sleepers;         /* threads waiting on cv: whom a push must wake */
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

    /* Allocate outside the lock. */
    for (size_t i = 0; i < n; i++) {
        const jp_job *job = jobs[i];
        const char *strategy = job->strategy ? job->strategy : "";
        size_t slen = strlen(strategy) + 1, klen = job->key ? strlen(job->key) + 1 : 0;
        node *nd = jp_xmalloc(sizeof *nd + slen + klen);
        nd->next = NULL;
        memcpy(nd->job_id, job->id, sizeof nd->job_id);
        nd->attempt = job->attempts + 1;
        nd->payload = job->payload ? json_incref(job->payload) : NULL;
        memcpy(nd->strategy, strategy, slen);
        nd->key = NULL;
        if (klen) {
            memcpy(nd->strategy + slen, job->key, klen);
            nd->key = nd->strategy + slen;
        }
        nd->timeout_seconds = job->timeout_seconds;
        nd->max_attempts = job->max_attempts;
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
    /* Each woken consumer takes at least one message: waking more than n
     * would only have the rest find nothing and sleep again. */
    if (m->sleepers > n)
        for (size_t i = 0; i < n; i++)
            pthread_cond_signal(&m->cv);
    else if (m->sleepers)
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

static void node_free(node *nd)
{
    json_decref(nd->payload);
    free(nd);
}

/* Takes up to max messages, priority first, then queue order, into
 * out[0..n) without their data; their nodes are chained from *ret_nodes in
 * the same order, for finish_take. Locked. */
static size_t take(memq *m, const char *const *queues, size_t max, jp_qmsg *out,
                   node **ret_nodes)
{
    node **link = ret_nodes;
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
                memcpy(msg->queue, mq->name, sizeof msg->queue);
                msg->data = NULL;
                msg->handle[0] = '\0';
                msg->enqueued_ms = nd->enqueued_ms;
                *link = nd;
                link = &nd->next;
            }
        }
    }
    *link = NULL;
    return got;
}

/* Gives taken messages their job_data and frees their nodes. Unlocked. */
static void finish_take(jp_qmsg *out, node *nodes)
{
    for (jp_qmsg *msg = out; nodes; msg++) {
        node *nd = nodes;
        nodes = nd->next;
        jp_job view = {0};
        memcpy(view.id, nd->job_id, sizeof view.id);
        view.queue = msg->queue;
        view.strategy = nd->strategy;
        view.payload = nd->payload;
        view.priority = msg->priority;
        view.key = (char *)nd->key;
        view.timeout_seconds = nd->timeout_seconds;
        view.max_attempts = nd->max_attempts;
        msg->data = jp_job_to_message(&view, nd->attempt);
        node_free(nd);
    }
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

/* How many of the waiting messages a consumer taking a fair share of them
 * may take: ceil(waiting / share), at most max. Locked. */
static size_t share_of(memq *m, const char *const *queues, size_t max, size_t share)
{
    size_t waiting = 0;
    if (!queues) {
        waiting = m->waiting;
    } else {
        for (size_t qi = 0; qi < m->nqueues; qi++)
            if (wanted(m->queues[qi].name, queues))
                for (int p = 0; p < JP_PRIO__COUNT; p++)
                    waiting += m->queues[qi].prio[p].length;
    }
    size_t fair = (waiting + share - 1) / share;
    return fair < max ? fair : max;
}

/* Pop and claim: share 0 takes up to max, else a fair share (share_of). */
static int pop_share(memq *m, const char *const *queues, size_t max, size_t share,
                     int timeout_ms, jp_qmsg *out, size_t *ret_n)
{
    struct timespec deadline;
    node *taken = NULL;
    size_t got = 0;

    if (timeout_ms > 0)
        deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&m->mu);
    for (;;) {
        size_t limit = share ? share_of(m, queues, max, share) : max;
        got = m->waiting && limit ? take(m, queues, limit, out, &taken) : 0;
        if (got || timeout_ms == 0 || m->woken)
            break;
        int rc = 0;
        m->sleepers++;
        if (timeout_ms < 0)
            pthread_cond_wait(&m->cv, &m->mu);
        else
            rc = pthread_cond_timedwait(&m->cv, &m->mu, &deadline);
        m->sleepers--;
        if (rc != 0) {
            limit = share ? share_of(m, queues, max, share) : max;
            got = m->waiting && limit ? take(m, queues, limit, out, &taken) : 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    finish_take(out, taken);
    *ret_n = got;
    return 0;
}

static int mem_pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                   jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    (void)err;
    return pop_share((memq *)q, queues, max, 0, timeout_ms, out, ret_n);
}

static int mem_claim(jp_queue *q, const char *const *queues, size_t max, size_t share,
                     int timeout_ms, jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    (void)err;
    return pop_share((memq *)q, queues, max, share ? share : 1, timeout_ms, out, ret_n);
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
                node_free(nd);
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
    .claim = mem_claim,
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
