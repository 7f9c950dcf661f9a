/* Unit tests of the job state machine and the retry backoff. */
#include "core/state.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define NOW 1795687200000LL

static jp_jstate job_in(jp_status st, int attempts)
{
    jp_jstate s = {.status = st, .attempts = attempts, .max_attempts = 3};
    return s;
}

static jp_event ev_of(jp_event_kind kind, int attempt)
{
    jp_event ev = {.kind = kind, .attempt = attempt, .now_ms = NOW, .to = JP_ST_QUEUED,
                   .retryable = true, .worker_id = "w1"};
    return ev;
}

static jp_effects apply_ok(jp_jstate *s, const jp_event *ev)
{
    jp_effects fx;
    jp_err err = {0};
    memset(&fx, 0xa5, sizeof fx);
    int rc = jp_state_apply(s, ev, &fx, &err);
    if (rc != 0)
        fail_msg("event %d refused: %s", (int)ev->kind, err.msg);
    return fx;
}

/* Asserts the event is refused with `code`, leaving state and effects unchanged. */
static void apply_refused(jp_jstate s, const jp_event *ev, int code, const char *needle)
{
    jp_jstate before = s;
    jp_effects fx, fx_before;
    jp_err err = {0};
    memset(&fx, 0x5a, sizeof fx);
    fx_before = fx;
    int rc = jp_state_apply(&s, ev, &fx, &err);
    if (rc != code)
        fail_msg("event %d in %s: rc %d, want %d", (int)ev->kind, jp_status_name(before.status),
                 rc, code);
    assert_memory_equal(&s, &before, sizeof s);
    assert_memory_equal(&fx, &fx_before, sizeof fx);
    if (needle && !strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static const char *error_code(const json_t *e)
{
    return json_string_value(json_object_get(e, "code"));
}

static void test_enqueued_moves_pending_to_queued(void **state)
{
    jp_jstate s = job_in(JP_ST_PENDING, 0);
    jp_event ev = ev_of(JP_EV_ENQUEUED, 0);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_QUEUED);
    assert_false(fx.open_attempt || fx.close_attempt || fx.set_error || fx.refuse);
    for (int st = JP_ST_SCHEDULED; st < JP_ST__COUNT; st++)
        apply_refused(job_in(st, 0), &ev, JP_ECONFLICT, "job is");
}

static void test_due_moves_scheduled_to_target(void **state)
{
    jp_jstate s = job_in(JP_ST_SCHEDULED, 1);
    s.run_at_ms = NOW;
    jp_event ev = ev_of(JP_EV_DUE, 0);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_QUEUED);
    assert_int_equal(s.run_at_ms, 0);
    s = job_in(JP_ST_SCHEDULED, 1);
    ev.to = JP_ST_PENDING;
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_PENDING);
    ev.to = JP_ST_QUEUED;
    for (int st = 0; st < JP_ST__COUNT; st++)
        if (st != JP_ST_SCHEDULED)
            apply_refused(job_in(st, 1), &ev, JP_ECONFLICT, NULL);
    ev.to = JP_ST_RUNNING;
    apply_refused(job_in(JP_ST_SCHEDULED, 1), &ev, JP_EINVAL, NULL);
}

static void test_start_from_queued_runs_attempt(void **state)
{
    jp_jstate s = job_in(JP_ST_QUEUED, 0);
    s.completed_at_ms = 5;
    jp_event ev = ev_of(JP_EV_START, 1);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_RUNNING);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(s.started_at_ms, NOW);
    assert_int_equal(s.completed_at_ms, 0);
    assert_true(fx.set_worker);
    assert_true(fx.open_attempt);
    assert_int_equal(fx.open_n, 1);
    assert_false(fx.close_attempt);
    assert_true(fx.set_error);
    assert_null(fx.error);
    assert_true(fx.set_result);
    assert_false(fx.refuse);
}

static void test_start_from_pending_is_allowed(void **state)
{
    jp_jstate s = job_in(JP_ST_PENDING, 0);
    jp_event ev = ev_of(JP_EV_START, 1);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_RUNNING);
}

static void test_start_rejects_stale_attempt(void **state)
{
    jp_event ev = ev_of(JP_EV_START, 2);
    apply_refused(job_in(JP_ST_QUEUED, 2), &ev, JP_ECONFLICT, "stale");
    apply_refused(job_in(JP_ST_QUEUED, 3), &ev, JP_ECONFLICT, "stale");
    apply_refused(job_in(JP_ST_RUNNING, 2), &ev, JP_ECONFLICT, "attempt 2");
    apply_refused(job_in(JP_ST_RUNNING, 3), &ev, JP_ECONFLICT, "stale");
    ev.attempt = 0;
    apply_refused(job_in(JP_ST_QUEUED, 0), &ev, JP_EINVAL, NULL);
    ev.attempt = -1;
    apply_refused(job_in(JP_ST_QUEUED, 0), &ev, JP_EINVAL, NULL);
}

static void test_start_refused_when_scheduled_or_terminal(void **state)
{
    jp_event ev = ev_of(JP_EV_START, 2);
    apply_refused(job_in(JP_ST_SCHEDULED, 1), &ev, JP_ECONFLICT, "job is scheduled");
    apply_refused(job_in(JP_ST_COMPLETED, 1), &ev, JP_ECONFLICT, "job is completed");
    apply_refused(job_in(JP_ST_FAILED, 1), &ev, JP_ECONFLICT, "job is failed");
    apply_refused(job_in(JP_ST_CANCELLED, 1), &ev, JP_ECONFLICT, "job is cancelled");
}

static void test_start_takeover_closes_old_attempt(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 1);
    s.started_at_ms = NOW - 60000;
    jp_event ev = ev_of(JP_EV_START, 2);
    ev.worker_id = "w2";
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_RUNNING);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(s.started_at_ms, NOW);
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 1);
    assert_string_equal(fx.close_outcome, "lost");
    assert_string_equal(error_code(fx.close_error), "worker_lost");
    assert_true(fx.open_attempt);
    assert_int_equal(fx.open_n, 2);
    assert_true(fx.set_worker);
    assert_false(fx.refuse);
}

static void test_start_repeated_by_same_worker_is_accepted_unchanged(void **state)
{
    /* Its first answer was lost: the worker asks again and may run it. */
    jp_jstate s = job_in(JP_ST_QUEUED, 0);
    jp_event ev = ev_of(JP_EV_START, 1);
    apply_ok(&s, &ev);
    assert_string_equal(s.worker_id, "w1");
    jp_jstate before = s;
    jp_effects fx = apply_ok(&s, &ev);
    assert_memory_equal(&s, &before, sizeof s);
    assert_false(fx.open_attempt);
    assert_false(fx.close_attempt);
    assert_false(fx.set_worker);
    assert_false(fx.refuse);
}

static void test_start_repeated_by_another_worker_is_refused(void **state)
{
    jp_jstate s = job_in(JP_ST_QUEUED, 0);
    jp_event ev = ev_of(JP_EV_START, 1);
    apply_ok(&s, &ev);
    ev.worker_id = "w2";
    apply_refused(s, &ev, JP_ECONFLICT, "already running");
    ev.worker_id = NULL;
    apply_refused(s, &ev, JP_ECONFLICT, "already running");
}

static void test_start_poison_from_queued(void **state)
{
    /* three deliveries made, none reported: the fourth is one too many */
    jp_jstate s = job_in(JP_ST_QUEUED, 3);
    jp_event ev = ev_of(JP_EV_START, 4);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
    assert_int_equal(s.attempts, 3); /* the refused delivery is no attempt */
    assert_int_equal(s.completed_at_ms, NOW);
    assert_true(fx.refuse);
    assert_true(fx.set_error);
    assert_string_equal(error_code(fx.error), "crashed_worker");
    assert_false(fx.open_attempt);
    assert_false(fx.close_attempt);
    assert_false(fx.set_worker);
}

static void test_start_poison_on_takeover(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 3);
    jp_event ev = ev_of(JP_EV_START, 4);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
    assert_true(fx.refuse);
    assert_string_equal(error_code(fx.error), "crashed_worker");
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 3);
    assert_string_equal(fx.close_outcome, "crashed");
    assert_string_equal(error_code(fx.close_error), "crashed_worker");
    assert_false(fx.open_attempt);
}

static void test_poisoned_job_is_terminal(void **state)
{
    jp_jstate s = job_in(JP_ST_QUEUED, 3);
    jp_event ev = ev_of(JP_EV_START, 4);
    apply_ok(&s, &ev);
    ev.attempt = 5;
    apply_refused(s, &ev, JP_ECONFLICT, "job is failed");
}

static void test_complete_current_attempt(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 2);
    json_t *result = json_pack("{s:i}", "status", 200);
    jp_event ev = ev_of(JP_EV_COMPLETE, 2);
    ev.result = result;
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_COMPLETED);
    assert_int_equal(s.completed_at_ms, NOW);
    assert_true(fx.set_result);
    assert_true(fx.set_error);
    assert_null(fx.error);
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 2);
    assert_string_equal(fx.close_outcome, "completed");
    assert_false(fx.refuse);
    json_decref(result);
}

static void test_complete_refuses_stale_and_wrong_state(void **state)
{
    jp_event ev = ev_of(JP_EV_COMPLETE, 1);
    apply_refused(job_in(JP_ST_RUNNING, 2), &ev, JP_ECONFLICT,
                  "attempt 1 is not the current attempt 2");
    ev.attempt = 3;
    apply_refused(job_in(JP_ST_RUNNING, 2), &ev, JP_ECONFLICT, "not the current attempt");
    ev.attempt = 2;
    apply_refused(job_in(JP_ST_QUEUED, 2), &ev, JP_ECONFLICT, "job is queued");
    apply_refused(job_in(JP_ST_SCHEDULED, 2), &ev, JP_ECONFLICT, "job is scheduled");
    apply_refused(job_in(JP_ST_PENDING, 2), &ev, JP_ECONFLICT, "job is pending");
}

static void test_terminal_never_overwritten(void **state)
{
    jp_event_kind kinds[] = {JP_EV_ENQUEUED, JP_EV_DUE, JP_EV_START, JP_EV_COMPLETE, JP_EV_FAIL,
                             JP_EV_CANCEL, JP_EV_REQUEUE};
    jp_status terminal[] = {JP_ST_COMPLETED, JP_ST_FAILED, JP_ST_CANCELLED};
    for (size_t t = 0; t < 3; t++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            for (int n = 1; n <= 3; n++) {
                jp_event ev = ev_of(kinds[k], n);
                apply_refused(job_in(terminal[t], 2), &ev, JP_ECONFLICT, NULL);
            }
    /* RETRY is the one way out, and only for failed and cancelled */
    jp_event ev = ev_of(JP_EV_RETRY, 0);
    apply_refused(job_in(JP_ST_COMPLETED, 1), &ev, JP_ECONFLICT, "job is completed");
}

static void test_fail_with_attempts_left_is_scheduled(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 1);
    json_t *error = json_pack("{s:s,s:s}", "code", "job_error", "message", "boom");
    jp_event ev = ev_of(JP_EV_FAIL, 1);
    ev.error = error;
    ev.backoff_ms = 2000;
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_SCHEDULED);
    assert_int_equal(s.run_at_ms, NOW + 2000);
    assert_int_equal(s.completed_at_ms, 0);
    assert_true(fx.set_error);
    assert_ptr_equal(fx.error, error);
    assert_true(fx.set_result);
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 1);
    assert_string_equal(fx.close_outcome, "failed");
    assert_ptr_equal(fx.close_error, error);
    json_decref(error);
}

static void test_fail_last_attempt_is_failed(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 3);
    jp_event ev = ev_of(JP_EV_FAIL, 3);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
    assert_int_equal(s.completed_at_ms, NOW);
    assert_int_equal(s.run_at_ms, 0);
    /* no error sent: a generic one stands in */
    assert_string_equal(error_code(fx.error), "job_error");
    assert_ptr_equal(fx.close_error, fx.error);
}

static void test_fail_not_retryable_is_failed(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 1);
    jp_event ev = ev_of(JP_EV_FAIL, 1);
    ev.retryable = false;
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
}

static void test_fail_refuses_stale_attempt(void **state)
{
    jp_event ev = ev_of(JP_EV_FAIL, 1);
    apply_refused(job_in(JP_ST_RUNNING, 2), &ev, JP_ECONFLICT, "not the current attempt");
    apply_refused(job_in(JP_ST_QUEUED, 1), &ev, JP_ECONFLICT, "job is queued");
}

static void test_cancel_each_live_state(void **state)
{
    jp_status live[] = {JP_ST_PENDING, JP_ST_SCHEDULED, JP_ST_QUEUED};
    for (size_t i = 0; i < 3; i++) {
        jp_jstate s = job_in(live[i], 1);
        s.run_at_ms = NOW + 5;
        jp_event ev = ev_of(JP_EV_CANCEL, 0);
        jp_effects fx = apply_ok(&s, &ev);
        assert_int_equal(s.status, JP_ST_CANCELLED);
        assert_int_equal(s.completed_at_ms, NOW);
        assert_int_equal(s.run_at_ms, 0);
        assert_string_equal(error_code(fx.error), "cancelled");
        assert_false(fx.close_attempt);
    }
}

static void test_cancel_running_closes_attempt(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 2);
    jp_event ev = ev_of(JP_EV_CANCEL, 0);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_CANCELLED);
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 2);
    assert_string_equal(fx.close_outcome, "cancelled");
}

static void test_cancel_terminal_refused(void **state)
{
    jp_event ev = ev_of(JP_EV_CANCEL, 0);
    apply_refused(job_in(JP_ST_COMPLETED, 1), &ev, JP_ECONFLICT, "job is already completed");
    apply_refused(job_in(JP_ST_CANCELLED, 1), &ev, JP_ECONFLICT, "job is already cancelled");
}

static void test_retry_resets_budget(void **state)
{
    jp_jstate s = job_in(JP_ST_FAILED, 3);
    s.completed_at_ms = NOW - 1;
    jp_event ev = ev_of(JP_EV_RETRY, 0);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_QUEUED);
    assert_int_equal(s.attempt_base, 3);
    assert_int_equal(s.attempts, 3);
    assert_int_equal(s.completed_at_ms, 0);
    assert_true(fx.set_error);
    assert_null(fx.error);
    assert_true(fx.set_result);

    /* attempts 4, 5, 6 form a fresh budget of three */
    ev = ev_of(JP_EV_START, 4);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_RUNNING);
    ev = ev_of(JP_EV_FAIL, 4);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_SCHEDULED);
    ev = ev_of(JP_EV_DUE, 0);
    apply_ok(&s, &ev);
    ev = ev_of(JP_EV_START, 5);
    apply_ok(&s, &ev);
    ev = ev_of(JP_EV_FAIL, 5);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_SCHEDULED);
    ev = ev_of(JP_EV_DUE, 0);
    apply_ok(&s, &ev);
    ev = ev_of(JP_EV_START, 6);
    apply_ok(&s, &ev);
    ev = ev_of(JP_EV_FAIL, 6);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
}

static void test_retry_cancelled_to_pending(void **state)
{
    jp_jstate s = job_in(JP_ST_CANCELLED, 0);
    jp_event ev = ev_of(JP_EV_RETRY, 0);
    ev.to = JP_ST_PENDING;
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_PENDING);
}

static void test_retry_refused_unless_failed_or_cancelled(void **state)
{
    jp_event ev = ev_of(JP_EV_RETRY, 0);
    for (int st = 0; st < JP_ST__COUNT; st++)
        if (st != JP_ST_FAILED && st != JP_ST_CANCELLED)
            apply_refused(job_in(st, 1), &ev, JP_ECONFLICT, "only failed or cancelled");
}

static void test_requeue_running_attempt(void **state)
{
    jp_jstate s = job_in(JP_ST_RUNNING, 1);
    jp_event ev = ev_of(JP_EV_REQUEUE, 1);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_QUEUED);
    assert_int_equal(s.attempts, 1);
    assert_true(fx.close_attempt);
    assert_int_equal(fx.close_n, 1);
    assert_string_equal(fx.close_outcome, "lost");
    assert_string_equal(error_code(fx.close_error), "worker_lost");
    /* the next delivery counts against the budget */
    ev = ev_of(JP_EV_START, 2);
    apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_RUNNING);
    ev = ev_of(JP_EV_REQUEUE, 1);
    apply_refused(s, &ev, JP_ECONFLICT, "not the current attempt");
    ev = ev_of(JP_EV_REQUEUE, 1);
    apply_refused(job_in(JP_ST_QUEUED, 1), &ev, JP_ECONFLICT, "job is queued");
}

static void test_requeue_cycle_ends_as_crashed_worker(void **state)
{
    jp_jstate s = job_in(JP_ST_QUEUED, 0);
    int n;
    for (n = 1; n <= 3; n++) {
        jp_event ev = ev_of(JP_EV_START, n);
        apply_ok(&s, &ev);
        assert_int_equal(s.status, JP_ST_RUNNING);
        ev = ev_of(JP_EV_REQUEUE, n);
        apply_ok(&s, &ev);
    }
    jp_event ev = ev_of(JP_EV_START, n);
    jp_effects fx = apply_ok(&s, &ev);
    assert_int_equal(s.status, JP_ST_FAILED);
    assert_true(fx.refuse);
    assert_string_equal(error_code(fx.error), "crashed_worker");
}

static void test_unknown_event_refused(void **state)
{
    jp_event ev = ev_of((jp_event_kind)99, 1);
    apply_refused(job_in(JP_ST_QUEUED, 0), &ev, JP_EINVAL, NULL);
}

static void test_backoff_grows_exponentially(void **state)
{
    /* rnd = 0 gives exactly half the nominal delay */
    assert_int_equal(jp_backoff_ms(1, 1000, 3600000, 0), 500);
    assert_int_equal(jp_backoff_ms(2, 1000, 3600000, 0), 1000);
    assert_int_equal(jp_backoff_ms(3, 1000, 3600000, 0), 2000);
    assert_int_equal(jp_backoff_ms(5, 1000, 3600000, 0), 8000);
}

static void test_backoff_is_capped(void **state)
{
    assert_int_equal(jp_backoff_ms(20, 1000, 60000, 0), 30000);
    assert_int_equal(jp_backoff_ms(1000, 1000, 60000, 0), 30000);
    assert_int_equal(jp_backoff_ms(INT32_MAX, INT64_MAX / 4, INT64_MAX, 0) > 0, 1);
    assert_true(jp_backoff_ms(64, 1000, 60000, UINT32_MAX) < 60000);
}

static void test_backoff_jitter_bounds(void **state)
{
    uint32_t rnds[] = {0, 1, 12345, 1u << 31, 0xfffffff0u, UINT32_MAX};
    for (size_t i = 0; i < sizeof rnds / sizeof rnds[0]; i++)
        for (int a = 1; a <= 12; a++) {
            int64_t nominal = 1000LL << (a - 1);
            if (nominal > 600000)
                nominal = 600000;
            int64_t d = jp_backoff_ms(a, 1000, 600000, rnds[i]);
            assert_true(d >= nominal / 2);
            assert_true(d < nominal);
        }
    assert_true(jp_backoff_ms(3, 1000, 600000, UINT32_MAX) > jp_backoff_ms(3, 1000, 600000, 0));
}

static void test_backoff_at_least_one_ms(void **state)
{
    assert_int_equal(jp_backoff_ms(1, 1, 1, 0), 1);
    assert_int_equal(jp_backoff_ms(0, 1, 100, 0), 1);
    assert_int_equal(jp_backoff_ms(-5, 10, 100, 0), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enqueued_moves_pending_to_queued),
        cmocka_unit_test(test_due_moves_scheduled_to_target),
        cmocka_unit_test(test_start_from_queued_runs_attempt),
        cmocka_unit_test(test_start_from_pending_is_allowed),
        cmocka_unit_test(test_start_rejects_stale_attempt),
        cmocka_unit_test(test_start_refused_when_scheduled_or_terminal),
        cmocka_unit_test(test_start_takeover_closes_old_attempt),
        cmocka_unit_test(test_start_repeated_by_same_worker_is_accepted_unchanged),
        cmocka_unit_test(test_start_repeated_by_another_worker_is_refused),
        cmocka_unit_test(test_start_poison_from_queued),
        cmocka_unit_test(test_start_poison_on_takeover),
        cmocka_unit_test(test_poisoned_job_is_terminal),
        cmocka_unit_test(test_complete_current_attempt),
        cmocka_unit_test(test_complete_refuses_stale_and_wrong_state),
        cmocka_unit_test(test_terminal_never_overwritten),
        cmocka_unit_test(test_fail_with_attempts_left_is_scheduled),
        cmocka_unit_test(test_fail_last_attempt_is_failed),
        cmocka_unit_test(test_fail_not_retryable_is_failed),
        cmocka_unit_test(test_fail_refuses_stale_attempt),
        cmocka_unit_test(test_cancel_each_live_state),
        cmocka_unit_test(test_cancel_running_closes_attempt),
        cmocka_unit_test(test_cancel_terminal_refused),
        cmocka_unit_test(test_retry_resets_budget),
        cmocka_unit_test(test_retry_cancelled_to_pending),
        cmocka_unit_test(test_retry_refused_unless_failed_or_cancelled),
        cmocka_unit_test(test_requeue_running_attempt),
        cmocka_unit_test(test_requeue_cycle_ends_as_crashed_worker),
        cmocka_unit_test(test_unknown_event_refused),
        cmocka_unit_test(test_backoff_grows_exponentially),
        cmocka_unit_test(test_backoff_is_capped),
        cmocka_unit_test(test_backoff_jitter_bounds),
        cmocka_unit_test(test_backoff_at_least_one_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
