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
    /* A change of status rewrites an entry in every index of the row that
     * covers the new version (PostgreSQL cannot update in place while an
     * indexed column changes): indexes that serve a few rows are partial,
     * so the running and finishing of a job do not touch them. */
    "DROP INDEX jobs_status_run_at;"
    "CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'scheduled';"
    "DROP INDEX jobs_key_id;"
    "CREATE INDEX jobs_key_id ON jobs (key, id) WHERE key IS NOT NULL",
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

/* Multi-row statements. A batch of transitions or inserts costs a few
 * statements, not a few per job: on PostgreSQL each statement is a round
 * trip, and the round trips, not the server's work, bounded throughput.
 * Each family is built for a few row counts; a batch goes out in chunks of
 * the largest, the rest in the smallest that holds it, padded with rows of
 * NULLs that match nothing (an id IN (…) of NULL, a VALUES row whose id is
 * NULL is filtered or joins nothing). Portable SQL: both backends take
 * VALUES lists (columns column1, column2, …) and UPDATE … FROM. */
enum {
    M_STATE_LOAD,    /* the columns a transition judges, locked, by ids */
    M_JOB_LOAD,      /* whole rows by ids (no lock: taken by M_STATE_LOAD) */
    M_STATE_WRITE,   /* the jobs rows a batch of transitions leaves */
    M_ATTEMPT_OPEN,  /* attempts begun in the batch: the whole row */
    M_ATTEMPT_CLOSE, /* attempts begun earlier and ended in the batch */
    M_JOB_INSERT,    /* new jobs */
    M__COUNT
};
#define NCHUNK 4
static const unsigned chunk_rows[NCHUNK] = {1, 4, 16, 64};
#define CHUNK_MAX 64

/* The row count to send next for `left` rows, as an index of chunk_rows. */
static unsigned chunk_for(size_t left)
{
    for (unsigned i = 0; i < NCHUNK; i++)
        if (left <= chunk_rows[i])
            return i;
    return NCHUNK - 1;
}

enum {
    SQL_PING,
    SQL_SCHEMA_VERSION,
    SQL_SCHEMA_SET,
    SQL_JOB_GET,
    SQL_JOB_BY_IDEM,
    SQL_JOB_EXISTS,
    SQL_ATTEMPTS_LIST,
    SQL_COUNTS,
    SQL_COUNT_STATUS,
    SQL_DUE_IDS,
    SQL_NEXT_DUE,
    SQL_SCAN_FIRST,
    SQL_SCAN_AFTER,
    SQL_LIST,  /* SQL_LIST + LF_* mask: built at open */
    /* The multi-row statements: SQL_MULTI + family * NCHUNK + chunk size
     * index, built at open (multi_sql). */
    SQL_MULTI = SQL_LIST + LF__COMBOS,
    SQL__COUNT = SQL_MULTI + M__COUNT * NCHUNK
};

static const jp_sql_def sql_defs[SQL__COUNT] = {
    [SQL_PING] = {"SELECT 1", 0},
    [SQL_SCHEMA_VERSION] = {"SELECT MAX(version) FROM schema_version", 0},
    [SQL_SCHEMA_SET] = {"INSERT INTO schema_version (version) VALUES ($1)", 0},
    [SQL_JOB_GET] = {"SELECT " JOB_COLS " FROM jobs WHERE id = $1", 0},
    [SQL_JOB_BY_IDEM] = {"SELECT " JOB_COLS " FROM jobs WHERE idempotency_key = $1", 0},
    [SQL_JOB_EXISTS] = {"SELECT 1 FROM jobs WHERE id = $1", 0},
    [SQL_ATTEMPTS_LIST] = {"SELECT attempt, worker_id, started_at, finished_at, outcome, error"
                           " FROM attempts WHERE job_id = $1 ORDER BY attempt",
                           0},
    [SQL_COUNTS] = {"SELECT status, COUNT(*) FROM jobs GROUP BY status", 0},
    [SQL_COUNT_STATUS] = {"SELECT COUNT(*) FROM jobs WHERE status = $1", 0},
    /* The status is written out so the partial index jobs_due serves. */
    [SQL_DUE_IDS] = {"SELECT id FROM jobs WHERE status = 'scheduled' AND run_at <= $1"
                     " ORDER BY run_at LIMIT $2",
                     JP_SQLF_LOCK | JP_SQLF_SKIP_LOCKED},
    [SQL_NEXT_DUE] = {"SELECT MIN(run_at) FROM jobs WHERE status = 'scheduled'", 0},
    [SQL_SCAN_FIRST] = {"SELECT " JOB_COLS " FROM jobs WHERE status = $1 ORDER BY id LIMIT $2",
                        0},
    [SQL_SCAN_AFTER] = {"SELECT " JOB_COLS " FROM jobs WHERE status = $1 AND id > $2"
                        " ORDER BY id LIMIT $3",
                        0},
};

struct jp_store {
    const jp_driver *drv;
    jp_db *db;
    jp_sql_def sql[SQL__COUNT];   /* sql_defs plus the built statements */
    char *list_sql[LF__COMBOS];   /* owned texts of the list statements */
    char *multi_sql[M__COUNT * NCHUNK];  /* owned texts of the multi-row statements */
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

/* Appends "$first, …" for `n` parameters: an IN list. */
static void put_params(FILE *f, int first, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "%s$%d", i ? ", " : "", first + (int)i);
}

/* Appends `rows` VALUES rows of the column kinds in `kinds` ('t' text, 'i'
 * integer), parameters numbered from 1 row by row. Integers are cast:
 * PostgreSQL would type a bare parameter of a VALUES list as text. */
static void put_values(FILE *f, unsigned rows, const char *kinds)
{
    int pos = 1;
    fputs("VALUES ", f);
    for (unsigned r = 0; r < rows; r++) {
        fputs(r ? ", (" : "(", f);
        for (const char *k = kinds; *k; k++, pos++)
            fprintf(f, *k == 'i' ? "%sCAST($%d AS BIGINT)" : "%s$%d", k == kinds ? "" : ", ",
                    pos);
        fputc(')', f);
    }
}

/* The columns of a jobs row for M_JOB_INSERT, in JOB_COLS order. */
static const char job_kinds[] = "ttttittiiiiitttttiiii";
_Static_assert(sizeof job_kinds == C__COUNT + 1, "one kind per column of JOB_COLS");
#define STATE_KINDS "ttiiiiiiiititit"  /* M_STATE_WRITE: see bind_state_row */
#define STATE_COLS 15
_Static_assert(sizeof STATE_KINDS == STATE_COLS + 1, "one kind per column");
/* job_id, attempt, worker_id, started_at, finished_at, outcome, error */
#define ATTEMPT_KINDS "titiitt"
#define ATTEMPT_COLS 7
_Static_assert(sizeof ATTEMPT_KINDS == ATTEMPT_COLS + 1, "one kind per column");

/* The text of multi-row statement `fam` for `rows` rows. Caller frees. */
static char *multi_sql(unsigned fam, unsigned rows)
{
    static const char attempt_insert[] =
        "INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,"
        " error) SELECT column1, column2, column3, column4, column5, column6, column7 FROM (";
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        abort();  /* out of memory, as jp_xmalloc treats it */

    switch (fam) {
    case M_STATE_LOAD:
        fputs("SELECT id, status, attempts, attempt_base, max_attempts, run_at, started_at,"
              " completed_at, worker_id FROM jobs WHERE id IN (", f);
        put_params(f, 1, rows);
        fputs(") ORDER BY id", f);
        break;
    case M_JOB_LOAD:
        fputs("SELECT " JOB_COLS " FROM jobs WHERE id IN (", f);
        put_params(f, 1, rows);
        fputc(')', f);
        break;
    case M_STATE_WRITE:
        /* Flags (columns 10, 12, 14) say which of worker_id, result and
         * error the batch sets. */
        fputs("UPDATE jobs SET status = v.column2, attempts = v.column3,"
              " attempt_base = v.column4, max_attempts = v.column5, run_at = v.column6,"
              " started_at = v.column7, completed_at = v.column8, updated_at = v.column9,"
              " worker_id = CASE WHEN v.column10 = 1 THEN v.column11 ELSE jobs.worker_id END,"
              " result = CASE WHEN v.column12 = 1 THEN v.column13 ELSE jobs.result END,"
              " error = CASE WHEN v.column14 = 1 THEN v.column15 ELSE jobs.error END FROM (", f);
        put_values(f, rows, STATE_KINDS);
        /* The ids again as a list: without it PostgreSQL may hash-join the
         * VALUES with a scan of the whole table. */
        fputs(") AS v WHERE jobs.id = v.column1 AND jobs.id IN (", f);
        for (unsigned r = 0; r < rows; r++)
            fprintf(f, "%s$%u", r ? ", " : "", r * STATE_COLS + 1);
        fputc(')', f);
        break;
    case M_ATTEMPT_OPEN:
    case M_ATTEMPT_CLOSE:
        fputs(attempt_insert, f);
        put_values(f, rows, ATTEMPT_KINDS);
        fputs(") AS v WHERE column1 IS NOT NULL ON CONFLICT (job_id, attempt) DO UPDATE SET", f);
        /* A redelivered attempt number starts its row afresh. An attempt
         * whose start was never recorded (its START was lost) gets its row
         * when it ends; one that has a row keeps its worker and start. */
        if (fam == M_ATTEMPT_OPEN)
            fputs(" worker_id = excluded.worker_id, started_at = excluded.started_at,", f);
        fputs(" finished_at = excluded.finished_at, outcome = excluded.outcome,"
              " error = excluded.error", f);
        break;
    case M_JOB_INSERT:
        fputs("INSERT INTO jobs (" JOB_COLS ") SELECT", f);
        for (unsigned c = 1; c < sizeof job_kinds; c++)
            fprintf(f, "%s column%u", c > 1 ? "," : "", c);
        fputs(" FROM (", f);
        put_values(f, rows, job_kinds);
        fputs(") AS v WHERE column1 IS NOT NULL", f);
        break;
    }
    if (fclose(f) != 0 || !text)
        abort();
    return text;
}

static int multi_id(unsigned fam, unsigned chunk)
{
    return SQL_MULTI + (int)(fam * NCHUNK + chunk);
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
    for (unsigned fam = 0; fam < M__COUNT; fam++) {
        for (unsigned k = 0; k < NCHUNK; k++) {
            char *text = multi_sql(fam, chunk_rows[k]);
            s->multi_sql[fam * NCHUNK + k] = text;
            s->sql[multi_id(fam, k)] = (jp_sql_def){text, fam == M_STATE_LOAD ? JP_SQLF_LOCK : 0};
        }
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
    for (unsigned m = 0; m < M__COUNT * NCHUNK; m++)
        free(s->multi_sql[m]);
    free(s);
}

const char *jp_store_backend(const jp_store *s)
{
    return s->drv->name;
}

int jp_store_writers(const jp_store *s)
{
    return s->drv->writers > 1 ? s->drv->writers : 1;
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

/* Binds `job` as row `row` (0-based) of an M_JOB_INSERT statement. The JSON
 * texts it makes go to texts[0..3), which the caller frees after the step. */
static void bind_job_row(jp_stmt *q, unsigned row, const jp_job *job, char *texts[3])
{
    int b = (int)row * C__COUNT + 1;
    texts[0] = json_text(job->payload ? job->payload : json_null());
    texts[1] = json_text(job->result);
    texts[2] = json_text(job->error);
    jp_stmt_bind_text(q, b + C_ID, job->id);
    jp_stmt_bind_text(q, b + C_QUEUE, job->queue ? job->queue : "");
    jp_stmt_bind_text(q, b + C_STRATEGY, job->strategy ? job->strategy : "");
    jp_stmt_bind_text(q, b + C_PAYLOAD, texts[0]);
    jp_stmt_bind_int64(q, b + C_PRIORITY, job->priority);
    jp_stmt_bind_text(q, b + C_KEY, job->key);
    jp_stmt_bind_text(q, b + C_STATUS, jp_status_name(job->status));
    jp_stmt_bind_int64(q, b + C_ATTEMPTS, job->attempts);
    jp_stmt_bind_int64(q, b + C_ATTEMPT_BASE, job->attempt_base);
    jp_stmt_bind_int64(q, b + C_MAX_ATTEMPTS, job->max_attempts);
    jp_stmt_bind_int64(q, b + C_TIMEOUT, job->timeout_seconds);
    bind_ms(q, b + C_RUN_AT, job->run_at_ms);
    jp_stmt_bind_text(q, b + C_IDEM_KEY, job->idempotency_key);
    jp_stmt_bind_text(q, b + C_REQUEST_HASH, job->request_hash[0] ? job->request_hash : NULL);
    jp_stmt_bind_text(q, b + C_RESULT, texts[1]);
    jp_stmt_bind_text(q, b + C_ERROR, texts[2]);
    jp_stmt_bind_text(q, b + C_WORKER_ID, job->worker_id);
    jp_stmt_bind_int64(q, b + C_CREATED_AT, job->created_at_ms);
    bind_ms(q, b + C_STARTED_AT, job->started_at_ms);
    bind_ms(q, b + C_COMPLETED_AT, job->completed_at_ms);
    jp_stmt_bind_int64(q, b + C_UPDATED_AT,
                       job->updated_at_ms ? job->updated_at_ms : job->created_at_ms);
}

/* Inserts jobs[0..n) in as few statements as the chunk sizes allow. */
static int insert_jobs(jp_conn *c, jp_job *const *jobs, size_t n, jp_err *err)
{
    for (size_t done = 0; done < n;) {
        unsigned k = chunk_for(n - done);
        size_t rows = n - done < chunk_rows[k] ? n - done : chunk_rows[k];
        char *texts[CHUNK_MAX][3];
        jp_stmt *q;
        int rc = jp_conn_stmt(c, multi_id(M_JOB_INSERT, k), &q, err);
        if (rc < 0)
            return rc;
        for (size_t r = 0; r < rows; r++)
            bind_job_row(q, (unsigned)r, jobs[done + r], texts[r]);
        rc = exec_stmt(q, err);
        for (size_t r = 0; r < rows; r++)
            for (int t = 0; t < 3; t++)
                free(texts[r][t]);
        if (rc < 0)
            return rc;
        done += rows;
    }
    return 0;
}

/* One try of jp_store_create. stored[i] receives the stored job for a known
 * idempotency key. *raced is set when an INSERT hit a unique key. */
static int create_once(jp_store *s, jp_job **jobs, size_t n, jp_job **stored, bool *raced,
                       jp_err *err)
{
    jp_conn *c;
    jp_job **plain = jp_xmalloc(n * sizeof *plain);  /* jobs without a key: inserted at the end */
    size_t nplain = 0;
    int rc = jp_db_begin(s->db, JP_TX_WRITE, &c, err);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        jp_job *job = jobs[i];
        if (!job->idempotency_key) {
            plain[nplain++] = job;
            continue;
        }
        /* Keyed jobs go in one by one, so a repeat of a key inside the
         * batch finds the earlier one here. */
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
        rc = insert_jobs(c, &job, 1, err);
        if (rc < 0)
            goto conflict;
    }
    rc = insert_jobs(c, plain, nplain, err);
    if (rc < 0)
        goto conflict;
    rc = jp_conn_commit(c, err);
    goto out;
conflict:
    if (rc == JP_ECONFLICT) {
        *raced = true;
        rc = jp_err_set(err, JP_ECONFLICT, "a job of the batch already exists");
    }
fail:
    jp_conn_rollback(c);
out:
    free(plain);
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

int jp_store_count(jp_store *s, jp_status status, int64_t *ret_n, jp_err *err)
{
    jp_conn *c;
    jp_stmt *q;
    int rc = jp_db_begin(s->db, JP_TX_READ, &c, err);
    if (rc < 0)
        return rc;
    STMT(c, SQL_COUNT_STATUS, q, err);
    jp_stmt_bind_text(q, 1, jp_status_name(status));
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW)
        *ret_n = jp_stmt_int64(q, 0);
    jp_stmt_reset(q);
fail:
    jp_conn_rollback(c);
    return rc < 0 ? rc : 0;
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

/* One job of a batch of transitions: as loaded, then as each op leaves it. */
typedef struct tx_job {
    const char *id;        /* borrowed from an op */
    bool found, status_ok, dirty, want_job;
    jp_jstate st;
    int64_t updated_ms;    /* the latest change's time */
    bool set_worker, set_result, set_error;
    const char *worker;    /* borrowed from an event */
    char *result, *error;  /* owned JSON texts (NULL writes NULL) */
    jp_job *row;           /* the whole row, kept current, when an op wants the job */
} tx_job;

/* One attempts row a batch writes. */
typedef struct tx_attempt {
    size_t job;            /* index into the batch's jobs */
    int n;
    bool begun;            /* begun in this batch: written whole (M_ATTEMPT_OPEN) */
    bool has_worker;
    char worker[JP_WORKER_ID_MAX + 1];
    int64_t started_ms, finished_ms;  /* finished 0 = NULL */
    const char *outcome;   /* static text */
    char *error;           /* owned JSON text */
} tx_attempt;

typedef struct tx {
    jp_store_op *ops;
    size_t n;
    const size_t *order;   /* [n]: the ops in job id order */
    size_t *op_job;        /* [n]: the job of each op */
    tx_job *jobs;          /* distinct, in id order */
    size_t njobs;
    tx_attempt *att;       /* grouped by job, in job order */
    size_t natt, catt;
} tx;

static void tx_done(tx *t)
{
    for (size_t j = 0; j < t->njobs; j++) {
        free(t->jobs[j].result);
        free(t->jobs[j].error);
        jp_job_free(t->jobs[j].row);
    }
    for (size_t a = 0; a < t->natt; a++)
        free(t->att[a].error);
    free(t->op_job);
    free(t->jobs);
    free(t->att);
}

static int job_id_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const tx_job *)elem)->id);
}

static tx_job *tx_find(tx *t, const char *id)
{
    return id ? bsearch(id, t->jobs, t->njobs, sizeof *t->jobs, job_id_cmp) : NULL;
}

/* Groups the ops by job: order[] is the ops sorted by job id. */
static void tx_init(tx *t, jp_store_op *ops, size_t n, const size_t *order)
{
    memset(t, 0, sizeof *t);
    t->ops = ops;
    t->n = n;
    t->order = order;
    t->op_job = jp_xmalloc(n * sizeof *t->op_job);
    t->jobs = jp_xcalloc(n, sizeof *t->jobs);
    for (size_t k = 0; k < n; k++) {
        jp_store_op *op = &ops[order[k]];
        if (t->njobs == 0 || strcmp(t->jobs[t->njobs - 1].id, op->job_id) != 0)
            t->jobs[t->njobs++].id = op->job_id;
        t->op_job[order[k]] = t->njobs - 1;
        t->jobs[t->njobs - 1].want_job |= op->want_job;
    }
}

/* Runs statement family `fam` over the ids of the jobs for which pick()
 * holds, in chunks; each row returned goes to row(). */
static int tx_load(jp_conn *c, tx *t, unsigned fam, bool (*pick)(const tx_job *),
                   int (*row)(tx *t, jp_stmt *q, jp_err *err), jp_err *err)
{
    size_t j = 0;
    while (j < t->njobs) {
        const char *ids[CHUNK_MAX];
        size_t nids = 0;
        for (; j < t->njobs && nids < CHUNK_MAX; j++)
            if (pick(&t->jobs[j]))
                ids[nids++] = t->jobs[j].id;
        if (nids == 0)
            break;
        jp_stmt *q;
        unsigned k = chunk_for(nids);
        int rc = jp_conn_stmt(c, multi_id(fam, k), &q, err);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < nids; i++)
            jp_stmt_bind_text(q, (int)i + 1, ids[i]);
        while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
            rc = row(t, q, err);
            if (rc < 0)
                break;
        }
        jp_stmt_reset(q);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool pick_all(const tx_job *j)
{
    (void)j;
    return true;
}

static bool pick_wanted(const tx_job *j)
{
    return j->found && j->want_job;
}

/* A row of M_STATE_LOAD. */
static int state_row(tx *t, jp_stmt *q, jp_err *err)
{
    (void)err;
    tx_job *j = tx_find(t, jp_stmt_text(q, 0));
    if (!j)
        return 0;
    int status = jp_status_parse(jp_stmt_text(q, 1));
    j->found = true;
    j->status_ok = status >= 0;
    j->st.status = status >= 0 ? (jp_status)status : JP_ST_PENDING;
    j->st.attempts = (int)jp_stmt_int64(q, 2);
    j->st.attempt_base = (int)jp_stmt_int64(q, 3);
    j->st.max_attempts = (int)jp_stmt_int64(q, 4);
    j->st.run_at_ms = col_ms(q, 5);
    j->st.started_at_ms = col_ms(q, 6);
    j->st.completed_at_ms = col_ms(q, 7);
    const char *w = jp_stmt_text(q, 8);
    snprintf(j->st.worker_id, sizeof j->st.worker_id, "%s", w ? w : "");
    return 0;
}

/* A row of M_JOB_LOAD. */
static int job_row(tx *t, jp_stmt *q, jp_err *err)
{
    tx_job *j = tx_find(t, jp_stmt_text(q, C_ID));
    if (!j)
        return 0;
    jp_job_free(j->row);
    j->row = NULL;
    return job_from_row(q, &j->row, err);
}

/* The job as the ops so far leave it: a copy of the loaded row with the
 * batch's changes. Caller frees. */
static jp_job *tx_snapshot(const tx_job *j)
{
    const jp_job *r = j->row;
    jp_job *job = jp_job_new();
    memcpy(job->id, r->id, sizeof job->id);
    job->queue = jp_xstrdup(r->queue);
    job->strategy = jp_xstrdup(r->strategy);
    json_decref(job->payload);
    job->payload = json_incref(r->payload);  /* never changed: shared (atomic refcount) */
    job->priority = r->priority;
    job->key = r->key ? jp_xstrdup(r->key) : NULL;
    job->timeout_seconds = r->timeout_seconds;
    job->idempotency_key = r->idempotency_key ? jp_xstrdup(r->idempotency_key) : NULL;
    memcpy(job->request_hash, r->request_hash, sizeof job->request_hash);
    job->created_at_ms = r->created_at_ms;
    job->status = j->st.status;
    job->attempts = j->st.attempts;
    job->attempt_base = j->st.attempt_base;
    job->max_attempts = j->st.max_attempts;
    job->run_at_ms = j->st.run_at_ms;
    job->started_at_ms = j->st.started_at_ms;
    job->completed_at_ms = j->st.completed_at_ms;
    job->updated_at_ms = j->dirty ? j->updated_ms : r->updated_at_ms;
    if (j->set_worker)
        job->worker_id = j->worker ? jp_xstrdup(j->worker) : NULL;
    else
        job->worker_id = r->worker_id ? jp_xstrdup(r->worker_id) : NULL;
    if (j->set_result)
        job->result = j->result ? json_loads(j->result, JSON_DECODE_ANY, NULL) : NULL;
    else
        job->result = r->result ? json_deep_copy(r->result) : NULL;
    if (j->set_error)
        job->error = j->error ? json_loads(j->error, JSON_DECODE_ANY, NULL) : NULL;
    else
        job->error = r->error ? json_deep_copy(r->error) : NULL;
    return job;
}

/* The batch's row for attempt n of job ji, or a new one. Rows of a job are
 * contiguous at the end: the ops are judged job by job. */
static tx_attempt *tx_attempt_row(tx *t, size_t ji, int n, bool *is_new)
{
    for (size_t a = t->natt; a-- > 0 && t->att[a].job == ji;)
        if (t->att[a].n == n) {
            *is_new = false;
            return &t->att[a];
        }
    if (t->natt == t->catt) {
        t->catt = t->catt ? t->catt * 2 : 16;
        t->att = jp_xrealloc(t->att, t->catt * sizeof *t->att);
    }
    tx_attempt *a = &t->att[t->natt++];
    memset(a, 0, sizeof *a);
    a->job = ji;
    a->n = n;
    *is_new = true;
    return a;
}

static void set_worker(tx_attempt *a, const char *w)
{
    a->has_worker = w && *w;
    snprintf(a->worker, sizeof a->worker, "%s", a->has_worker ? w : "");
}

/* Records what a transition decided: the attempt that ends, the job's
 * columns, the attempt that begins, in that order (the end names the
 * worker of the job before the change). */
static void tx_record(tx *t, size_t ji, const jp_jstate *old, const jp_event *ev,
                      const jp_effects *fx)
{
    tx_job *j = &t->jobs[ji];
    bool is_new;
    if (fx->close_attempt) {
        tx_attempt *a = tx_attempt_row(t, ji, fx->close_n, &is_new);
        if (is_new) {
            set_worker(a, old->worker_id);
            a->started_ms = old->started_at_ms ? old->started_at_ms : ev->now_ms;
        }
        a->finished_ms = ev->now_ms;
        a->outcome = fx->close_outcome ? fx->close_outcome : "failed";
        free(a->error);
        a->error = json_text(fx->close_error);
    }
    if (fx->set_worker) {
        j->set_worker = true;
        j->worker = ev->worker_id;
    }
    if (fx->set_result) {
        j->set_result = true;
        free(j->result);
        j->result = json_text(ev->result);
    }
    if (fx->set_error) {
        j->set_error = true;
        free(j->error);
        j->error = json_text(fx->error);
    }
    if (fx->open_attempt) {
        tx_attempt *a = tx_attempt_row(t, ji, fx->open_n, &is_new);
        a->begun = true;
        set_worker(a, ev->worker_id);
        a->started_ms = ev->now_ms;
        a->finished_ms = 0;
        a->outcome = "running";
        free(a->error);
        a->error = NULL;
    }
    j->dirty = true;
    j->updated_ms = ev->now_ms;
}

/* Judges every op against its job as the ops before it leave it, job by
 * job (each job's ops in the order given). */
static void tx_judge(tx *t)
{
    for (size_t k = 0; k < t->n; k++) {
        size_t i = t->order[k];
        jp_store_op *op = &t->ops[i];
        size_t ji = t->op_job[i];
        tx_job *j = &t->jobs[ji];
        if (!j->found) {
            op->rc = jp_err_set(&op->err, JP_ENOTFOUND, "job %s not found", op->job_id);
            continue;
        }
        op->before = j->st.status;
        if (!j->status_ok) {
            op->rc = jp_err_set(&op->err, JP_EINTERNAL, "job %s has an unknown status",
                                op->job_id);
        } else {
            jp_jstate old = j->st;
            jp_effects fx = {0};
            op->rc = jp_state_apply(&j->st, &op->ev, &fx, &op->err);
            if (op->rc == 0) {
                tx_record(t, ji, &old, &op->ev, &fx);
                op->after = j->st.status;
                if (fx.refuse) {
                    op->refused = true;
                    jp_err_set(&op->err, JP_ECONFLICT,
                               "attempt %d refused: job %s was delivered more than "
                               "max_attempts times without a report and is now failed",
                               op->ev.attempt, op->job_id);
                }
            }
        }
        if (op->want_job && j->row)
            op->job = tx_snapshot(j);
    }
}

/* Binds job j's columns as row `row` of an M_STATE_WRITE statement. */
static void bind_state_row(jp_stmt *q, unsigned row, const tx_job *j)
{
    int b = (int)row * STATE_COLS;
    const jp_jstate *st = &j->st;
    jp_stmt_bind_text(q, b + 1, j->id);
    jp_stmt_bind_text(q, b + 2, jp_status_name(st->status));
    jp_stmt_bind_int64(q, b + 3, st->attempts);
    jp_stmt_bind_int64(q, b + 4, st->attempt_base);
    jp_stmt_bind_int64(q, b + 5, st->max_attempts);
    bind_ms(q, b + 6, st->run_at_ms);
    bind_ms(q, b + 7, st->started_at_ms);
    bind_ms(q, b + 8, st->completed_at_ms);
    jp_stmt_bind_int64(q, b + 9, j->updated_ms);
    jp_stmt_bind_int64(q, b + 10, j->set_worker);
    jp_stmt_bind_text(q, b + 11, j->worker);
    jp_stmt_bind_int64(q, b + 12, j->set_result);
    jp_stmt_bind_text(q, b + 13, j->result);
    jp_stmt_bind_int64(q, b + 14, j->set_error);
    jp_stmt_bind_text(q, b + 15, j->error);
}

static void bind_attempt_row(jp_stmt *q, unsigned row, const tx *t, const tx_attempt *a)
{
    int b = (int)row * ATTEMPT_COLS;
    jp_stmt_bind_text(q, b + 1, t->jobs[a->job].id);
    jp_stmt_bind_int64(q, b + 2, a->n);
    jp_stmt_bind_text(q, b + 3, a->has_worker ? a->worker : NULL);
    jp_stmt_bind_int64(q, b + 4, a->started_ms);
    bind_ms(q, b + 5, a->finished_ms);
    jp_stmt_bind_text(q, b + 6, a->outcome);
    jp_stmt_bind_text(q, b + 7, a->error);
}

/* Writes, in chunks, the jobs rows (fam M_STATE_WRITE) or the attempts rows
 * (M_ATTEMPT_OPEN: begun; M_ATTEMPT_CLOSE: not) the batch changed. */
static int tx_write(jp_conn *c, const tx *t, unsigned fam, jp_err *err)
{
    size_t total = fam == M_STATE_WRITE ? t->njobs : t->natt;
    size_t i = 0;
    for (;;) {
        const void *rows[CHUNK_MAX];
        size_t nrows = 0;
        for (; i < total && nrows < CHUNK_MAX; i++) {
            if (fam == M_STATE_WRITE ? t->jobs[i].dirty
                                     : t->att[i].begun == (fam == M_ATTEMPT_OPEN))
                rows[nrows++] = fam == M_STATE_WRITE ? (const void *)&t->jobs[i]
                                                     : (const void *)&t->att[i];
        }
        if (nrows == 0)
            return 0;
        jp_stmt *q;
        int rc = jp_conn_stmt(c, multi_id(fam, chunk_for(nrows)), &q, err);
        if (rc < 0)
            return rc;
        for (size_t r = 0; r < nrows; r++) {
            if (fam == M_STATE_WRITE)
                bind_state_row(q, (unsigned)r, rows[r]);
            else
                bind_attempt_row(q, (unsigned)r, t, rows[r]);
        }
        rc = exec_stmt(q, err);
        if (rc < 0)
            return rc;
    }
}

/* Judges and writes ops[0..n) inside the caller's transaction: order[] is
 * the ops in job id order (each job's own ops in the order given). Rows are
 * locked in that order, so writers in different processes cannot deadlock.
 * The ops' own outcomes go into op->rc; the return value is < 0 only when
 * the transaction itself failed. */
static int apply_tx(jp_conn *c, jp_store_op *ops, size_t n, const size_t *order, jp_err *err)
{
    tx t;
    int rc;
    tx_init(&t, ops, n, order);
    rc = tx_load(c, &t, M_STATE_LOAD, pick_all, state_row, err);
    if (rc == 0)
        rc = tx_load(c, &t, M_JOB_LOAD, pick_wanted, job_row, err);
    if (rc == 0) {
        tx_judge(&t);
        rc = tx_write(c, &t, M_ATTEMPT_CLOSE, err);
    }
    if (rc == 0)
        rc = tx_write(c, &t, M_STATE_WRITE, err);
    if (rc == 0)
        rc = tx_write(c, &t, M_ATTEMPT_OPEN, err);
    tx_done(&t);
    return rc;
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

/* The ops' indexes in job id order, each job's ops in the order given.
 * Caller frees. */
static size_t *op_order(const jp_store_op *ops, size_t n)
{
    op_ref *refs = jp_xmalloc((n ? n : 1) * sizeof *refs);
    size_t *order = jp_xmalloc((n ? n : 1) * sizeof *order);
    for (size_t i = 0; i < n; i++)
        refs[i] = (op_ref){ops[i].job_id, i};
    qsort(refs, n, sizeof *refs, op_ref_cmp);
    for (size_t i = 0; i < n; i++)
        order[i] = refs[i].index;
    free(refs);
    return order;
}

static void op_reset(jp_store_op *op)
{
    jp_job_free(op->job);  /* from a try that did not commit */
    op->job = NULL;
    op->rc = 0;
    op->refused = false;
    op->before = op->after = JP_ST_PENDING;
    jp_err_clear(&op->err);
}

int jp_store_apply(jp_store *s, jp_store_op *ops, size_t n, jp_err *err)
{
    jp_err local;
    size_t *order;
    int rc = 0;

    if (!err)  /* the ops get the reason even when the caller does not */
        err = &local;
    jp_err_clear(err);
    for (size_t i = 0; i < n; i++)
        ops[i].job = NULL;  /* an out-param: whatever the caller left there is not ours */
    if (n == 0)
        return 0;
    order = op_order(ops, n);

    for (int t = 0; t < APPLY_TRIES; t++) {
        jp_conn *c;
        jp_err_clear(err);
        for (size_t i = 0; i < n; i++)
            op_reset(&ops[i]);
        rc = jp_db_begin(s->db, JP_TX_WRITE, &c, err);
        if (rc < 0)
            break;
        rc = apply_tx(c, ops, n, order, err);
        if (rc < 0)
            jp_conn_rollback(c);
        else
            rc = jp_conn_commit(c, err);
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
    jp_store_op *ops = NULL;
    size_t nops = 0, cap = 0;
    size_t *order = NULL;
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
    jp_stmt_bind_int64(q, 1, now_ms);
    jp_stmt_bind_int64(q, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    while ((rc = jp_stmt_step(q, err)) == JP_DB_ROW) {
        if (nops == cap) {
            cap = cap ? cap * 2 : 16;
            ops = jp_xrealloc(ops, cap * sizeof *ops);
        }
        /* Through the same rules as every other change. */
        jp_store_op *op = &ops[nops++];
        const char *id = jp_stmt_text(q, 0);
        memset(op, 0, sizeof *op);
        snprintf(op->job_id, sizeof op->job_id, "%s", id ? id : "");
        op->want_job = true;
        op->ev.kind = JP_EV_DUE;
        op->ev.to = to;
        op->ev.now_ms = now_ms;
    }
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;
    order = op_order(ops, nops);
    rc = apply_tx(c, ops, nops, order, err);
    for (size_t i = 0; i < nops; i++) {
        if (rc == 0 && ops[i].rc == 0 && ops[i].job)
            push_job(&jobs, &n, &jcap, ops[i].job);
        else
            jp_job_free(ops[i].job);
        ops[i].job = NULL;
    }
    if (rc < 0)
        goto fail;

    STMT(c, SQL_NEXT_DUE, q, err);
    rc = jp_stmt_step(q, err);
    if (rc == JP_DB_ROW)
        next_due = col_ms(q, 0);
    jp_stmt_reset(q);
    if (rc < 0)
        goto fail;
    rc = jp_conn_commit(c, err);
    if (rc < 0)
        goto out;
    free(ops);
    free(order);
    *ret_jobs = jobs;
    *ret_n = n;
    *ret_next_due = next_due;
    return 0;
fail:
    jp_conn_rollback(c);
out:
    free(ops);
    free(order);
    jp_jobs_free(jobs, n);
    return rc;
}
