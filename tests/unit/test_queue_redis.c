/* Tests of the Redis Streams queue against a real redis-server (started by
 * tests/integration/services.py, which exports JOBPLANE_TEST_REDIS_URL):
 * key names and message fields, priority order, blocking, leases, renewal,
 * takeover, garbage, data loss, stats, presence, cancel channel, epoch. */
#include "core/jtime.h"
#include "core/mem.h"
#include "queue/queue.h"
#include "queue/redis.h"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static const char *url;
static char host[64];
static int port;

/* A plain connection for looking behind the queue's back. */
static redisContext *raw(void)
{
    redisContext *c = redisConnect(host, port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static long long cmd_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void cmd_ok(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

/* Every test starts from an empty, non-evicting Redis. */
static int clean(void **state)
{
    (void)state;
    redisContext *c = raw();
    cmd_ok(c, "FLUSHALL");
    cmd_ok(c, "CONFIG SET maxmemory-policy noeviction");
    cmd_ok(c, "CONFIG SET requirepass %s", "");
    redisFree(c);
    return 0;
}

static jp_queue *open_q(const char *consumer, int64_t lease_ms)
{
    jp_queue_options o = {.consumer = consumer, .lease_ms = lease_ms};
    jp_queue *q = NULL;
    jp_err e = {0};
    int rc = jp_queue_open(url, &o, &q, &e);
    if (rc != 0)
        fail_msg("open: %s", e.msg);
    return q;
}

static jp_job *make_job(const char *queue, int prio)
{
    jp_job *j = jp_job_new();
    jp_uuid7(j->id);
    j->queue = jp_xstrdup(queue);
    j->strategy = jp_xstrdup("noop");
    j->priority = prio;
    j->max_attempts = 3;
    j->timeout_seconds = 10;
    j->status = JP_ST_QUEUED;
    return j;
}

static void free_jobs(jp_job **jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        jp_job_free(jobs[i]);
}

static void push_one(jp_queue *q, jp_job *j)
{
    jp_err e = {0};
    if (jp_queue_push(q, &j, 1, &e) != 0)
        fail_msg("push: %s", e.msg);
}

static size_t pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                  jp_qmsg *out)
{
    size_t n = 99999;
    jp_err e = {0};
    if (jp_queue_pop(q, queues, max, timeout_ms, out, &n, &e) != 0)
        fail_msg("pop: %s", e.msg);
    assert_true(n <= max);
    return n;
}

static size_t reclaim(jp_queue *q, const char *const *queues, size_t max, jp_qmsg *out)
{
    size_t n = 99999;
    jp_err e = {0};
    if (jp_queue_reclaim(q, queues, max, out, &n, &e) != 0)
        fail_msg("reclaim: %s", e.msg);
    assert_true(n <= max);
    return n;
}

static void ack(jp_queue *q, jp_qmsg *m, size_t n)
{
    jp_err e = {0};
    if (jp_queue_ack(q, m, n, &e) != 0)
        fail_msg("ack: %s", e.msg);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *const Q_DEFAULT[] = {"default", NULL};

static void test_open_and_ping(void **state)
{
    (void)state;
    jp_queue *q = open_q(NULL, 0);
    assert_string_equal(jp_queue_backend(q), "redis");
    assert_int_equal(jp_queue_ping(q, NULL), 0);
    jp_queue_free(q);
}

static void test_open_refuses_bad_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {"redis://", "redis://h:99999", "redis://h:1/x",
                                      "redis://h:1/0/extra", "redis://h:abc", "redis://:%zz@h"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        jp_queue *q = NULL;
        jp_err e = {0};
        assert_int_equal(jp_queue_open(bad[i], NULL, &q, &e), JP_EINVAL);
        assert_null(q);
    }
}

static void test_refuses_an_evicting_redis(void **state)
{
    (void)state;
    redisContext *c = raw();
    jp_queue *q = NULL;
    jp_err e = {0};
    cmd_ok(c, "CONFIG SET maxmemory-policy allkeys-lru");
    assert_int_equal(jp_queue_open(url, NULL, &q, &e), JP_EINVAL);
    assert_null(q);
    assert_non_null(strstr(e.msg, "allkeys-lru"));
    assert_non_null(strstr(e.msg, "--allow-evicting-redis"));

    jp_queue_options o = {.allow_evicting = true};
    assert_int_equal(jp_queue_open(url, &o, &q, &e), 0);
    jp_queue_free(q);
    cmd_ok(c, "CONFIG SET maxmemory-policy noeviction");
    q = open_q(NULL, 0);
    jp_queue_free(q);
    redisFree(c);
}

static void test_password_and_database_from_url(void **state)
{
    (void)state;
    redisContext *c = raw();
    char u[256];
    jp_queue *q = NULL;
    jp_err e = {0};

    cmd_ok(c, "CONFIG SET requirepass %s", "s3cr%t");
    snprintf(u, sizeof u, "redis://:s3cr%%25t@%s:%d/3", host, port);
    assert_int_equal(jp_queue_open(u, NULL, &q, &e), 0);
    jp_job *j = make_job("dbq", JP_PRIO_NORMAL);
    push_one(q, j);
    jp_queue_free(q);
    q = NULL;
    snprintf(u, sizeof u, "redis://%s:%d/3", host, port);
    assert_int_equal(jp_queue_open(u, NULL, &q, &e), JP_EINVAL);
    assert_null(q);

    cmd_ok(c, "SELECT 3");
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{dbq}:normal"), 1);
    cmd_ok(c, "SELECT 0");
    assert_int_equal(cmd_int(c, "EXISTS %s", "jobplane:{dbq}:normal"), 0);
    cmd_ok(c, "CONFIG SET requirepass %s", "");
    jp_job_free(j);
    redisFree(c);
}

static void test_pop_takes_priorities_strictly_in_one_pop(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *low = make_job("default", JP_PRIO_LOW), *normal = make_job("default", JP_PRIO_NORMAL);
    jp_job *high = make_job("default", JP_PRIO_HIGH);
    jp_job *emerg = make_job("default", JP_PRIO_EMERGENCY);
    push_one(q, low);
    push_one(q, normal);
    push_one(q, high);
    push_one(q, emerg);

    jp_qmsg m[8];
    size_t n = pop(q, Q_DEFAULT, 8, 0, m);
    assert_int_equal(n, 4);
    assert_string_equal(m[0].job_id, emerg->id);
    assert_string_equal(m[1].job_id, high->id);
    assert_string_equal(m[2].job_id, normal->id);
    assert_string_equal(m[3].job_id, low->id);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(m[i].priority, i);
        assert_string_equal(m[i].queue, "default");
        assert_int_equal(m[i].attempt, 1);
        assert_non_null(m[i].data);
        assert_string_equal(json_string_value(json_object_get(m[i].data, "id")), m[i].job_id);
        assert_true(m[i].handle[0] != '\0');
        assert_true(m[i].enqueued_ms > jp_now_ms() - 60000);
    }
    jp_qmsgs_done(m, n);
    jp_job_free(low);
    jp_job_free(normal);
    jp_job_free(high);
    jp_job_free(emerg);
    jp_queue_free(q);
}

static void test_fifo_within_a_priority_and_count_honoured(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *jobs[10];
    for (int i = 0; i < 10; i++) {
        jobs[i] = make_job("default", JP_PRIO_NORMAL);
        jobs[i]->attempts = i;
    }
    assert_int_equal(jp_queue_push(q, jobs, 10, NULL), 0);
    jp_qmsg m[3];
    size_t n, seen = 0;
    static const size_t expect[] = {3, 3, 3, 1, 0};
    for (int round = 0; round < 5; round++) {
        n = pop(q, Q_DEFAULT, 3, 0, m);
        assert_int_equal(n, expect[round]);
        for (size_t i = 0; i < n; i++, seen++) {
            assert_string_equal(m[i].job_id, jobs[seen]->id);
            assert_int_equal(m[i].attempt, jobs[seen]->attempts + 1);
        }
        jp_qmsgs_done(m, n);
    }
    assert_int_equal(seen, 10);
    free_jobs(jobs, 10);
    jp_queue_free(q);
}

static void test_pop_reads_several_queues_in_the_order_named(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *a = make_job("qa", JP_PRIO_LOW), *b = make_job("qb", JP_PRIO_EMERGENCY);
    jp_job *c = make_job("qc", JP_PRIO_HIGH);
    push_one(q, a);
    push_one(q, b);
    push_one(q, c);
    static const char *const names[] = {"qa", "qb", NULL};
    jp_qmsg m[8];
    size_t n = pop(q, names, 8, 0, m);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].job_id, a->id);
    assert_string_equal(m[0].queue, "qa");
    assert_string_equal(m[1].job_id, b->id);
    assert_string_equal(m[1].queue, "qb");
    jp_qmsgs_done(m, n);
    /* A queue not named is left alone. */
    static const char *const qc[] = {"qc", NULL};
    n = pop(q, qc, 8, 0, m);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].job_id, c->id);
    jp_qmsgs_done(m, n);
    jp_job_free(a);
    jp_job_free(b);
    jp_job_free(c);
    jp_queue_free(q);
}

static void test_pop_needs_a_consumer_and_queue_names(void **state)
{
    (void)state;
    jp_queue *producer = open_q(NULL, 0), *consumer = open_q("w1", 0);
    jp_qmsg m[1];
    size_t n;
    static const char *const bad[] = {"Not Valid", NULL};
    assert_int_equal(jp_queue_pop(producer, Q_DEFAULT, 1, 0, m, &n, NULL), JP_EINVAL);
    assert_int_equal(jp_queue_pop(consumer, NULL, 1, 0, m, &n, NULL), JP_EINVAL);
    assert_int_equal(jp_queue_pop(consumer, bad, 1, 0, m, &n, NULL), JP_EINVAL);
    assert_int_equal(jp_queue_reclaim(producer, Q_DEFAULT, 1, m, &n, NULL), JP_EINVAL);
    jp_queue_free(producer);
    jp_queue_free(consumer);
}

/* The wire format is the API for workers in other languages. */
static void test_key_names_and_message_fields(void **state)
{
    (void)state;
    jp_queue *q = open_q(NULL, 0);
    jp_job *j = make_job("fields", JP_PRIO_HIGH);
    j->attempts = 2;
    j->key = jp_xstrdup("example.com");
    json_decref(j->payload);
    j->payload = json_pack("{s:s}", "url", "https://example.com/");
    push_one(q, j);

    redisContext *c = raw();
    redisReply *r = cmd(c, "XRANGE %s - +", "jobplane:{fields}:high");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    redisReply *f = r->element[0]->element[1];
    assert_int_equal(f->elements, 6);
    assert_string_equal(f->element[0]->str, "job_id");
    assert_string_equal(f->element[1]->str, j->id);
    assert_string_equal(f->element[2]->str, "attempt");
    assert_string_equal(f->element[3]->str, "3");
    assert_string_equal(f->element[4]->str, "job_data");
    json_t *data = json_loads(f->element[5]->str, 0, NULL);
    assert_non_null(data);
    json_t *want = jp_job_to_message(j, 3);
    assert_true(json_equal(data, want));
    assert_int_equal(json_integer_value(json_object_get(data, "attempt")), 3);
    assert_string_equal(json_string_value(json_object_get(data, "key")), "example.com");
    json_decref(want);
    json_decref(data);
    freeReplyObject(r);

    /* The group exists on every stream of the queue. */
    static const char *const prios[] = {"emergency", "high", "normal", "low"};
    for (int p = 0; p < 4; p++) {
        char key[96];
        jp_redis_stream_key("fields", p, key, sizeof key);
        char expect[96];
        snprintf(expect, sizeof expect, "jobplane:{fields}:%s", prios[p]);
        assert_string_equal(key, expect);
        r = cmd(c, "XINFO GROUPS %s", key);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 1);
        assert_string_equal(r->element[0]->element[1]->str, "jobplane");
        freeReplyObject(r);
    }
    redisFree(c);
    jp_job_free(j);
    jp_queue_free(q);
}

typedef struct pusher {
    jp_queue *q;
    jp_job *job;
    int delay_ms;
} pusher;

static void *push_later(void *arg)
{
    pusher *p = arg;
    sleep_ms(p->delay_ms);
    jp_queue_push(p->q, &p->job, 1, NULL);
    return NULL;
}

static void test_pop_blocks_until_a_push(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_qmsg m[4];
    assert_int_equal(pop(q, Q_DEFAULT, 4, 0, m), 0);  /* creates the streams */
    pusher p = {.q = q, .job = make_job("default", JP_PRIO_LOW), .delay_ms = 200};
    pthread_t t;
    pthread_create(&t, NULL, push_later, &p);
    int64_t t0 = jp_mono_ms();
    size_t n = pop(q, Q_DEFAULT, 4, 5000, m);
    int64_t took = jp_mono_ms() - t0;
    pthread_join(t, NULL);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].job_id, p.job->id);
    assert_true(took >= 150);
    assert_true(took < 2000);
    jp_qmsgs_done(m, n);
    jp_job_free(p.job);
    jp_queue_free(q);
}

static void test_pop_blocking_forever_wakes_on_push(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    static const char *const names[] = {"b1", "b2", NULL};
    pusher p = {.q = q, .job = make_job("b2", JP_PRIO_HIGH), .delay_ms = 1300};
    pthread_t t;
    pthread_create(&t, NULL, push_later, &p);
    jp_qmsg m[4];
    int64_t t0 = jp_mono_ms();
    size_t n = pop(q, names, 4, -1, m);
    int64_t took = jp_mono_ms() - t0;
    pthread_join(t, NULL);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].job_id, p.job->id);
    assert_string_equal(m[0].queue, "b2");
    assert_true(took >= 1200 && took < 2500);  /* across a slice boundary */
    jp_qmsgs_done(m, n);
    jp_job_free(p.job);
    jp_queue_free(q);
}

static void test_pop_times_out(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_qmsg m[4];
    int64_t t0 = jp_mono_ms();
    assert_int_equal(pop(q, Q_DEFAULT, 4, 300, m), 0);
    int64_t took = jp_mono_ms() - t0;
    assert_true(took >= 280);
    assert_true(took < 1500);
    jp_queue_free(q);
}

typedef struct popper {
    jp_queue *q;
    size_t n;
    int rc;
    int64_t took;
} popper;

static void *pop_forever(void *arg)
{
    popper *p = arg;
    jp_qmsg m[4];
    int64_t t0 = jp_mono_ms();
    p->rc = jp_queue_pop(p->q, Q_DEFAULT, 4, -1, m, &p->n, NULL);
    p->took = jp_mono_ms() - t0;
    if (p->rc == 0)
        jp_qmsgs_done(m, p->n);
    return NULL;
}

static void test_wake_releases_blocked_pops(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    popper p = {.q = q, .n = 99};
    pthread_t t;
    pthread_create(&t, NULL, pop_forever, &p);
    sleep_ms(150);
    jp_queue_wake(q);
    pthread_join(t, NULL);
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, 0);
    assert_true(p.took < 2000);
    /* Later pops return at once, yet still take what is there. */
    jp_qmsg m[4];
    int64_t t0 = jp_mono_ms();
    assert_int_equal(pop(q, Q_DEFAULT, 4, -1, m), 0);
    assert_true(jp_mono_ms() - t0 < 500);
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    push_one(q, j);
    assert_int_equal(pop(q, Q_DEFAULT, 4, -1, m), 1);
    jp_qmsgs_done(m, 1);
    jp_job_free(j);
    jp_queue_free(q);
}

static long long pending_count(redisContext *c, const char *key)
{
    redisReply *r = cmd(c, "XPENDING %s jobplane", key);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    long long n = r->element[0]->integer;
    freeReplyObject(r);
    return n;
}

static void test_ack_removes_the_entry_and_its_pending_record(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *jobs[3] = {make_job("default", JP_PRIO_NORMAL), make_job("default", JP_PRIO_NORMAL),
                       make_job("default", JP_PRIO_LOW)};
    assert_int_equal(jp_queue_push(q, jobs, 3, NULL), 0);
    jp_qmsg m[3];
    assert_int_equal(pop(q, Q_DEFAULT, 3, 0, m), 3);
    redisContext *c = raw();
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{default}:normal"), 2);
    assert_int_equal(pending_count(c, "jobplane:{default}:normal"), 2);
    assert_int_equal(pending_count(c, "jobplane:{default}:low"), 1);

    ack(q, m, 1);                    /* one of normal */
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{default}:normal"), 1);
    assert_int_equal(pending_count(c, "jobplane:{default}:normal"), 1);
    ack(q, m + 1, 2);                /* normal and low in one call */
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{default}:normal"), 0);
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{default}:low"), 0);
    assert_int_equal(pending_count(c, "jobplane:{default}:normal"), 0);
    assert_int_equal(pending_count(c, "jobplane:{default}:low"), 0);
    ack(q, m, 3);                    /* again: harmless */
    jp_qmsgs_done(m, 3);
    redisFree(c);
    free_jobs(jobs, 3);
    jp_queue_free(q);
}

static void test_unacked_messages_stay_with_their_consumer_until_the_lease(void **state)
{
    (void)state;
    jp_queue *a = open_q("wa", 0), *b = open_q("wb", 10000);
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    push_one(a, j);
    jp_qmsg m[4];
    assert_int_equal(pop(a, Q_DEFAULT, 4, 0, m), 1);
    jp_qmsgs_done(m, 1);
    assert_int_equal(pop(b, Q_DEFAULT, 4, 0, m), 0);
    assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 0);
    jp_job_free(j);
    jp_queue_free(a);
    jp_queue_free(b);
}

static void test_reclaim_after_the_lease_counts_an_attempt(void **state)
{
    (void)state;
    jp_queue *a = open_q("wa", 200), *b = open_q("wb", 200);
    jp_job *j = make_job("default", JP_PRIO_HIGH);
    j->attempts = 1;                 /* delivered as attempt 2 */
    push_one(a, j);
    jp_qmsg m[4];
    assert_int_equal(pop(a, Q_DEFAULT, 4, 0, m), 1);
    assert_int_equal(m[0].attempt, 2);
    jp_qmsgs_done(m, 1);
    assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 0);  /* lease not over */

    sleep_ms(300);
    assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 1);
    assert_string_equal(m[0].job_id, j->id);
    assert_int_equal(m[0].attempt, 3);
    assert_int_equal(m[0].priority, JP_PRIO_HIGH);
    assert_string_equal(m[0].queue, "default");
    assert_non_null(m[0].data);
    jp_qmsgs_done(m, 1);
    assert_int_equal(reclaim(a, Q_DEFAULT, 4, m), 0);  /* b's lease is fresh */

    sleep_ms(300);
    assert_int_equal(reclaim(a, Q_DEFAULT, 4, m), 1);
    assert_int_equal(m[0].attempt, 4);
    ack(a, m, 1);
    jp_qmsgs_done(m, 1);
    sleep_ms(300);
    assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 0);  /* acknowledged: gone */
    jp_job_free(j);
    jp_queue_free(a);
    jp_queue_free(b);
}

static void test_renew_keeps_a_message_from_being_reclaimed(void **state)
{
    (void)state;
    jp_queue *a = open_q("wa", 300), *b = open_q("wb", 300);
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    push_one(a, j);
    jp_qmsg mine[1], m[4];
    assert_int_equal(pop(a, Q_DEFAULT, 1, 0, mine), 1);
    int64_t end = jp_mono_ms() + 1000;
    while (jp_mono_ms() < end) {
        assert_int_equal(jp_queue_renew(a, mine, 1, NULL), 0);
        assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 0);
        sleep_ms(100);
    }
    /* Without renewals the lease lapses. */
    sleep_ms(400);
    assert_int_equal(reclaim(b, Q_DEFAULT, 4, m), 1);
    assert_string_equal(m[0].job_id, j->id);
    assert_int_equal(m[0].attempt, 2);  /* renewals are not deliveries */
    ack(b, m, 1);
    jp_qmsgs_done(m, 1);
    /* Renewing what is no longer pending is no error. */
    assert_int_equal(jp_queue_renew(a, mine, 1, NULL), 0);
    jp_qmsgs_done(mine, 1);
    jp_job_free(j);
    jp_queue_free(a);
    jp_queue_free(b);
}

static void test_garbage_messages_come_back_without_data(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    static const char *const junk[] = {"junk", NULL};
    jp_qmsg m[8];
    assert_int_equal(pop(q, junk, 8, 0, m), 0);  /* creates the group */
    redisContext *c = raw();
    const char *key = "jobplane:{junk}:normal";
    const char *id = "0193a000-0000-7000-8000-000000000001";
    cmd_ok(c, "XADD %s * job_id %s attempt 1", key, id);
    cmd_ok(c, "XADD %s * job_id %s attempt 2 job_data %s", key, id, "not json");
    cmd_ok(c, "XADD %s * job_id %s attempt x job_data %s", key, id, "{\"id\":1}");
    cmd_ok(c, "XADD %s * x y", key);
    cmd_ok(c, "XADD %s * job_data %s", key, "[1,2]");
    size_t n = pop(q, junk, 8, 0, m);
    assert_int_equal(n, 5);
    assert_string_equal(m[0].job_id, id);
    assert_int_equal(m[0].attempt, 1);
    assert_null(m[0].data);
    assert_int_equal(m[1].attempt, 2);
    assert_null(m[1].data);
    assert_int_equal(m[2].attempt, 0);
    assert_non_null(m[2].data);
    assert_string_equal(m[3].job_id, "");
    assert_int_equal(m[3].attempt, 0);
    assert_null(m[3].data);
    assert_null(m[4].data);  /* JSON, but not a job object */
    for (size_t i = 0; i < n; i++)
        assert_true(m[i].handle[0] != '\0');
    ack(q, m, n);
    jp_qmsgs_done(m, n);
    assert_int_equal(cmd_int(c, "XLEN %s", key), 0);

    jp_job *j = make_job("junk", JP_PRIO_NORMAL);
    push_one(q, j);
    assert_int_equal(pop(q, junk, 8, 0, m), 1);
    assert_string_equal(m[0].job_id, j->id);
    assert_non_null(m[0].data);
    jp_qmsgs_done(m, 1);
    jp_job_free(j);
    redisFree(c);
    jp_queue_free(q);
}

static void test_reclaim_drops_an_entry_deleted_after_delivery(void **state)
{
    (void)state;
    jp_queue *a = open_q("wa", 100), *b = open_q("wb", 100);
    jp_job *j = make_job("default", JP_PRIO_NORMAL), *k = make_job("default", JP_PRIO_NORMAL);
    push_one(a, j);
    push_one(a, k);
    jp_qmsg m[4];
    assert_int_equal(pop(a, Q_DEFAULT, 4, 0, m), 2);
    redisContext *c = raw();
    assert_int_equal(cmd_int(c, "XDEL %s %s", "jobplane:{default}:normal", m[0].handle), 1);
    jp_qmsgs_done(m, 2);
    sleep_ms(200);
    size_t n = reclaim(b, Q_DEFAULT, 4, m);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].job_id, k->id);
    assert_int_equal(m[0].attempt, 2);
    jp_qmsgs_done(m, n);
    /* Only the surviving entry is still pending. */
    assert_int_equal(pending_count(c, "jobplane:{default}:normal"), 1);
    redisFree(c);
    jp_job_free(j);
    jp_job_free(k);
    jp_queue_free(a);
    jp_queue_free(b);
}

static void test_data_loss_recreates_the_group(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 100);
    redisContext *c = raw();
    jp_job *j1 = make_job("default", JP_PRIO_NORMAL), *j2 = make_job("default", JP_PRIO_NORMAL);
    jp_job *j3 = make_job("default", JP_PRIO_HIGH);
    jp_qmsg m[4];

    push_one(q, j1);
    cmd_ok(c, "FLUSHALL");
    assert_int_equal(pop(q, Q_DEFAULT, 4, 0, m), 0);  /* lost: the store puts it back */
    push_one(q, j2);
    assert_int_equal(pop(q, Q_DEFAULT, 4, 0, m), 1);
    assert_string_equal(m[0].job_id, j2->id);
    jp_qmsgs_done(m, 1);

    /* Lost again; this time a push recreates the stream without a group. */
    cmd_ok(c, "FLUSHALL");
    push_one(q, j3);
    assert_int_equal(reclaim(q, Q_DEFAULT, 4, m), 0);
    assert_int_equal(pop(q, Q_DEFAULT, 4, 0, m), 1);
    assert_string_equal(m[0].job_id, j3->id);
    jp_qmsgs_done(m, 1);
    cmd_ok(c, "FLUSHALL");
    assert_int_equal(reclaim(q, Q_DEFAULT, 4, m), 0);
    redisFree(c);
    jp_job_free(j1);
    jp_job_free(j2);
    jp_job_free(j3);
    jp_queue_free(q);
}

static void test_connections_come_back_after_being_cut(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    jp_qmsg m[4];
    push_one(q, j);
    redisContext *c = raw();
    assert_true(cmd_int(c, "CLIENT KILL TYPE normal") >= 1);
    assert_int_equal(jp_queue_ping(q, NULL), 0);
    /* The first use of a cut connection may fail; the next one reconnects. */
    size_t n = 0;
    jp_err e = {0};
    int rc = jp_queue_pop(q, Q_DEFAULT, 4, 0, m, &n, &e);
    if (rc != 0) {
        assert_int_equal(rc, JP_EUNAVAIL);
        assert_non_null(strstr(e.msg, "redis "));
        rc = jp_queue_pop(q, Q_DEFAULT, 4, 0, m, &n, &e);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 1);
    jp_qmsgs_done(m, n);
    redisFree(c);
    jp_job_free(j);
    jp_queue_free(q);
}

static void test_stats_report_length_pending_and_age(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *jobs[5] = {make_job("st", JP_PRIO_NORMAL), make_job("st", JP_PRIO_NORMAL),
                       make_job("st", JP_PRIO_NORMAL), make_job("st", JP_PRIO_HIGH),
                       make_job("st", JP_PRIO_HIGH)};
    static const char *const st[] = {"st", NULL}, *const other[] = {"empty", NULL};
    jp_qmsg m[4];
    json_t *s = NULL;

    assert_int_equal(jp_queue_stats(q, &s, NULL), 0);
    assert_int_equal(json_object_size(s), 0);
    json_decref(s);

    assert_int_equal(jp_queue_push(q, jobs, 5, NULL), 0);
    assert_int_equal(pop(q, other, 4, 0, m), 0);     /* empty streams are not listed */
    assert_int_equal(pop(q, st, 1, 0, m), 1);        /* the first high */
    sleep_ms(60);
    assert_int_equal(jp_queue_stats(q, &s, NULL), 0);
    assert_int_equal(json_object_size(s), 1);
    json_t *per = json_object_get(s, "st");
    assert_int_equal(json_object_size(per), 2);
    json_t *high = json_object_get(per, "high"), *normal = json_object_get(per, "normal");
    assert_int_equal(json_integer_value(json_object_get(high, "length")), 1);
    assert_int_equal(json_integer_value(json_object_get(high, "pending")), 1);
    assert_true(json_integer_value(json_object_get(high, "oldest_age_ms")) >= 50);
    assert_int_equal(json_integer_value(json_object_get(normal, "length")), 3);
    assert_int_equal(json_integer_value(json_object_get(normal, "pending")), 0);
    assert_true(json_integer_value(json_object_get(normal, "oldest_age_ms")) >= 50);
    assert_true(json_integer_value(json_object_get(normal, "oldest_age_ms")) < 10000);
    json_decref(s);

    /* Only delivered, none waiting: age 0. */
    ack(q, m, 1);
    jp_qmsgs_done(m, 1);
    assert_int_equal(pop(q, st, 4, 0, m), 4);
    ack(q, m, 3);
    assert_int_equal(jp_queue_stats(q, &s, NULL), 0);
    per = json_object_get(s, "st");
    assert_null(json_object_get(per, "high"));
    normal = json_object_get(per, "normal");
    assert_int_equal(json_integer_value(json_object_get(normal, "length")), 0);
    assert_int_equal(json_integer_value(json_object_get(normal, "pending")), 1);
    assert_int_equal(json_integer_value(json_object_get(normal, "oldest_age_ms")), 0);
    json_decref(s);
    jp_qmsgs_done(m, 4);
    free_jobs(jobs, 5);
    jp_queue_free(q);
}

static void test_presence_set_list_and_delete(void **state)
{
    (void)state;
    jp_queue *q = open_q(NULL, 0);
    json_t *f = json_pack("{s:s,s:i,s:i,s:[s,s],s:[s],s:s}", "host", "box-1", "concurrency", 8,
                          "in_flight", 0, "queues", "default", "mail", "strategies", "noop",
                          "last_heartbeat", "2026-11-26T10:00:00.000Z");
    json_t *w = NULL;
    assert_int_equal(jp_redis_presence_set(q, "w1", f, 30, NULL), 0);
    assert_int_equal(jp_redis_presence_set(q, "a0", f, 30, NULL), 0);

    redisContext *c = raw();
    long long ttl = cmd_int(c, "PTTL %s", "jobplane:worker:w1");
    assert_true(ttl > 0 && ttl <= 30000);
    redisReply *r = cmd(c, "HGET %s queues", "jobplane:worker:w1");
    assert_string_equal(r->str, "default,mail");
    freeReplyObject(r);

    assert_int_equal(jp_redis_workers(q, &w, NULL), 0);
    assert_int_equal(json_array_size(w), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(w, 0), "id")), "a0");
    json_t *w1 = json_array_get(w, 1);
    assert_string_equal(json_string_value(json_object_get(w1, "id")), "w1");
    assert_string_equal(json_string_value(json_object_get(w1, "host")), "box-1");
    assert_true(json_is_integer(json_object_get(w1, "concurrency")));
    assert_int_equal(json_integer_value(json_object_get(w1, "concurrency")), 8);
    assert_int_equal(json_integer_value(json_object_get(w1, "in_flight")), 0);
    json_t *qs = json_object_get(w1, "queues");
    assert_int_equal(json_array_size(qs), 2);
    assert_string_equal(json_string_value(json_array_get(qs, 1)), "mail");
    assert_int_equal(json_array_size(json_object_get(w1, "strategies")), 1);
    assert_string_equal(json_string_value(json_object_get(w1, "last_heartbeat")),
                        "2026-11-26T10:00:00.000Z");
    json_decref(w);

    assert_int_equal(jp_redis_presence_del(q, "w1", NULL), 0);
    assert_int_equal(cmd_int(c, "EXISTS %s", "jobplane:worker:w1"), 0);
    assert_int_equal(jp_redis_workers(q, &w, NULL), 0);
    assert_int_equal(json_array_size(w), 1);
    json_decref(w);
    assert_int_equal(jp_redis_presence_set(q, "", f, 30, NULL), JP_EINVAL);
    json_decref(f);
    redisFree(c);
    jp_queue_free(q);
}

typedef struct got_cancel {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char id[128];
    int count;
} got_cancel;

static void on_cancel(void *arg, const char *job_id)
{
    got_cancel *g = arg;
    pthread_mutex_lock(&g->mu);
    snprintf(g->id, sizeof g->id, "%s", job_id);
    g->count++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int wait_cancels(got_cancel *g, int want, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    while (g->count < want && pthread_cond_timedwait(&g->cv, &g->mu, &ts) == 0)
        ;
    int n = g->count;
    pthread_mutex_unlock(&g->mu);
    return n;
}

static void test_cancel_is_published_to_subscribers(void **state)
{
    (void)state;
    got_cancel g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    jp_redis_sub *s = NULL;
    jp_queue *q = open_q(NULL, 0);
    assert_int_equal(jp_redis_cancel_subscribe(url, on_cancel, &g, &s, NULL), 0);
    assert_int_equal(jp_redis_publish_cancel(q, "0193a000-0000-7000-8000-0000000000aa", NULL), 0);
    assert_int_equal(wait_cancels(&g, 1, 3000), 1);
    assert_string_equal(g.id, "0193a000-0000-7000-8000-0000000000aa");

    /* The subscriber comes back after its connection is cut. */
    redisContext *c = raw();
    cmd_int(c, "CLIENT KILL TYPE pubsub");
    int64_t end = jp_mono_ms() + 3000;
    for (;;) {
        redisReply *r = cmd(c, "PUBSUB NUMSUB jobplane:cancel");
        long long subs = r->element[1]->integer;
        freeReplyObject(r);
        if (subs == 1 || jp_mono_ms() > end)
            break;
        sleep_ms(20);
    }
    assert_int_equal(jp_redis_publish_cancel(q, "second", NULL), 0);
    assert_int_equal(wait_cancels(&g, 2, 3000), 2);
    assert_string_equal(g.id, "second");
    int64_t t0 = jp_mono_ms();
    jp_redis_cancel_unsubscribe(s);
    assert_true(jp_mono_ms() - t0 < 500);
    redisFree(c);
    jp_queue_free(q);
}

static int job_ids(jp_queue *q, int prio, size_t limit, json_t **ids, bool *complete)
{
    return jp_redis_stream_job_ids(q, "ids", prio, limit, ids, complete, NULL);
}

static void test_stream_job_ids_include_delivered_unacked(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    jp_job *jobs[5];
    for (int i = 0; i < 5; i++)
        jobs[i] = make_job("ids", JP_PRIO_NORMAL);
    assert_int_equal(jp_queue_push(q, jobs, 5, NULL), 0);
    static const char *const ids_q[] = {"ids", NULL};
    jp_qmsg m[2];
    assert_int_equal(pop(q, ids_q, 2, 0, m), 2);
    ack(q, m, 1);                    /* jobs[0] leaves; jobs[1] stays delivered */
    jp_qmsgs_done(m, 2);

    json_t *ids = NULL;
    bool complete = false;
    assert_int_equal(job_ids(q, JP_PRIO_NORMAL, 100, &ids, &complete), 0);
    assert_true(complete);
    assert_int_equal(json_object_size(ids), 4);
    assert_null(json_object_get(ids, jobs[0]->id));
    for (int i = 1; i < 5; i++)
        assert_true(json_is_true(json_object_get(ids, jobs[i]->id)));
    json_decref(ids);

    assert_int_equal(job_ids(q, JP_PRIO_NORMAL, 2, &ids, &complete), 0);
    assert_false(complete);
    assert_int_equal(json_object_size(ids), 2);
    json_decref(ids);
    assert_int_equal(job_ids(q, JP_PRIO_NORMAL, 4, &ids, &complete), 0);
    assert_true(complete);
    assert_int_equal(json_object_size(ids), 4);
    json_decref(ids);
    assert_int_equal(job_ids(q, JP_PRIO_LOW, 10, &ids, &complete), 0);
    assert_true(complete);
    assert_int_equal(json_object_size(ids), 0);
    json_decref(ids);
    free_jobs(jobs, 5);
    jp_queue_free(q);
}

static void test_epoch_marker_notices_data_loss(void **state)
{
    (void)state;
    jp_queue *q = open_q(NULL, 0), *peer = open_q(NULL, 0);
    redisContext *c = raw();
    assert_int_equal(jp_redis_epoch_check(q, NULL), 0);
    assert_int_equal(jp_redis_epoch_check(q, NULL), 0);
    assert_int_equal(jp_redis_epoch_check(peer, NULL), 0);  /* adopts q's marker */
    assert_int_equal(cmd_int(c, "EXISTS jobplane:epoch"), 1);
    cmd_ok(c, "FLUSHALL");
    assert_int_equal(jp_redis_epoch_check(q, NULL), 1);
    assert_int_equal(jp_redis_epoch_check(q, NULL), 0);
    assert_int_equal(jp_redis_epoch_check(peer, NULL), 1);  /* q set it again: still a loss */
    assert_int_equal(jp_redis_epoch_check(peer, NULL), 0);
    redisFree(c);
    jp_queue_free(q);
    jp_queue_free(peer);
}

static void test_weighted_mode_favours_emergency_without_starving_low(void **state)
{
    (void)state;
    jp_queue *q = open_q("w1", 0);
    enum { PER = 1000, POPS = 150 };
    jp_job **jobs = jp_xmalloc(PER * sizeof *jobs);
    for (int p = 0; p < JP_PRIO__COUNT; p++) {
        for (int i = 0; i < PER; i++)
            jobs[i] = make_job("default", p);
        assert_int_equal(jp_queue_push(q, jobs, PER, NULL), 0);
        for (int i = 0; i < PER; i++)
            jp_job_free(jobs[i]);
    }
    free(jobs);
    jp_redis_set_weighted(q, true);
    int taken[JP_PRIO__COUNT] = {0};
    jp_qmsg m[10];
    for (int i = 0; i < POPS; i++) {
        size_t n = pop(q, Q_DEFAULT, 10, 0, m);
        assert_int_equal(n, 10);
        for (size_t k = 0; k < n; k++)
            taken[m[k].priority]++;
        jp_qmsgs_done(m, n);
    }
    assert_true(taken[JP_PRIO_LOW] > 0);
    assert_true(taken[JP_PRIO_EMERGENCY] > taken[JP_PRIO_HIGH]);
    assert_true(taken[JP_PRIO_EMERGENCY] > taken[JP_PRIO_NORMAL]);
    assert_true(taken[JP_PRIO_EMERGENCY] > taken[JP_PRIO_LOW]);
    assert_true(taken[JP_PRIO_EMERGENCY] < POPS * 10);

    /* Back to strict: emergency only while it lasts. */
    jp_redis_set_weighted(q, false);
    size_t n = pop(q, Q_DEFAULT, 10, 0, m);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(m[k].priority, JP_PRIO_EMERGENCY);
    jp_qmsgs_done(m, n);
    jp_queue_free(q);
}

static void test_redis_down_is_unavailable_quickly(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);  /* nothing listens there now */

    char u[64];
    snprintf(u, sizeof u, "redis://127.0.0.1:%d/0", ntohs(sa.sin_port));
    jp_queue *q = NULL;
    jp_err e = {0};
    int64_t t0 = jp_mono_ms();
    assert_int_equal(jp_queue_open(u, NULL, &q, &e), JP_EUNAVAIL);
    assert_true(jp_mono_ms() - t0 < 3000);
    assert_null(q);
    char want[64];
    snprintf(want, sizeof want, "redis 127.0.0.1:%d: ", ntohs(sa.sin_port));
    assert_non_null(strstr(e.msg, want));
    assert_non_null(strstr(e.msg, "refused"));
}

typedef struct shared {
    jp_queue *q;
    pthread_mutex_t mu;
    json_t *seen;     /* job id -> times delivered */
    int total, want;
    int64_t deadline;
    int errors;
} shared;

static void *produce(void *arg)
{
    shared *sh = arg;
    jp_job *jobs[50];
    for (int b = 0; b < 12; b++) {
        for (int i = 0; i < 50; i++)
            jobs[i] = make_job(b % 2 ? "cc1" : "cc2", i % JP_PRIO__COUNT);
        if (jp_queue_push(sh->q, jobs, 50, NULL) != 0) {
            pthread_mutex_lock(&sh->mu);
            sh->errors++;
            pthread_mutex_unlock(&sh->mu);
        }
        free_jobs(jobs, 50);
    }
    return NULL;
}

static void *consume(void *arg)
{
    shared *sh = arg;
    static const char *const names[] = {"cc1", "cc2", NULL};
    jp_qmsg m[32];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&sh->mu);
        bool done = sh->total >= sh->want || jp_mono_ms() > sh->deadline;
        pthread_mutex_unlock(&sh->mu);
        if (done)
            break;
        if (jp_queue_pop(sh->q, names, 32, 200, m, &n, NULL) != 0 ||
            jp_queue_renew(sh->q, m, n, NULL) != 0 || jp_queue_ack(sh->q, m, n, NULL) != 0) {
            pthread_mutex_lock(&sh->mu);
            sh->errors++;
            pthread_mutex_unlock(&sh->mu);
            continue;
        }
        pthread_mutex_lock(&sh->mu);
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_object_get(sh->seen, m[i].job_id);
            json_object_set_new(sh->seen, m[i].job_id,
                                json_integer(v ? json_integer_value(v) + 1 : 1));
        }
        sh->total += (int)n;
        pthread_mutex_unlock(&sh->mu);
        jp_qmsgs_done(m, n);
    }
    return NULL;
}

/* Producers and blocking consumers share one handle with a pool smaller
 * than the number of threads. */
static void test_many_threads_share_a_small_pool(void **state)
{
    (void)state;
    jp_queue_options o = {.consumer = "w1", .pool_size = 2};
    shared sh = {.mu = PTHREAD_MUTEX_INITIALIZER, .want = 3 * 600};
    assert_int_equal(jp_queue_open(url, &o, &sh.q, NULL), 0);
    sh.seen = json_object();
    sh.deadline = jp_mono_ms() + 15000;
    pthread_t cons[3], prod[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&cons[i], NULL, consume, &sh);
    for (int i = 0; i < 3; i++)
        pthread_create(&prod[i], NULL, produce, &sh);
    for (int i = 0; i < 3; i++)
        pthread_join(prod[i], NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(cons[i], NULL);
    assert_int_equal(sh.errors, 0);
    assert_int_equal(sh.total, sh.want);
    assert_int_equal(json_object_size(sh.seen), (size_t)sh.want);
    const char *k;
    json_t *v;
    json_object_foreach(sh.seen, k, v)
        assert_int_equal(json_integer_value(v), 1);
    json_decref(sh.seen);
    jp_queue_free(sh.q);
}

/* Not a benchmark, but the hot path at scale: every job delivered once. */
static void test_throughput_push_pop_ack(void **state)
{
    (void)state;
    const char *env = getenv("JOBPLANE_BENCH_N");
    int total = env ? atoi(env) : 20000;
    enum { BATCH = 100 };
    jp_queue *q = open_q("w1", 0);
    jp_job *jobs[BATCH];
    jp_qmsg m[BATCH];
    int64_t t0 = jp_mono_ms();
    for (int done = 0; done < total; done += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            jobs[i] = make_job("bench", JP_PRIO_NORMAL);
            json_decref(jobs[i]->payload);
            jobs[i]->payload = json_pack("{s:s,s:i}", "url", "https://example.com/", "n", i);
        }
        assert_int_equal(jp_queue_push(q, jobs, BATCH, NULL), 0);
        for (int i = 0; i < BATCH; i++)
            jp_job_free(jobs[i]);
    }
    int64_t t1 = jp_mono_ms();
    static const char *const bench[] = {"bench", NULL};
    int seen = 0;
    for (;;) {
        size_t n = pop(q, bench, BATCH, 0, m);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            assert_non_null(m[i].data);
        ack(q, m, n);
        jp_qmsgs_done(m, n);
        seen += (int)n;
    }
    int64_t t2 = jp_mono_ms();
    assert_int_equal(seen, total);
    redisContext *c = raw();
    assert_int_equal(cmd_int(c, "XLEN %s", "jobplane:{bench}:normal"), 0);
    redisFree(c);
    print_message("%d jobs: push %.0f/s, pop+ack %.0f/s (batches of %d)\n", total,
                  total * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1),
                  total * 1000.0 / (double)(t2 - t1 ? t2 - t1 : 1), BATCH);
    jp_queue_free(q);
}

int main(void)
{
    url = getenv("JOBPLANE_TEST_REDIS_URL");
    if (!url || !*url) {
        const char *ci = getenv("CI");
        if (ci && strcmp(ci, "true") == 0) {
            fprintf(stderr, "JOBPLANE_TEST_REDIS_URL is not set, and CI requires Redis\n");
            return 1;
        }
        fprintf(stderr, "skipped: JOBPLANE_TEST_REDIS_URL is not set\n");
        return 77;
    }
    if (sscanf(url, "redis://%63[^:]:%d", host, &port) != 2) {
        fprintf(stderr, "cannot read host and port from %s\n", url);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_and_ping, clean),
        cmocka_unit_test_setup(test_open_refuses_bad_urls, clean),
        cmocka_unit_test_setup(test_refuses_an_evicting_redis, clean),
        cmocka_unit_test_setup(test_password_and_database_from_url, clean),
        cmocka_unit_test_setup(test_pop_takes_priorities_strictly_in_one_pop, clean),
        cmocka_unit_test_setup(test_fifo_within_a_priority_and_count_honoured, clean),
        cmocka_unit_test_setup(test_pop_reads_several_queues_in_the_order_named, clean),
        cmocka_unit_test_setup(test_pop_needs_a_consumer_and_queue_names, clean),
        cmocka_unit_test_setup(test_key_names_and_message_fields, clean),
        cmocka_unit_test_setup(test_pop_blocks_until_a_push, clean),
        cmocka_unit_test_setup(test_pop_blocking_forever_wakes_on_push, clean),
        cmocka_unit_test_setup(test_pop_times_out, clean),
        cmocka_unit_test_setup(test_wake_releases_blocked_pops, clean),
        cmocka_unit_test_setup(test_ack_removes_the_entry_and_its_pending_record, clean),
        cmocka_unit_test_setup(test_unacked_messages_stay_with_their_consumer_until_the_lease,
                               clean),
        cmocka_unit_test_setup(test_reclaim_after_the_lease_counts_an_attempt, clean),
        cmocka_unit_test_setup(test_renew_keeps_a_message_from_being_reclaimed, clean),
        cmocka_unit_test_setup(test_garbage_messages_come_back_without_data, clean),
        cmocka_unit_test_setup(test_reclaim_drops_an_entry_deleted_after_delivery, clean),
        cmocka_unit_test_setup(test_data_loss_recreates_the_group, clean),
        cmocka_unit_test_setup(test_connections_come_back_after_being_cut, clean),
        cmocka_unit_test_setup(test_stats_report_length_pending_and_age, clean),
        cmocka_unit_test_setup(test_presence_set_list_and_delete, clean),
        cmocka_unit_test_setup(test_cancel_is_published_to_subscribers, clean),
        cmocka_unit_test_setup(test_stream_job_ids_include_delivered_unacked, clean),
        cmocka_unit_test_setup(test_epoch_marker_notices_data_loss, clean),
        cmocka_unit_test_setup(test_weighted_mode_favours_emergency_without_starving_low, clean),
        cmocka_unit_test_setup(test_redis_down_is_unavailable_quickly, clean),
        cmocka_unit_test_setup(test_many_threads_share_a_small_pool, clean),
        cmocka_unit_test_setup(test_throughput_push_pop_ack, clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
