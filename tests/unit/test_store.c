/* Unit tests of the job store: schema, create and idempotency, listing,
 * transitions and their attempt rows, threads, persistence. They run over
 * SQLite, or over PostgreSQL when JOBPLANE_TEST_PG_URL names a database
 * (tests/integration/services.py --pg starts one): then the SQLite-only tests
 * are skipped and the PostgreSQL-only ones (several processes' handles on one
 * database, lost connections) run. */
#include "core/jtime.h"
#include "core/mem.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define T0 1764151200000LL /* 2025-11-26T10:00:00.000Z */

/* The PostgreSQL database under test (JOBPLANE_TEST_PG_URL), or NULL: SQLite. */
static const char *pg_url;

typedef struct fixture {
    char dir[64];
    char *path;  /* the database file (SQLite), or NULL (PostgreSQL) */
    char *url;
    jp_store *store;
} fixture;

static void pg_exec(const char *sql);

/* Every test starts from an empty database: over PostgreSQL, no tables at
 * all, so that opening the store migrates from nothing as on SQLite. */
static void pg_reset(void)
{
    pg_exec("DROP TABLE IF EXISTS jobs, attempts, schema_version;"
            " DROP FUNCTION IF EXISTS jp_test_fail() CASCADE;"
            " DROP FUNCTION IF EXISTS jp_test_kill() CASCADE");
}

static int open_fixture(void **state, bool sqlite)
{
    fixture *f = jp_xcalloc(1, sizeof *f);
    if (sqlite || !pg_url) {
        snprintf(f->dir, sizeof f->dir, "/tmp/jp-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->path = jp_xasprintf("%s/test.db", f->dir);
        f->url = jp_xasprintf("sqlite://%s", f->path);
    } else {
        pg_reset();
        f->url = jp_xstrdup(pg_url);
    }
    jp_err err;
    if (jp_store_open(f->url, &f->store, &err) != 0)
        fail_msg("cannot open the store: %s", err.msg);
    *state = f;
    return 0;
}

/* The store under test: SQLite, or PostgreSQL when asked for. */
static int setup(void **state)
{
    return open_fixture(state, false);
}

/* For the tests of SQLite's own behaviour. */
static int setup_sqlite(void **state)
{
    return open_fixture(state, true);
}

static int teardown(void **state)
{
    fixture *f = *state;
    jp_store_close(f->store);
    if (!f->path) {
        free(f->url);
        free(f);
        return 0;
    }
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = jp_xasprintf("%s/%s", f->dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    assert_int_equal(rmdir(f->dir), 0);
    free(f->path);
    free(f->url);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* Tests of SQLite's own behaviour (files, WAL, :memory:), and of
 * PostgreSQL's (several processes on one database, lost connections). */
#define SQLITE_ONLY()   \
    do {                \
        if (pg_url)     \
            skip();     \
    } while (0)
#define PG_ONLY()       \
    do {                \
        if (!pg_url)    \
            skip();     \
    } while (0)

static jp_job *make_job(const char *queue, const char *key, jp_status status)
{
    jp_job *j = jp_job_new();
    jp_uuid7(j->id);
    j->queue = jp_xstrdup(queue);
    j->strategy = jp_xstrdup("noop");
    j->key = jp_xstrdup(key);
    j->status = status;
    j->priority = JP_PRIO_NORMAL;
    j->max_attempts = 3;
    j->timeout_seconds = 30;
    j->created_at_ms = j->updated_at_ms = T0;
    return j;
}

static jp_job *make_idem(const char *idem, const char *hash)
{
    jp_job *j = make_job("default", NULL, JP_ST_QUEUED);
    j->idempotency_key = jp_xstrdup(idem);
    snprintf(j->request_hash, sizeof j->request_hash, "%s", hash);
    return j;
}

/* Creates one job and returns its id in `id`; the job is freed. */
static void create_one(jp_store *s, jp_job *j, char id[JP_UUID_STR_LEN + 1])
{
    jp_err err;
    assert_int_equal(jp_store_create(s, &j, 1, NULL, &err), 0);
    memcpy(id, j->id, JP_UUID_STR_LEN + 1);
    jp_job_free(j);
}

static jp_job *get(jp_store *s, const char *id)
{
    jp_job *j = NULL;
    jp_err err;
    assert_int_equal(jp_store_get(s, id, &j, &err), 0);
    return j;
}

static int64_t total(jp_store *s)
{
    int64_t counts[JP_ST__COUNT];
    int64_t sum = 0;
    jp_err err;
    assert_int_equal(jp_store_counts(s, counts, &err), 0);
    for (int i = 0; i < JP_ST__COUNT; i++)
        sum += counts[i];
    return sum;
}

static jp_event ev_of(jp_event_kind kind, int attempt, int64_t now)
{
    jp_event ev = {.kind = kind, .attempt = attempt, .now_ms = now, .to = JP_ST_QUEUED,
                   .retryable = true};
    return ev;
}

/* Applies one event; returns the op's rc (the transaction must commit). The
 * op's job, if any, is freed. */
static int apply1(jp_store *s, const char *id, jp_event ev, jp_store_op *out)
{
    jp_store_op op = {.ev = ev};
    jp_err err;
    snprintf(op.job_id, sizeof op.job_id, "%s", id);
    assert_int_equal(jp_store_apply(s, &op, 1, &err), 0);
    jp_job_free(op.job);
    op.job = NULL;
    if (out)
        *out = op;
    return op.rc;
}

static json_t *attempts_of(jp_store *s, const char *id)
{
    json_t *a = NULL;
    jp_err err;
    assert_int_equal(jp_store_attempts(s, id, &a, &err), 0);
    assert_true(json_is_array(a));
    return a;
}

static const char *attempt_str(json_t *arr, size_t i, const char *field)
{
    json_t *v = json_object_get(json_array_get(arr, i), field);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void assert_str_eq_or_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_json_eq_or_null(const json_t *a, const json_t *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_true(json_equal(a, b));
}

static void assert_jobs_equal(const jp_job *a, const jp_job *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->queue, b->queue);
    assert_string_equal(a->strategy, b->strategy);
    assert_json_eq_or_null(a->payload, b->payload);
    assert_int_equal(a->priority, b->priority);
    assert_str_eq_or_null(a->key, b->key);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->attempts, b->attempts);
    assert_int_equal(a->attempt_base, b->attempt_base);
    assert_int_equal(a->max_attempts, b->max_attempts);
    assert_int_equal(a->timeout_seconds, b->timeout_seconds);
    assert_int_equal(a->run_at_ms, b->run_at_ms);
    assert_str_eq_or_null(a->idempotency_key, b->idempotency_key);
    assert_string_equal(a->request_hash, b->request_hash);
    assert_json_eq_or_null(a->result, b->result);
    assert_json_eq_or_null(a->error, b->error);
    assert_str_eq_or_null(a->worker_id, b->worker_id);
    assert_int_equal(a->created_at_ms, b->created_at_ms);
    assert_int_equal(a->started_at_ms, b->started_at_ms);
    assert_int_equal(a->completed_at_ms, b->completed_at_ms);
    assert_int_equal(a->updated_at_ms, b->updated_at_ms);
}

/* ---- the database beside the store ---------------------------------------------- */

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* A connection of our own to the PostgreSQL database, beside the store's. */
static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(pg_url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to the test database: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* Runs SQL on `c` and returns the first column of its first row as an
 * integer (0 when there is none). */
static int64_t pg_query_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    int64_t v = 0;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static void pg_exec(const char *sql)
{
    PGconn *c = pg_connect();
    pg_query_int(c, sql);
    PQfinish(c);
}

static int64_t pg_int(const char *sql)
{
    PGconn *c = pg_connect();
    int64_t v = pg_query_int(c, sql);
    PQfinish(c);
    return v;
}

/* Runs SQL straight on the database, beside the store. */
static void raw_exec(const fixture *f, const char *sql)
{
    if (!f->path) {
        pg_exec(sql);
        return;
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int64_t raw_int(const fixture *f, const char *sql)
{
    if (!f->path)
        return pg_int(sql);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ---- open and schema ------------------------------------------------------------- */

static void test_open_migrates_once(void **state)
{
    fixture *f = *state;
    jp_err err;
    assert_string_equal(jp_store_backend(f->store), pg_url ? "postgres" : "sqlite");
    assert_int_equal(jp_store_ping(f->store, &err), 0);
    jp_store_close(f->store);
    f->store = NULL;
    assert_int_equal(jp_store_open(f->url, &f->store, &err), 0);
    jp_store_close(f->store);
    f->store = NULL;
    assert_int_equal(jp_store_open(f->url, &f->store, &err), 0);
    assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM schema_version"), 2);
    assert_int_equal(raw_int(f, "SELECT MAX(version) FROM schema_version"), 2);
    assert_int_equal(jp_store_ping(f->store, &err), 0);
}

static int64_t index_count(const fixture *f, const char *name)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             pg_url ? "SELECT COUNT(*) FROM pg_indexes WHERE indexname = '%s'"
                    : "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = '%s'",
             name);
    return raw_int(f, sql);
}

/* A database made by the first schema gets the partial indexes, and keeps
 * its jobs. */
static void test_open_upgrades_first_schema(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    jp_job *j = make_job("default", "k1", JP_ST_SCHEDULED);
    j->run_at_ms = T0;
    create_one(f->store, j, id);
    raw_exec(f, "DELETE FROM schema_version WHERE version = 2");
    raw_exec(f, "DROP INDEX jobs_due");
    raw_exec(f, "DROP INDEX jobs_key_id");
    raw_exec(f, "CREATE INDEX jobs_status_run_at ON jobs (status, run_at)");
    raw_exec(f, "CREATE INDEX jobs_key_id ON jobs (key, id)");
    jp_store_close(f->store);
    f->store = NULL;
    assert_int_equal(jp_store_open(f->url, &f->store, &err), 0);
    assert_int_equal(raw_int(f, "SELECT MAX(version) FROM schema_version"), 2);
    assert_int_equal(index_count(f, "jobs_status_run_at"), 0);
    assert_int_equal(index_count(f, "jobs_due"), 1);
    assert_int_equal(index_count(f, "jobs_key_id"), 1);
    jp_job **due = NULL;
    size_t n = 0;
    int64_t next = -1;
    assert_int_equal(jp_store_promote_due(f->store, T0 + 1, JP_ST_QUEUED, 10, &due, &n, &next,
                                          &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(due[0]->id, id);
    jp_jobs_free(due, n);
}

static void test_open_uses_wal(void **state)
{
    SQLITE_ONLY();
    fixture *f = *state;
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_open_refuses_newer_schema(void **state)
{
    fixture *f = *state;
    jp_store *s = NULL;
    jp_err err;
    raw_exec(f, "INSERT INTO schema_version (version) VALUES (99)");
    assert_int_equal(jp_store_open(f->url, &s, &err), JP_EUNAVAIL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "99"));
}

static void test_open_rejects_bad_urls(void **state)
{
    (void)state;
    jp_store *s = NULL;
    jp_err err;
    assert_int_equal(jp_store_open("mysql://localhost/db", &s, &err), JP_EINVAL);
    assert_non_null(strstr(err.msg, "mysql"));
    assert_int_equal(jp_store_open("jobplane.db", &s, &err), JP_EINVAL);
    assert_int_equal(jp_store_open("sqlite://", &s, &err), JP_EINVAL);
    assert_int_equal(jp_store_open(NULL, &s, &err), JP_EINVAL);
    assert_int_equal(jp_store_open("sqlite:///nonexistent-dir-jp/x/y.db", &s, &err),
                     JP_EUNAVAIL);
    assert_null(s);
}

static void test_open_relative_path(void **state)
{
    SQLITE_ONLY();
    fixture *f = *state;
    char cwd[4096];
    jp_store *s = NULL;
    jp_err err;
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    assert_int_equal(jp_store_open("sqlite://./rel.db", &s, &err), 0);
    jp_store_close(s);
    s = NULL;
    assert_int_equal(access("rel.db", F_OK), 0);
    assert_int_equal(jp_store_open("sqlite://rel2.db", &s, &err), 0);
    jp_store_close(s);
    assert_int_equal(access("rel2.db", F_OK), 0);
    assert_int_equal(chdir(cwd), 0);
}

/* ---- create and get ----------------------------------------------------------------- */

static void test_create_get_round_trip(void **state)
{
    fixture *f = *state;
    jp_err err;
    jp_job *j = make_job("emails", "example.com", JP_ST_RUNNING);
    json_decref(j->payload);
    j->payload = json_pack("{s:s, s:[i,i], s:{s:b}, s:n}", "url", "https://example.com/", "n",
                           1, 2, "o", "deep", 1, "z");
    j->priority = JP_PRIO_HIGH;
    j->attempts = 2;
    j->attempt_base = 1;
    j->max_attempts = 5;
    j->timeout_seconds = 77;
    j->run_at_ms = T0 + 5;
    j->idempotency_key = jp_xstrdup("order-42");
    snprintf(j->request_hash, sizeof j->request_hash, "0123456789abcdef");
    j->result = json_pack("{s:i}", "status", 200);
    j->error = jp_error_json("boom", "it broke");
    j->worker_id = jp_xstrdup("worker-a:1");
    j->created_at_ms = T0;
    j->started_at_ms = T0 + 1;
    j->completed_at_ms = T0 + 2;
    j->updated_at_ms = T0 + 3;
    assert_int_equal(jp_store_create(f->store, &j, 1, NULL, &err), 0);
    jp_job *got = get(f->store, j->id);
    assert_jobs_equal(got, j);
    jp_job_free(got);
    jp_job_free(j);

    /* And the unset fields come back unset. */
    j = make_job("default", NULL, JP_ST_QUEUED);
    j->created_at_ms = j->updated_at_ms = T0 + 10;
    assert_int_equal(jp_store_create(f->store, &j, 1, NULL, &err), 0);
    got = get(f->store, j->id);
    assert_jobs_equal(got, j);
    assert_null(got->key);
    assert_null(got->result);
    assert_null(got->error);
    assert_null(got->worker_id);
    assert_null(got->idempotency_key);
    assert_string_equal(got->request_hash, "");
    assert_true(json_is_null(got->payload));
    assert_int_equal(got->run_at_ms, 0);
    assert_int_equal(got->started_at_ms, 0);
    jp_job_free(got);
    jp_job_free(j);
}

static void test_get_missing_is_not_found(void **state)
{
    fixture *f = *state;
    jp_job *j = NULL;
    jp_err err;
    assert_int_equal(jp_store_get(f->store, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f", &j, &err),
                     JP_ENOTFOUND);
    assert_null(j);
    assert_non_null(strstr(err.msg, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f"));
}

static void test_unreadable_payload_loads_as_null(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    char *sql = jp_xasprintf("UPDATE jobs SET payload = '{not json', result = '[' WHERE id = '%s'",
                             id);
    raw_exec(f, sql);
    free(sql);
    jp_job *j = get(f->store, id);
    assert_true(json_is_null(j->payload));
    assert_null(j->result);
    jp_job_free(j);
}

static void test_create_idempotent_same_hash_returns_stored(void **state)
{
    fixture *f = *state;
    jp_err err;
    jp_job *first = make_idem("order-1", "aaaaaaaaaaaaaaaa");
    char id[JP_UUID_STR_LEN + 1];
    memcpy(id, first->id, sizeof id);
    bool existed = true;
    assert_int_equal(jp_store_create(f->store, &first, 1, &existed, &err), 0);
    assert_false(existed);
    jp_job_free(first);

    jp_job *again = make_idem("order-1", "aaaaaaaaaaaaaaaa");
    assert_string_not_equal(again->id, id);
    assert_int_equal(jp_store_create(f->store, &again, 1, &existed, &err), 0);
    assert_true(existed);
    assert_string_equal(again->id, id);
    assert_string_equal(again->idempotency_key, "order-1");
    jp_job_free(again);
    assert_int_equal(total(f->store), 1);
}

static void test_create_idempotent_other_hash_conflicts(void **state)
{
    fixture *f = *state;
    jp_err err;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_idem("k", "aaaaaaaaaaaaaaaa"), id);

    jp_job *batch[2] = {make_job("default", NULL, JP_ST_QUEUED),
                        make_idem("k", "bbbbbbbbbbbbbbbb")};
    jp_job *orig[2] = {batch[0], batch[1]};
    bool existed[2] = {true, true};
    assert_int_equal(jp_store_create(f->store, batch, 2, existed, &err), JP_ECONFLICT);
    assert_string_equal(err.msg, "idempotency key \"k\" was used with a different request");
    /* Nothing inserted, nothing replaced, nothing written to existed. */
    assert_ptr_equal(batch[0], orig[0]);
    assert_ptr_equal(batch[1], orig[1]);
    assert_true(existed[0]);
    assert_int_equal(total(f->store), 1);
    jp_job *j = NULL;
    assert_int_equal(jp_store_get(f->store, batch[0]->id, &j, &err), JP_ENOTFOUND);
    jp_job_free(batch[0]);
    jp_job_free(batch[1]);
}

static void test_create_batch_repeated_key_resolves_to_first(void **state)
{
    fixture *f = *state;
    jp_err err;
    jp_job *batch[3] = {make_idem("dup", "cccccccccccccccc"),
                        make_job("default", NULL, JP_ST_QUEUED),
                        make_idem("dup", "cccccccccccccccc")};
    bool existed[3];
    assert_int_equal(jp_store_create(f->store, batch, 3, existed, &err), 0);
    assert_false(existed[0]);
    assert_false(existed[1]);
    assert_true(existed[2]);
    assert_string_equal(batch[2]->id, batch[0]->id);
    assert_int_equal(total(f->store), 2);
    for (int i = 0; i < 3; i++)
        jp_job_free(batch[i]);

    jp_job *bad[2] = {make_idem("dup2", "1111111111111111"), make_idem("dup2", "2222222222222222")};
    assert_int_equal(jp_store_create(f->store, bad, 2, NULL, &err), JP_ECONFLICT);
    assert_int_equal(total(f->store), 2);
    jp_job_free(bad[0]);
    jp_job_free(bad[1]);
}

static void test_create_batch_is_atomic(void **state)
{
    fixture *f = *state;
    jp_err err;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    jp_job *batch[3] = {make_job("default", NULL, JP_ST_QUEUED),
                        make_job("default", NULL, JP_ST_QUEUED),
                        make_job("default", NULL, JP_ST_QUEUED)};
    memcpy(batch[2]->id, id, sizeof id);  /* the third collides with a stored job */
    assert_int_equal(jp_store_create(f->store, batch, 3, NULL, &err), JP_ECONFLICT);
    assert_int_equal(total(f->store), 1);
    jp_job *j = NULL;
    assert_int_equal(jp_store_get(f->store, batch[0]->id, &j, &err), JP_ENOTFOUND);

    /* A job the store could not read back is refused before anything is written. */
    jp_uuid7(batch[2]->id);
    batch[1]->status = (jp_status)42;
    assert_int_equal(jp_store_create(f->store, batch, 3, NULL, &err), JP_EINVAL);
    assert_int_equal(total(f->store), 1);
    batch[1]->status = JP_ST_QUEUED;

    /* A good batch goes in whole. */
    assert_int_equal(jp_store_create(f->store, batch, 3, NULL, &err), 0);
    assert_int_equal(total(f->store), 4);
    for (int i = 0; i < 3; i++)
        jp_job_free(batch[i]);
}

/* ---- list, counts, scan --------------------------------------------------------------- */

/* 40 jobs: queue q0/q1, key k0..k3, status queued/completed/failed by index. */
static void seed_list(jp_store *s, char ids[40][JP_UUID_STR_LEN + 1])
{
    static const jp_status sts[] = {JP_ST_QUEUED, JP_ST_COMPLETED, JP_ST_FAILED};
    jp_job *jobs[40];
    jp_err err;
    for (int i = 0; i < 40; i++) {
        char q[8], k[8];
        snprintf(q, sizeof q, "q%d", i % 2);
        snprintf(k, sizeof k, "k%d", i % 4);
        jobs[i] = make_job(q, k, sts[i % 3]);
        memcpy(ids[i], jobs[i]->id, JP_UUID_STR_LEN + 1);
    }
    assert_int_equal(jp_store_create(s, jobs, 40, NULL, &err), 0);
    for (int i = 0; i < 40; i++)
        jp_job_free(jobs[i]);
}

static size_t list_ids(jp_store *s, jp_list_filter flt, char **out_cursor, jp_job ***out)
{
    jp_job **jobs = NULL;
    size_t n = 99;
    char *cursor = (char *)"unset";
    jp_err err;
    assert_int_equal(jp_store_list(s, &flt, &jobs, &n, &cursor, &err), 0);
    *out = jobs;
    *out_cursor = cursor;
    return n;
}

static void test_list_newest_first_with_filters(void **state)
{
    fixture *f = *state;
    char ids[40][JP_UUID_STR_LEN + 1];
    seed_list(f->store, ids);

    struct {
        int status;
        const char *queue, *key;
    } cases[] = {
        {-1, NULL, NULL}, {JP_ST_FAILED, NULL, NULL}, {-1, "q1", NULL}, {-1, NULL, "k2"},
        {JP_ST_QUEUED, "q0", NULL}, {JP_ST_COMPLETED, NULL, "k1"}, {-1, "q0", "k2"},
        {JP_ST_QUEUED, "q0", "k0"}, {JP_ST_CANCELLED, NULL, NULL}, {-1, "nope", NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        jp_list_filter flt = {.status = cases[c].status, .queue = cases[c].queue,
                              .key = cases[c].key, .limit = 1000};
        jp_job **jobs;
        char *cursor;
        size_t n = list_ids(f->store, flt, &cursor, &jobs);
        /* Expected: matching seeds, newest (highest index) first. */
        size_t want = 0;
        for (int i = 39; i >= 0; i--) {
            static const jp_status sts[] = {JP_ST_QUEUED, JP_ST_COMPLETED, JP_ST_FAILED};
            char q[8], k[8];
            snprintf(q, sizeof q, "q%d", i % 2);
            snprintf(k, sizeof k, "k%d", i % 4);
            if (cases[c].status >= 0 && (int)sts[i % 3] != cases[c].status)
                continue;
            if (cases[c].queue && strcmp(cases[c].queue, q) != 0)
                continue;
            if (cases[c].key && strcmp(cases[c].key, k) != 0)
                continue;
            assert_true(want < n);
            assert_string_equal(jobs[want]->id, ids[i]);
            want++;
        }
        assert_int_equal(n, want);
        assert_null(cursor);
        jp_jobs_free(jobs, n);
    }
}

static void test_list_cursor_pages_without_gaps(void **state)
{
    fixture *f = *state;
    char ids[40][JP_UUID_STR_LEN + 1];
    seed_list(f->store, ids);

    /* All 40 by 7: 7,7,7,7,7,5; and queue q1 (20) by 5: 5,5,5,5 then empty. */
    struct {
        const char *queue;
        size_t limit;
        int step;
        size_t pages;
    } cases[] = {{NULL, 7, 1, 6}, {"q1", 5, 2, 5}};
    for (size_t c = 0; c < 2; c++) {
        char *cursor = NULL;
        size_t seen = 0, pages = 0;
        int next = 39;
        if (cases[c].queue)
            next = 39;  /* the q1 jobs are the odd indexes */
        do {
            jp_list_filter flt = {.status = -1, .queue = cases[c].queue, .cursor = cursor,
                                  .limit = cases[c].limit};
            jp_job **jobs;
            char *nc;
            size_t n = list_ids(f->store, flt, &nc, &jobs);
            for (size_t i = 0; i < n; i++) {
                assert_string_equal(jobs[i]->id, ids[next]);
                next -= cases[c].step;
                seen++;
            }
            if (n == cases[c].limit)
                assert_string_equal(nc, jobs[n - 1]->id);
            else
                assert_null(nc);
            jp_jobs_free(jobs, n);
            free(cursor);
            cursor = nc;
            pages++;
        } while (cursor);
        assert_int_equal(seen, cases[c].queue ? 20 : 40);
        assert_int_equal(pages, cases[c].pages);
    }
}

static void test_list_rejects_bad_limit(void **state)
{
    fixture *f = *state;
    jp_job **jobs = NULL;
    size_t n = 0;
    char *cursor = NULL;
    jp_err err;
    jp_list_filter flt = {.status = -1, .limit = 0};
    assert_int_equal(jp_store_list(f->store, &flt, &jobs, &n, &cursor, &err), JP_EINVAL);
    flt.limit = 1001;
    assert_int_equal(jp_store_list(f->store, &flt, &jobs, &n, &cursor, &err), JP_EINVAL);
    flt.limit = 10;
    flt.status = 42;
    assert_int_equal(jp_store_list(f->store, &flt, &jobs, &n, &cursor, &err), JP_EINVAL);
    assert_null(jobs);
}

static void test_counts_by_status(void **state)
{
    fixture *f = *state;
    char ids[40][JP_UUID_STR_LEN + 1];
    int64_t counts[JP_ST__COUNT];
    jp_err err;
    assert_int_equal(jp_store_counts(f->store, counts, &err), 0);
    for (int i = 0; i < JP_ST__COUNT; i++)
        assert_int_equal(counts[i], 0);
    seed_list(f->store, ids);
    assert_int_equal(jp_store_counts(f->store, counts, &err), 0);
    assert_int_equal(counts[JP_ST_QUEUED], 14);
    assert_int_equal(counts[JP_ST_COMPLETED], 13);
    assert_int_equal(counts[JP_ST_FAILED], 13);
    assert_int_equal(counts[JP_ST_RUNNING], 0);
    assert_int_equal(counts[JP_ST_PENDING], 0);
    for (int st = 0; st < JP_ST__COUNT; st++) {
        int64_t one = -1;
        assert_int_equal(jp_store_count(f->store, (jp_status)st, &one, &err), 0);
        assert_int_equal(one, counts[st]);
    }
}

static void test_scan_by_status_ascending(void **state)
{
    fixture *f = *state;
    char ids[40][JP_UUID_STR_LEN + 1];
    jp_err err;
    seed_list(f->store, ids);
    /* queued are indexes 0, 3, 6, … 39: 14 of them, read 5 at a time. */
    char after[JP_UUID_STR_LEN + 1] = "";
    int next = 0, calls = 0;
    for (;;) {
        jp_job **jobs = NULL;
        size_t n = 0;
        assert_int_equal(jp_store_scan(f->store, JP_ST_QUEUED, after[0] ? after : NULL, 5, &jobs,
                                       &n, &err),
                         0);
        calls++;
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(jobs[i]->id, ids[next]);
            assert_int_equal(jobs[i]->status, JP_ST_QUEUED);
            next += 3;
        }
        if (n)
            memcpy(after, jobs[n - 1]->id, sizeof after);
        jp_jobs_free(jobs, n);
        if (n < 5)
            break;
    }
    assert_int_equal(next, 42);
    assert_int_equal(calls, 3);
}

/* ---- transitions ------------------------------------------------------------------------- */

static void test_apply_full_lifecycle(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_store_op op;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);

    jp_event ev = ev_of(JP_EV_START, 1, T0 + 100);
    ev.worker_id = "w1";
    assert_int_equal(apply1(f->store, id, ev, &op), 0);
    assert_int_equal(op.before, JP_ST_QUEUED);
    assert_int_equal(op.after, JP_ST_RUNNING);
    assert_false(op.refused);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_RUNNING);
    assert_int_equal(j->attempts, 1);
    assert_string_equal(j->worker_id, "w1");
    assert_int_equal(j->started_at_ms, T0 + 100);
    assert_int_equal(j->updated_at_ms, T0 + 100);
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(attempt_str(a, 0, "outcome"), "running");
    assert_string_equal(attempt_str(a, 0, "worker_id"), "w1");
    assert_string_equal(attempt_str(a, 0, "started_at"), "2025-11-26T10:00:00.100Z");
    assert_true(json_is_null(json_object_get(json_array_get(a, 0), "finished_at")));
    assert_true(json_is_null(json_object_get(json_array_get(a, 0), "duration_ms")));
    json_decref(a);

    json_t *result = json_pack("{s:i}", "status", 200);
    ev = ev_of(JP_EV_COMPLETE, 1, T0 + 350);
    ev.result = result;
    assert_int_equal(apply1(f->store, id, ev, &op), 0);
    assert_int_equal(op.after, JP_ST_COMPLETED);
    j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_COMPLETED);
    assert_true(json_equal(j->result, result));
    assert_null(j->error);
    assert_int_equal(j->completed_at_ms, T0 + 350);
    assert_int_equal(j->started_at_ms, T0 + 100);
    assert_string_equal(j->worker_id, "w1");
    jp_job_free(j);
    json_decref(result);

    a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 1);
    json_t *a0 = json_array_get(a, 0);
    assert_int_equal(json_integer_value(json_object_get(a0, "attempt")), 1);
    assert_string_equal(attempt_str(a, 0, "outcome"), "completed");
    assert_string_equal(attempt_str(a, 0, "finished_at"), "2025-11-26T10:00:00.350Z");
    assert_int_equal(json_integer_value(json_object_get(a0, "duration_ms")), 250);
    assert_true(json_is_null(json_object_get(a0, "error")));
    json_decref(a);
}

static void test_apply_stale_attempt_changes_nothing(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_store_op op;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    jp_event ev = ev_of(JP_EV_START, 1, T0 + 1);
    ev.worker_id = "w1";
    assert_int_equal(apply1(f->store, id, ev, NULL), 0);
    ev = ev_of(JP_EV_START, 2, T0 + 2);  /* lease take-over: attempt 2 runs */
    ev.worker_id = "w2";
    assert_int_equal(apply1(f->store, id, ev, NULL), 0);

    jp_job *before = get(f->store, id);
    json_t *abefore = attempts_of(f->store, id);
    json_t *result = json_pack("{s:b}", "late", 1);
    ev = ev_of(JP_EV_COMPLETE, 1, T0 + 3);  /* the first worker, too late */
    ev.result = result;
    assert_int_equal(apply1(f->store, id, ev, &op), JP_ECONFLICT);
    assert_int_equal(op.err.code, JP_ECONFLICT);
    assert_true(op.err.msg[0] != '\0');
    assert_int_equal(op.before, JP_ST_RUNNING);
    jp_job *after = get(f->store, id);
    json_t *aafter = attempts_of(f->store, id);
    assert_jobs_equal(before, after);
    assert_true(json_equal(abefore, aafter));
    assert_int_equal(json_array_size(aafter), 2);
    assert_string_equal(attempt_str(aafter, 0, "outcome"), "lost");
    assert_string_equal(attempt_str(aafter, 1, "outcome"), "running");
    json_decref(result);
    json_decref(abefore);
    json_decref(aafter);
    jp_job_free(before);
    jp_job_free(after);
}

static void test_apply_report_for_terminal_job_refused(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_COMPLETE, 1, T0 + 2), NULL), 0);
    jp_job *before = get(f->store, id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_FAIL, 1, T0 + 3), NULL), JP_ECONFLICT);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_CANCEL, 0, T0 + 4), NULL), JP_ECONFLICT);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 2, T0 + 5), NULL), JP_ECONFLICT);
    jp_job *after = get(f->store, id);
    assert_jobs_equal(before, after);
    jp_job_free(before);
    jp_job_free(after);
}

static void test_apply_fail_schedules_retry_and_promote_due_queues_it(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 10), NULL), 0);
    json_t *error = jp_error_json("http_status", "got 500");
    jp_event ev = ev_of(JP_EV_FAIL, 1, T0 + 20);
    ev.error = error;
    ev.backoff_ms = 1000;
    jp_store_op op;
    assert_int_equal(apply1(f->store, id, ev, &op), 0);
    assert_int_equal(op.after, JP_ST_SCHEDULED);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_SCHEDULED);
    assert_int_equal(j->run_at_ms, T0 + 1020);
    assert_true(json_equal(j->error, error));
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_string_equal(attempt_str(a, 0, "outcome"), "failed");
    assert_true(json_equal(json_object_get(json_array_get(a, 0), "error"), error));
    json_decref(a);
    json_decref(error);

    /* Not due yet. */
    jp_job **jobs = NULL;
    size_t n = 9;
    int64_t next = 0;
    assert_int_equal(
        jp_store_promote_due(f->store, T0 + 1019, JP_ST_QUEUED, 10, &jobs, &n, &next, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(next, T0 + 1020);
    jp_jobs_free(jobs, n);

    assert_int_equal(
        jp_store_promote_due(f->store, T0 + 1020, JP_ST_QUEUED, 10, &jobs, &n, &next, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(jobs[0]->id, id);
    assert_int_equal(jobs[0]->status, JP_ST_QUEUED);
    assert_int_equal(jobs[0]->run_at_ms, 0);
    assert_int_equal(jobs[0]->updated_at_ms, T0 + 1020);
    assert_int_equal(next, 0);
    jp_jobs_free(jobs, n);
    j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_QUEUED);
    jp_job_free(j);

    /* The second attempt runs. */
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 2, T0 + 2000), NULL), 0);
}

static void test_promote_due_respects_limit_and_order(void **state)
{
    fixture *f = *state;
    jp_err err;
    jp_job *jobs_in[5];
    for (int i = 0; i < 5; i++) {
        jobs_in[i] = make_job("default", NULL, JP_ST_SCHEDULED);
        jobs_in[i]->run_at_ms = T0 + 100 - i;  /* later ids are due earlier */
    }
    assert_int_equal(jp_store_create(f->store, jobs_in, 5, NULL, &err), 0);
    jp_job **jobs = NULL;
    size_t n = 0;
    int64_t next = 0;
    assert_int_equal(
        jp_store_promote_due(f->store, T0 + 1000, JP_ST_PENDING, 2, &jobs, &n, &next, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(jobs[0]->id, jobs_in[4]->id);
    assert_string_equal(jobs[1]->id, jobs_in[3]->id);
    assert_int_equal(jobs[0]->status, JP_ST_PENDING);
    assert_int_equal(next, T0 + 98);
    jp_jobs_free(jobs, n);
    int64_t counts[JP_ST__COUNT];
    assert_int_equal(jp_store_counts(f->store, counts, &err), 0);
    assert_int_equal(counts[JP_ST_SCHEDULED], 3);
    assert_int_equal(counts[JP_ST_PENDING], 2);
    for (int i = 0; i < 5; i++)
        jp_job_free(jobs_in[i]);
    assert_int_equal(
        jp_store_promote_due(f->store, T0 + 1000, JP_ST_RUNNING, 2, &jobs, &n, &next, &err),
        JP_EINVAL);
}

static void test_apply_fail_exhausts_attempts(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_job *j = make_job("default", NULL, JP_ST_QUEUED);
    j->max_attempts = 2;
    create_one(f->store, j, id);
    for (int n = 1; n <= 2; n++) {
        jp_store_op op;
        assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, n, T0 + n * 10), NULL), 0);
        assert_int_equal(apply1(f->store, id, ev_of(JP_EV_FAIL, n, T0 + n * 10 + 1), &op), 0);
        assert_int_equal(op.after, n == 1 ? JP_ST_SCHEDULED : JP_ST_FAILED);
        if (n == 1)
            assert_int_equal(apply1(f->store, id, ev_of(JP_EV_DUE, 0, T0 + 15), NULL), 0);
    }
    j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_FAILED);
    assert_int_equal(j->attempts, 2);
    assert_int_equal(j->completed_at_ms, T0 + 21);
    assert_int_equal(j->run_at_ms, 0);
    assert_non_null(j->error);
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(attempt_str(a, 1, "outcome"), "failed");
    json_decref(a);
}

static void test_apply_cancel_running_closes_attempt(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    jp_store_op op;
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_CANCEL, 0, T0 + 9), &op), 0);
    assert_int_equal(op.before, JP_ST_RUNNING);
    assert_int_equal(op.after, JP_ST_CANCELLED);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_CANCELLED);
    assert_int_equal(j->completed_at_ms, T0 + 9);
    assert_string_equal(json_string_value(json_object_get(j->error, "code")), "cancelled");
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(attempt_str(a, 0, "outcome"), "cancelled");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "duration_ms")), 8);
    json_decref(a);
    /* A late report of the cancelled attempt is refused. */
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_COMPLETE, 1, T0 + 10), NULL), JP_ECONFLICT);
}

static void test_apply_retry_failed_keeps_history(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    jp_event ev = ev_of(JP_EV_FAIL, 1, T0 + 2);
    ev.retryable = false;
    assert_int_equal(apply1(f->store, id, ev, NULL), 0);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_FAILED);
    jp_job_free(j);

    jp_store_op op;
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_RETRY, 0, T0 + 3), &op), 0);
    assert_int_equal(op.before, JP_ST_FAILED);
    assert_int_equal(op.after, JP_ST_QUEUED);
    j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_QUEUED);
    assert_int_equal(j->attempt_base, 1);
    assert_int_equal(j->attempts, 1);
    assert_int_equal(j->completed_at_ms, 0);
    assert_null(j->error);
    jp_job_free(j);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 2, T0 + 4), NULL), 0);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(attempt_str(a, 0, "outcome"), "failed");
    assert_string_equal(attempt_str(a, 1, "outcome"), "running");
    json_decref(a);
}

static void test_apply_poison_start_fails_crashed_worker(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);  /* max_attempts 3 */
    jp_store_op op;
    for (int n = 1; n <= 3; n++) {
        assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, n, T0 + n), &op), 0);
        assert_false(op.refused);
        assert_int_equal(op.after, JP_ST_RUNNING);
    }
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 4, T0 + 4), &op), 0);
    assert_true(op.refused);
    assert_int_equal(op.err.code, JP_ECONFLICT);
    assert_int_equal(op.after, JP_ST_FAILED);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_FAILED);
    assert_string_equal(json_string_value(json_object_get(j->error, "code")), "crashed_worker");
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 3);
    assert_string_equal(attempt_str(a, 0, "outcome"), "lost");
    assert_string_equal(attempt_str(a, 1, "outcome"), "lost");
    assert_string_equal(attempt_str(a, 2, "outcome"), "crashed");
    json_decref(a);
    /* It never cycles: a further delivery is refused. */
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 5, T0 + 5), NULL), JP_ECONFLICT);
}

static void test_apply_close_of_unrecorded_start_adds_row(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    /* Claimed by w0 whose START never reached the database's attempts. */
    jp_job *j = make_job("default", NULL, JP_ST_RUNNING);
    j->attempts = 1;
    j->started_at_ms = T0 + 5;
    j->worker_id = jp_xstrdup("w0");
    create_one(f->store, j, id);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 0);
    json_decref(a);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_COMPLETE, 1, T0 + 50), NULL), 0);
    a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(attempt_str(a, 0, "outcome"), "completed");
    assert_string_equal(attempt_str(a, 0, "worker_id"), "w0");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "duration_ms")), 45);
    json_decref(a);
}

static void test_apply_want_job_returns_updated_job(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    jp_store_op op = {.want_job = true, .ev = ev_of(JP_EV_START, 1, T0 + 7)};
    op.ev.worker_id = "w9";
    memcpy(op.job_id, id, sizeof op.job_id);
    assert_int_equal(jp_store_apply(f->store, &op, 1, &err), 0);
    assert_int_equal(op.rc, 0);
    assert_non_null(op.job);
    assert_int_equal(op.job->status, JP_ST_RUNNING);
    assert_string_equal(op.job->worker_id, "w9");
    assert_int_equal(op.job->updated_at_ms, T0 + 7);
    jp_job *j = get(f->store, id);
    assert_jobs_equal(op.job, j);
    jp_job_free(j);
    jp_job_free(op.job);

    /* On a conflict the job comes back as it stands. */
    jp_store_op bad = {.want_job = true, .ev = ev_of(JP_EV_COMPLETE, 3, T0 + 8)};
    memcpy(bad.job_id, id, sizeof bad.job_id);
    assert_int_equal(jp_store_apply(f->store, &bad, 1, &err), 0);
    assert_int_equal(bad.rc, JP_ECONFLICT);
    assert_non_null(bad.job);
    assert_int_equal(bad.job->status, JP_ST_RUNNING);
    jp_job_free(bad.job);
}

static void test_apply_batch_in_order_and_isolated(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    jp_store_op ops[4] = {
        {.ev = ev_of(JP_EV_START, 1, T0 + 1)},
        {.ev = ev_of(JP_EV_START, 1, T0 + 2)},  /* missing job */
        {.ev = ev_of(JP_EV_COMPLETE, 1, T0 + 3)},
        {.ev = ev_of(JP_EV_COMPLETE, 1, T0 + 4)},  /* now terminal */
    };
    memcpy(ops[0].job_id, id, sizeof id);
    snprintf(ops[1].job_id, sizeof ops[1].job_id, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f");
    memcpy(ops[2].job_id, id, sizeof id);
    memcpy(ops[3].job_id, id, sizeof id);
    assert_int_equal(jp_store_apply(f->store, ops, 4, &err), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, JP_ENOTFOUND);
    assert_int_equal(ops[2].rc, 0);
    assert_int_equal(ops[2].before, JP_ST_RUNNING);
    assert_int_equal(ops[2].after, JP_ST_COMPLETED);
    assert_int_equal(ops[3].rc, JP_ECONFLICT);
    assert_int_equal(ops[3].before, JP_ST_COMPLETED);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_COMPLETED);
    assert_int_equal(j->completed_at_ms, T0 + 3);
    jp_job_free(j);
}

/* The events of job k of test_apply_batch_equals_one_by_one: a mix that
 * opens, ends, retries and refuses attempts, several per job. */
static size_t batch_events(size_t k, jp_event ev[4], json_t *result, json_t *error)
{
    int64_t t = T0 + (int64_t)k * 10;
    ev[0] = ev_of(JP_EV_START, 1, t + 1);
    ev[0].worker_id = k % 3 ? "w-a" : "w-b";
    switch (k % 5) {
    case 0:  /* completes */
        ev[1] = ev_of(JP_EV_COMPLETE, 1, t + 2);
        ev[1].result = result;
        return 2;
    case 1:  /* fails, is retried at once, starts again */
        ev[1] = ev_of(JP_EV_FAIL, 1, t + 2);
        ev[1].error = error;
        ev[1].backoff_ms = 0;
        ev[2] = ev_of(JP_EV_CANCEL, 0, t + 3);
        ev[3] = ev_of(JP_EV_RETRY, 0, t + 4);
        return 4;
    case 2:  /* a stale report after the start */
        ev[1] = ev_of(JP_EV_COMPLETE, 2, t + 2);
        return 2;
    case 3:  /* a report for a job never started: refused */
        ev[0] = ev_of(JP_EV_COMPLETE, 1, t + 1);
        return 1;
    default: /* started twice by another worker: a take-over */
        ev[1] = ev_of(JP_EV_START, 2, t + 2);
        ev[1].worker_id = "w-c";
        ev[2] = ev_of(JP_EV_FAIL, 2, t + 3);
        ev[2].retryable = false;
        ev[2].error = error;
        return 3;
    }
}

/* A batch of many jobs' changes (more rows than one statement carries)
 * leaves every job, every attempt and every op's verdict as the same
 * changes applied one at a time do. */
static void test_apply_batch_equals_one_by_one(void **state)
{
    enum { JOBS = 150 };
    fixture *f = *state;
    jp_job *a[JOBS], *b[JOBS];
    jp_store_op *ops = jp_xcalloc(JOBS * 4, sizeof *ops);
    json_t *result = json_pack("{s:i}", "n", 7);
    json_t *error = json_pack("{s:s,s:s}", "code", "exit_status", "message", "1");
    jp_err err;
    size_t n = 0;

    for (size_t k = 0; k < JOBS; k++) {
        a[k] = make_job("default", NULL, JP_ST_QUEUED);
        b[k] = make_job("default", NULL, JP_ST_QUEUED);
    }
    assert_int_equal(jp_store_create(f->store, a, JOBS, NULL, &err), 0);
    assert_int_equal(jp_store_create(f->store, b, JOBS, NULL, &err), 0);
    /* Interleaved across jobs, as a group commit gathers them. */
    for (size_t step = 0; step < 4; step++) {
        for (size_t k = 0; k < JOBS; k++) {
            jp_event ev[4];
            if (step < batch_events(k, ev, result, error)) {
                ops[n].ev = ev[step];
                ops[n].want_job = k % 7 == 0;
                memcpy(ops[n].job_id, a[k]->id, sizeof ops[n].job_id);
                n++;
            }
        }
    }
    assert_int_equal(jp_store_apply(f->store, ops, n, &err), 0);

    size_t i = 0;
    for (size_t step = 0; step < 4; step++) {
        for (size_t k = 0; k < JOBS; k++) {
            jp_event ev[4];
            if (step >= batch_events(k, ev, result, error))
                continue;
            jp_store_op one = {.ev = ev[step], .want_job = true};
            memcpy(one.job_id, b[k]->id, sizeof one.job_id);
            assert_int_equal(jp_store_apply(f->store, &one, 1, &err), 0);
            assert_int_equal(ops[i].rc, one.rc);
            assert_int_equal(ops[i].refused, one.refused);
            if (one.rc == 0) {
                assert_int_equal(ops[i].before, one.before);
                assert_int_equal(ops[i].after, one.after);
            }
            if (ops[i].want_job) {  /* the job as that op left it, not as the batch did */
                assert_non_null(ops[i].job);
                memcpy(ops[i].job->id, one.job->id, sizeof one.job->id);
                assert_jobs_equal(ops[i].job, one.job);
            } else {
                assert_null(ops[i].job);
            }
            jp_job_free(one.job);
            jp_job_free(ops[i].job);
            i++;
        }
    }
    assert_int_equal(i, n);
    for (size_t k = 0; k < JOBS; k++) {
        jp_job *ja = get(f->store, a[k]->id), *jb = get(f->store, b[k]->id);
        memcpy(ja->id, jb->id, sizeof ja->id);
        assert_jobs_equal(ja, jb);
        json_t *aa = attempts_of(f->store, a[k]->id), *ab = attempts_of(f->store, b[k]->id);
        assert_int_equal(json_array_size(aa) == 0, k % 5 == 3);
        assert_true(json_equal(aa, ab));
        json_decref(aa);
        json_decref(ab);
        jp_job_free(ja);
        jp_job_free(jb);
    }
    for (size_t k = 0; k < JOBS; k++) {
        jp_job_free(a[k]);
        jp_job_free(b[k]);
    }
    json_decref(result);
    json_decref(error);
    free(ops);
}

static void test_apply_failed_transaction_changes_nothing(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    /* The database refuses the second op's write half-way through. */
    if (f->path)
        raw_exec(f, "CREATE TRIGGER no_complete BEFORE UPDATE ON jobs"
                    " WHEN NEW.status = 'completed'"
                    " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    else
        raw_exec(f, "CREATE FUNCTION jp_test_fail() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$;"
                    " CREATE TRIGGER no_complete BEFORE UPDATE ON jobs FOR EACH ROW"
                    " WHEN (NEW.status = 'completed') EXECUTE FUNCTION jp_test_fail()");
    jp_store_op ops[2] = {{.ev = ev_of(JP_EV_START, 1, T0 + 1), .want_job = true},
                          {.ev = ev_of(JP_EV_COMPLETE, 1, T0 + 2)}};
    memcpy(ops[0].job_id, id, sizeof id);
    memcpy(ops[1].job_id, id, sizeof id);
    assert_int_equal(jp_store_apply(f->store, ops, 2, &err), JP_EUNAVAIL);
    assert_int_equal(err.code, JP_EUNAVAIL);
    assert_non_null(strstr(err.msg, "disk on fire"));
    assert_int_equal(ops[0].rc, JP_EUNAVAIL);
    assert_null(ops[0].job);
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_QUEUED);
    assert_int_equal(j->attempts, 0);
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 0);
    json_decref(a);

    /* The store is still usable afterwards. */
    raw_exec(f, f->path ? "DROP TRIGGER no_complete" : "DROP TRIGGER no_complete ON jobs");
    assert_int_equal(jp_store_apply(f->store, ops, 2, NULL), 0);
    assert_int_equal(ops[1].rc, 0);
    assert_int_equal(ops[1].after, JP_ST_COMPLETED);
    jp_job_free(ops[0].job);
}

static void test_attempts_of_missing_job_not_found(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    json_t *a = NULL;
    jp_err err;
    assert_int_equal(
        jp_store_attempts(f->store, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f", &a, &err),
        JP_ENOTFOUND);
    assert_null(a);
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    a = attempts_of(f->store, id);
    assert_int_equal(json_array_size(a), 0);
    json_decref(a);
}

/* ---- threads and persistence --------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 40

typedef struct thread_arg {
    jp_store *store;
    int index;
    int failures;
} thread_arg;

static void *hammer(void *p)
{
    thread_arg *t = p;
    jp_err err;
    for (int i = 0; i < PER_THREAD; i++) {
        jp_job *j = make_job(t->index % 2 ? "odd" : "even", NULL, JP_ST_QUEUED);
        char id[JP_UUID_STR_LEN + 1];
        memcpy(id, j->id, sizeof id);
        if (jp_store_create(t->store, &j, 1, NULL, &err) != 0)
            t->failures++;
        jp_job_free(j);
        jp_store_op ops[2] = {{.ev = ev_of(JP_EV_START, 1, T0 + i)},
                              {.ev = ev_of(JP_EV_COMPLETE, 1, T0 + i + 1)}};
        memcpy(ops[0].job_id, id, sizeof id);
        memcpy(ops[1].job_id, id, sizeof id);
        /* The two halves of the lifecycle in separate transactions. */
        if (jp_store_apply(t->store, &ops[0], 1, &err) != 0 || ops[0].rc != 0)
            t->failures++;
        jp_job *got = NULL;
        if (jp_store_get(t->store, id, &got, &err) != 0 || got->status != JP_ST_RUNNING)
            t->failures++;
        jp_job_free(got);
        if (jp_store_apply(t->store, &ops[1], 1, &err) != 0 || ops[1].rc != 0)
            t->failures++;
        int64_t counts[JP_ST__COUNT];
        if (jp_store_counts(t->store, counts, &err) != 0)
            t->failures++;
        jp_list_filter flt = {.status = -1, .limit = 10};
        jp_job **jobs = NULL;
        size_t n = 0;
        char *cursor = NULL;
        if (jp_store_list(t->store, &flt, &jobs, &n, &cursor, &err) != 0 || n == 0)
            t->failures++;
        jp_jobs_free(jobs, n);
        free(cursor);
    }
    return NULL;
}

static void test_concurrent_threads_stay_consistent(void **state)
{
    fixture *f = *state;
    pthread_t th[THREADS];
    thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (thread_arg){.store = f->store, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    int64_t counts[JP_ST__COUNT];
    jp_err err;
    assert_int_equal(jp_store_counts(f->store, counts, &err), 0);
    assert_int_equal(counts[JP_ST_COMPLETED], THREADS * PER_THREAD);
    assert_int_equal(total(f->store), THREADS * PER_THREAD);
    assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM attempts WHERE outcome = 'completed'"),
                     THREADS * PER_THREAD);
}

static void test_reopen_keeps_everything(void **state)
{
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    jp_job *j = make_job("default", "tenant-1", JP_ST_QUEUED);
    json_decref(j->payload);
    j->payload = json_pack("{s:i}", "ms", 250);
    create_one(f->store, j, id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_COMPLETE, 1, T0 + 2), NULL), 0);
    jp_job *before = get(f->store, id);
    json_t *abefore = attempts_of(f->store, id);

    jp_store_close(f->store);
    f->store = NULL;
    assert_int_equal(jp_store_open(f->url, &f->store, &err), 0);
    jp_job *after = get(f->store, id);
    json_t *aafter = attempts_of(f->store, id);
    assert_jobs_equal(before, after);
    assert_true(json_equal(abefore, aafter));
    assert_int_equal(total(f->store), 1);
    jp_job_free(before);
    jp_job_free(after);
    json_decref(abefore);
    json_decref(aafter);
}

static void test_memory_database_works(void **state)
{
    (void)state;
    SQLITE_ONLY();
    jp_store *s = NULL;
    jp_err err;
    char id[JP_UUID_STR_LEN + 1];
    assert_int_equal(jp_store_open("sqlite://:memory:", &s, &err), 0);
    assert_int_equal(jp_store_ping(s, &err), 0);
    create_one(s, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(s, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    jp_job *j = get(s, id);
    assert_int_equal(j->status, JP_ST_RUNNING);
    jp_job_free(j);
    json_t *a = attempts_of(s, id);
    assert_int_equal(json_array_size(a), 1);
    json_decref(a);
    assert_int_equal(total(s), 1);
    jp_store_close(s);
    /* A second in-memory store is a different, empty database. */
    assert_int_equal(jp_store_open("sqlite://:memory:", &s, &err), 0);
    assert_int_equal(total(s), 0);
    jp_store_close(s);
}

/* ---- PostgreSQL: URLs -------------------------------------------------------------------- */

static void test_open_postgres_errors_hide_password(void **state)
{
    (void)state;
    jp_store *s = NULL;
    jp_err err;
    /* Nothing listens on port 1: the open fails, naming the server only. */
    assert_int_equal(jp_store_open("postgres://jobplane:s3cret-pw@127.0.0.1:1/jpdb", &s, &err),
                     JP_EUNAVAIL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "127.0.0.1:1/jpdb"));
    assert_null(strstr(err.msg, "s3cret"));
    assert_int_equal(
        jp_store_open("postgresql://jobplane:s3cret-pw@127.0.0.1:1/jpdb", &s, &err), JP_EUNAVAIL);
    assert_null(strstr(err.msg, "s3cret"));
    /* A URL libpq cannot read is the caller's mistake, not an outage. */
    assert_int_equal(jp_store_open("postgres://jobplane:s3cret-pw@[::1/jpdb", &s, &err),
                     JP_EINVAL);
    assert_null(strstr(err.msg, "s3cret"));
    assert_int_equal(jp_store_open("postgres://127.0.0.1:1/jpdb?no_such_option=1", &s, &err),
                     JP_EINVAL);
    assert_null(s);
}

static void test_pg_postgresql_scheme_opens(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    jp_store *s = NULL;
    jp_err err;
    char id[JP_UUID_STR_LEN + 1];
    assert_int_equal(strncmp(pg_url, "postgres://", 11), 0);
    char *url = jp_xasprintf("postgresql://%s", pg_url + 11);
    assert_int_equal(jp_store_open(url, &s, &err), 0);
    free(url);
    assert_string_equal(jp_store_backend(s), "postgres");
    create_one(s, make_job("default", NULL, JP_ST_QUEUED), id);
    jp_job_free(get(f->store, id));  /* the same database */
    jp_store_close(s);
}

/* ---- PostgreSQL: several processes on one database ---------------------------------------- */

static jp_store *open_other(void)
{
    jp_store *s = NULL;
    jp_err err;
    if (jp_store_open(pg_url, &s, &err) != 0)
        fail_msg("cannot open a second store: %s", err.msg);
    return s;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits (5 s at most) until `sql` on `c` counts at least `want`. */
static bool wait_count(PGconn *c, const char *sql, int64_t want)
{
    for (int i = 0; i < 500; i++) {
        if (pg_query_int(c, sql) >= want)
            return true;
        sleep_ms(10);
    }
    return false;
}

#define RACE_JOBS 120
#define RACE_BATCH 10

/* One handle applying the same event to every job, in batches; the two
 * racers go through the jobs in opposite orders, so their row locks cross. */
typedef struct racer {
    jp_store *store;
    char (*ids)[JP_UUID_STR_LEN + 1];
    bool descending;
    jp_event ev;
    pthread_barrier_t *go;
    int rc[RACE_JOBS];  /* each job's op result */
    int failures;       /* batches that did not commit */
    jp_err err;         /* why the last of them did not */
} racer;

static void *race(void *p)
{
    racer *r = p;
    pthread_barrier_wait(r->go);
    for (int b = 0; b < RACE_JOBS; b += RACE_BATCH) {
        jp_store_op ops[RACE_BATCH];
        int idx[RACE_BATCH];
        for (int k = 0; k < RACE_BATCH; k++) {
            idx[k] = r->descending ? RACE_JOBS - 1 - (b + k) : b + k;
            ops[k] = (jp_store_op){.ev = r->ev};
            memcpy(ops[k].job_id, r->ids[idx[k]], sizeof ops[k].job_id);
        }
        jp_err err;
        if (jp_store_apply(r->store, ops, RACE_BATCH, &err) != 0) {
            r->failures++;
            r->err = err;
        }
        for (int k = 0; k < RACE_BATCH; k++)
            r->rc[idx[k]] = ops[k].rc;
    }
    return NULL;
}

static void run_race(racer r[2])
{
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        if (r[i].failures)
            fail_msg("handle %d: %d batches failed: %s", i, r[i].failures, r[i].err.msg);
    }
}

static void test_pg_two_handles_one_start_per_attempt_wins(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    static char ids[RACE_JOBS][JP_UUID_STR_LEN + 1];
    static const char *const workers[2] = {"w0", "w1"};
    static racer r[2];
    jp_job *jobs[RACE_JOBS];
    pthread_barrier_t go;
    jp_err err;

    for (int i = 0; i < RACE_JOBS; i++) {
        jobs[i] = make_job("default", NULL, JP_ST_QUEUED);
        memcpy(ids[i], jobs[i]->id, sizeof ids[i]);
    }
    assert_int_equal(jp_store_create(f->store, jobs, RACE_JOBS, NULL, &err), 0);
    for (int i = 0; i < RACE_JOBS; i++)
        jp_job_free(jobs[i]);
    jp_store *other = open_other();
    pthread_barrier_init(&go, NULL, 2);

    /* Both handles deliver attempt 1 of every job: one START wins each. */
    for (int i = 0; i < 2; i++) {
        r[i] = (racer){.store = i ? other : f->store, .ids = ids, .descending = i == 1,
                       .ev = ev_of(JP_EV_START, 1, T0 + 1 + i), .go = &go};
        r[i].ev.worker_id = workers[i];
    }
    run_race(r);
    for (int i = 0; i < RACE_JOBS; i++) {
        int w = r[0].rc[i] == 0 ? 0 : 1;
        assert_int_equal(r[w].rc[i], 0);
        assert_int_equal(r[1 - w].rc[i], JP_ECONFLICT);
        jp_job *j = get(f->store, ids[i]);
        assert_int_equal(j->status, JP_ST_RUNNING);
        assert_int_equal(j->attempts, 1);
        assert_string_equal(j->worker_id, workers[w]);
        jp_job_free(j);
        json_t *a = attempts_of(other, ids[i]);
        assert_int_equal(json_array_size(a), 1);
        assert_string_equal(attempt_str(a, 0, "worker_id"), workers[w]);
        json_decref(a);
    }

    /* Both report attempt 1 complete: one report each is taken, none lost. */
    for (int i = 0; i < 2; i++) {
        r[i].ev = ev_of(JP_EV_COMPLETE, 1, T0 + 10 + i);
        r[i].failures = 0;
    }
    run_race(r);
    for (int i = 0; i < RACE_JOBS; i++)
        assert_true((r[0].rc[i] == 0) != (r[1].rc[i] == 0));
    int64_t counts[JP_ST__COUNT];
    assert_int_equal(jp_store_counts(other, counts, &err), 0);
    assert_int_equal(counts[JP_ST_COMPLETED], RACE_JOBS);
    assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM attempts WHERE outcome = 'completed'"),
                     RACE_JOBS);
    pthread_barrier_destroy(&go);
    jp_store_close(other);
}

typedef struct applier {
    jp_store *store;
    jp_store_op *ops;
    size_t n;
    int rc;
} applier;

static void *apply_thread(void *p)
{
    applier *a = p;
    jp_err err;
    a->rc = jp_store_apply(a->store, a->ops, a->n, &err);
    return NULL;
}

static void test_pg_deadlock_with_other_writer_is_retried(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    char x[JP_UUID_STR_LEN + 1], y[JP_UUID_STR_LEN + 1];
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), x);
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), y);

    /* Another process holds y and will want x; the store takes x, then
     * waits for y: a deadlock, which PostgreSQL breaks by failing the store's
     * transaction, the first to wait. The store tries again and judges x as
     * the other process left it. */
    PGconn *other = pg_connect();
    PGconn *watch = pg_connect();
    char *sql = jp_xasprintf("BEGIN; SELECT 1 FROM jobs WHERE id = '%s' FOR UPDATE", y);
    pg_query_int(other, sql);
    free(sql);
    jp_store_op ops[2] = {{.ev = ev_of(JP_EV_START, 1, T0 + 1)},
                          {.ev = ev_of(JP_EV_START, 1, T0 + 1)}};
    memcpy(ops[0].job_id, x, sizeof x);
    memcpy(ops[1].job_id, y, sizeof y);
    applier a = {.store = f->store, .ops = ops, .n = 2, .rc = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, apply_thread, &a), 0);
    bool waiting = wait_count(watch,
                              "SELECT COUNT(*) FROM pg_stat_activity WHERE datname ="
                              " current_database() AND wait_event_type = 'Lock'",
                              1);
    sql = jp_xasprintf("UPDATE jobs SET status = 'cancelled', completed_at = %lld WHERE id = '%s'",
                       T0 + 5, x);
    pg_query_int(other, sql);  /* returns once the store's transaction gave way */
    free(sql);
    pg_query_int(other, "COMMIT");
    assert_int_equal(pthread_join(th, NULL), 0);
    PQfinish(other);
    PQfinish(watch);
    assert_true(waiting);
    assert_int_equal(a.rc, 0);
    assert_int_equal(ops[0].rc, JP_ECONFLICT);
    assert_int_equal(ops[0].before, JP_ST_CANCELLED);
    assert_int_equal(ops[1].rc, 0);
    jp_job *j = get(f->store, y);
    assert_int_equal(j->status, JP_ST_RUNNING);
    jp_job_free(j);
}

#define IDEM_ROUNDS 20

typedef struct idem_racer {
    jp_store *store;
    pthread_barrier_t *go;
    int rc[IDEM_ROUNDS];
    bool existed[IDEM_ROUNDS];
    char ids[IDEM_ROUNDS][JP_UUID_STR_LEN + 1];
} idem_racer;

static void *idem_race(void *p)
{
    idem_racer *r = p;
    for (int k = 0; k < IDEM_ROUNDS; k++) {
        char key[32];
        snprintf(key, sizeof key, "race-%d", k);
        jp_job *j = make_idem(key, "abababababababab");
        jp_err err;
        pthread_barrier_wait(r->go);
        r->rc[k] = jp_store_create(r->store, &j, 1, &r->existed[k], &err);
        memcpy(r->ids[k], j->id, sizeof r->ids[k]);
        jp_job_free(j);
    }
    return NULL;
}

static void test_pg_same_idempotency_key_from_two_handles_makes_one_job(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    static idem_racer r[2];
    pthread_barrier_t go;
    pthread_t th[2];
    jp_store *other = open_other();
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < 2; i++) {
        r[i] = (idem_racer){.store = i ? other : f->store, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, idem_race, &r[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int k = 0; k < IDEM_ROUNDS; k++) {
        assert_int_equal(r[0].rc[k], 0);
        assert_int_equal(r[1].rc[k], 0);
        assert_string_equal(r[0].ids[k], r[1].ids[k]);
        assert_true(r[0].existed[k] != r[1].existed[k]);
    }
    assert_int_equal(total(f->store), IDEM_ROUNDS);
    pthread_barrier_destroy(&go);
    jp_store_close(other);
}

typedef struct opener {
    pthread_barrier_t *go;
    jp_store *store;
    int rc;
    jp_err err;
} opener;

static void *open_thread(void *p)
{
    opener *o = p;
    pthread_barrier_wait(o->go);
    o->rc = jp_store_open(pg_url, &o->store, &o->err);
    return NULL;
}

static void test_pg_two_handles_migrate_at_once(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    pthread_barrier_t go;
    jp_store_close(f->store);
    f->store = NULL;
    pthread_barrier_init(&go, NULL, 2);
    for (int round = 0; round < 4; round++) {
        opener o[2] = {{.go = &go}, {.go = &go}};
        pthread_t th[2];
        pg_reset();
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < 2; i++) {
            if (o[i].rc != 0)
                fail_msg("open %d failed: %s", i, o[i].err.msg);
        }
        assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM schema_version"), 2);
        char id[JP_UUID_STR_LEN + 1];
        create_one(o[0].store, make_job("default", NULL, JP_ST_QUEUED), id);
        jp_job_free(get(o[1].store, id));
        jp_store_close(o[0].store);
        jp_store_close(o[1].store);
    }
    pthread_barrier_destroy(&go);
}

#define DUE_JOBS 60

typedef struct promoter {
    jp_store *store;
    pthread_barrier_t *go;
    char ids[DUE_JOBS][JP_UUID_STR_LEN + 1];
    size_t n;
    int failures;
} promoter;

static void *promote_thread(void *p)
{
    promoter *pr = p;
    pthread_barrier_wait(pr->go);
    for (int i = 0; i < 1000; i++) {
        jp_job **jobs = NULL;
        size_t n = 0;
        int64_t next = 0;
        jp_err err;
        if (jp_store_promote_due(pr->store, T0 + 1000, JP_ST_QUEUED, 7, &jobs, &n, &next,
                                 &err) != 0) {
            pr->failures++;
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            if (pr->n < DUE_JOBS)
                memcpy(pr->ids[pr->n], jobs[k]->id, sizeof pr->ids[0]);
            pr->n++;
        }
        jp_jobs_free(jobs, n);
        if (n == 0 && next == 0)
            break;
        if (n == 0)
            sleep_ms(1);  /* the rest are the other handle's, being promoted */
    }
    return NULL;
}

static void test_pg_two_handles_promote_each_due_job_once(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    static promoter pr[2];
    jp_job *jobs[DUE_JOBS];
    pthread_barrier_t go;
    pthread_t th[2];
    jp_err err;
    for (int i = 0; i < DUE_JOBS; i++) {
        jobs[i] = make_job("default", NULL, JP_ST_SCHEDULED);
        jobs[i]->run_at_ms = T0 + i;
    }
    assert_int_equal(jp_store_create(f->store, jobs, DUE_JOBS, NULL, &err), 0);
    jp_store *other = open_other();
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < 2; i++) {
        pr[i] = (promoter){.store = i ? other : f->store, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, promote_thread, &pr[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(pr[0].failures, 0);
    assert_int_equal(pr[1].failures, 0);
    assert_int_equal(pr[0].n + pr[1].n, DUE_JOBS);
    for (int i = 0; i < DUE_JOBS; i++) {
        int seen = 0;
        for (int h = 0; h < 2; h++) {
            for (size_t k = 0; k < pr[h].n; k++)
                seen += strcmp(pr[h].ids[k], jobs[i]->id) == 0;
        }
        assert_int_equal(seen, 1);
        jp_job_free(jobs[i]);
    }
    int64_t counts[JP_ST__COUNT];
    assert_int_equal(jp_store_counts(f->store, counts, &err), 0);
    assert_int_equal(counts[JP_ST_QUEUED], DUE_JOBS);
    pthread_barrier_destroy(&go);
    jp_store_close(other);
}

/* ---- PostgreSQL: lost connections ---------------------------------------------------------- */

static void test_pg_killed_connections_reconnect(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    for (int i = 0; i < 8; i++)  /* every reader of the pool has a session now */
        jp_job_free(get(f->store, id));
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);

    /* The server ends every session of the store, as a restart would. */
    static const char others[] = "FROM pg_stat_activity WHERE datname = current_database()"
                                 " AND pid <> pg_backend_pid()";
    PGconn *c = pg_connect();
    char *sql = jp_xasprintf("SELECT COUNT(pg_terminate_backend(pid)) %s", others);
    assert_true(pg_query_int(c, sql) >= 5);  /* the writer and the four readers */
    free(sql);
    sql = jp_xasprintf("SELECT COUNT(*) %s", others);
    for (int i = 0; i < 500 && pg_query_int(c, sql) > 0; i++)
        sleep_ms(10);
    assert_int_equal(pg_query_int(c, sql), 0);
    free(sql);
    PQfinish(c);

    /* The first use of each connection fails or reconnects; the next works. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            jp_job *j = NULL;
            int rc = jp_store_get(f->store, id, &j, &err);
            if (round == 0)
                assert_true(rc == 0 || rc == JP_EUNAVAIL);
            else
                assert_int_equal(rc, 0);
            jp_job_free(j);
        }
    }
    jp_job *j = make_job("default", NULL, JP_ST_QUEUED);
    int rc = jp_store_create(f->store, &j, 1, NULL, &err);
    assert_true(rc == 0 || rc == JP_EUNAVAIL);
    jp_job_free(j);
    j = make_job("default", NULL, JP_ST_QUEUED);
    assert_int_equal(jp_store_create(f->store, &j, 1, NULL, &err), 0);
    jp_job_free(j);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_COMPLETE, 1, T0 + 2), NULL), 0);
    j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_COMPLETED);
    jp_job_free(j);
    assert_int_equal(jp_store_ping(f->store, &err), 0);
}

static void test_pg_connection_lost_mid_transaction_changes_nothing(void **state)
{
    PG_ONLY();
    fixture *f = *state;
    char id[JP_UUID_STR_LEN + 1];
    jp_err err;
    create_one(f->store, make_job("default", NULL, JP_ST_QUEUED), id);
    assert_int_equal(apply1(f->store, id, ev_of(JP_EV_START, 1, T0 + 1), NULL), 0);
    /* The session dies in the middle of the transaction's writes. */
    raw_exec(f, "CREATE FUNCTION jp_test_kill() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;"
                " CREATE TRIGGER jp_test_kill BEFORE UPDATE ON jobs FOR EACH ROW"
                " WHEN (NEW.status = 'completed') EXECUTE FUNCTION jp_test_kill()");
    jp_store_op op = {.ev = ev_of(JP_EV_COMPLETE, 1, T0 + 2), .want_job = true};
    memcpy(op.job_id, id, sizeof op.job_id);
    assert_int_equal(jp_store_apply(f->store, &op, 1, &err), JP_EUNAVAIL);
    assert_int_equal(op.rc, JP_EUNAVAIL);
    assert_null(op.job);
    assert_null(strstr(err.msg, "jobplane@"));  /* never the URL's credentials */
    jp_job *j = get(f->store, id);
    assert_int_equal(j->status, JP_ST_RUNNING);
    jp_job_free(j);
    json_t *a = attempts_of(f->store, id);
    assert_string_equal(attempt_str(a, 0, "outcome"), "running");
    json_decref(a);

    raw_exec(f, "DROP TRIGGER jp_test_kill ON jobs");
    assert_int_equal(jp_store_apply(f->store, &op, 1, &err), 0);
    assert_int_equal(op.rc, 0);
    assert_int_equal(op.job->status, JP_ST_COMPLETED);
    jp_job_free(op.job);
}

int main(void)
{
    pg_url = getenv("JOBPLANE_TEST_PG_URL");
    if (pg_url && !pg_url[0])
        pg_url = NULL;
    if (pg_url)
        printf("store tests over PostgreSQL\n");
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define TS(name) cmocka_unit_test_setup_teardown(name, setup_sqlite, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_migrates_once),
        T(test_open_upgrades_first_schema),
        TS(test_open_uses_wal),
        T(test_open_refuses_newer_schema),
        cmocka_unit_test(test_open_rejects_bad_urls),
        cmocka_unit_test(test_open_postgres_errors_hide_password),
        TS(test_open_relative_path),
        T(test_create_get_round_trip),
        T(test_get_missing_is_not_found),
        T(test_unreadable_payload_loads_as_null),
        T(test_create_idempotent_same_hash_returns_stored),
        T(test_create_idempotent_other_hash_conflicts),
        T(test_create_batch_repeated_key_resolves_to_first),
        T(test_create_batch_is_atomic),
        T(test_list_newest_first_with_filters),
        T(test_list_cursor_pages_without_gaps),
        T(test_list_rejects_bad_limit),
        T(test_counts_by_status),
        T(test_scan_by_status_ascending),
        T(test_apply_full_lifecycle),
        T(test_apply_stale_attempt_changes_nothing),
        T(test_apply_report_for_terminal_job_refused),
        T(test_apply_fail_schedules_retry_and_promote_due_queues_it),
        T(test_promote_due_respects_limit_and_order),
        T(test_apply_fail_exhausts_attempts),
        T(test_apply_cancel_running_closes_attempt),
        T(test_apply_retry_failed_keeps_history),
        T(test_apply_poison_start_fails_crashed_worker),
        T(test_apply_close_of_unrecorded_start_adds_row),
        T(test_apply_want_job_returns_updated_job),
        T(test_apply_batch_in_order_and_isolated),
        T(test_apply_batch_equals_one_by_one),
        T(test_apply_failed_transaction_changes_nothing),
        T(test_attempts_of_missing_job_not_found),
        T(test_concurrent_threads_stay_consistent),
        T(test_reopen_keeps_everything),
        cmocka_unit_test(test_memory_database_works),
        T(test_pg_postgresql_scheme_opens),
        T(test_pg_two_handles_one_start_per_attempt_wins),
        T(test_pg_deadlock_with_other_writer_is_retried),
        T(test_pg_same_idempotency_key_from_two_handles_makes_one_job),
        T(test_pg_two_handles_migrate_at_once),
        T(test_pg_two_handles_promote_each_due_job_once),
        T(test_pg_killed_connections_reconnect),
        T(test_pg_connection_lost_mid_transaction_changes_nothing),
    };
#undef TS
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
