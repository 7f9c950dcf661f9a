/* Unit tests of the in-process queue: priority order, FIFO within a
 * priority, queue filters, blocking and waking, stats, acknowledgement. */
#include "core/job.h"
#include "core/mem.h"
#include "queue/queue.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

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

static void push_one(jp_queue *q, jp_job *j)
{
    assert_int_equal(jp_queue_push(q, &j, 1, NULL), 0);
}

static void test_pop_takes_highest_priority_first(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_job *low = make_job("default", JP_PRIO_LOW), *normal = make_job("default", JP_PRIO_NORMAL);
    jp_job *high = make_job("default", JP_PRIO_HIGH), *emerg = make_job("other", JP_PRIO_EMERGENCY);
    push_one(q, low);
    push_one(q, normal);
    push_one(q, high);
    push_one(q, emerg);

    jp_qmsg msgs[8];
    size_t n = 0;
    assert_int_equal(jp_queue_pop(q, NULL, 8, 0, msgs, &n, NULL), 0);
    assert_int_equal(n, 4);
    assert_string_equal(msgs[0].job_id, emerg->id);
    assert_string_equal(msgs[1].job_id, high->id);
    assert_string_equal(msgs[2].job_id, normal->id);
    assert_string_equal(msgs[3].job_id, low->id);
    assert_int_equal(msgs[0].priority, JP_PRIO_EMERGENCY);
    assert_string_equal(msgs[0].queue, "other");
    assert_int_equal(msgs[0].attempt, 1);
    assert_non_null(msgs[0].data);
    assert_string_equal(json_string_value(json_object_get(msgs[0].data, "id")), emerg->id);
    jp_qmsgs_done(msgs, n);
    jp_job_free(low);
    jp_job_free(normal);
    jp_job_free(high);
    jp_job_free(emerg);
    jp_queue_free(q);
}

/* A claim takes a fair share of what waits (ceil(waiting / share), at most
 * max), highest priority first, and each message once. */
static void test_claim_takes_a_fair_share_in_priority_order(void **state)
{
    (void)state;
    enum { N = 10 };
    jp_queue *q = jp_queue_memory_new();
    jp_job *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = make_job("default", i == N - 1 ? JP_PRIO_HIGH : JP_PRIO_NORMAL);
        push_one(q, jobs[i]);
    }
    jp_qmsg msgs[N];
    size_t n = 0, seen = 0;
    assert_int_equal(jp_queue_claim(q, NULL, N, 4, 0, msgs, &n, NULL), 0);
    assert_int_equal(n, 3);  /* ceil(10 / 4) */
    assert_string_equal(msgs[0].job_id, jobs[N - 1]->id);
    assert_string_equal(msgs[1].job_id, jobs[0]->id);
    seen += n;
    jp_qmsgs_done(msgs, n);
    assert_int_equal(jp_queue_claim(q, NULL, 2, 1, 0, msgs, &n, NULL), 0);
    assert_int_equal(n, 2);  /* all 7 would be its share; max is 2 */
    assert_string_equal(msgs[0].job_id, jobs[2]->id);
    seen += n;
    jp_qmsgs_done(msgs, n);
    assert_int_equal(jp_queue_claim(q, NULL, N, 0, 0, msgs, &n, NULL), 0);
    assert_int_equal(n, 5);  /* share 0 counts as 1: everything left */
    seen += n;
    jp_qmsgs_done(msgs, n);
    assert_int_equal(seen, N);
    assert_int_equal(jp_queue_claim(q, NULL, N, 1, 0, msgs, &n, NULL), 0);
    assert_int_equal(n, 0);
    for (int i = 0; i < N; i++)
        jp_job_free(jobs[i]);
    jp_queue_free(q);
}

static void test_fifo_within_a_priority_and_attempt_follows_job(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_job *jobs[5];
    for (int i = 0; i < 5; i++) {
        jobs[i] = make_job("default", JP_PRIO_NORMAL);
        jobs[i]->attempts = i;
    }
    assert_int_equal(jp_queue_push(q, jobs, 5, NULL), 0);
    jp_qmsg msgs[2];
    size_t n, seen = 0;
    while (jp_queue_pop(q, NULL, 2, 0, msgs, &n, NULL) == 0 && n > 0) {
        for (size_t i = 0; i < n; i++, seen++) {
            assert_string_equal(msgs[i].job_id, jobs[seen]->id);
            assert_int_equal(msgs[i].attempt, (int)seen + 1);
        }
        jp_qmsgs_done(msgs, n);
    }
    assert_int_equal(seen, 5);
    for (int i = 0; i < 5; i++)
        jp_job_free(jobs[i]);
    jp_queue_free(q);
}

static void test_pop_serves_only_named_queues(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_job *a = make_job("alpha", JP_PRIO_EMERGENCY), *b = make_job("beta", JP_PRIO_LOW);
    push_one(q, a);
    push_one(q, b);
    const char *only_beta[] = {"beta", NULL};
    jp_qmsg msg;
    size_t n = 0;
    assert_int_equal(jp_queue_pop(q, only_beta, 1, 0, &msg, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(msg.job_id, b->id);
    jp_qmsgs_done(&msg, 1);
    assert_int_equal(jp_queue_pop(q, only_beta, 1, 0, &msg, &n, NULL), 0);
    assert_int_equal(n, 0);
    jp_job_free(a);
    jp_job_free(b);
    jp_queue_free(q);
}

static void test_pop_times_out_when_empty(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_qmsg msg;
    size_t n = 99;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(jp_queue_pop(q, NULL, 1, 100, &msg, &n, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(n, 0);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 90);
    jp_queue_free(q);
}

typedef struct popper {
    jp_queue *q;
    size_t got;
    char id[JP_UUID_STR_LEN + 1];
} popper;

static void *blocking_pop(void *arg)
{
    popper *p = arg;
    jp_qmsg msg;
    if (jp_queue_pop(p->q, NULL, 1, -1, &msg, &p->got, NULL) == 0 && p->got) {
        memcpy(p->id, msg.job_id, sizeof p->id);
        jp_qmsgs_done(&msg, 1);
    }
    return NULL;
}

static void test_blocked_pop_receives_a_push(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    popper p = {.q = q};
    pthread_t t;
    pthread_create(&t, NULL, blocking_pop, &p);
    usleep(50 * 1000);
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    push_one(q, j);
    pthread_join(t, NULL);
    assert_int_equal(p.got, 1);
    assert_string_equal(p.id, j->id);
    jp_job_free(j);
    jp_queue_free(q);
}

static void test_wake_releases_blocked_and_later_pops(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    popper p = {.q = q, .got = 99};
    pthread_t t;
    pthread_create(&t, NULL, blocking_pop, &p);
    usleep(50 * 1000);
    jp_queue_wake(q);
    pthread_join(t, NULL);
    assert_int_equal(p.got, 0);
    /* After a wake, a pop that would block returns at once. */
    p.got = 99;
    blocking_pop(&p);
    assert_int_equal(p.got, 0);
    jp_queue_free(q);
}

static json_t *stat_of(json_t *stats, const char *queue, const char *prio)
{
    return json_object_get(json_object_get(stats, queue), prio);
}

static void test_stats_count_waiting_and_unacknowledged(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_job *jobs[3] = {make_job("default", JP_PRIO_HIGH), make_job("default", JP_PRIO_HIGH),
                       make_job("mail", JP_PRIO_LOW)};
    assert_int_equal(jp_queue_push(q, jobs, 3, NULL), 0);
    json_t *st = NULL;
    assert_int_equal(jp_queue_stats(q, &st, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(stat_of(st, "default", "high"), "length")), 2);
    assert_int_equal(json_integer_value(json_object_get(stat_of(st, "mail", "low"), "length")), 1);
    assert_null(stat_of(st, "default", "normal"));
    assert_true(json_integer_value(json_object_get(stat_of(st, "mail", "low"), "oldest_age_ms")) >= 0);
    json_decref(st);

    jp_qmsg msg;
    size_t n;
    assert_int_equal(jp_queue_pop(q, NULL, 1, 0, &msg, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(jp_queue_stats(q, &st, NULL), 0);
    json_t *h = stat_of(st, "default", "high");
    assert_int_equal(json_integer_value(json_object_get(h, "length")), 1);
    assert_int_equal(json_integer_value(json_object_get(h, "pending")), 1);
    json_decref(st);

    assert_int_equal(jp_queue_ack(q, &msg, 1, NULL), 0);
    assert_int_equal(jp_queue_stats(q, &st, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(stat_of(st, "default", "high"), "pending")), 0);
    json_decref(st);
    jp_qmsgs_done(&msg, 1);
    for (int i = 0; i < 3; i++)
        jp_job_free(jobs[i]);
    jp_queue_free(q);
}

static void test_free_releases_waiting_messages(void **state)
{
    (void)state;
    jp_queue *q = jp_queue_memory_new();
    jp_job *j = make_job("default", JP_PRIO_NORMAL);
    j->payload = json_pack("{s:s}", "big", "payload");
    push_one(q, j);
    jp_job_free(j);
    jp_queue_free(q); /* LeakSanitizer checks the message went too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pop_takes_highest_priority_first),
        cmocka_unit_test(test_claim_takes_a_fair_share_in_priority_order),
        cmocka_unit_test(test_fifo_within_a_priority_and_attempt_follows_job),
        cmocka_unit_test(test_pop_serves_only_named_queues),
        cmocka_unit_test(test_pop_times_out_when_empty),
        cmocka_unit_test(test_blocked_pop_receives_a_push),
        cmocka_unit_test(test_wake_releases_blocked_and_later_pops),
        cmocka_unit_test(test_stats_count_waiting_and_unacknowledged),
        cmocka_unit_test(test_free_releases_waiting_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
