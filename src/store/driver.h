/* The internal interface between the store's logic (store.c) and a database
 * backend (sqlite.c; postgres.c next). Not for use outside src/store.
 *
 * store.c owns every SQL text, the schema migrations, the transition logic and
 * the JSON columns; a driver only runs statements. It is handed a table of
 * statements at open (jp_sql_def[], indexed by a statement id that only
 * store.c names), prepares each one the first time a connection uses it, and
 * keeps it for the life of that connection.
 *
 * The SQL is written once for every backend:
 *   - parameters are $1, $2, … (PostgreSQL's form, which SQLite also accepts
 *     as names); a statement uses $1..$k without gaps, and binds by position;
 *   - types are INTEGER, BIGINT and TEXT; upserts are INSERT … ON CONFLICT;
 *   - what cannot be written portably is a flag on the statement (JP_SQLF_*),
 *     which the driver turns into its dialect.
 *
 * The unit of work is a transaction on one connection:
 *
 *     jp_conn *c;
 *     if (jp_db_begin(db, JP_TX_WRITE, &c, err) < 0) …          (takes a connection)
 *     jp_stmt *st;
 *     if (jp_conn_stmt(c, SQL_X, &st, err) < 0) … rollback
 *     jp_stmt_bind_text(st, 1, id);
 *     while ((rc = jp_stmt_step(st, err)) == JP_DB_ROW) … jp_stmt_int64(st, 0) …
 *     jp_stmt_reset(st);                                   (always, even on error)
 *     jp_conn_commit(c, err)  or  jp_conn_rollback(c);     (gives it back)
 *
 * Between begin and commit/rollback the connection belongs to the calling
 * thread alone; a thread must not begin a second transaction on the same
 * jp_db before ending the first (it may wait for itself forever). Everything
 * else about threads (pools, locks) is the driver's business: a jp_db is safe
 * to use from many threads at once. */
#ifndef JP_STORE_DRIVER_H
#define JP_STORE_DRIVER_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JP_DRIVER_ABI 1

/* Dialect hints on a statement. */
enum {
    /* A SELECT that reads rows this transaction will then write: a backend
     * with row locks must lock them (PostgreSQL: FOR UPDATE), so two writers
     * cannot both judge the same row state. SQLite has one writer: nothing. */
    JP_SQLF_LOCK = 1u << 0,
    /* With JP_SQLF_LOCK: rows locked by another transaction are left out
     * rather than waited for (PostgreSQL: FOR UPDATE SKIP LOCKED). */
    JP_SQLF_SKIP_LOCKED = 1u << 1,
};

/* One statement of the table store.c hands to the driver. */
typedef struct jp_sql_def {
    const char *text;  /* portable SQL, $1..$k parameters, no trailing ';' */
    unsigned flags;    /* JP_SQLF_* */
} jp_sql_def;

typedef enum jp_tx_kind {
    JP_TX_READ,    /* reads only; a consistent snapshot; need not wait for writers */
    JP_TX_WRITE,   /* reads and writes, serialised with other writers as needed */
    JP_TX_SCHEMA,  /* migrations: like WRITE, and exclusive among every process
                      opening the same database (PostgreSQL: an advisory lock) */
} jp_tx_kind;

/* jp_stmt_step's results besides negative errors. */
enum { JP_DB_DONE = 0, JP_DB_ROW = 1 };

typedef struct jp_driver jp_driver;

/* Base structs: each backend embeds the matching one as its first member, so
 * the wrappers below find the driver from any handle. */
typedef struct jp_db {
    const jp_driver *drv;
} jp_db;
typedef struct jp_conn {
    const jp_driver *drv;
} jp_conn;
typedef struct jp_stmt {
    const jp_driver *drv;
} jp_stmt;

struct jp_driver {
    int abi;                     /* JP_DRIVER_ABI */
    const char *name;            /* "sqlite": what jp_store_backend says */
    const char *const *schemes;  /* URL schemes it serves, NULL-terminated: {"sqlite", NULL} */
    int writers;                 /* write transactions that can run at once (>= 1) */

    /* Opens the database named by `url` (the whole URL, scheme included).
     * `sql` (nsql entries) is borrowed and outlives the jp_db. Returns 0,
     * JP_EINVAL for a URL it cannot read, JP_EUNAVAIL when the database
     * cannot be reached. No schema is assumed: store.c migrates next. */
    int (*open)(const char *url, const jp_sql_def *sql, size_t nsql, jp_db **ret_db,
                jp_err *err);
    /* Closes every connection. No transaction may be open. NULL is fine. */
    void (*close)(jp_db *db);

    /* Takes a connection and begins a transaction of `kind`. Returns 0,
     * or JP_EUNAVAIL (busy beyond the driver's timeout, connection lost). */
    int (*begin)(jp_db *db, jp_tx_kind kind, jp_conn **ret_conn, jp_err *err);
    /* Commits and gives the connection back, in every case. On failure the
     * transaction is rolled back and JP_EUNAVAIL returned. */
    int (*commit)(jp_conn *c, jp_err *err);
    /* Rolls back (whatever state the transaction is in, even one the
     * database already aborted) and gives the connection back. */
    void (*rollback)(jp_conn *c);
    /* Runs `sql`, which may hold several ';'-separated statements and no
     * parameters (migrations). 0 or JP_EUNAVAIL. */
    int (*exec)(jp_conn *c, const char *sql, jp_err *err);
    /* The connection's prepared statement `id` (prepared on first use), ready
     * to bind. Valid until the transaction ends; reset it before then.
     * 0 or JP_EUNAVAIL (the text does not prepare: a bug or an old schema). */
    int (*stmt)(jp_conn *c, int id, jp_stmt **ret_stmt, jp_err *err);

    /* Binds parameter $pos (1-based). A position the statement does not use
     * is ignored. Text is borrowed until jp_stmt_reset. A failure to bind is
     * reported by the next step. */
    void (*bind_null)(jp_stmt *st, int pos);
    void (*bind_int64)(jp_stmt *st, int pos, int64_t v);
    void (*bind_text)(jp_stmt *st, int pos, const char *s);  /* NULL binds NULL */

    /* Runs the statement or moves to its next row: JP_DB_ROW, JP_DB_DONE,
     * JP_ECONFLICT for a constraint violation (a unique key), JP_EUNAVAIL
     * for anything else (busy, I/O, connection lost), JP_EINTERNAL for a bad
     * bind. After an error the transaction can only be rolled back. */
    int (*step)(jp_stmt *st, jp_err *err);
    /* The current row's column `col` (0-based). Text is valid until the next
     * step or reset; NULL for SQL NULL. Integers of a NULL read as 0. */
    bool (*column_null)(jp_stmt *st, int col);
    int64_t (*column_int64)(jp_stmt *st, int col);
    const char *(*column_text)(jp_stmt *st, int col);
    /* Ends the current execution and clears the bindings; the statement can
     * be bound and stepped again. */
    void (*reset)(jp_stmt *st);
};

/* The backends built in. */
extern const jp_driver jp_sqlite_driver;
#ifdef JP_WITH_POSTGRES
extern const jp_driver jp_postgres_driver;
#endif

/* Calls go through these, never through ->drv-> directly. */
static inline void jp_db_close(jp_db *db)
{
    if (db)
        db->drv->close(db);
}
static inline int jp_db_begin(jp_db *db, jp_tx_kind kind, jp_conn **ret_conn, jp_err *err)
{
    return db->drv->begin(db, kind, ret_conn, err);
}
static inline int jp_conn_commit(jp_conn *c, jp_err *err)
{
    return c->drv->commit(c, err);
}
static inline void jp_conn_rollback(jp_conn *c)
{
    c->drv->rollback(c);
}
static inline int jp_conn_exec(jp_conn *c, const char *sql, jp_err *err)
{
    return c->drv->exec(c, sql, err);
}
static inline int jp_conn_stmt(jp_conn *c, int id, jp_stmt **ret_stmt, jp_err *err)
{
    return c->drv->stmt(c, id, ret_stmt, err);
}
static inline void jp_stmt_bind_null(jp_stmt *st, int pos)
{
    st->drv->bind_null(st, pos);
}
static inline void jp_stmt_bind_int64(jp_stmt *st, int pos, int64_t v)
{
    st->drv->bind_int64(st, pos, v);
}
static inline void jp_stmt_bind_text(jp_stmt *st, int pos, const char *s)
{
    st->drv->bind_text(st, pos, s);
}
static inline int jp_stmt_step(jp_stmt *st, jp_err *err)
{
    return st->drv->step(st, err);
}
static inline bool jp_stmt_null(jp_stmt *st, int col)
{
    return st->drv->column_null(st, col);
}
static inline int64_t jp_stmt_int64(jp_stmt *st, int col)
{
    return st->drv->column_int64(st, col);
}
static inline const char *jp_stmt_text(jp_stmt *st, int col)
{
    return st->drv->column_text(st, col);
}
static inline void jp_stmt_reset(jp_stmt *st)
{
    st->drv->reset(st);
}

#endif
