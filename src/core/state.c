/* The job state machine: which event is allowed in which state, and what it writes. */
#include "core/state.h"

#include <stdio.h>
#include <string.h>

#include <pthread.h>

/* Error objects the transitions hand out by reference. Made once and never
 * freed, so the borrowed pointers in jp_effects stay valid for the process. */
static pthread_once_t statics_once = PTHREAD_ONCE_INIT;
static json_t *err_crashed;      /* poison: too many deliveries without a report */
static json_t *err_lease_lost;   /* the previous attempt's lease lapsed */
static json_t *err_stopped;      /* the worker stopped before finishing (requeue) */
static json_t *err_failed;       /* a failure reported without an error */
static json_t *err_cancelled;

static void statics_init(void)
{
    err_crashed = jp_error_json("crashed_worker",
                                "delivered max_attempts times with no report: its worker "
                                "crashed or was cut off each time");
    err_lease_lost = jp_error_json("worker_lost", "lease expired; delivered again");
    err_stopped = jp_error_json("worker_lost", "the worker stopped before finishing");
    err_failed = jp_error_json("job_error", "failed");
    err_cancelled = jp_error_json("cancelled", "cancelled by request");
}

static int conflict_status(const jp_jstate *s, jp_err *err)
{
    return jp_err_set(err, JP_ECONFLICT, "job is %s", jp_status_name(s->status));
}

/* START of attempt n has used up the budget of this run? */
static bool poisoned(const jp_jstate *s, int n)
{
    return (int64_t)n - s->attempt_base > s->max_attempts;
}

static int start(jp_jstate *s, const jp_event *ev, jp_effects *f, jp_err *err)
{
    int n = ev->attempt;

    switch (s->status) {
    case JP_ST_QUEUED:
    case JP_ST_PENDING:  /* a worker may see the message before ENQUEUED is recorded */
        if (n <= s->attempts)
            return jp_err_set(err, JP_ECONFLICT, "attempt %d is stale, job is at attempt %d", n,
                              s->attempts);
        break;
    case JP_ST_RUNNING:
        /* The same worker saying so again (its first answer was lost, say
         * to a database restart during the commit): yes, it is still its. */
        if (n == s->attempts && ev->worker_id && s->worker_id[0] &&
            strcmp(ev->worker_id, s->worker_id) == 0)
            return 0;
        if (n == s->attempts)
            return jp_err_set(err, JP_ECONFLICT, "attempt %d is already running", n);
        if (n < s->attempts)
            return jp_err_set(err, JP_ECONFLICT, "attempt %d is stale, job is at attempt %d", n,
                              s->attempts);
        /* A newer delivery of a running job: its lease lapsed and the worker
         * that held it is presumed gone. */
        if (s->attempts >= 1) {
            f->close_attempt = true;
            f->close_n = s->attempts;
            f->close_outcome = "lost";
            f->close_error = err_lease_lost;
        }
        break;
    default:
        return conflict_status(s, err);
    }

    if (poisoned(s, n)) {
        /* attempts stays: this delivery never ran, so it is no attempt and
         * has no row in the history. */
        s->status = JP_ST_FAILED;
        s->run_at_ms = 0;
        s->completed_at_ms = ev->now_ms;
        f->set_error = true;
        f->error = err_crashed;
        if (f->close_attempt) {
            f->close_outcome = "crashed";
            f->close_error = err_crashed;
        }
        f->refuse = true;
        return 0;
    }
    s->status = JP_ST_RUNNING;
    s->attempts = n;
    s->run_at_ms = 0;
    s->started_at_ms = ev->now_ms;
    s->completed_at_ms = 0;
    f->set_worker = true;
    snprintf(s->worker_id, sizeof s->worker_id, "%s", ev->worker_id ? ev->worker_id : "");
    f->open_attempt = true;
    f->open_n = n;
    f->set_error = true;
    f->error = NULL;
    f->set_result = true;
    return 0;
}

/* COMPLETE/FAIL/REQUEUE are about the current attempt of a running job only. */
static int check_current(const jp_jstate *s, int n, jp_err *err)
{
    if (s->status != JP_ST_RUNNING)
        return conflict_status(s, err);
    if (n != s->attempts)
        return jp_err_set(err, JP_ECONFLICT, "attempt %d is not the current attempt %d", n,
                          s->attempts);
    return 0;
}

static bool target_ok(jp_status to)
{
    return to == JP_ST_QUEUED || to == JP_ST_PENDING;
}

int jp_state_apply(jp_jstate *st, const jp_event *ev, jp_effects *fx, jp_err *err)
{
    jp_jstate s = *st;
    jp_effects f = {0};
    int rc = 0;

    pthread_once(&statics_once, statics_init);
    switch (ev->kind) {
    case JP_EV_ENQUEUED:
        if (s.status != JP_ST_PENDING)
            return conflict_status(&s, err);
        s.status = JP_ST_QUEUED;
        break;

    case JP_EV_DUE:
        if (!target_ok(ev->to))
            return jp_err_set(err, JP_EINVAL, "a due job goes to queued or pending, not %s",
                              jp_status_name(ev->to));
        if (s.status != JP_ST_SCHEDULED)
            return conflict_status(&s, err);
        s.status = ev->to;
        s.run_at_ms = 0;
        break;

    case JP_EV_START:
        if (ev->attempt < 1)
            return jp_err_set(err, JP_EINVAL, "attempt must be at least 1, not %d", ev->attempt);
        rc = start(&s, ev, &f, err);
        if (rc < 0)
            return rc;
        break;

    case JP_EV_COMPLETE:
        rc = check_current(&s, ev->attempt, err);
        if (rc < 0)
            return rc;
        s.status = JP_ST_COMPLETED;
        s.completed_at_ms = ev->now_ms;
        s.run_at_ms = 0;
        f.set_result = true;
        f.set_error = true;
        f.error = NULL;
        f.close_attempt = true;
        f.close_n = ev->attempt;
        f.close_outcome = "completed";
        break;

    case JP_EV_FAIL: {
        rc = check_current(&s, ev->attempt, err);
        if (rc < 0)
            return rc;
        const json_t *error = ev->error ? ev->error : err_failed;
        if (ev->retryable && (int64_t)ev->attempt - s.attempt_base < s.max_attempts) {
            s.status = JP_ST_SCHEDULED;
            s.run_at_ms = ev->now_ms + (ev->backoff_ms > 0 ? ev->backoff_ms : 0);
        } else {
            s.status = JP_ST_FAILED;
            s.run_at_ms = 0;
            s.completed_at_ms = ev->now_ms;
        }
        f.set_result = true;
        f.set_error = true;
        f.error = error;
        f.close_attempt = true;
        f.close_n = ev->attempt;
        f.close_outcome = "failed";
        f.close_error = error;
        break;
    }

    case JP_EV_CANCEL:
        if (jp_status_terminal(s.status))
            return jp_err_set(err, JP_ECONFLICT, "job is already %s", jp_status_name(s.status));
        if (s.status == JP_ST_RUNNING && s.attempts >= 1) {
            f.close_attempt = true;
            f.close_n = s.attempts;
            f.close_outcome = "cancelled";
            f.close_error = err_cancelled;
        }
        s.status = JP_ST_CANCELLED;
        s.completed_at_ms = ev->now_ms;
        s.run_at_ms = 0;
        f.set_error = true;
        f.error = err_cancelled;
        break;

    case JP_EV_RETRY:
        if (!target_ok(ev->to))
            return jp_err_set(err, JP_EINVAL, "a retried job goes to queued or pending, not %s",
                              jp_status_name(ev->to));
        if (s.status != JP_ST_FAILED && s.status != JP_ST_CANCELLED)
            return jp_err_set(err, JP_ECONFLICT,
                              "job is %s; only failed or cancelled jobs can be retried",
                              jp_status_name(s.status));
        s.status = ev->to;
        s.attempt_base = s.attempts;
        s.completed_at_ms = 0;
        s.run_at_ms = 0;
        f.set_error = true;
        f.error = NULL;
        f.set_result = true;
        break;

    case JP_EV_REQUEUE:
        rc = check_current(&s, ev->attempt, err);
        if (rc < 0)
            return rc;
        s.status = JP_ST_QUEUED;
        s.run_at_ms = 0;
        f.close_attempt = true;
        f.close_n = ev->attempt;
        f.close_outcome = "lost";
        f.close_error = err_stopped;
        break;

    default:
        return jp_err_set(err, JP_EINVAL, "unknown event %d", (int)ev->kind);
    }
    *st = s;
    *fx = f;
    return 0;
}

int64_t jp_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd)
{
    if (base_ms <= 0)
        return 0;
    if (cap_ms <= 0 || cap_ms > INT64_MAX / 2)
        cap_ms = INT64_MAX / 2;  /* no cap: only keep clear of overflow */
    int64_t d = base_ms < cap_ms ? base_ms : cap_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2;
    double factor = 0.5 + 0.5 * ((double)rnd / 4294967296.0);
    int64_t r = (int64_t)((double)d * factor);
    return r >= 1 ? r : 1;
}
