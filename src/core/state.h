/* The job state machine: the one place that decides which transition is
 * allowed and what it changes. Every store backend (SQLite, PostgreSQL) and
 * every writer (the server, a worker reporting straight to the database)
 * applies events through jp_state_apply, so the rules cannot drift apart.
 *
 *  pending ──enqueued──► queued ──start──► running ──complete──► completed
 *     │                    ▲  │              │ └──fail, attempts left──► scheduled ──due──► queued
 *     └──run_at future──► scheduled           └──fail, none left──► failed
 *  cancel: pending|scheduled|queued|running → cancelled
 *  retry:  failed|cancelled → queued (history kept, a fresh attempt budget) */
#ifndef JP_CORE_STATE_H
#define JP_CORE_STATE_H

#include "core/err.h"
#include "core/job.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    JP_EV_ENQUEUED,  /* pending → queued: the job is on a queue now */
    JP_EV_DUE,       /* scheduled → `to` (queued or pending): run_at has come */
    JP_EV_START,     /* queued → running as attempt N (or a lease take-over) */
    JP_EV_COMPLETE,  /* running(N) → completed */
    JP_EV_FAIL,      /* running(N) → scheduled (backoff) or failed */
    JP_EV_CANCEL,    /* any non-terminal → cancelled */
    JP_EV_RETRY,     /* failed|cancelled → queued (or `to`) */
    JP_EV_REQUEUE,   /* running(N) → queued: its worker is gone (restart
                        recovery, drain); the attempt ends as "lost" */
} jp_event_kind;

typedef struct jp_event {
    jp_event_kind kind;
    int attempt;            /* START/COMPLETE/FAIL: the attempt the report is for */
    const char *worker_id;  /* START: who runs it (may be NULL) */
    const json_t *result;   /* COMPLETE/FAIL: borrowed, may be NULL */
    const json_t *error;    /* FAIL: borrowed {"code","message"}, may be NULL */
    bool retryable;         /* FAIL: may it run again if attempts remain */
    jp_status to;           /* DUE/RETRY: QUEUED (embedded) or PENDING (distributed) */
    int64_t now_ms;         /* the time of the event */
    int64_t backoff_ms;     /* FAIL: delay before the retry (jp_backoff_ms) */
} jp_event;

/* The columns a transition reads and may change. */
typedef struct jp_jstate {
    jp_status status;
    int attempts;
    int attempt_base;
    int max_attempts;
    int64_t run_at_ms;
    int64_t started_at_ms;
    int64_t completed_at_ms;
    char worker_id[JP_WORKER_ID_MAX + 1]; /* who runs the current attempt; "" if unknown */
} jp_jstate;

/* What a transition asks the store to write besides the jp_jstate columns. */
typedef struct jp_effects {
    bool set_worker;           /* jobs.worker_id = event worker_id */
    bool set_result;           /* jobs.result = event result (may be NULL) */
    bool set_error;            /* jobs.error = `error` below (may be NULL to clear) */
    const json_t *error;       /* borrowed: from the event or a static object */
    bool open_attempt;         /* insert attempts row `open_n` (worker, started now) */
    int open_n;
    bool close_attempt;        /* update attempts row `close_n`: finished now */
    int close_n;
    const char *close_outcome; /* "completed" "failed" "cancelled" "lost" "crashed" */
    const json_t *close_error; /* borrowed, may be NULL */
    bool refuse;               /* the change is written, yet the report that
                                  caused it is answered 409 (poison job) */
} jp_effects;

/* Applies `ev` to `st` in place and fills `fx`. Returns 0 when the change is
 * to be written (check fx->refuse), or JP_ECONFLICT when the event is not
 * allowed in the current state (a stale attempt, a terminal job, …): then
 * `st` and `fx` are unchanged and nothing must be written. The message says
 * why, for the 409 body. Allocates nothing; `fx` borrows from `ev` and from
 * static error objects that live for the whole process. */
int jp_state_apply(jp_jstate *st, const jp_event *ev, jp_effects *fx, jp_err *err);

/* Retry delay after attempt `attempt` failed (1-based): base * 2^(attempt-1),
 * capped at cap_ms, then scaled by a jitter factor in [0.5, 1.0) taken from
 * `rnd` (uniform random bits), so a herd of failures spreads out. */
int64_t jp_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd);

#endif
