/* The job record, its JSON forms, and validation of client requests.
 *
 * Three JSON shapes exist:
 *   - the API form (jp_job_to_json): every field of DESIGN.md §2;
 *   - the queue message's job_data (jp_job_to_message / jp_job_from_message):
 *     just what a worker needs to run the job;
 *   - the create request (jp_job_from_request): what a client may send.
 * Every limit on what a client controls lives here. */
#ifndef JP_CORE_JOB_H
#define JP_CORE_JOB_H

#include "core/err.h"
#include "core/uuid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    JP_ST_PENDING = 0,  /* recorded, not yet on a queue */
    JP_ST_SCHEDULED,    /* waiting for run_at (delay or retry backoff) */
    JP_ST_QUEUED,       /* on a queue, waiting for a worker */
    JP_ST_RUNNING,      /* claimed by a worker (attempts = current attempt) */
    JP_ST_COMPLETED,    /* terminal */
    JP_ST_FAILED,       /* terminal */
    JP_ST_CANCELLED,    /* terminal */
    JP_ST__COUNT
} jp_status;

typedef enum {
    JP_PRIO_EMERGENCY = 0,
    JP_PRIO_HIGH = 1,
    JP_PRIO_NORMAL = 2,
    JP_PRIO_LOW = 3,
    JP_PRIO__COUNT
} jp_priority;

/* Limits on what a client controls. */
#define JP_NAME_MAX 64               /* queue and strategy names */
#define JP_KEY_MAX 256               /* grouping key, idempotency key */
#define JP_WORKER_ID_MAX 128
#define JP_MAX_ATTEMPTS_LIMIT 100
#define JP_DEFAULT_MAX_ATTEMPTS 3
#define JP_DEFAULT_TIMEOUT_S 300
#define JP_TIMEOUT_LIMIT_S (7 * 86400)
#define JP_DELAY_LIMIT_S (366 * 86400)
#define JP_BATCH_LIMIT 1000          /* jobs per batch request */

typedef struct jp_job {
    char id[JP_UUID_STR_LEN + 1];
    char *queue;            /* owned; [a-z0-9_-]{1,64} */
    char *strategy;         /* owned; [a-z0-9_-]{1,64} */
    json_t *payload;        /* owned reference; never NULL (JSON null if absent) */
    int priority;           /* jp_priority */
    char *key;              /* owned; NULL if none */
    jp_status status;
    int attempts;           /* attempts started so far, including the current one */
    int attempt_base;       /* attempts made before the latest manual retry */
    int max_attempts;       /* budget per run (from attempt_base) */
    int timeout_seconds;
    int64_t run_at_ms;      /* 0 = not scheduled */
    char *idempotency_key;  /* owned; NULL if none */
    char request_hash[17];  /* hex FNV-1a of the canonical request; "" if none */
    json_t *result;         /* owned reference or NULL */
    json_t *error;          /* owned reference or NULL: {"code":…, "message":…} */
    char *worker_id;        /* owned; NULL until claimed */
    int64_t created_at_ms;
    int64_t started_at_ms;  /* 0 = unset; start of the current/last attempt */
    int64_t completed_at_ms;/* 0 = unset; when it became terminal */
    int64_t updated_at_ms;
} jp_job;

/* A new zeroed job (payload = JSON null). Never NULL. Free with jp_job_free. */
jp_job *jp_job_new(void);
/* Frees a job and everything it owns. NULL is fine. */
void jp_job_free(jp_job *job);
/* Frees an array of n jobs and the array itself. */
void jp_jobs_free(jp_job **jobs, size_t n);

const char *jp_status_name(jp_status st);
/* Returns the status for a name, or -1. */
int jp_status_parse(const char *name);
bool jp_status_terminal(jp_status st);

const char *jp_priority_name(int prio);
/* Accepts a name ("high") or a JSON integer 0..3; returns the priority or -1. */
int jp_priority_from_json(const json_t *v);

/* True if s matches [a-z0-9_-]{1,64}. */
bool jp_name_valid(const char *s);

/* Validates a create request and builds the job it asks for: a fresh UUIDv7
 * id, defaults filled in, status SCHEDULED when run_at/delay_seconds put it in
 * the future (run_at_ms set), else QUEUED. `now_ms` is the creation time.
 * Unknown fields are refused (a typo must not silently change meaning).
 * Whether the strategy exists is the caller's question, not this one's.
 * Returns 0 and *ret_job (caller frees), or JP_EINVAL with a message naming
 * the field. */
int jp_job_from_request(const json_t *body, int64_t now_ms, jp_job **ret_job, jp_err *err);

/* The API representation. Returns a new reference. */
json_t *jp_job_to_json(const jp_job *job);

/* The queue message's job_data for `attempt` (id, queue, strategy, payload,
 * priority, key, timeout_seconds, max_attempts, attempt). New reference. */
json_t *jp_job_to_message(const jp_job *job, int attempt);

/* Parses job_data back into a job (only the message's fields are set) and
 * the attempt it carries. Returns 0, or JP_EINVAL with a message. */
int jp_job_from_message(const json_t *data, jp_job **ret_job, int *ret_attempt, jp_err *err);

/* A worker's status report (POST /api/v1/jobs/{id}/status). */
typedef struct jp_report {
    jp_status status;     /* RUNNING, COMPLETED or FAILED */
    int attempt;          /* >= 1 */
    char *worker_id;      /* owned; may be NULL */
    json_t *result;       /* owned reference or NULL */
    json_t *error;        /* owned reference or NULL; normalised to {"code","message"} */
    bool retryable;       /* default true for failures */
} jp_report;

/* Validates a report body into *rep (fields owned by rep; release with
 * jp_report_done). Returns 0 or JP_EINVAL naming the field. */
int jp_report_from_json(const json_t *body, jp_report *rep, jp_err *err);
void jp_report_done(jp_report *rep);

/* Builds an error object {"code": code, "message": message}. New reference. */
json_t *jp_error_json(const char *code, const char *message);
/* Turns a client-sent error (string, object with message/code, or other)
 * into {"code":…, "message":…}. New reference, never NULL. */
json_t *jp_error_normalise(const json_t *v);

#endif
