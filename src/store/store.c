/* The store's logic, written once for every backend: URL dispatch, the SQL,
 * the schema migrations, the transitions and the JSON columns. The backends
 * (driver.h) only run the statements. */
#include "store/store.h"

#include "core/jtime.h"
#include "core/mem.h"
/* libpq is a required dependency, so PostgreSQL is always built in. */
#ifndef JP_WITH_POSTGRES
#define JP_WITH_POSTGRES 1
#endif
#include "store/driver.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_LIMIT_MAX 1000
/* Tries of a create that lost a race on a unique key to another process
 * (PostgreSQL): the next try sees the winner's row. */
#define CREATE_TRIES 3
/* Tries of a batch of transitions that lost a race to another process's
 * writer (PostgreSQL: a deadlock between row locks, which the driver reports
 * as JP_ECONFLICT): the next try judges the rows as the winner left them. */
#define APPLY_TRIES 3

/* ---- schema ---------------------------------------------------------------- */

static const char schema_version_ddl[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY)";

/* Migration N is migrations[N-1]. Append only; never edit a published one.
 * Timestamps are ms since the epoch (NULL when unset); status is its name. */
static const char *const migrations[] = {
    "CREATE TABLE jobs ("
    " id TEXT PRIMARY KEY,"
    " queue TEXT NOT NULL,"
    " strategy TEXT NOT NULL,"
    " payload TEXT NOT NULL,"
    " priority INTEGER NOT NULL,"
    " key TEXT,"
    " status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " attempt_base INTEGER NOT NULL,"
    " max_attempts INTEGER NOT NULL,"
    " timeout_seconds INTEGER NOT NULL,"
    " run_at BIGINT,"
    " idempotency_key TEXT UNIQUE,"
    " request_hash TEXT,"
    " result TEXT,"
    " error TEXT,"
    " worker_id TEXT,"
    " created_at BIGINT NOT NULL,"
    " started_at BIGINT,"
    " completed_at BIGINT,"
    " updated_at BIGINT NOT NULL);"
    "CREATE INDEX jobs_status_run_at ON jobs (status, run_at);"
    "CREATE INDEX jobs_status_id ON jobs (status, id);"
    "CREATE INDEX jobs_queue_id ON jobs (queue, id);"
    "CREATE INDEX jobs_key_id ON jobs (key, id);"
    "CREATE TABLE attempts ("
    " job_id TEXT NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " worker_id TEXT,"
    " started_at BIGINT NOT NULL,"
    " finished_at BIGINT,"
    " outcome TEXT NOT NULL,"
    " error TEXT,"
    " PRIMARY KEY (job_id, attempt))",
};
#define MIGRATIONS (sizeof migrations / sizeof migrations[0])

/* ---- statements -------------------------------------------------------------- */

/* The columns of a full job row, in the order of the C_* indexes. */
#define JOB_COLS                                                                           \
    "id, queue, strategy, payload, priority, key, status, attempts, attempt_base,"        \
    " max_attempts, timeout_seconds, run_at, idempotency_key, request_hash, result, error," \
    " worker_id, created_at, started_at, completed_at, updated_at"

enum {
    C_ID, C_QUEUE, C_STRATEGY, C_PAYLOAD, C_PRIORITY, C_KEY, C_STATUS, C_ATTEMPTS,
    C_ATTEMPT_BASE, C_MAX_ATTEMPTS, C_TIMEOUT, C_RUN_AT, C_IDEM_KEY, C_REQUEST_HASH,
    C_RESULT, C_ERROR, C_WORKER_ID, C_CREATED_AT, C_STARTED_AT, C_COMPLETED_AT,
    C_UPDATED_AT, C__COUNT
};

/* Filters of jp_store_list: one statement per combination, so that each can
 * use its index (an "($1 IS NULL OR …)" form scans the whole table for a
 * rare status). */
enum { LF_STATUS = 1, LF_QUEUE = 2, LF_KEY = 4, LF_CURSOR = 8, LF__COMBOS = 16 };

enum {
    SQL_PING,
    SQL_SCHEMA_VERSION,
    SQL_SCHEMA_SET,
    SQL_JOB_INSERT,
    SQL_JOB_GET,
    SQL_JOB_BY_IDEM,
    SQL_JOB_EXISTS,
    SQL_STATE_GET,
    SQL_STATE_SET,
    SQL_ATTEMPT_OPEN,
    SQL_ATTEMPT_CLOSE,
    SQL_ATTEMPTS_LIST,
    SQL_COUNTS,
    SQL_DUE_IDS,
    SQL_NEXT_DUE,
    SQL_SCAN_FIRST,
    SQL_SCAN_AFTER,
    SQL_LIST,  /* SQL_LIST + LF_* mask: built at open */
    SQL__COUNT = SQL_LIST + LF__COMBOS
};

static const jp_sql_def sql_defs[SQL__COUNT] = {
    [SQL_PING] = {"SELECT 1", 0},
    [SQL_SCHEMA_VERSION] = {"SELECT MAX(version) FROM schema_version", 0},
    [SQL_SCHEMA_SET] = {"INSERT INTO schema_version (version) VALUES ($1)", 0},
    [SQL_JOB_INSERT] = {"INSERT INTO jobs (" JOB_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7,"
                        " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                        0},
    [SQL_JOB_GET] = {"SELECT " JOB_COLS " FROM jobs WHERE id = $1", 0},
    [SQL_JOB_BY_IDEM] = {"SELECT " JOB_COLS " FROM jobs WHERE idempotency_key = $1", 0},
    [SQL_JOB_EXISTS] = {"SELECT 1 FROM jobs WHERE id = $1", 0},
    [SQL_STATE_GET] = {"SELECT status, attempts, attempt_base, max_attempts, run_at,"
                       " started_at, completed_at, worker_id FROM jobs WHERE id = $1",
                       JP_SQLF_LOCK},
    /* One statement for every transition; the flags $10/$12/$14 say which of
     * worker_id, result and error the transition sets. */
    [SQL_STATE_SET] = {"UPDATE jobs SET status = $2, attempts = $3, attempt_base = $4,"
                       " max_attempts = $5, run_at = $6, started_at = $7, completed_at = $8,"
                       " updated_at = $9,"
                       " worker_id = CASE WHEN $10 = 1 THEN CAST($11 AS TEXT) ELSE worker_id END,"
                       " result = CASE WHEN $12 = 1 THEN CAST($13 AS TEXT) ELSE result END,"
                       " error = CASE WHEN $14 = 1 THEN CAST($15 AS TEXT) ELSE error END"
                       " WHERE id = $1",
                       0},
    /* A redelivered attempt number starts its row afresh. */
    [SQL_ATTEMPT_OPEN] = {"INSERT INTO attempts (job_id, attempt, worker_id, started_at,"
                          " finished_at, outcome, error) VALUES ($1, $2, $3, $4, NULL,"
                          " 'running', NULL) ON CONFLICT (job_id, attempt) DO UPDATE SET"
                          " worker_id = excluded.worker_id, started_at = excluded.started_at,"
                          " finished_at = NULL, outcome = 'running', error = NULL",
                          0},
    /* An attempt whose start was never recorded (its START was lost) gets a
     * row now, with the job's worker: runs before the jobs row changes. */
    [SQL_ATTEMPT_CLOSE] = {"INSERT INTO attempts (job_id, attempt, worker_id, started_at,"
                           " finished_at, outcome, error) VALUES ($1, $2,"
                           " (SELECT worker_id FROM jobs WHERE id = $1), $3, $4, $5, $6)"
                           " ON CONFLICT (job_id, attempt) DO UPDATE SET"
                           " finished_at = excluded.finished_at, outcome = excluded.outcome,"
                           " error = excluded.error",
                           0},
    [SQL_ATTEMPTS_LIST] = {"SELECT attempt, worker_id, started_at, finished_at, outcome, error"
                           " FROM attempts WHERE job_id = $1 ORDER BY attempt",
                           0},
    [SQL_COUNTS] = {"SELECT status, COUNT(*) FROM jobs GROUP BY status", 0},
    [SQL_DUE_IDS] = {"SELECT id FROM jobs WHERE status = $1 AND run_at <= $2"
                     " ORDER BY run_at LIMIT $3",
                     JP_SQLF_LOCK | JP_SQLF_SKIP_LOCKED},
    [SQL_NEXT_DUE] = {"SELECT MIN(run_at) FROM jobs WHERE status = $1", 0},
    [SQL_SCAN_FIRST] = {"SELECT " JOB_COLS " FROM jobs WHERE status = $1 ORDER BY id LIMIT $2",
                        0},
    [SQL_SCAN_AFTER] = {"SELECT " JOB_COLS " FROM jobs WHERE status = $1 AND id > $2"
                        " ORDER BY id LIMIT $3",
                        0},
};

struct jp_store {
    const jp_driver *drv;
    jp_db *db;
    jp_sql_def sql[SQL__COUNT];   /* sql_defs plus the list statements */
    char *list_sql[LF__COMBOS];   /* owned texts of the list statements */
};

static const jp_driver *const drivers[] = {
    &jp_sqlite_driver,
#ifdef JP_WITH_POSTGRES
    &jp_postgres_driver,
#endif
};

/* The list statement for a filter combination; parameters are numbered in
 * the order status, queue, key, cursor, limit, skipping absent filters. */
static char *list_sql(unsigned mask)
{
    static const char *const conds[] = {"status =", "queue =", "key =", "id <"};
    char where[160] = "";
    size_t len = 0;
    int pos = 1;

    for (unsigned bit = 0; bit < 4; bit++) {
        if (!(mask & (1u << bit)))
            continue;
        len += (size_t)snprintf(where + len, sizeof where - len, "%s%s $%d",
                                pos == 1 ? " WHERE " : " AND ", conds[bit], pos);
        pos++;
    }
    return jp_xasprintf("SELECT " JOB_COLS " FROM jobs%s ORDER BY id DESC LIMIT $%d", where, pos);
}

/* ---- small helpers ------------------------------------------------------------- */

/* Takes a prepared statement; on failure the caller rolls back. */
#define STMT(c, id, q, err)                           \
    do {                                              \
        rc = jp_conn_stmt((c), (id), &(q), (err));    \
        if (rc < 0)                                   \
            goto fail;                                \
    } while (0)

/* Runs a statement that returns no rows and resets it. */
static int exec_stmt(jp_stmt *q, jp_err *err)
{
    int rc = jp_stmt_step(q, err);
    jp_stmt_reset(q);
    return rc < 0 ? rc : 0;
}

static void bind_ms(jp_stmt *q, int pos, int64_t ms)
{
    if (ms)
        jp_stmt_bind_int64(q, pos, ms);
    else
        jp_stmt_bind_null(q, pos);
}

static int64_t col_ms(jp_stmt *q, int col)
{
    return jp_stmt_null(q, col) ? 0 : jp_stmt_int64(q, col);
}

/* Compact JSON text for a column; NULL for NULL. Caller frees. */
static char *json_text(const json_t *v)
{
    if (!v)
        return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return s ? s : jp_xstrdup("null");
}

/* A JSON column; NULL for SQL NULL or text that does not parse. */
static json_t *col_json(jp_stmt *q, int col)
{
    const char *s = jp_stmt_text(q, col);
    return s ? json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
}

static char *col_strdup(jp_stmt *q, int col)
{
    return jp_xstrdup(jp_stmt_text(q, col));
}

/* Builds a job from a row of JOB_COLS. */
static int job_from_row(jp_stmt *q, jp_job **ret_job, jp_err *err)
{
    const char *id = jp_stmt_text(q, C_ID);
    const char *status = jp_stmt_text(q, C_STATUS);
    int st = jp_status_parse(status);

    if (st < 0)
        return jp_err_set(err, JP_EINTERNAL, "job %s has an unknown status \"%s\"",
                          id ? id : "?", status ? status : "");
    jp_job *job = jp_job_new();
    snprintf(job->id, sizeof job->id, "%s", id ? id : "");
    job->queue = jp_xstrdup(jp_stmt_text(q, C_QUEUE) ? jp_stmt_text(q, C_QUEUE) : "");
    job->strategy = jp_xstrdup(jp_stmt_text(q, C_STRATEGY) ? jp_stmt_text(q, C_STRATEGY) : "");
    json_t *payload = col_json(q, C_PAYLOAD);
    if (payload) {  /* unreadable text stays JSON null: the job must still load */
        json_decref(job->payload);
        job->payload = payload;
    }
    job->priority = (int)jp_stmt_int64(q, C_PRIORITY);
    job->key = col_strdup(q, C_KEY);
    job->status = (jp_status)st;
    job->attempts = (int)jp_stmt_int64(q, C_ATTEMPTS);
    job->attempt_base = (int)jp_stmt_int64(q, C_ATTEMPT_BASE);
    job->max_attempts = (int)jp_stmt_int64(q, C_MAX_ATTEMPTS);
    job->timeout_seconds = (int)jp_stmt_int64(q, C_TIMEOUT);
    job->run_at_ms = col_ms(q, C_RUN_AT);
    job->idempotency_key = col_strdup(q, C_IDEM_KEY);
    const char *hash = jp_stmt_text(q, C_REQUEST_HASH);
    snprintf(job->request_hash, sizeof job->request_hash, "%s", hash ? hash : "");
    job->result = col_json(q, C_RESULT);
    job->error = col_json(q, C_ERROR);
    job->worker_id = col_strdup(q, C_WORKER_ID);
    job->created_at_ms = col_ms(q, C_CREATED_AT);
    job->started_at_ms = col_ms(q, C_STARTED_AT);
    job->completed_at_ms = col_ms(q, C_COMPLETED_AT);
    job->updated_at_ms = col_ms(q, C_UPDATED_AT);
    *ret_job = job;
    return 0;
}

/* Loads a full job by id (statement SQL_JOB_GET) or by idempotency key
 * (SQL_JOB_BY_IDEM). 0 and *ret_job; 1 when there is no such row; < 0 on a
 * database error. */
static int load_job(jp_conn *c, int sql, const char *arg, jp_job **ret_job, jp_err *err)
{
    jp_stmt *q;
    int rc = jp_conn_stmt(c, sql, &q, err);
    if (rc < 0)
        return rc;
    jp_stmt_bind_text(q, 1, arg);
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW)
        rc = job_from_row(q, ret_job, err);
    else if (rc == JP_DB_DONE)
        rc = 1;
    jp_stmt_reset(q);
    return rc;
}

/* Appends to a growing array of jobs. */
static void push_job(jp_job ***jobs, size_t *n, size_t *cap, jp_job *job)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *jobs = jp_xrealloc(*jobs, *cap * sizeof **jobs);
    }
    (*jobs)[(*n)++] = job;
}

/* Steps a statement of JOB_COLS rows into a new array. */
static int collect_jobs(jp_stmt *q, jp_job ***ret_jobs, size_t *ret_n, jp_err *err)
{
    jp_job **jobs = NULL;
    size_t n = 0, cap = 0;
    int rc;

    while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
        jp_job *job;
        rc = job_from_row(q, &job, err);
        if (rc < 0)
            break;
        push_job(&jobs, &n, &cap, job);
    }
    jp_stmt_reset(q);
    if (rc < 0) {
        jp_jobs_free(jobs, n);
        return rc;
    }
    *ret_jobs = jobs;
    *ret_n = n;
    return 0;
}

/* ---- open, close, migrate ---------------------------------------------------------- */

static int migrate(jp_store *s, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    int64_t version = 0;
    int rc = jp_db_begin(s->db, JP_TX_SCHEMA, &c, err);
    if (rc < 0)
        return rc;
    rc = jp_conn_exec(c, schema_version_ddl, err);
    if (rc < 0)
        goto fail;
    STMT(c, SQL_SCHEMA_VERSION, q, err);
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW && !jp_stmt_null(q, 0))
        version = jp_stmt_int64(q, 0);
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;
    if (version > (int64_t)MIGRATIONS) {
        rc = jp_err_set(err, JP_EUNAVAIL,
                        "database schema version %" PRId64 " is newer than this build knows (%zu)",
                        version, MIGRATIONS);
        goto fail;
    }
    for (int64_t v = version + 1; v <= (int64_t)MIGRATIONS; v++) {
        rc = jp_conn_exec(c, migrations[v - 1], err);
        if (rc < 0)
            goto fail;
        STMT(c, SQL_SCHEMA_SET, q, err);
        jp_stmt_bind_int64(q, 1, v);
        rc = exec_stmt(q, err);
        if (rc < 0)
            goto fail;
    }
    return jp_conn_commit(c, err);
fail:
    jp_conn_rollback(c);
    return rc;
}

int jp_store_open(const char *url, jp_store **ret_store, jp_err *err)
{
    const jp_driver *drv = NULL;
    jp_store *s = NULL;
    const char *sep = url ? strstr(url, "://") : NULL;
    int rc;

    if (!sep)
        return jp_err_set(err, JP_EINVAL,
                          "bad database URL: want sqlite://PATH or postgres://HOST/DB");
    size_t slen = (size_t)(sep - url);
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0] && !drv; i++) {
        for (const char *const *sc = drivers[i]->schemes; *sc && !drv; sc++) {
            if (strlen(*sc) == slen && strncmp(*sc, url, slen) == 0)
                drv = drivers[i];
        }
    }
    if (!drv)  /* name the scheme only: the rest of a URL may hold a password */
        return jp_err_set(err, JP_EINVAL, "unsupported database scheme \"%.*s\"",
                          (int)(slen > 32 ? 32 : slen), url);

    s = jp_xcalloc(1, sizeof *s);
    s->drv = drv;
    memcpy(s->sql, sql_defs, sizeof sql_defs);
    for (unsigned m = 0; m < LF__COMBOS; m++) {
        s->list_sql[m] = list_sql(m);
        s->sql[SQL_LIST + m].text = s->list_sql[m];
    }
    rc = drv->open(url, s->sql, SQL__COUNT, &s->db, err);
    if (rc < 0)
        goto out;
    rc = migrate(s, err);
    if (rc < 0)
        goto out;
    *ret_store = s;
    s = NULL;
out:
    jp_store_close(s);
    return rc;
}

void jp_store_close(jp_store *s)
{
    if (!s)
        return;
    jp_db_close(s->db);
    for (unsigned m = 0; m < LF__COMBOS; m++)
        free(s->list_sql[m]);
    free(s);
}

const char *jp_store_backend(const jp_store *s)
{
    return s->drv->name;
}

int jp_store_ping(jp_store *s, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, SQL_PING, q, err);
    rc = jp_stmt_step(q, err);
    jp_stmt_reset(q);
    if (rc != JP_DB_ROW) {
        if (rc >= 0)
            rc = jp_err_set(err, JP_EUNAVAIL, "the database returned nothing");
        goto fail;
    }
    return jp_conn_commit(c, err);
fail:
    jp_conn_rollback(c);
    if (err)
        err->code = JP_EUNAVAIL;  /* keep the driver's message */
    return JP_EUNAVAIL;
}

/* ---- create -------------------------------------------------------------------------- */

static int insert_job(jp_conn *c, const jp_job *job, jp_err *err)
{
    jp_stmt *q;
    char *payload = NULL, *result = NULL, *error = NULL;
    int rc = jp_conn_stmt(c, SQL_JOB_INSERT, &q, err);
    if (rc < 0)
        return rc;
    payload = json_text(job->payload ? job->payload : json_null());
    result = json_text(job->result);
    error = json_text(job->error);
    jp_stmt_bind_text(q, 1 + C_ID, job->id);
    jp_stmt_bind_text(q, 1 + C_QUEUE, job->queue ? job->queue : "");
    jp_stmt_bind_text(q, 1 + C_STRATEGY, job->strategy ? job->strategy : "");
    jp_stmt_bind_text(q, 1 + C_PAYLOAD, payload);
    jp_stmt_bind_int64(q, 1 + C_PRIORITY, job->priority);
    jp_stmt_bind_text(q, 1 + C_KEY, job->key);
    jp_stmt_bind_text(q, 1 + C_STATUS, jp_status_name(job->status));
    jp_stmt_bind_int64(q, 1 + C_ATTEMPTS, job->attempts);
    jp_stmt_bind_int64(q, 1 + C_ATTEMPT_BASE, job->attempt_base);
    jp_stmt_bind_int64(q, 1 + C_MAX_ATTEMPTS, job->max_attempts);
    jp_stmt_bind_int64(q, 1 + C_TIMEOUT, job->timeout_seconds);
    bind_ms(q, 1 + C_RUN_AT, job->run_at_ms);
    jp_stmt_bind_text(q, 1 + C_IDEM_KEY, job->idempotency_key);
    jp_stmt_bind_text(q, 1 + C_REQUEST_HASH, job->request_hash[0] ? job->request_hash : NULL);
    jp_stmt_bind_text(q, 1 + C_RESULT, result);
    jp_stmt_bind_text(q, 1 + C_ERROR, error);
    jp_stmt_bind_text(q, 1 + C_WORKER_ID, job->worker_id);
    jp_stmt_bind_int64(q, 1 + C_CREATED_AT, job->created_at_ms);
    bind_ms(q, 1 + C_STARTED_AT, job->started_at_ms);
    bind_ms(q, 1 + C_COMPLETED_AT, job->completed_at_ms);
    jp_stmt_bind_int64(q, 1 + C_UPDATED_AT,
                       job->updated_at_ms ? job->updated_at_ms : job->created_at_ms);
    rc = exec_stmt(q, err);
    free(payload);
    free(result);
    free(error);
    return rc;
}

/* One try of jp_store_create. stored[i] receives the stored job for a known
 * idempotency key. *raced is set when an INSERT hit a unique key. */
static int create_once(jp_store *s, jp_job **jobs, size_t n, jp_job **stored, bool *raced,
                       jp_err *err)
{
    jp_conn *c;
    int rc = jp_db_begin(s->db, JP_TX_WRITE, &c, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const jp_job *job = jobs[i];
        if (job->idempotency_key) {
            /* Earlier jobs of this batch are already in the table, so a
             * repeat inside the batch is found here too. */
            jp_job *old = NULL;
            rc = load_job(c, SQL_JOB_BY_IDEM, job->idempotency_key, &old, err);
            if (rc < 0)
                goto fail;
            if (rc == 0) {
                if (strcmp(old->request_hash, job->request_hash) != 0) {
                    jp_job_free(old);
                    rc = jp_err_set(err, JP_ECONFLICT,
                                    "idempotency key \"%s\" was used with a different request",
                                    job->idempotency_key);
                    goto fail;
                }
                stored[i] = old;
                continue;
            }
        }
        rc = insert_job(c, job, err);
        if (rc == JP_ECONFLICT) {
            *raced = true;
            rc = jp_err_set(err, JP_ECONFLICT, "job %s already exists", job->id);
        }
        if (rc < 0)
            goto fail;
    }
    return jp_conn_commit(c, err);
fail:
    jp_conn_rollback(c);
    return rc;
}

int jp_store_create(jp_store *s, jp_job **jobs, size_t n, bool *existed, jp_err *err)
{
    jp_job **stored;
    int rc = 0;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        /* A row the store could not read back must never be written. */
        const jp_job *job = jobs[i];
        if (!job->queue || !job->strategy || (int)job->status < 0 ||
            job->status >= JP_ST__COUNT)
            return jp_err_set(err, JP_EINVAL, "job %zu of the batch is incomplete", i);
    }
    stored = jp_xcalloc(n, sizeof *stored);
    for (int t = 0; t < CREATE_TRIES; t++) {
        bool raced = false;
        for (size_t i = 0; i < n; i++) {
            jp_job_free(stored[i]);
            stored[i] = NULL;
        }
        rc = create_once(s, jobs, n, stored, &raced, err);
        if (rc == 0 || !raced)
            break;
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            if (existed)
                existed[i] = stored[i] != NULL;
            if (stored[i]) {
                jp_job_free(jobs[i]);
                jobs[i] = stored[i];
                stored[i] = NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        jp_job_free(stored[i]);
    free(stored);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------------ */

int jp_store_get(jp_store *s, const char *id, jp_job **ret_job, jp_err *err)
{
    jp_conn *c;
    jp_job *job = NULL;
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    rc = load_job(c, SQL_JOB_GET, id, &job, err);
    jp_conn_rollback(c);  /* read-only: nothing to commit */
    if (rc == 1)
        return jp_err_set(err, JP_ENOTFOUND, "job %s not found", id);
    if (rc < 0)
        return rc;
    *ret_job = job;
    return 0;
}

int jp_store_list(jp_store *s, const jp_list_filter *f, jp_job ***ret_jobs, size_t *ret_n,
                  char **ret_next_cursor, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    jp_job **jobs = NULL;
    size_t n = 0;
    unsigned mask = 0;
    int pos = 1;
    int rc;

    if (f->limit < 1 || f->limit > LIST_LIMIT_MAX)
        return jp_err_set(err, JP_EINVAL, "limit must be between 1 and %d", LIST_LIMIT_MAX);
    if (f->status != -1 && (f->status < 0 || f->status >= JP_ST__COUNT))
        return jp_err_set(err, JP_EINVAL, "unknown status %d", f->status);
    mask |= f->status >= 0 ? LF_STATUS : 0;
    mask |= f->queue ? LF_QUEUE : 0;
    mask |= f->key ? LF_KEY : 0;
    mask |= f->cursor ? LF_CURSOR : 0;

    rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, SQL_LIST + (int)mask, q, err);
    if (mask & LF_STATUS)
        jp_stmt_bind_text(q, pos++, jp_status_name((jp_status)f->status));
    if (mask & LF_QUEUE)
        jp_stmt_bind_text(q, pos++, f->queue);
    if (mask & LF_KEY)
        jp_stmt_bind_text(q, pos++, f->key);
    if (mask & LF_CURSOR)
        jp_stmt_bind_text(q, pos++, f->cursor);
    jp_stmt_bind_int64(q, pos, (int64_t)f->limit);
    rc = collect_jobs(q, &jobs, &n, err);
fail:
    jp_conn_rollback(c);
    if (rc < 0)
        return rc;
    *ret_next_cursor = n == f->limit ? jp_xstrdup(jobs[n - 1]->id) : NULL;
    *ret_jobs = jobs;
    *ret_n = n;
    return 0;
}

static json_t *time_json(jp_stmt *q, int col)
{
    char buf[JP_TIME_STR_MAX];
    if (jp_stmt_null(q, col))
        return json_null();
    jp_time_format(jp_stmt_int64(q, col), buf);
    return json_string(buf);
}

int jp_store_attempts(jp_store *s, const char *id, json_t **ret_attempts, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    json_t *arr = NULL;
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, SQL_JOB_EXISTS, q, err);
    jp_stmt_bind_text(q, 1, id);
    rc = jp_stmt_step(q, err);
    jp_stmt_reset(q);
    if (rc == JP_DB_DONE)
        rc = jp_err_set(err, JP_ENOTFOUND, "job %s not found", id);
    if (rc < 0)
        goto fail;

    STMT(c, SQL_ATTEMPTS_LIST, q, err);
    jp_stmt_bind_text(q, 1, id);
    arr = json_array();
    while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
        json_t *a = json_object();
        const char *outcome = jp_stmt_text(q, 4);
        json_t *error = col_json(q, 5);
        json_object_set_new(a, "attempt", json_integer(jp_stmt_int64(q, 0)));
        json_object_set_new(a, "worker_id", jp_stmt_null(q, 1) ? json_null()
                                                               : json_string(jp_stmt_text(q, 1)));
        json_object_set_new(a, "started_at", time_json(q, 2));
        json_object_set_new(a, "finished_at", time_json(q, 3));
        json_object_set_new(a, "outcome", json_string(outcome ? outcome : ""));
        json_object_set_new(a, "error", error ? error : json_null());
        json_object_set_new(a, "duration_ms",
                            jp_stmt_null(q, 3)
                                ? json_null()
                                : json_integer(jp_stmt_int64(q, 3) - jp_stmt_int64(q, 2)));
        json_array_append_new(arr, a);
    }
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;
    jp_conn_rollback(c);
    *ret_attempts = arr;
    return 0;
fail:
    json_decref(arr);
    jp_conn_rollback(c);
    return rc;
}

int jp_store_counts(jp_store *s, int64_t counts[JP_ST__COUNT], jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    int64_t out[JP_ST__COUNT] = {0};
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, SQL_COUNTS, q, err);
    while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
        int st = jp_status_parse(jp_stmt_text(q, 0));
        if (st >= 0)
            out[st] += jp_stmt_int64(q, 1);
    }
    jp_stmt_reset(q);
fail:
    jp_conn_rollback(c);
    if (rc < 0)
        return rc;
    memcpy(counts, out, sizeof out);
    return 0;
}

int jp_store_scan(jp_store *s, jp_status status, const char *after_id, size_t limit,
                  jp_job ***ret_jobs, size_t *ret_n, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    jp_job **jobs = NULL;
    size_t n = 0;
    int pos = 1;
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, after_id ? SQL_SCAN_AFTER : SQL_SCAN_FIRST, q, err);
    jp_stmt_bind_text(q, pos++, jp_status_name(status));
    if (after_id)
        jp_stmt_bind_text(q, pos++, after_id);
    jp_stmt_bind_int64(q, pos, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    rc = collect_jobs(q, &jobs, &n, err);
fail:
    jp_conn_rollback(c);
    if (rc < 0)
        return rc;
    *ret_jobs = jobs;
    *ret_n = n;
    return 0;
}

/* ---- transitions ------------------------------------------------------------------------ */

/* Reads the columns a transition judges. 0 and *st (*status_ok false when
 * the stored status is not one we know); 1 when there is no such job; < 0 on
 * a database error. */
static int load_state(jp_conn *c, const char *id, jp_jstate *st, bool *status_ok, jp_err *err)
{
    jp_stmt *q;
    int rc = jp_conn_stmt(c, SQL_STATE_GET, &q, err);
    if (rc < 0)
        return rc;
    jp_stmt_bind_text(q, 1, id);
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW) {
        int status = jp_status_parse(jp_stmt_text(q, 0));
        *status_ok = status >= 0;
        st->status = status >= 0 ? (jp_status)status : JP_ST_PENDING;
        st->attempts = (int)jp_stmt_int64(q, 1);
        st->attempt_base = (int)jp_stmt_int64(q, 2);
        st->max_attempts = (int)jp_stmt_int64(q, 3);
        st->run_at_ms = col_ms(q, 4);
        st->started_at_ms = col_ms(q, 5);
        st->completed_at_ms = col_ms(q, 6);
        const char *w = jp_stmt_text(q, 7);
        snprintf(st->worker_id, sizeof st->worker_id, "%s", w ? w : "");
        rc = 0;
    } else if (rc == JP_DB_DONE) {
        rc = 1;
    }
    jp_stmt_reset(q);
    return rc;
}

/* Writes what a transition decided: the attempt that ends, the jobs row, the
 * attempt that begins, in that order (the close may need the old worker). */
static int write_change(jp_conn *c, const char *id, const jp_event *ev, const jp_jstate *old,
                        const jp_jstate *st, const jp_effects *fx, jp_err *err)
{
    jp_stmt *q;
    char *text = NULL;
    int rc = 0;

    if (fx->close_attempt) {
        STMT(c, SQL_ATTEMPT_CLOSE, q, err);
        text = json_text(fx->close_error);
        jp_stmt_bind_text(q, 1, id);
        jp_stmt_bind_int64(q, 2, fx->close_n);
        jp_stmt_bind_int64(q, 3, old->started_at_ms ? old->started_at_ms : ev->now_ms);
        jp_stmt_bind_int64(q, 4, ev->now_ms);
        jp_stmt_bind_text(q, 5, fx->close_outcome ? fx->close_outcome : "failed");
        jp_stmt_bind_text(q, 6, text);
        rc = exec_stmt(q, err);
        free(text);
        text = NULL;
        if (rc < 0)
            goto fail;
    }

    STMT(c, SQL_STATE_SET, q, err);
    char *result = fx->set_result ? json_text(ev->result) : NULL;
    char *error = fx->set_error ? json_text(fx->error) : NULL;
    jp_stmt_bind_text(q, 1, id);
    jp_stmt_bind_text(q, 2, jp_status_name(st->status));
    jp_stmt_bind_int64(q, 3, st->attempts);
    jp_stmt_bind_int64(q, 4, st->attempt_base);
    jp_stmt_bind_int64(q, 5, st->max_attempts);
    bind_ms(q, 6, st->run_at_ms);
    bind_ms(q, 7, st->started_at_ms);
    bind_ms(q, 8, st->completed_at_ms);
    jp_stmt_bind_int64(q, 9, ev->now_ms);
    jp_stmt_bind_int64(q, 10, fx->set_worker);
    jp_stmt_bind_text(q, 11, ev->worker_id);
    jp_stmt_bind_int64(q, 12, fx->set_result);
    jp_stmt_bind_text(q, 13, result);
    jp_stmt_bind_int64(q, 14, fx->set_error);
    jp_stmt_bind_text(q, 15, error);
    rc = exec_stmt(q, err);
    free(result);
    free(error);
    if (rc < 0)
        goto fail;

    if (fx->open_attempt) {
        STMT(c, SQL_ATTEMPT_OPEN, q, err);
        jp_stmt_bind_text(q, 1, id);
        jp_stmt_bind_int64(q, 2, fx->open_n);
        jp_stmt_bind_text(q, 3, ev->worker_id);
        jp_stmt_bind_int64(q, 4, ev->now_ms);
        rc = exec_stmt(q, err);
    }
fail:
    return rc;
}

/* Judges and writes one op inside the caller's transaction. The op's own
 * outcome goes into op->rc; the return value is < 0 only when the
 * transaction itself failed. */
static int apply_one(jp_conn *c, jp_store_op *op, jp_err *err)
{
    jp_jstate st, old;
    jp_effects fx = {0};
    bool status_ok = false;
    int rc = load_state(c, op->job_id, &st, &status_ok, err);

    if (rc < 0)
        return rc;
    if (rc == 1) {
        op->rc = jp_err_set(&op->err, JP_ENOTFOUND, "job %s not found", op->job_id);
        return 0;
    }
    op->before = st.status;
    old = st;
    if (!status_ok) {
        op->rc = jp_err_set(&op->err, JP_EINTERNAL, "job %s has an unknown status", op->job_id);
        return 0;
    }
    op->rc = jp_state_apply(&st, &op->ev, &fx, &op->err);
    if (op->rc == 0) {
        rc = write_change(c, op->job_id, &op->ev, &old, &st, &fx, err);
        if (rc < 0)
            return rc;
        op->after = st.status;
        if (fx.refuse) {
            op->refused = true;
            jp_err_set(&op->err, JP_ECONFLICT,
                       "attempt %d refused: job %s was delivered more than max_attempts times "
                       "without a report and is now failed",
                       op->ev.attempt, op->job_id);
        }
    }
    if (op->want_job) {
        rc = load_job(c, SQL_JOB_GET, op->job_id, &op->job, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

typedef struct op_ref {
    const char *job_id;
    size_t index;
} op_ref;

static int op_ref_cmp(const void *a, const void *b)
{
    const op_ref *x = a, *y = b;
    int c = strcmp(x->job_id, y->job_id);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* One try of jp_store_apply: the ops' own results, or < 0 when the
 * transaction failed and nothing changed. The ops run in job id order
 * (each job's own ops in the order given, so no outcome changes): every
 * writer then locks rows in the same order, and writers in different
 * processes cannot deadlock. */
static int apply_once(jp_store *s, jp_store_op *ops, size_t n, const op_ref *order, jp_err *err)
{
    jp_conn *c;
    int rc = jp_db_begin(s->db, JP_TX_WRITE, &c, err);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k].index;
        rc = apply_one(c, &ops[i], err);
        if (rc < 0) {
            jp_conn_rollback(c);
            return rc;
        }
    }
    return jp_conn_commit(c, err);
}

int jp_store_apply(jp_store *s, jp_store_op *ops, size_t n, jp_err *err)
{
    jp_err local;
    op_ref *order;
    int rc = 0;

    if (!err)  /* the ops get the reason even when the caller does not */
        err = &local;
    jp_err_clear(err);
    for (size_t i = 0; i < n; i++)
        ops[i].job = NULL;  /* an out-param: whatever the caller left there is not ours */
    if (n == 0)
        return 0;
    order = jp_xmalloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = (op_ref){ops[i].job_id, i};
    qsort(order, n, sizeof *order, op_ref_cmp);

    for (int t = 0; t < APPLY_TRIES; t++) {
        jp_err_clear(err);
        for (size_t i = 0; i < n; i++) {
            jp_job_free(ops[i].job);  /* from a try that did not commit */
            ops[i].job = NULL;
            ops[i].rc = 0;
            ops[i].refused = false;
            ops[i].before = ops[i].after = JP_ST_PENDING;
            jp_err_clear(&ops[i].err);
        }
        rc = apply_once(s, ops, n, order, err);
        if (rc != JP_ECONFLICT)  /* only a lost race is worth another try */
            break;
    }
    free(order);
    if (rc == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        jp_job_free(ops[i].job);
        ops[i].job = NULL;
        ops[i].refused = false;
        ops[i].rc = jp_err_set(&ops[i].err, JP_EUNAVAIL, "%s", jp_err_msg(err));
    }
    err->code = JP_EUNAVAIL;
    return JP_EUNAVAIL;
}

int jp_store_promote_due(jp_store *s, int64_t now_ms, jp_status to, size_t limit,
                         jp_job ***ret_jobs, size_t *ret_n, int64_t *ret_next_due,
                         jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    char (*ids)[JP_UUID_STR_LEN + 1] = NULL;
    size_t nids = 0, cap = 0;
    jp_job **jobs = NULL;
    size_t n = 0, jcap = 0;
    int64_t next_due = 0;
    int rc;

    if (to != JP_ST_QUEUED && to != JP_ST_PENDING)
        return jp_err_set(err, JP_EINVAL, "due jobs go to queued or pending, not %s",
                          jp_status_name(to));
    rc = jp_db_begin(s->db, JP_TX_WRITE, &c, err);
    if (rc < 0)
        return rc;

    STMT(c, SQL_DUE_IDS, q, err);
    jp_stmt_bind_text(q, 1, jp_status_name(JP_ST_SCHEDULED));
    jp_stmt_bind_int64(q, 2, now_ms);
    jp_stmt_bind_int64(q, 3, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
        if (nids == cap) {
            cap = cap ? cap * 2 : 16;
            ids = jp_xrealloc(ids, cap * sizeof *ids);
        }
        const char *id = jp_stmt_text(q, 0);
        snprintf(ids[nids++], sizeof ids[0], "%s", id ? id : "");
    }
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;

    /* Through the same rules as every other change. */
    for (size_t i = 0; i < nids; i++) {
        jp_store_op op = {.want_job = true};
        memcpy(op.job_id, ids[i], sizeof op.job_id);
        op.ev.kind = JP_EV_DUE;
        op.ev.to = to;
        op.ev.now_ms = now_ms;
        rc = apply_one(c, &op, err);
        if (rc < 0) {
            jp_job_free(op.job);
            goto fail;
        }
        if (op.rc == 0 && op.job)
            push_job(&jobs, &n, &jcap, op.job);
        else
            jp_job_free(op.job);
    }

    STMT(c, SQL_NEXT_DUE, q, err);
    jp_stmt_bind_text(q, 1, jp_status_name(JP_ST_SCHEDULED));
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW)
        next_due = col_ms(q, 0);
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;
    free(ids);
    ids = NULL;
    rc = jp_conn_commit(c, err);
    if (rc < 0)
        goto out;
    *ret_jobs = jobs;
    *ret_n = n;
    *ret_next_due = next_due;
    return 0;
fail:
    jp_conn_rollback(c);
out:
    free(ids);
    jp_jobs_free(jobs, n);
    return rc;
}
