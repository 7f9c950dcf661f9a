/* The PostgreSQL backend of the store: connections, transactions and
 * prepared statements behind driver.h, over libpq.
 *
 * A write transaction takes one of two writer connections and a read
 * transaction one of a small pool of readers, each under its own mutex and
 * opened on first use. Two writers let one transaction's round trips and
 * commit overlap another's work (group commit runs one committer per
 * writer). Writers in
 * other processes (workers that report straight to the database) are kept
 * apart by row locks: a statement flagged JP_SQLF_LOCK reads FOR UPDATE, so
 * two writers never judge the same row state; migrations take an advisory
 * lock. Write transactions are READ COMMITTED (a locked row reads as its last
 * committed version), read transactions a REPEATABLE READ snapshot.
 *
 * A session that breaks (the server restarted, the backend was terminated) is
 * dropped when its transaction ends, and the next transaction connects
 * afresh and prepares its statements again. A transaction that finds its
 * session broken before it has done anything reconnects at once instead of
 * failing, so a stale pooled connection costs no caller an error.
 *
 * Every statement is a round trip. Pipelining the writes of a batch (libpq's
 * pipeline mode) would save about one in three, but it reports a write's
 * failure at a later call, which driver.h's step contract does not allow
 * (jp_store_create tells a lost race by its INSERT's JP_ECONFLICT). */
/* libpq is a required dependency, so PostgreSQL is always built in; driver.h
 * declares this backend under the macro. */
#ifndef JP_WITH_POSTGRES
#define JP_WITH_POSTGRES 1
#endif
#include "store/driver.h"

#include "core/mem.h"

#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_READERS 4
#define PG_WRITERS 2
/* Seconds to wait for a connection; a connect_timeout in the URL wins. */
#define PG_CONNECT_TIMEOUT "10"
/* ON CONFLICT and SKIP LOCKED. */
#define PG_MIN_SERVER_VERSION 90500
/* The advisory lock that serialises migrations among every process using
 * the database: "jobplane" read as a big-endian 64-bit integer. */
/* Every statement the store runs finds its rows by key. The default cost
 * of a random page (4, for spinning disks) makes the planner scan the whole
 * jobs table rather than probe its index for a batch of ids, and the scan
 * costs milliseconds per batch; 1.1 is the usual figure for SSDs and keeps
 * index probes. A URL's own options= replaces it. */
#define PG_SESSION_OPTIONS "-c random_page_cost=1.1"
#define PG_SCHEMA_LOCK_SQL "SELECT pg_advisory_xact_lock(7669456925429427813)"

static const char *const begin_sql[] = {
    [JP_TX_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    [JP_TX_WRITE] = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
    [JP_TX_SCHEMA] = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
};

typedef struct pg_db pg_db;
typedef struct pg_conn pg_conn;

typedef struct pg_stmt {
    jp_stmt base;
    pg_conn *conn;
    int id;
    char name[16];        /* of the prepared statement: "jp<id>" */
    bool prepared;        /* on the connection's current session */
    int nparam;           /* the highest $n of the text */
    const char **values;  /* [nparam]: bound values as text, NULL for SQL NULL */
    char (*ints)[24];     /* [nparam]: the text of bound integers */
    PGresult *res;        /* the current execution's result, NULL before the first step */
    int row;              /* the current row of res */
    int nrows;
} pg_stmt;

struct pg_conn {
    jp_conn base;
    pg_db *owner;
    pthread_mutex_t mu;  /* held from begin to commit/rollback */
    PGconn *pg;          /* NULL until first used, and after the session broke */
    bool broken;         /* the session failed: dropped when the transaction ends */
    pg_stmt **stmts;     /* [owner->nsql], each NULL until first used */
};

struct pg_db {
    jp_db base;
    char *url;             /* never in a message: it may hold a password */
    char where[128];       /* host:port/db, what messages name */
    size_t nsql;
    char **texts;          /* [nsql]: store.c's text plus the dialect's lock clause */
    int *nparams;          /* [nsql]: the highest $n of each text */
    pg_conn writers[PG_WRITERS];
    pg_conn readers[PG_READERS];
    atomic_uint next_reader;  /* round-robin start for picking a reader */
    atomic_uint next_writer;
};

/* libpq prints notices ("relation already exists, skipping") to stderr by
 * default; library code does not log. */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Copies a libpq message into one line: jp_err holds no newlines. */
static void one_line(char *dst, size_t size, const char *msg)
{
    size_t n = 0;
    bool space = false;

    for (const char *p = msg ? msg : ""; *p && n + 1 < size; p++) {
        if (isspace((unsigned char)*p)) {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < size)
            dst[n++] = ' ';
        space = false;
        dst[n++] = *p;
    }
    dst[n] = '\0';
}

/* Does this failure mean the session is gone? Connection errors (class
 * 08), a terminated or restarting backend, any error that ended the session
 * (FATAL: an idle timeout, a dropped database), and every error libpq made
 * up itself (no SQLSTATE: the socket failed, the protocol broke). */
static bool session_lost(PGconn *pg, const PGresult *res, const char *state)
{
    const char *severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;

    if (!pg || PQstatus(pg) == CONNECTION_BAD || !state)
        return true;
    if (severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
        return true;
    return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
           strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}

/* Records why `res` (NULL when libpq returned none) failed and returns the
 * code: JP_ECONFLICT for a constraint violation, and for a deadlock or a
 * serialization failure, which store.c answers by trying the transaction
 * again; JP_EUNAVAIL for anything else. A lost session is marked broken. */
static int pg_fail(pg_conn *c, const PGresult *res, const char *what, jp_err *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[JP_ERR_MSG_MAX];
    int code = JP_EUNAVAIL;

    one_line(msg, sizeof msg, primary ? primary : c->pg ? PQerrorMessage(c->pg) : "no connection");
    if (!msg[0])
        snprintf(msg, sizeof msg, "the connection failed");
    if (session_lost(c->pg, res, state))
        c->broken = true;
    else if (strncmp(state, "23", 2) == 0 || strcmp(state, "40001") == 0 ||
             strcmp(state, "40P01") == 0)
        code = JP_ECONFLICT;
    return jp_err_set(err, code, "postgres %s: %s: %s", c->owner->where, what, msg);
}

static int broken_err(pg_conn *c, jp_err *err)
{
    return jp_err_set(err, JP_EUNAVAIL, "postgres %s: the connection was lost", c->owner->where);
}

/* For the calls whose contract knows one failure only: JP_EUNAVAIL, with
 * the message of whatever it was. */
static int unavail(int rc, jp_err *err)
{
    if (rc >= 0)
        return rc;
    if (err)
        err->code = JP_EUNAVAIL;
    return JP_EUNAVAIL;
}

static void stmt_clear(pg_stmt *s)
{
    PQclear(s->res);
    s->res = NULL;
    s->row = s->nrows = 0;
    for (int i = 0; i < s->nparam; i++)
        s->values[i] = NULL;
}

static void stmt_free(pg_stmt *s)
{
    if (!s)
        return;
    PQclear(s->res);
    free(s->values);
    free(s->ints);
    free(s);
}

/* Ends the session; its prepared statements go with it. */
static void conn_drop(pg_conn *c)
{
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->broken = false;
    for (size_t i = 0; c->stmts && i < c->owner->nsql; i++) {
        if (c->stmts[i])
            c->stmts[i]->prepared = false;
    }
}

static void conn_done(pg_conn *c)
{
    conn_drop(c);
    if (c->stmts) {
        for (size_t i = 0; i < c->owner->nsql; i++)
            stmt_free(c->stmts[i]);
        free(c->stmts);
        c->stmts = NULL;
    }
}

/* Opens a session for the connection. Called with c->mu held (or before any
 * other thread can see the connection). */
static int conn_connect(pg_conn *c, jp_err *err)
{
    pg_db *d = c->owner;
    /* Entries before the expanded URL are defaults it can override; the
     * one after it is what the store needs whatever the URL says. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "options",
                                "dbname", "client_encoding", NULL};
    const char *const vals[] = {PG_CONNECT_TIMEOUT, "jobplane", PG_SESSION_OPTIONS, d->url, "UTF8",
                                NULL};
    char msg[JP_ERR_MSG_MAX];
    PGconn *pg = PQconnectdbParams(keys, vals, 1);

    if (!pg)
        return jp_err_set(err, JP_EUNAVAIL, "postgres %s: out of memory", d->where);
    if (PQstatus(pg) != CONNECTION_OK) {
        one_line(msg, sizeof msg, PQerrorMessage(pg));
        PQfinish(pg);
        return jp_err_set(err, JP_EUNAVAIL, "postgres %s: cannot connect: %s", d->where, msg);
    }
    if (PQserverVersion(pg) < PG_MIN_SERVER_VERSION) {
        int v = PQserverVersion(pg);
        PQfinish(pg);
        return jp_err_set(err, JP_EUNAVAIL, "postgres %s: server version %d.%d is too old (9.5+)",
                          d->where, v / 10000, v / 100 % 100);
    }
    PQsetNoticeProcessor(pg, quiet, NULL);
    c->pg = pg;
    c->broken = false;
    if (!c->stmts)
        c->stmts = jp_xcalloc(d->nsql, sizeof *c->stmts);
    return 0;
}

/* Runs parameterless SQL on the session. */
static int run(pg_conn *c, const char *sql, const char *what, jp_err *err)
{
    PGresult *r = PQexec(c->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
        rc = pg_fail(c, r, what, err);
    PQclear(r);
    return rc;
}

/* Leaves the session idle: rolls back whatever is open, or drops a session
 * that broke or cannot roll back. Statement results are let go. */
static void conn_finish(pg_conn *c)
{
    for (size_t i = 0; c->stmts && i < c->owner->nsql; i++) {
        if (c->stmts[i] && c->stmts[i]->res)
            stmt_clear(c->stmts[i]);
    }
    if (!c->pg)
        return;
    if (!c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        run(c, "ROLLBACK", "rollback", NULL);
    if (c->broken || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        conn_drop(c);
}

static void pg_close(jp_db *db)
{
    pg_db *d = (pg_db *)db;
    if (!d)
        return;
    for (int i = 0; i < PG_READERS; i++) {
        conn_done(&d->readers[i]);
        pthread_mutex_destroy(&d->readers[i].mu);
    }
    for (int i = 0; i < PG_WRITERS; i++) {
        conn_done(&d->writers[i]);
        pthread_mutex_destroy(&d->writers[i].mu);
    }
    for (size_t i = 0; d->texts && i < d->nsql; i++)
        free(d->texts[i]);
    free(d->texts);
    free(d->nparams);
    free(d->url);
    free(d);
}

/* The highest $n in `sql`, outside string literals and identifiers.
 * PostgreSQL must infer a type for every parameter it is told about, so a
 * statement is prepared with exactly this many, and binds past it are
 * ignored. */
static int max_param(const char *sql)
{
    int max = 0;
    bool quoted = false;

    for (const char *p = sql; *p; p++) {
        if (*p == '\'') {
            quoted = !quoted;
            continue;
        }
        if (quoted || *p != '$' || !isdigit((unsigned char)p[1]))
            continue;
        if (p > sql && (isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '$'))
            continue;
        long n = strtol(p + 1, NULL, 10);
        if (n > max && n <= 65535)
            max = (int)n;
    }
    return max;
}

/* Names the server for messages: host:port/db from the URL, never the rest. */
static void describe(const PQconninfoOption *opts, char *where, size_t size)
{
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *db = NULL;

    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = o->val && o->val[0] ? o->val : NULL;
        if (strcmp(o->keyword, "host") == 0)
            host = v;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = v;
        else if (strcmp(o->keyword, "port") == 0)
            port = v;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = v;
    }
    snprintf(where, size, "%.48s:%.16s/%.48s", host ? host : hostaddr ? hostaddr : "localhost",
             port ? port : "5432", db ? db : "");
}

static void conn_init(pg_conn *c, pg_db *d)
{
    c->base.drv = &jp_postgres_driver;
    c->owner = d;
    pthread_mutex_init(&c->mu, NULL);
}

static int pg_open(const char *url, const jp_sql_def *sql, size_t nsql, jp_db **ret_db,
                   jp_err *err)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    pg_db *d;
    int rc;

    if (!opts) {
        /* libpq's reason may quote the URL, password included. */
        PQfreemem(perr);
        return jp_err_set(err, JP_EINVAL,
                          "bad database URL: want postgres://[USER[:PASSWORD]@]HOST[:PORT]/DB");
    }
    d = jp_xcalloc(1, sizeof *d);
    d->base.drv = &jp_postgres_driver;
    d->url = jp_xstrdup(url);
    describe(opts, d->where, sizeof d->where);
    PQconninfoFree(opts);
    d->nsql = nsql;
    d->texts = jp_xcalloc(nsql, sizeof *d->texts);
    d->nparams = jp_xcalloc(nsql, sizeof *d->nparams);
    for (size_t i = 0; i < nsql; i++) {
        const char *lock = "";
        if (sql[i].flags & JP_SQLF_LOCK)
            lock = sql[i].flags & JP_SQLF_SKIP_LOCKED ? " FOR UPDATE SKIP LOCKED" : " FOR UPDATE";
        d->texts[i] = jp_xasprintf("%s%s", sql[i].text ? sql[i].text : "", lock);
        d->nparams[i] = max_param(d->texts[i]);
    }
    atomic_init(&d->next_reader, 0);
    atomic_init(&d->next_writer, 0);
    for (int i = 0; i < PG_WRITERS; i++)
        conn_init(&d->writers[i], d);
    for (int i = 0; i < PG_READERS; i++)
        conn_init(&d->readers[i], d);
    /* A writer at once, so a database that cannot be reached fails here. */
    rc = conn_connect(&d->writers[0], err);
    if (rc < 0) {
        pg_close(&d->base);
        return rc;
    }
    *ret_db = &d->base;
    return 0;
}

/* Takes a free connection of a pool if there is one, else waits for one. */
static pg_conn *take_conn(pg_conn *pool, unsigned n, atomic_uint *next)
{
    unsigned start = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        pg_conn *c = &pool[(start + i) % n];
        if (pthread_mutex_trylock(&c->mu) == 0)
            return c;
    }
    pg_conn *c = &pool[start % n];
    pthread_mutex_lock(&c->mu);
    return c;
}

static int pg_begin(jp_db *db, jp_tx_kind kind, jp_conn **ret_conn, jp_err *err)
{
    pg_db *d = (pg_db *)db;
    pg_conn *c;
    int rc;

    if ((unsigned)kind > JP_TX_SCHEMA)
        return jp_err_set(err, JP_EINTERNAL, "postgres: no transaction kind %d", (int)kind);
    if (kind == JP_TX_READ)
        c = take_conn(d->readers, PG_READERS, &d->next_reader);
    else
        c = take_conn(d->writers, PG_WRITERS, &d->next_writer);
    for (int tries = 0;; tries++) {
        bool fresh = !c->pg;
        if (fresh && (rc = conn_connect(c, err)) < 0)
            break;
        rc = run(c, begin_sql[kind], "begin", err);
        if (rc == 0 && kind == JP_TX_SCHEMA)
            rc = run(c, PG_SCHEMA_LOCK_SQL, "taking the migration lock", err);
        if (rc == 0) {
            *ret_conn = &c->base;
            return 0;
        }
        /* A session that died while idle in the pool: nothing was done in
         * this transaction yet, so a new session may do it. */
        if (!c->broken || fresh || tries > 0)
            break;
        conn_drop(c);
    }
    conn_finish(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void pg_rollback(jp_conn *conn)
{
    pg_conn *c = (pg_conn *)conn;
    conn_finish(c);
    pthread_mutex_unlock(&c->mu);
}

/* A session lost during COMMIT leaves the outcome unknown: the caller sees
 * JP_EUNAVAIL, and a transition tried again is judged against whatever
 * the database holds, so a repeat is refused rather than applied twice. */
static int pg_commit(jp_conn *conn, jp_err *err)
{
    pg_conn *c = (pg_conn *)conn;
    int rc = 0;

    if (c->broken || !c->pg) {
        rc = broken_err(c, err);
    } else if (PQtransactionStatus(c->pg) != PQTRANS_INTRANS) {
        rc = jp_err_set(err, JP_EUNAVAIL, "postgres %s: commit: the transaction had failed",
                        c->owner->where);
    } else {
        PGresult *r = PQexec(c->pg, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = pg_fail(c, r, "commit", err);
        else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)  /* the server rolled back instead */
            rc = jp_err_set(err, JP_EUNAVAIL,
                            "postgres %s: commit: the transaction was rolled back",
                            c->owner->where);
        PQclear(r);
    }
    conn_finish(c);
    pthread_mutex_unlock(&c->mu);
    return unavail(rc, err);
}

static int pg_exec(jp_conn *conn, const char *sql, jp_err *err)
{
    pg_conn *c = (pg_conn *)conn;

    if (c->broken)
        return broken_err(c, err);
    return unavail(run(c, sql, "exec", err), err);
}

static int pg_get_stmt(jp_conn *conn, int id, jp_stmt **ret_stmt, jp_err *err)
{
    pg_conn *c = (pg_conn *)conn;
    pg_db *d = c->owner;
    pg_stmt *s;

    if (id < 0 || (size_t)id >= d->nsql)
        return jp_err_set(err, JP_EINTERNAL, "postgres: no statement %d", id);
    if (c->broken)
        return broken_err(c, err);
    s = c->stmts[id];
    if (!s) {
        s = jp_xcalloc(1, sizeof *s);
        s->base.drv = &jp_postgres_driver;
        s->conn = c;
        s->id = id;
        snprintf(s->name, sizeof s->name, "jp%d", id);
        s->nparam = d->nparams[id];
        s->values = jp_xcalloc((size_t)s->nparam + 1, sizeof *s->values);
        s->ints = jp_xcalloc((size_t)s->nparam + 1, sizeof *s->ints);
        c->stmts[id] = s;
    }
    if (!s->prepared) {
        /* Types left to the server, which infers them from the text. */
        PGresult *r = PQprepare(c->pg, s->name, d->texts[id], s->nparam, NULL);
        int rc = 0;
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = unavail(pg_fail(c, r, "prepare", err), err);
        PQclear(r);
        if (rc < 0)
            return rc;
        s->prepared = true;
    }
    *ret_stmt = &s->base;
    return 0;
}

static void pg_bind_null(jp_stmt *stmt, int pos)
{
    pg_stmt *s = (pg_stmt *)stmt;
    if (pos >= 1 && pos <= s->nparam)
        s->values[pos - 1] = NULL;
}

static void pg_bind_int64(jp_stmt *stmt, int pos, int64_t v)
{
    pg_stmt *s = (pg_stmt *)stmt;
    if (pos < 1 || pos > s->nparam)
        return;
    snprintf(s->ints[pos - 1], sizeof s->ints[0], "%" PRId64, v);
    s->values[pos - 1] = s->ints[pos - 1];
}

static void pg_bind_text(jp_stmt *stmt, int pos, const char *v)
{
    pg_stmt *s = (pg_stmt *)stmt;
    if (pos >= 1 && pos <= s->nparam)
        s->values[pos - 1] = v;  /* borrowed until reset, as the contract says */
}

static int pg_step(jp_stmt *stmt, jp_err *err)
{
    pg_stmt *s = (pg_stmt *)stmt;
    pg_conn *c = s->conn;

    if (s->res) {
        if (s->row < s->nrows)
            s->row++;
        return s->row < s->nrows ? JP_DB_ROW : JP_DB_DONE;
    }
    if (c->broken || !c->pg)
        return broken_err(c, err);
    PGresult *r = PQexecPrepared(c->pg, s->name, s->nparam, s->values, NULL, NULL, 0);
    switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK:
        s->res = r;
        s->nrows = PQntuples(r);
        s->row = 0;
        return s->nrows > 0 ? JP_DB_ROW : JP_DB_DONE;
    case PGRES_COMMAND_OK:
        s->res = r;
        s->nrows = s->row = 0;
        return JP_DB_DONE;
    default: {
        int rc = pg_fail(c, r, "statement", err);
        PQclear(r);
        return rc;
    }
    }
}

/* Is there a current row with column `col`? */
static bool has_cell(const pg_stmt *s, int col)
{
    return s->res && s->row < s->nrows && col >= 0 && col < PQnfields(s->res);
}

static bool pg_column_null(jp_stmt *stmt, int col)
{
    pg_stmt *s = (pg_stmt *)stmt;
    return !has_cell(s, col) || PQgetisnull(s->res, s->row, col);
}

static int64_t pg_column_int64(jp_stmt *stmt, int col)
{
    pg_stmt *s = (pg_stmt *)stmt;
    if (pg_column_null(stmt, col))
        return 0;
    return strtoll(PQgetvalue(s->res, s->row, col), NULL, 10);
}

static const char *pg_column_text(jp_stmt *stmt, int col)
{
    pg_stmt *s = (pg_stmt *)stmt;
    if (pg_column_null(stmt, col))
        return NULL;
    return PQgetvalue(s->res, s->row, col);
}

static void pg_reset(jp_stmt *stmt)
{
    stmt_clear((pg_stmt *)stmt);
}

static const char *const pg_schemes[] = {"postgres", "postgresql", NULL};

const jp_driver jp_postgres_driver = {
    .abi = JP_DRIVER_ABI,
    .name = "postgres",
    .schemes = pg_schemes,
    .writers = PG_WRITERS,
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .stmt = pg_get_stmt,
    .bind_null = pg_bind_null,
    .bind_int64 = pg_bind_int64,
    .bind_text = pg_bind_text,
    .step = pg_step,
    .column_null = pg_column_null,
    .column_int64 = pg_column_int64,
    .column_text = pg_column_text,
    .reset = pg_reset,
};
