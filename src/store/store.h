/* The job store: the database that is the source of truth for every job.
 *
 * One interface, several backends chosen by URL scheme (sqlite://path today,
 * postgres://… next). The transition rules are not here: every change of state
 * goes through jp_store_apply, which calls jp_state_apply (core/state.h) inside
 * the backend's transaction, so every backend and every writer obeys the same
 * rules. A jp_store is safe to use from many threads at once. */
#ifndef JP_STORE_STORE_H
#define JP_STORE_STORE_H

#include "core/err.h"
#include "core/job.h"
#include "core/state.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jp_store jp_store;

/* Opens (and creates or migrates the schema of) the store at `url`:
 * "sqlite://./jobplane.db", "sqlite:///abs/path.db", "sqlite://:memory:".
 * Returns 0 and *ret_store, JP_EINVAL for a bad URL or unknown scheme,
 * JP_EUNAVAIL when the database cannot be opened. */
int jp_store_open(const char *url, jp_store **ret_store, jp_err *err);
/* Closes the store. NULL is fine. */
void jp_store_close(jp_store *s);

/* The backend's name: "sqlite" or "postgres". */
const char *jp_store_backend(const jp_store *s);

/* How many write transactions can usefully run at once: 1 for SQLite (one
 * writer), more for a server database. */
int jp_store_writers(const jp_store *s);

/* Checks that the database answers. 0 or JP_EUNAVAIL. */
int jp_store_ping(jp_store *s, jp_err *err);

/* Inserts `n` jobs in one transaction (all or none). Jobs are inserted with
 * the status they carry. For a job whose idempotency_key is already stored:
 * if its request_hash matches, jobs[i] is replaced by the stored record (the
 * old jp_job is freed) and existed[i] is set true; if it differs, nothing is
 * inserted and JP_ECONFLICT names the key. `existed` may be NULL. */
int jp_store_create(jp_store *s, jp_job **jobs, size_t n, bool *existed, jp_err *err);

/* Loads one job. 0 and *ret_job (caller frees), or JP_ENOTFOUND. */
int jp_store_get(jp_store *s, const char *id, jp_job **ret_job, jp_err *err);

typedef struct jp_list_filter {
    int status;          /* jp_status, or -1 for any */
    const char *queue;   /* NULL for any */
    const char *key;     /* NULL for any */
    const char *cursor;  /* NULL for the first page; else an id: jobs older than it */
    size_t limit;        /* 1..1000 */
} jp_list_filter;

/* Lists jobs newest first (by id). *ret_jobs is an array of *ret_n jobs the
 * caller frees with jp_jobs_free; *ret_next_cursor (caller frees, NULL when
 * there is no further page) is what to pass as `cursor` for the next page. */
int jp_store_list(jp_store *s, const jp_list_filter *f, jp_job ***ret_jobs, size_t *ret_n,
                  char **ret_next_cursor, jp_err *err);

/* The attempt history of a job, oldest first, as a JSON array of
 * {"attempt","worker_id","started_at","finished_at","outcome","error","duration_ms"}
 * (new reference). JP_ENOTFOUND if the job does not exist. */
int jp_store_attempts(jp_store *s, const char *id, json_t **ret_attempts, jp_err *err);

/* Number of jobs in each status: reads every job. */
int jp_store_counts(jp_store *s, int64_t counts[JP_ST__COUNT], jp_err *err);

/* Number of jobs in one status: reads only those (through an index). */
int jp_store_count(jp_store *s, jp_status status, int64_t *ret_n, jp_err *err);

/* One state change of one job, for jp_store_apply. */
typedef struct jp_store_op {
    char job_id[JP_UUID_STR_LEN + 1];  /* in */
    jp_event ev;                       /* in; borrowed pointers must outlive the call */
    bool want_job;                     /* in: return the job as it is afterwards */
    int rc;                            /* out: 0, JP_ECONFLICT, JP_ENOTFOUND, … */
    bool refused;                      /* out: written, but the report gets 409 */
    jp_status before;                  /* out: status before the event (when found) */
    jp_status after;                   /* out: status after it (when rc == 0) */
    jp_job *job;                       /* out: when want_job and found; caller frees */
    jp_err err;                        /* out: why, when rc != 0 or refused */
} jp_store_op;

/* Applies `n` events in one transaction, each judged by jp_state_apply
 * against the row as it stands (earlier ops in the same batch included).
 * Each op gets its own rc; an op that is refused changes nothing. Returns 0
 * when the transaction committed (whatever the ops' own results), or
 * JP_EUNAVAIL and nothing changed. */
int jp_store_apply(jp_store *s, jp_store_op *ops, size_t n, jp_err *err);

/* Moves up to `limit` scheduled jobs whose run_at <= now_ms to `to` (QUEUED or
 * PENDING), in one transaction, and returns them (caller frees with
 * jp_jobs_free). *ret_next_due is the earliest run_at still scheduled after
 * this, or 0 if none. */
int jp_store_promote_due(jp_store *s, int64_t now_ms, jp_status to, size_t limit,
                         jp_job ***ret_jobs, size_t *ret_n, int64_t *ret_next_due,
                         jp_err *err);

/* Lists up to `limit` jobs in `status`, by id ascending, with id > after_id
 * (NULL = from the start): the reconciler's and restart recovery's scan.
 * Caller frees with jp_jobs_free. */
int jp_store_scan(jp_store *s, jp_status status, const char *after_id, size_t limit,
                  jp_job ***ret_jobs, size_t *ret_n, jp_err *err);

#endif
