/* The SQLite backend of the store: connections, transactions and prepared
 * statements behind driver.h.
 *
 * One writer connection, taken under a mutex for every write transaction
 * (BEGIN IMMEDIATE, so a writer never fails half-way on a lock upgrade), and
 * a small pool of read-only connections, each under its own mutex, so reads
 * run beside a write: WAL mode lets readers see the last commit without
 * waiting. An in-memory database exists only inside its connection, so there
 * the writer serves reads as well. */
#include "store/driver.h"

#include "core/mem.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQ_READERS 4
#define SQ_BUSY_TIMEOUT_MS 5000

/* Transaction control, prepared per connection like the rest. */
enum { TXS_BEGIN, TXS_BEGIN_IMMEDIATE, TXS_COMMIT, TXS_ROLLBACK, TXS__COUNT };

static const char *const tx_sql[TXS__COUNT] = {
    [TXS_BEGIN] = "BEGIN",
    [TXS_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [TXS_COMMIT] = "COMMIT",
    [TXS_ROLLBACK] = "ROLLBACK",
};

typedef struct sq_stmt {
    jp_stmt base;
    sqlite3_stmt *st;
    int nparam;      /* positions $1..$nparam */
    int *param_idx;  /* [1..nparam]: SQLite's index of "$pos", 0 if absent */
    int bind_rc;     /* first failed bind since the last reset, reported by step */
} sq_stmt;

typedef struct sq_db sq_db;

typedef struct sq_conn {
    jp_conn base;
    sq_db *owner;
    pthread_mutex_t mu;  /* held from begin to commit/rollback */
    sqlite3 *db;         /* NULL until first used (readers open lazily) */
    sqlite3_stmt *tx[TXS__COUNT];
    sq_stmt **stmts;     /* [owner->nsql], each NULL until first used */
} sq_conn;

struct sq_db {
    jp_db base;
    char *path;
    bool memory;                 /* ":memory:": the writer serves reads too */
    const jp_sql_def *sql;       /* borrowed from store.c */
    size_t nsql;
    sq_conn writer;
    sq_conn readers[SQ_READERS];
    atomic_uint next_reader;     /* round-robin start for picking a reader */
};

static int sq_fail(sqlite3 *db, int code, const char *what, jp_err *err)
{
    return jp_err_set(err, code, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static void stmt_free(sq_stmt *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->st);
    free(s->param_idx);
    free(s);
}

static void conn_done(sq_conn *c)
{
    if (c->stmts) {
        for (size_t i = 0; i < c->owner->nsql; i++)
            stmt_free(c->stmts[i]);
        free(c->stmts);
        c->stmts = NULL;
    }
    for (int i = 0; i < TXS__COUNT; i++) {
        sqlite3_finalize(c->tx[i]);
        c->tx[i] = NULL;
    }
    if (c->db) {
        sqlite3_close(c->db);
        c->db = NULL;
    }
}

/* Opens the connection's database handle and sets it up. Called with c->mu
 * held (or before any other thread can see the connection). */
static int conn_open(sq_conn *c, bool writer, jp_err *err)
{
    sq_db *d = c->owner;
    int flags = SQLITE_OPEN_NOMUTEX; /* c->mu already serialises each connection */
    int rc;

    flags |= writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(d->path, &c->db, flags, NULL) != SQLITE_OK) {
        rc = jp_err_set(err, JP_EUNAVAIL, "sqlite: cannot open %s: %s", d->path,
                        c->db ? sqlite3_errmsg(c->db) : "out of memory");
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
    /* NORMAL is durable in WAL mode except for the last commits on power
     * loss, never corrupting; FULL would fsync every commit. */
    const char *pragmas = writer ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                   " PRAGMA foreign_keys=OFF;"
                                 : "PRAGMA foreign_keys=OFF;";
    if (sqlite3_exec(c->db, pragmas, NULL, NULL, NULL) != SQLITE_OK) {
        rc = sq_fail(c->db, JP_EUNAVAIL, "setting up the connection", err);
        goto fail;
    }
    for (int i = 0; i < TXS__COUNT; i++) {
        if (sqlite3_prepare_v3(c->db, tx_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->tx[i],
                               NULL) != SQLITE_OK) {
            rc = sq_fail(c->db, JP_EUNAVAIL, tx_sql[i], err);
            goto fail;
        }
    }
    c->stmts = jp_xcalloc(d->nsql, sizeof *c->stmts);
    return 0;
fail:
    conn_done(c);
    return rc;
}

static int run_tx_stmt(sq_conn *c, int which, jp_err *err)
{
    int rc = sqlite3_step(c->tx[which]);
    int ret = 0;
    if (rc != SQLITE_DONE)
        ret = sq_fail(c->db, JP_EUNAVAIL, tx_sql[which], err);
    sqlite3_reset(c->tx[which]);
    return ret;
}

static void sq_close(jp_db *db)
{
    sq_db *d = (sq_db *)db;
    if (!d)
        return;
    /* Readers first: the last connection to close checkpoints the WAL. */
    for (int i = 0; i < SQ_READERS; i++) {
        conn_done(&d->readers[i]);
        pthread_mutex_destroy(&d->readers[i].mu);
    }
    conn_done(&d->writer);
    pthread_mutex_destroy(&d->writer.mu);
    free(d->path);
    free(d);
}

static int sq_open(const char *url, const jp_sql_def *sql, size_t nsql, jp_db **ret_db,
                   jp_err *err)
{
    static const char prefix[] = "sqlite://";
    sq_db *d;
    int rc;

    if (strncmp(url, prefix, sizeof prefix - 1) != 0 || url[sizeof prefix - 1] == '\0')
        return jp_err_set(err, JP_EINVAL, "bad database URL \"%s\": want sqlite://PATH", url);
    d = jp_xcalloc(1, sizeof *d);
    d->base.drv = &jp_sqlite_driver;
    d->path = jp_xstrdup(url + sizeof prefix - 1);
    d->memory = strcmp(d->path, ":memory:") == 0;
    d->sql = sql;
    d->nsql = nsql;
    atomic_init(&d->next_reader, 0);
    d->writer.base.drv = &jp_sqlite_driver;
    d->writer.owner = d;
    pthread_mutex_init(&d->writer.mu, NULL);
    for (int i = 0; i < SQ_READERS; i++) {
        d->readers[i].base.drv = &jp_sqlite_driver;
        d->readers[i].owner = d;
        pthread_mutex_init(&d->readers[i].mu, NULL);
    }
    rc = conn_open(&d->writer, true, err);
    if (rc < 0) {
        sq_close(&d->base);
        return rc;
    }
    *ret_db = &d->base;
    return 0;
}

/* Takes a free reader if there is one, else waits for one. */
static sq_conn *take_reader(sq_db *d)
{
    unsigned start = atomic_fetch_add_explicit(&d->next_reader, 1, memory_order_relaxed);
    for (unsigned i = 0; i < SQ_READERS; i++) {
        sq_conn *c = &d->readers[(start + i) % SQ_READERS];
        if (pthread_mutex_trylock(&c->mu) == 0)
            return c;
    }
    sq_conn *c = &d->readers[start % SQ_READERS];
    pthread_mutex_lock(&c->mu);
    return c;
}

static int sq_begin(jp_db *db, jp_tx_kind kind, jp_conn **ret_conn, jp_err *err)
{
    sq_db *d = (sq_db *)db;
    sq_conn *c;
    int which = TXS_BEGIN_IMMEDIATE;
    int rc;

    if (kind == JP_TX_READ && !d->memory) {
        c = take_reader(d);
        which = TXS_BEGIN;
        if (!c->db && (rc = conn_open(c, false, err)) < 0) {
            pthread_mutex_unlock(&c->mu);
            return rc;
        }
    } else {
        c = &d->writer;
        pthread_mutex_lock(&c->mu);
        if (kind == JP_TX_READ)
            which = TXS_BEGIN;
    }
    rc = run_tx_stmt(c, which, err);
    if (rc < 0) {
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    *ret_conn = &c->base;
    return 0;
}

static void sq_rollback(jp_conn *conn)
{
    sq_conn *c = (sq_conn *)conn;
    /* An error path may leave statements mid-way; a pending statement would
     * keep the transaction's locks. */
    for (size_t i = 0; i < c->owner->nsql; i++) {
        if (c->stmts[i] && sqlite3_stmt_busy(c->stmts[i]->st))
            sqlite3_reset(c->stmts[i]->st);
    }
    /* Some errors (I/O, full disk) have already rolled back the transaction. */
    if (!sqlite3_get_autocommit(c->db))
        run_tx_stmt(c, TXS_ROLLBACK, NULL);
    pthread_mutex_unlock(&c->mu);
}

static int sq_commit(jp_conn *conn, jp_err *err)
{
    sq_conn *c = (sq_conn *)conn;
    int rc = run_tx_stmt(c, TXS_COMMIT, err);
    if (rc < 0) {
        sq_rollback(conn);
        return rc;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int sq_exec(jp_conn *conn, const char *sql, jp_err *err)
{
    sq_conn *c = (sq_conn *)conn;
    if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(c->db, JP_EUNAVAIL, "exec", err);
    return 0;
}

static int sq_get_stmt(jp_conn *conn, int id, jp_stmt **ret_stmt, jp_err *err)
{
    sq_conn *c = (sq_conn *)conn;
    sq_db *d = c->owner;
    sqlite3_stmt *st = NULL;

    if (id < 0 || (size_t)id >= d->nsql)
        return jp_err_set(err, JP_EINTERNAL, "sqlite: no statement %d", id);
    if (c->stmts[id]) {
        *ret_stmt = &c->stmts[id]->base;
        return 0;
    }
    if (sqlite3_prepare_v3(c->db, d->sql[id].text, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
        SQLITE_OK)
        return sq_fail(c->db, JP_EUNAVAIL, "prepare", err);
    sq_stmt *s = jp_xcalloc(1, sizeof *s);
    s->base.drv = &jp_sqlite_driver;
    s->st = st;
    /* SQLite numbers parameters by first appearance; map $pos to its index
     * once, so binding is an array lookup. */
    s->nparam = sqlite3_bind_parameter_count(st);
    s->param_idx = jp_xcalloc((size_t)s->nparam + 1, sizeof *s->param_idx);
    for (int pos = 1; pos <= s->nparam; pos++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", pos);
        s->param_idx[pos] = sqlite3_bind_parameter_index(st, name);
    }
    c->stmts[id] = s;
    *ret_stmt = &s->base;
    return 0;
}

static int param_index(sq_stmt *s, int pos)
{
    return pos >= 1 && pos <= s->nparam ? s->param_idx[pos] : 0;
}

static void note_bind(sq_stmt *s, int rc)
{
    if (rc != SQLITE_OK && s->bind_rc == SQLITE_OK)
        s->bind_rc = rc;
}

static void sq_bind_null(jp_stmt *stmt, int pos)
{
    sq_stmt *s = (sq_stmt *)stmt;
    int idx = param_index(s, pos);
    if (idx)
        note_bind(s, sqlite3_bind_null(s->st, idx));
}

static void sq_bind_int64(jp_stmt *stmt, int pos, int64_t v)
{
    sq_stmt *s = (sq_stmt *)stmt;
    int idx = param_index(s, pos);
    if (idx)
        note_bind(s, sqlite3_bind_int64(s->st, idx, v));
}

static void sq_bind_text(jp_stmt *stmt, int pos, const char *v)
{
    sq_stmt *s = (sq_stmt *)stmt;
    int idx = param_index(s, pos);
    if (!idx)
        return;
    /* SQLITE_STATIC: the contract keeps the text alive until reset. */
    note_bind(s, v ? sqlite3_bind_text(s->st, idx, v, -1, SQLITE_STATIC)
                   : sqlite3_bind_null(s->st, idx));
}

static int sq_step(jp_stmt *stmt, jp_err *err)
{
    sq_stmt *s = (sq_stmt *)stmt;
    sqlite3 *db = sqlite3_db_handle(s->st);

    if (s->bind_rc != SQLITE_OK)
        return jp_err_set(err, JP_EINTERNAL, "sqlite: bind: %s", sqlite3_errstr(s->bind_rc));
    int rc = sqlite3_step(s->st);
    if (rc == SQLITE_ROW)
        return JP_DB_ROW;
    if (rc == SQLITE_DONE)
        return JP_DB_DONE;
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return sq_fail(db, JP_ECONFLICT, "constraint", err);
    return sq_fail(db, JP_EUNAVAIL, "step", err);
}

static bool sq_column_null(jp_stmt *stmt, int col)
{
    return sqlite3_column_type(((sq_stmt *)stmt)->st, col) == SQLITE_NULL;
}

static int64_t sq_column_int64(jp_stmt *stmt, int col)
{
    return sqlite3_column_int64(((sq_stmt *)stmt)->st, col);
}

static const char *sq_column_text(jp_stmt *stmt, int col)
{
    return (const char *)sqlite3_column_text(((sq_stmt *)stmt)->st, col);
}

static void sq_reset(jp_stmt *stmt)
{
    sq_stmt *s = (sq_stmt *)stmt;
    sqlite3_reset(s->st);
    sqlite3_clear_bindings(s->st);
    s->bind_rc = SQLITE_OK;
}

static const char *const sq_schemes[] = {"sqlite", NULL};

const jp_driver jp_sqlite_driver = {
    .abi = JP_DRIVER_ABI,
    .name = "sqlite",
    .schemes = sq_schemes,
    .writers = 1,
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .exec = sq_exec,
    .stmt = sq_get_stmt,
    .bind_null = sq_bind_null,
    .bind_int64 = sq_bind_int64,
    .bind_text = sq_bind_text,
    .step = sq_step,
    .column_null = sq_column_null,
    .column_int64 = sq_column_int64,
    .column_text = sq_column_text,
    .reset = sq_reset,
};
