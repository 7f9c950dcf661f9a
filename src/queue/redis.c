/* The Redis Streams transport (DESIGN.md §4): a stream per queue and priority,
 * one consumer group, leases renewed with XCLAIM … JUSTID and taken over with
 * XAUTOCLAIM, over a small pool of blocking hiredis connections that reconnect
 * by themselves after Redis goes away. */
#include "queue/redis.h"

#include "core/jtime.h"
#include "core/mem.h"
#include "queue/queue_impl.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GROUP "jobplane"
#define CANCEL_CHANNEL "jobplane:cancel"
#define EPOCH_KEY "jobplane:epoch"
#define WORKER_PREFIX "jobplane:worker:"
#define CONNECT_TIMEOUT_MS 2000
#define COMMAND_TIMEOUT_MS 5000
#define BLOCK_SLICE_MS 1000     /* a blocked pop notices jp_queue_wake this often */
#define SUB_RETRY_MS 200        /* the cancel subscriber's pause between reconnects */
#define DEFAULT_POOL 4
#define MAX_POOL 64
#define DEFAULT_LEASE_MS 30000
#define KEY_MAX 96              /* a stream key: jobplane:{<64>}:emergency */
#define ENTRY_ID_MAX 48         /* "<20 digits>-<20 digits>" and a "(" */
#define RECLAIM_ROUNDS 8        /* XAUTOCLAIM cursor steps per stream and call */
#define RANGE_PAGE 1000         /* XRANGE page when listing a stream's job ids */
#define MAX_QUEUES 256          /* queue names one pop or reclaim may name */
#define CANCEL_ID_MAX 128       /* longer cancel payloads are not job ids */
#define EPOCH_MAX 64            /* an epoch marker set by any peer */

/* Where the server is, from the URL. */
typedef struct endpoint {
    char *host;
    int port;
    int db;
    char *user;      /* NULL: AUTH with the password alone */
    char *password;  /* NULL: no AUTH */
    char addr[320];  /* "host:port", for messages */
} endpoint;

typedef struct conn {
    redisContext *ctx;  /* NULL until connected, and again after an I/O error */
    unsigned gen;       /* the pool's generation when connected */
    bool busy;          /* taken by a caller (guarded by the pool mutex) */
    char sha[41];       /* the pop script's SHA1 once loaded here, else "" */
} conn;

/* A queue this process has made sure has its consumer groups. */
typedef struct known {
    char name[JP_NAME_MAX + 1];
    char cursor[JP_PRIO__COUNT][ENTRY_ID_MAX];  /* where XAUTOCLAIM resumes */
} known;

typedef struct redisq {
    jp_queue base;
    endpoint ep;
    char *consumer;          /* NULL for a producer */
    int64_t lease_ms;
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;  /* a connection was given back */
    conn *conns;
    int nconns;
    unsigned gen;            /* bumped on I/O errors: idle connections reconnect */
    pthread_mutex_t mu;      /* known queues */
    known *known;
    size_t nknown, capknown;
    pthread_mutex_t epoch_mu;       /* serialises epoch checks */
    char epoch[EPOCH_MAX + 1];       /* our marker; "" before the first check */
    atomic_bool woken;
    atomic_bool weighted;
    _Atomic uint64_t rng;    /* weighted mode's draws */
} redisq;

/* Takes one queue's streams in the order given (KEYS) and reads new entries
 * for consumer ARGV[2] of group ARGV[1] until ARGV[3] are gathered, so strict
 * priority costs one round trip. Returns {results, last}: results shaped
 * like XREADGROUP's reply; when nothing was ready, last holds each stream's
 * newest entry id, from which a blocking XREAD waits for new ones. */
static const char POP_SCRIPT[] =
    "local want = tonumber(ARGV[3])\n"
    "local out = {}\n"
    "for _, key in ipairs(KEYS) do\n"
    "  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want,\n"
    "                       'STREAMS', key, '>')\n"
    "  if r and #r[1][2] > 0 then\n"
    "    out[#out + 1] = r[1]\n"
    "    want = want - #r[1][2]\n"
    "    if want <= 0 then break end\n"
    "  end\n"
    "end\n"
    "local last = {}\n"
    "if #out == 0 then\n"
    "  for i, key in ipairs(KEYS) do\n"
    "    local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)\n"
    "    if e[1] then last[i] = e[1][1] else last[i] = '0-0' end\n"
    "  end\n"
    "end\n"
    "return {out, last}\n";

static const jp_queue_ops redis_ops;

/* ---- URL and connections ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A copy of s[0..n) with %XX escapes decoded; NULL when an escape is bad. */
static char *unescape(const char *s, size_t n)
{
    char *out = jp_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

static void endpoint_done(endpoint *ep)
{
    free(ep->host);
    free(ep->user);
    free(ep->password);
    memset(ep, 0, sizeof *ep);
}

static bool parse_uint(const char *s, size_t n, long max, long *ret)
{
    long v = 0;
    if (n == 0 || n > 9)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *ret = v;
    return true;
}

/* redis://[[user]:password@]host[:port][/db]; userinfo without a colon is the
 * password; %XX escapes are decoded in it. */
static int parse_url(const char *url, endpoint *ep, jp_err *err)
{
    const char *rest, *at, *host, *end, *p;
    long port = 6379, db = 0;

    memset(ep, 0, sizeof *ep);
    if (strncmp(url, "redis://", 8) != 0)
        return jp_err_set(err, JP_EINVAL, "Redis URL must start with redis://");
    rest = url + 8;
    end = rest + strcspn(rest, "/?#");
    at = NULL;
    for (p = rest; p < end; p++)
        if (*p == '@')
            at = p;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon) {
            if (colon > rest)
                ep->user = unescape(rest, (size_t)(colon - rest));
            ep->password = unescape(colon + 1, (size_t)(at - colon - 1));
            if ((colon > rest && !ep->user) || !ep->password)
                goto bad;
        } else {
            ep->password = unescape(rest, (size_t)(at - rest));
            if (!ep->password)
                goto bad;
        }
        if (ep->password && !ep->password[0]) {
            free(ep->password);
            ep->password = NULL;
        }
        host = at + 1;
    } else {
        host = rest;
    }
    /* Host, possibly a bracketed IPv6 address, then an optional port. */
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close || close == host + 1)
            goto bad;
        ep->host = jp_xstrndup(host + 1, (size_t)(close - host - 1));
        p = close + 1;
    } else {
        p = host;
        while (p < end && *p != ':')
            p++;
        if (p == host)
            goto bad;
        ep->host = jp_xstrndup(host, (size_t)(p - host));
    }
    if (p < end) {
        if (*p != ':' || !parse_uint(p + 1, (size_t)(end - p - 1), 65535, &port) || port == 0)
            goto bad;
    }
    if (*end == '/') {
        const char *dbs = end + 1;
        size_t n = strcspn(dbs, "?#");
        if (n > 0 && !parse_uint(dbs, n, 1000000, &db))
            goto bad;
        end = dbs + n;
    }
    if (*end != '\0')
        goto bad;
    ep->port = (int)port;
    ep->db = (int)db;
    if (strchr(ep->host, ':'))
        snprintf(ep->addr, sizeof ep->addr, "[%s]:%d", ep->host, ep->port);
    else
        snprintf(ep->addr, sizeof ep->addr, "%s:%d", ep->host, ep->port);
    return 0;
bad:
    endpoint_done(ep);
    return jp_err_set(err, JP_EINVAL, "bad Redis URL (want redis://[:password@]host[:port][/db])");
}

static void set_timeout(redisContext *ctx, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    redisSetTimeout(ctx, tv);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The JP_E* code for an error reply: a busy or full server may recover,
 * a refused password will not by itself. */
static int reply_code(const char *msg)
{
    static const char *const transient[] = {"OOM", "LOADING", "BUSY", "MASTERDOWN",
                                            "READONLY", "TRYAGAIN", "CLUSTERDOWN"};
    static const char *const config[] = {"NOAUTH", "WRONGPASS", "NOPERM", "ERR invalid password",
                                         "ERR AUTH", "ERR Client sent AUTH"};
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        if (has_prefix(msg, transient[i]))
            return JP_EUNAVAIL;
    for (size_t i = 0; i < sizeof config / sizeof *config; i++)
        if (has_prefix(msg, config[i]))
            return JP_EINVAL;
    return JP_EINTERNAL;
}

static int reply_err(const endpoint *ep, const redisReply *rep, jp_err *err)
{
    return jp_err_set(err, reply_code(rep->str), "redis %s: %.200s", ep->addr,
                      rep->str ? rep->str : "error");
}

static int unexpected(const endpoint *ep, const char *what, jp_err *err)
{
    return jp_err_set(err, JP_EINTERNAL, "redis %s: unexpected reply to %s", ep->addr, what);
}

static bool is_error(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR;
}

static bool is_array(const redisReply *rep, size_t min)
{
    return rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= min;
}

static bool is_string(const redisReply *rep)
{
    return rep && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS);
}

static void free_replies(redisReply **rep, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        freeReplyObject(rep[i]);
        rep[i] = NULL;
    }
}

/* Connects, authenticates and selects the database. */
static int connect_endpoint(const endpoint *ep, redisContext **ret, jp_err *err)
{
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_MS / 1000,
                         .tv_usec = (CONNECT_TIMEOUT_MS % 1000) * 1000};
    redisContext *ctx = redisConnectWithTimeout(ep->host, ep->port, tv);
    redisReply *rep[2] = {NULL, NULL};
    size_t n = 0;
    char dbs[16];
    int rc = 0;

    if (!ctx)
        return jp_err_set(err, JP_EUNAVAIL, "redis %s: cannot allocate a connection", ep->addr);
    if (ctx->err) {
        rc = jp_err_set(err, JP_EUNAVAIL, "redis %s: %s", ep->addr, ctx->errstr);
        goto out;
    }
    set_timeout(ctx, COMMAND_TIMEOUT_MS);
    redisEnableKeepAlive(ctx);
    if (ep->password) {
        if (ep->user) {
            const char *argv[] = {"AUTH", ep->user, ep->password};
            redisAppendCommandArgv(ctx, 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", ep->password};
            redisAppendCommandArgv(ctx, 2, argv, NULL);
        }
        n++;
    }
    if (ep->db) {
        snprintf(dbs, sizeof dbs, "%d", ep->db);
        const char *argv[] = {"SELECT", dbs};
        redisAppendCommandArgv(ctx, 2, argv, NULL);
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        void *x = NULL;
        if (redisGetReply(ctx, &x) != REDIS_OK || !x) {
            rc = jp_err_set(err, JP_EUNAVAIL, "redis %s: %s", ep->addr,
                            ctx->errstr[0] ? ctx->errstr : "connection lost");
            goto out;
        }
        rep[i] = x;
    }
    for (size_t i = 0; i < n; i++) {
        if (is_error(rep[i])) {
            rc = jp_err_set(err, JP_EINVAL, "redis %s: %s: %.200s", ep->addr,
                            ep->password && i == 0 ? "AUTH" : "SELECT", rep[i]->str);
            goto out;
        }
    }
    *ret = ctx;
    ctx = NULL;
out:
    free_replies(rep, n);
    if (ctx)
        redisFree(ctx);
    return rc;
}

/* Takes a connection from the pool (waiting for one), connected. */
static int conn_get(redisq *r, conn **ret, jp_err *err)
{
    conn *c = NULL;
    bool stale;
    unsigned gen;
    int rc;

    pthread_mutex_lock(&r->pool_mu);
    for (;;) {
        for (int i = 0; i < r->nconns && !c; i++)
            if (!r->conns[i].busy && r->conns[i].ctx)
                c = &r->conns[i];
        for (int i = 0; i < r->nconns && !c; i++)
            if (!r->conns[i].busy)
                c = &r->conns[i];
        if (c)
            break;
        pthread_cond_wait(&r->pool_cv, &r->pool_mu);
    }
    c->busy = true;
    gen = r->gen;
    stale = c->ctx && c->gen != gen;
    pthread_mutex_unlock(&r->pool_mu);

    if (stale) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    if (!c->ctx) {
        c->sha[0] = '\0';
        rc = connect_endpoint(&r->ep, &c->ctx, err);
        if (rc < 0) {
            pthread_mutex_lock(&r->pool_mu);
            c->busy = false;
            pthread_cond_signal(&r->pool_cv);
            pthread_mutex_unlock(&r->pool_mu);
            return rc;
        }
        c->gen = gen;
    }
    *ret = c;
    return 0;
}

static void conn_put(redisq *r, conn *c)
{
    pthread_mutex_lock(&r->pool_mu);
    c->busy = false;
    pthread_cond_signal(&r->pool_cv);
    pthread_mutex_unlock(&r->pool_mu);
}

/* After an I/O or protocol error: the connection is closed, and so are the
 * idle ones (they most likely saw the same failure); the next use reconnects. */
static int conn_drop(redisq *r, conn *c, jp_err *err)
{
    int rc = jp_err_set(err, JP_EUNAVAIL, "redis %s: %s", r->ep.addr,
                        c->ctx && c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
    c->sha[0] = '\0';
    pthread_mutex_lock(&r->pool_mu);
    r->gen++;
    pthread_mutex_unlock(&r->pool_mu);
    return rc;
}

/* Reads the replies of the n commands appended to c (sending them first).
 * On failure every reply is freed and the connection dropped. */
static int read_replies(redisq *r, conn *c, redisReply **rep, size_t n, jp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        void *x = NULL;
        if (redisGetReply(c->ctx, &x) != REDIS_OK || !x) {
            free_replies(rep, i);
            return conn_drop(r, c, err);
        }
        rep[i] = x;
    }
    return 0;
}

/* One command, one reply. */
static int command_argv(redisq *r, conn *c, int argc, const char **argv, const size_t *lens,
                        redisReply **ret, jp_err *err)
{
    redisAppendCommandArgv(c->ctx, argc, argv, lens);
    return read_replies(r, c, ret, 1, err);
}

/* ---- keys, ids and messages ---- */

void jp_redis_stream_key(const char *queue, int priority, char *out, size_t outlen)
{
    if (priority < 0 || priority >= JP_PRIO__COUNT)
        priority = JP_PRIO_NORMAL;
    snprintf(out, outlen, "jobplane:{%s}:%s", queue, jp_priority_name(priority));
}

/* Splits jobplane:{<queue>}:<priority> into its parts. */
static bool parse_stream_key(const char *key, size_t len, char *queue, int *prio)
{
    const char *q, *close, *end = key + len;
    size_t qlen;

    if (len < 12 || memcmp(key, "jobplane:{", 10) != 0)
        return false;
    q = key + 10;
    close = memchr(q, '}', (size_t)(end - q));
    if (!close || close + 1 >= end || close[1] != ':')
        return false;
    qlen = (size_t)(close - q);
    if (qlen == 0 || qlen > JP_NAME_MAX)
        return false;
    memcpy(queue, q, qlen);
    queue[qlen] = '\0';
    if (!jp_name_valid(queue))
        return false;
    for (int p = 0; p < JP_PRIO__COUNT; p++) {
        const char *name = jp_priority_name(p);
        size_t nlen = strlen(name);
        if ((size_t)(end - close - 2) == nlen && memcmp(close + 2, name, nlen) == 0) {
            *prio = p;
            return true;
        }
    }
    return false;
}

/* True for a stream entry id: <ms>-<seq>, both decimal. */
static bool entry_id_valid(const char *s, size_t len)
{
    size_t i = 0, digits = 0;
    if (len == 0 || len >= ENTRY_ID_MAX - 1)
        return false;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (!digits || i == len || s[i] != '-')
        return false;
    i++;
    digits = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    return digits && i == len;
}

/* A positive decimal int, or 0 for anything else. */
static int parse_attempt(const char *s, size_t len)
{
    long v = 0;
    if (len == 0 || len > 9)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    return (int)v;
}

/* Fills *m from a stream entry [id, [field, value, …] or nil]. Garbage
 * fields give a message without data (the caller records a failed attempt);
 * false only when the entry itself is malformed. */
static bool entry_to_msg(const char *queue, int prio, const redisReply *entry, jp_qmsg *m)
{
    const redisReply *id, *fields;

    if (!is_array(entry, 2) || !is_string(entry->element[0]))
        return false;
    id = entry->element[0];
    fields = entry->element[1];
    if (!entry_id_valid(id->str, id->len) || id->len >= sizeof m->handle)
        return false;
    memset(m, 0, sizeof *m);
    memcpy(m->handle, id->str, id->len + 1);
    m->enqueued_ms = strtoll(id->str, NULL, 10);
    m->priority = prio;
    snprintf(m->queue, sizeof m->queue, "%s", queue);
    if (fields && fields->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            const redisReply *f = fields->element[i], *v = fields->element[i + 1];
            if (!is_string(f) || !is_string(v))
                continue;
            if (f->len == 6 && memcmp(f->str, "job_id", 6) == 0) {
                if (v->len == JP_UUID_STR_LEN)
                    memcpy(m->job_id, v->str, JP_UUID_STR_LEN + 1);
            } else if (f->len == 7 && memcmp(f->str, "attempt", 7) == 0) {
                m->attempt = parse_attempt(v->str, v->len);
            } else if (f->len == 8 && memcmp(f->str, "job_data", 8) == 0 && !m->data) {
                json_t *data = json_loadb(v->str, v->len, 0, NULL);
                if (json_is_object(data))
                    m->data = data;
                else
                    json_decref(data);
            }
        }
    }
    /* Without a job_id field, the id inside job_data still names the job. */
    if (!m->job_id[0] && m->data) {
        const char *did = json_string_value(json_object_get(m->data, "id"));
        if (did && strlen(did) == JP_UUID_STR_LEN)
            memcpy(m->job_id, did, JP_UUID_STR_LEN + 1);
    }
    return true;
}

/* Fills out[] from a reply shaped like XREADGROUP's: [[key, [entry, …]], …].
 * Returns how many were written (at most max). */
static size_t msgs_from_streams(const redisReply *streams, jp_qmsg *out, size_t max)
{
    size_t got = 0;
    if (!is_array(streams, 0))
        return 0;
    for (size_t s = 0; s < streams->elements && got < max; s++) {
        const redisReply *sr = streams->element[s];
        char queue[JP_NAME_MAX + 1];
        int prio;
        if (!is_array(sr, 2) || !is_string(sr->element[0]) || !is_array(sr->element[1], 0))
            continue;
        if (!parse_stream_key(sr->element[0]->str, sr->element[0]->len, queue, &prio))
            continue;
        for (size_t e = 0; e < sr->element[1]->elements && got < max; e++)
            if (entry_to_msg(queue, prio, sr->element[1]->element[e], &out[got]))
                got++;
    }
    return got;
}

/* ---- consumer groups, known queues ---- */

static known *find_known(redisq *r, const char *queue)
{
    for (size_t i = 0; i < r->nknown; i++)
        if (strcmp(r->known[i].name, queue) == 0)
            return &r->known[i];
    return NULL;
}

static bool is_known(redisq *r, const char *queue)
{
    pthread_mutex_lock(&r->mu);
    bool yes = find_known(r, queue) != NULL;
    pthread_mutex_unlock(&r->mu);
    return yes;
}

/* Records the queue as having its groups; resets its reclaim cursors (after
 * a data loss the old positions mean nothing). */
static void add_known(redisq *r, const char *queue)
{
    pthread_mutex_lock(&r->mu);
    known *k = find_known(r, queue);
    if (!k) {
        if (r->nknown == r->capknown) {
            r->capknown = r->capknown ? r->capknown * 2 : 8;
            r->known = jp_xrealloc(r->known, r->capknown * sizeof *r->known);
        }
        k = &r->known[r->nknown++];
        snprintf(k->name, sizeof k->name, "%s", queue);
    }
    for (int p = 0; p < JP_PRIO__COUNT; p++)
        strcpy(k->cursor[p], "0-0");
    pthread_mutex_unlock(&r->mu);
}

static void get_cursor(redisq *r, const char *queue, int prio, char *out)
{
    pthread_mutex_lock(&r->mu);
    known *k = find_known(r, queue);
    strcpy(out, k ? k->cursor[prio] : "0-0");
    pthread_mutex_unlock(&r->mu);
}

static void set_cursor(redisq *r, const char *queue, int prio, const char *cursor)
{
    pthread_mutex_lock(&r->mu);
    known *k = find_known(r, queue);
    if (k)
        snprintf(k->cursor[prio], sizeof k->cursor[prio], "%s", cursor);
    pthread_mutex_unlock(&r->mu);
}

/* Creates the group on every stream of the queue the first time (and again
 * with `force`, when a command found it missing: Redis lost its data). */
static int ensure_groups(redisq *r, conn *c, const char *queue, bool force, jp_err *err)
{
    redisReply *rep[JP_PRIO__COUNT] = {NULL};
    char key[KEY_MAX];
    int rc;

    if (!force && is_known(r, queue))
        return 0;
    for (int p = 0; p < JP_PRIO__COUNT; p++) {
        jp_redis_stream_key(queue, p, key, sizeof key);
        const char *argv[] = {"XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM"};
        redisAppendCommandArgv(c->ctx, 6, argv, NULL);
    }
    rc = read_replies(r, c, rep, JP_PRIO__COUNT, err);
    if (rc < 0)
        return rc;
    for (int p = 0; p < JP_PRIO__COUNT && rc == 0; p++)
        if (is_error(rep[p]) && !has_prefix(rep[p]->str, "BUSYGROUP"))
            rc = reply_err(&r->ep, rep[p], err);
    free_replies(rep, JP_PRIO__COUNT);
    if (rc == 0)
        add_known(r, queue);
    return rc;
}

static int check_queues(const char *const *queues, size_t *ret_n, jp_err *err)
{
    size_t n = 0;
    if (!queues)
        return jp_err_set(err, JP_EINVAL, "a Redis consumer must name the queues it reads");
    for (; queues[n]; n++) {
        if (!jp_name_valid(queues[n]))
            return jp_err_set(err, JP_EINVAL, "bad queue name \"%.64s\"", queues[n]);
        if (n >= MAX_QUEUES)
            return jp_err_set(err, JP_EINVAL, "more than %d queues", MAX_QUEUES);
    }
    if (n == 0)
        return jp_err_set(err, JP_EINVAL, "no queue named");
    *ret_n = n;
    return 0;
}

/* ---- push ---- */

static int dump_to_buf(const char *p, size_t n, void *arg)
{
    return jp_buf_append(arg, p, n) == 0 ? 0 : -1;
}

static int rq_push(jp_queue *q, jp_job *const *jobs, size_t n, jp_err *err)
{
    redisq *r = (redisq *)q;
    redisReply **rep = NULL;
    conn *c = NULL;
    jp_buf buf;
    bool tx = n > 1;
    size_t nrep = tx ? n + 2 : n;
    int rc;

    for (size_t i = 0; i < n; i++)
        if (!jobs[i]->queue || !jp_name_valid(jobs[i]->queue))
            return jp_err_set(err, JP_EINVAL, "job %s has no valid queue name", jobs[i]->id);
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(jobs[i]->queue, jobs[i - 1]->queue) == 0)
            continue;
        /* One round trip per new queue, once per process. */
        rc = ensure_groups(r, c, jobs[i]->queue, false, err);
        if (rc < 0)
            goto out;
    }
    /* MULTI/EXEC makes the batch all or none (Redis refuses the whole of it
     * when memory is full) at no extra round trip. */
    jp_buf_init(&buf, 0);
    if (tx)
        redisAppendCommand(c->ctx, "MULTI");
    for (size_t i = 0; i < n; i++) {
        const jp_job *job = jobs[i];
        char key[KEY_MAX], attempt[16];
        json_t *msg;

        jp_redis_stream_key(job->queue, job->priority, key, sizeof key);
        snprintf(attempt, sizeof attempt, "%d", job->attempts + 1);
        msg = jp_job_to_message(job, job->attempts + 1);
        buf.len = 0;
        json_dump_callback(msg, dump_to_buf, &buf, JSON_COMPACT);
        json_decref(msg);
        const char *argv[] = {"XADD", key, "*", "job_id", job->id, "attempt", attempt,
                              "job_data", buf.len ? buf.data : ""};
        size_t lens[] = {4, strlen(key), 1, 6, strlen(job->id), 7, strlen(attempt), 8, buf.len};
        redisAppendCommandArgv(c->ctx, 9, argv, lens);
    }
    jp_buf_done(&buf);
    if (tx)
        redisAppendCommand(c->ctx, "EXEC");
    rep = jp_xcalloc(nrep, sizeof *rep);
    rc = read_replies(r, c, rep, nrep, err);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < nrep && rc == 0; i++)
        if (is_error(rep[i]))
            rc = reply_err(&r->ep, rep[i], err);
    if (rc == 0 && tx) {
        const redisReply *ex = rep[nrep - 1];
        if (!is_array(ex, n)) {
            rc = unexpected(&r->ep, "EXEC", err);
        } else {
            for (size_t i = 0; i < n && rc == 0; i++)
                if (is_error(ex->element[i]))
                    rc = reply_err(&r->ep, ex->element[i], err);
        }
    }
    free_replies(rep, nrep);
out:
    free(rep);
    conn_put(r, c);
    return rc;
}

/* ---- pop ---- */

static uint64_t next_random(redisq *r)
{
    uint64_t z = atomic_fetch_add(&r->rng, 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The order in which to read a queue's streams: by priority, or in weighted
 * mode a draw without replacement with weights 8, 4, 2, 1, so emergency
 * dominates and low is never starved. */
static void stream_order(redisq *r, int order[JP_PRIO__COUNT])
{
    static const int weight[JP_PRIO__COUNT] = {8, 4, 2, 1};
    int left[JP_PRIO__COUNT] = {0, 1, 2, 3}, nleft = JP_PRIO__COUNT;
    uint64_t x;

    if (!atomic_load(&r->weighted)) {
        for (int i = 0; i < JP_PRIO__COUNT; i++)
            order[i] = i;
        return;
    }
    x = next_random(r);
    for (int i = 0; i < JP_PRIO__COUNT; i++) {
        int total = 0, k = 0, pick;
        for (int j = 0; j < nleft; j++)
            total += weight[left[j]];
        pick = (int)(x % (uint64_t)total);
        x /= (uint64_t)total;
        while (pick >= weight[left[k]])
            pick -= weight[left[k++]];
        order[i] = left[k];
        memmove(&left[k], &left[k + 1], (size_t)(nleft - k - 1) * sizeof *left);
        nleft--;
    }
}

static int load_script(redisq *r, conn *c, jp_err *err)
{
    redisReply *rep = NULL;
    const char *argv[] = {"SCRIPT", "LOAD", POP_SCRIPT};
    int rc = command_argv(r, c, 3, argv, NULL, &rep, err);
    if (rc < 0)
        return rc;
    if (is_error(rep))
        rc = reply_err(&r->ep, rep, err);
    else if (!is_string(rep) || rep->len != 40)
        rc = unexpected(&r->ep, "SCRIPT LOAD", err);
    else
        memcpy(c->sha, rep->str, 41);
    freeReplyObject(rep);
    return rc;
}

/* Reads up to `want` new messages of one queue into out[] in one round trip.
 * keys[] and last[] receive the streams read and, when nothing was ready,
 * their newest entry ids (for the blocking wait). */
static int pop_queue(redisq *r, conn *c, const char *queue, size_t want, jp_qmsg *out,
                     size_t *ret_n, char (*keys)[KEY_MAX], char (*last)[ENTRY_ID_MAX],
                     jp_err *err)
{
    redisReply *rep = NULL;
    int order[JP_PRIO__COUNT];
    char count[24];
    bool regrouped = false, reloaded = false;
    int rc;

    rc = ensure_groups(r, c, queue, false, err);
    if (rc < 0)
        return rc;
    stream_order(r, order);
    for (int i = 0; i < JP_PRIO__COUNT; i++) {
        jp_redis_stream_key(queue, order[i], keys[i], KEY_MAX);
        strcpy(last[i], "0-0");
    }
    snprintf(count, sizeof count, "%zu", want);
    for (;;) {
        if (!c->sha[0]) {
            rc = load_script(r, c, err);
            if (rc < 0)
                return rc;
        }
        const char *argv[] = {"EVALSHA", c->sha, "4", keys[0], keys[1], keys[2], keys[3],
                              GROUP, r->consumer, count};
        rc = command_argv(r, c, 10, argv, NULL, &rep, err);
        if (rc < 0)
            return rc;
        if (!is_error(rep))
            break;
        if (has_prefix(rep->str, "NOSCRIPT") && !reloaded) {
            reloaded = true;
            c->sha[0] = '\0';
        } else if (strstr(rep->str, "NOGROUP") && !regrouped) {
            regrouped = true;
            rc = ensure_groups(r, c, queue, true, err);
        } else {
            rc = reply_err(&r->ep, rep, err);
        }
        freeReplyObject(rep);
        rep = NULL;
        if (rc < 0)
            return rc;
    }
    if (!is_array(rep, 2) || !is_array(rep->element[1], 0)) {
        rc = unexpected(&r->ep, "the pop script", err);
        goto out;
    }
    *ret_n = msgs_from_streams(rep->element[0], out, want);
    for (size_t i = 0; i < rep->element[1]->elements && i < JP_PRIO__COUNT; i++) {
        const redisReply *id = rep->element[1]->element[i];
        if (is_string(id) && entry_id_valid(id->str, id->len))
            memcpy(last[i], id->str, id->len + 1);
    }
out:
    freeReplyObject(rep);
    return rc;
}

/* Blocks up to ms until a stream gets an entry newer than last[] — a wake-up
 * only: the entries are then taken by the pop script, in priority order,
 * so a blocked pop never takes more than it asked for. */
static int wait_for_entries(redisq *r, conn *c, char (*keys)[KEY_MAX],
                            char (*last)[ENTRY_ID_MAX], size_t nkeys, int ms, jp_err *err)
{
    const char **argv = jp_xmalloc((6 + 2 * nkeys) * sizeof *argv);
    redisReply *rep = NULL;
    char block[16];
    int argc = 0, rc;

    snprintf(block, sizeof block, "%d", ms > 0 ? ms : 1);
    argv[argc++] = "XREAD";
    argv[argc++] = "COUNT";
    argv[argc++] = "1";
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
    argv[argc++] = "STREAMS";
    for (size_t i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (size_t i = 0; i < nkeys; i++)
        argv[argc++] = last[i];
    set_timeout(c->ctx, ms + COMMAND_TIMEOUT_MS);
    rc = command_argv(r, c, argc, argv, NULL, &rep, err);
    if (rc == 0) {
        set_timeout(c->ctx, COMMAND_TIMEOUT_MS);
        if (is_error(rep))
            rc = reply_err(&r->ep, rep, err);
        freeReplyObject(rep);
    }
    free(argv);
    return rc;
}

static int rq_pop(jp_queue *q, const char *const *queues, size_t max, int timeout_ms,
                  jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    redisq *r = (redisq *)q;
    char (*keys)[KEY_MAX] = NULL;
    char (*last)[ENTRY_ID_MAX] = NULL;
    int64_t deadline = timeout_ms > 0 ? jp_mono_ms() + timeout_ms : 0;
    size_t nq = 0, got = 0;
    int rc;

    if (!r->consumer)
        return jp_err_set(err, JP_EINVAL, "reading a Redis queue needs a consumer name");
    rc = check_queues(queues, &nq, err);
    if (rc < 0)
        return rc;
    if (max == 0) {
        *ret_n = 0;
        return 0;
    }
    keys = jp_xmalloc(nq * JP_PRIO__COUNT * sizeof *keys);
    last = jp_xmalloc(nq * JP_PRIO__COUNT * sizeof *last);
    for (;;) {
        /* The connection goes back to the pool between slices, so that
         * blocked pops never starve the pushes and acks of other threads. */
        conn *c = NULL;
        rc = conn_get(r, &c, err);
        if (rc < 0)
            break;
        for (size_t i = 0; i < nq && got < max; i++) {
            size_t k = 0;
            rc = pop_queue(r, c, queues[i], max - got, out + got, &k, keys + i * JP_PRIO__COUNT,
                           last + i * JP_PRIO__COUNT, err);
            if (rc < 0)
                break;
            got += k;
        }
        int slice = BLOCK_SLICE_MS;
        if (timeout_ms > 0) {
            int64_t left = deadline - jp_mono_ms();
            slice = left <= 0 ? 0 : left < slice ? (int)left : slice;
        }
        /* Messages already taken are this consumer's now: hand them over
         * even if a later queue failed, rather than strand them for a lease. */
        if (got || rc < 0 || timeout_ms == 0 || slice == 0 || atomic_load(&r->woken)) {
            conn_put(r, c);
            if (got)
                rc = 0;
            break;
        }
        rc = wait_for_entries(r, c, keys, last, nq * JP_PRIO__COUNT, slice, err);
        conn_put(r, c);
        if (rc < 0)
            break;
    }
    free(keys);
    free(last);
    if (rc < 0)
        return rc;
    *ret_n = got;
    return 0;
}

/* ---- ack, renew ---- */

static bool msg_addressable(const jp_qmsg *m)
{
    return m->priority >= 0 && m->priority < JP_PRIO__COUNT && jp_name_valid(m->queue) &&
           entry_id_valid(m->handle, strnlen(m->handle, sizeof m->handle));
}

/* Appends, per stream that msgs[] touch, the command
 * <name> <key> <mid…> <ids…> <tail…>; returns how many were appended. */
static size_t append_per_stream(conn *c, const jp_qmsg *msgs, size_t n, const char *name,
                                const char *const *mid, int nmid, const char *const *tail,
                                int ntail)
{
    const char **argv = jp_xmalloc((n + (size_t)nmid + (size_t)ntail + 2) * sizeof *argv);
    bool *done = jp_xcalloc(n ? n : 1, sizeof *done);
    size_t cmds = 0;
    char key[KEY_MAX];

    for (size_t i = 0; i < n; i++) {
        int argc = 0;
        if (done[i] || !msg_addressable(&msgs[i]))
            continue;
        jp_redis_stream_key(msgs[i].queue, msgs[i].priority, key, sizeof key);
        argv[argc++] = name;
        argv[argc++] = key;
        for (int k = 0; k < nmid; k++)
            argv[argc++] = mid[k];
        for (size_t j = i; j < n; j++) {
            if (done[j] || msgs[j].priority != msgs[i].priority ||
                strcmp(msgs[j].queue, msgs[i].queue) != 0 || !msg_addressable(&msgs[j]))
                continue;
            done[j] = true;
            argv[argc++] = msgs[j].handle;
        }
        for (int k = 0; k < ntail; k++)
            argv[argc++] = tail[k];
        redisAppendCommandArgv(c->ctx, argc, argv, NULL);
        cmds++;
    }
    free(done);
    free(argv);
    return cmds;
}

/* Sends what was appended and checks the replies; NOGROUP is no failure
 * when `nogroup_ok` (the message is gone with the data Redis lost). */
static int finish_pipeline(redisq *r, conn *c, size_t ncmds, bool nogroup_ok, jp_err *err)
{
    redisReply **rep = jp_xcalloc(ncmds ? ncmds : 1, sizeof *rep);
    int rc = read_replies(r, c, rep, ncmds, err);
    for (size_t i = 0; i < ncmds && rc == 0; i++)
        if (is_error(rep[i]) && !(nogroup_ok && has_prefix(rep[i]->str, "NOGROUP")))
            rc = reply_err(&r->ep, rep[i], err);
    free_replies(rep, ncmds);
    free(rep);
    return rc;
}

static int rq_ack(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err)
{
    redisq *r = (redisq *)q;
    static const char *const group[] = {GROUP};
    conn *c = NULL;
    size_t ncmds;
    int rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    /* XDEL only after XACK, never by length: an entry leaves the stream
     * once its job is done. */
    ncmds = append_per_stream(c, msgs, n, "XACK", group, 1, NULL, 0);
    ncmds += append_per_stream(c, msgs, n, "XDEL", NULL, 0, NULL, 0);
    rc = finish_pipeline(r, c, ncmds, true, err);
    conn_put(r, c);
    return rc;
}

static int rq_renew(jp_queue *q, const jp_qmsg *msgs, size_t n, jp_err *err)
{
    redisq *r = (redisq *)q;
    static const char *const tail[] = {"JUSTID"};
    conn *c = NULL;
    size_t ncmds;
    int rc;

    if (!r->consumer)
        return jp_err_set(err, JP_EINVAL, "renewing a lease needs a consumer name");
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    /* JUSTID resets the idle time without counting a delivery; ids no
     * longer pending (acknowledged, deleted) are skipped by Redis. */
    const char *mid[] = {GROUP, r->consumer, "0"};
    ncmds = append_per_stream(c, msgs, n, "XCLAIM", mid, 3, tail, 1);
    rc = finish_pipeline(r, c, ncmds, true, err);
    conn_put(r, c);
    return rc;
}

/* ---- reclaim ---- */

/* Takes over up to `want` messages of one stream idle past the lease. */
static int reclaim_stream(redisq *r, conn *c, const char *queue, int prio, size_t want,
                          jp_qmsg *out, size_t *ret_n, jp_err *err)
{
    char key[KEY_MAX], cursor[ENTRY_ID_MAX], lease[24], count[24];
    redisReply *rep = NULL, **prep = NULL;
    size_t got = 0;
    int rc = 0;

    jp_redis_stream_key(queue, prio, key, sizeof key);
    snprintf(lease, sizeof lease, "%lld", (long long)r->lease_ms);
    get_cursor(r, queue, prio, cursor);
    for (int round = 0; round < RECLAIM_ROUNDS && got < want; round++) {
        snprintf(count, sizeof count, "%zu", want - got);
        const char *argv[] = {"XAUTOCLAIM", key, GROUP, r->consumer, lease, cursor, "COUNT", count};
        rc = command_argv(r, c, 8, argv, NULL, &rep, err);
        if (rc < 0)
            break;
        if (is_error(rep)) {
            /* The stream or group is gone: so is everything it held. */
            if (has_prefix(rep->str, "NOGROUP")) {
                rc = ensure_groups(r, c, queue, true, err);
                strcpy(cursor, "0-0");
            }
            else
                rc = reply_err(&r->ep, rep, err);
            break;
        }
        if (!is_array(rep, 2) || !is_string(rep->element[0]) ||
            !is_array(rep->element[1], 0) || rep->element[0]->len >= sizeof cursor) {
            rc = unexpected(&r->ep, "XAUTOCLAIM", err);
            break;
        }
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len + 1);
        const redisReply *entries = rep->element[1];
        size_t nent = entries->elements, npend = 0, nbad = 0;
        const char **bad = jp_xmalloc((nent + 3) * sizeof *bad);
        bad[nbad++] = "XACK";
        bad[nbad++] = key;
        bad[nbad++] = GROUP;
        /* A delivered entry deleted since comes back without fields (Redis
         * 6.2; 7 drops it from the pending list itself): acknowledge it. */
        for (size_t i = 0; i < nent; i++) {
            const redisReply *e = entries->element[i];
            if (!is_array(e, 2) || !is_string(e->element[0]) ||
                !entry_id_valid(e->element[0]->str, e->element[0]->len))
                continue;
            if (e->element[1]->type != REDIS_REPLY_ARRAY) {
                bad[nbad++] = e->element[0]->str;
                continue;
            }
            const char *pargv[] = {"XPENDING", key, GROUP, "IDLE", "0",
                                   e->element[0]->str, e->element[0]->str, "1"};
            redisAppendCommandArgv(c->ctx, 8, pargv, NULL);
            npend++;
        }
        size_t nextra = 0;
        if (nbad > 3) {
            redisAppendCommandArgv(c->ctx, (int)nbad, bad, NULL);
            bad[1] = "XDEL";  /* reuse: XDEL key ids… */
            bad[2] = key;
            redisAppendCommandArgv(c->ctx, (int)nbad - 1, bad + 1, NULL);
            bad[1] = key;
            nextra = 2;
        }
        prep = jp_xcalloc(npend + nextra + 1, sizeof *prep);
        rc = npend + nextra ? read_replies(r, c, prep, npend + nextra, err) : 0;
        if (rc == 0) {
            size_t pi = 0;
            for (size_t i = 0; i < nent && got < want; i++) {
                const redisReply *e = entries->element[i];
                if (!is_array(e, 2) || !is_string(e->element[0]) ||
                    !entry_id_valid(e->element[0]->str, e->element[0]->len) ||
                    e->element[1]->type != REDIS_REPLY_ARRAY)
                    continue;
                const redisReply *p = prep[pi++];
                /* [[id, consumer, idle, deliveries]]; empty when it was
                 * acknowledged in the meantime: then its job is done. */
                if (!is_array(p, 1) || !is_array(p->element[0], 4) ||
                    p->element[0]->element[3]->type != REDIS_REPLY_INTEGER)
                    continue;
                long long deliveries = p->element[0]->element[3]->integer;
                if (!entry_to_msg(queue, prio, e, &out[got]))
                    continue;
                if (out[got].attempt > 0 && deliveries > 1 && deliveries < INT_MAX / 2)
                    out[got].attempt += (int)(deliveries - 1);
                got++;
            }
            free_replies(prep, npend + nextra);
        }
        free(prep);
        prep = NULL;
        free(bad);
        freeReplyObject(rep);
        rep = NULL;
        if (rc < 0 || strcmp(cursor, "0-0") == 0)
            break;
    }
    freeReplyObject(rep);
    if (rc == 0)
        set_cursor(r, queue, prio, cursor);
    /* What was taken over is ours now: report it even after a later error. */
    if (got) {
        *ret_n = got;
        return 0;
    }
    if (rc == 0)
        *ret_n = 0;
    return rc;
}

static int rq_reclaim(jp_queue *q, const char *const *queues, size_t max, jp_qmsg *out,
                      size_t *ret_n, jp_err *err)
{
    redisq *r = (redisq *)q;
    conn *c = NULL;
    size_t nq = 0, got = 0;
    int rc;

    if (!r->consumer)
        return jp_err_set(err, JP_EINVAL, "reclaiming needs a consumer name");
    rc = check_queues(queues, &nq, err);
    if (rc < 0)
        return rc;
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < nq && got < max && rc == 0; i++) {
        rc = ensure_groups(r, c, queues[i], false, err);
        for (int p = 0; p < JP_PRIO__COUNT && got < max && rc == 0; p++) {
            size_t k = 0;
            rc = reclaim_stream(r, c, queues[i], p, max - got, out + got, &k, err);
            got += k;
        }
    }
    conn_put(r, c);
    if (got)
        rc = 0;
    if (rc < 0)
        return rc;
    *ret_n = got;
    return 0;
}

/* ---- ping, wake, stats ---- */

static int rq_ping(jp_queue *q, jp_err *err)
{
    redisq *r = (redisq *)q;
    int rc = 0;
    /* A second try on a fresh connection: a pooled one may predate a
     * Redis restart. */
    for (int attempt = 0; attempt < 2; attempt++) {
        conn *c = NULL;
        redisReply *rep = NULL;
        const char *argv[] = {"PING"};
        rc = conn_get(r, &c, err);
        if (rc < 0)
            return rc;
        rc = command_argv(r, c, 1, argv, NULL, &rep, err);
        if (rc == 0) {
            if (is_error(rep))
                rc = reply_err(&r->ep, rep, err);
            freeReplyObject(rep);
        }
        conn_put(r, c);
        if (rc != JP_EUNAVAIL)
            break;
    }
    return rc;
}

static void rq_wake(jp_queue *q)
{
    atomic_store(&((redisq *)q)->woken, true);
}

/* Every key matching `pattern` of `type`, as a set ({key: true}). */
static int scan_keys(redisq *r, conn *c, const char *pattern, const char *type, json_t **ret,
                     jp_err *err)
{
    json_t *set = json_object();
    char cursor[32] = "0";
    int rc = 0;

    do {
        redisReply *rep = NULL;
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "TYPE", type, "COUNT", "1000"};
        rc = command_argv(r, c, 8, argv, NULL, &rep, err);
        if (rc < 0)
            break;
        if (is_error(rep)) {
            rc = reply_err(&r->ep, rep, err);
        } else if (!is_array(rep, 2) || !is_string(rep->element[0]) ||
                   rep->element[0]->len >= sizeof cursor || !is_array(rep->element[1], 0)) {
            rc = unexpected(&r->ep, "SCAN", err);
        } else {
            memcpy(cursor, rep->element[0]->str, rep->element[0]->len + 1);
            for (size_t i = 0; i < rep->element[1]->elements; i++) {
                const redisReply *k = rep->element[1]->element[i];
                if (is_string(k) && k->len < 512)
                    json_object_set_new(set, k->str, json_true());
            }
        }
        freeReplyObject(rep);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    if (rc < 0) {
        json_decref(set);
        return rc;
    }
    *ret = set;
    return 0;
}

/* The value of `field` in a flat [field, value, …] reply, or NULL. */
static const redisReply *flat_get(const redisReply *a, const char *field)
{
    if (!is_array(a, 0))
        return NULL;
    for (size_t i = 0; i + 1 < a->elements; i += 2)
        if (is_string(a->element[i]) && strcmp(a->element[i]->str, field) == 0)
            return a->element[i + 1];
    return NULL;
}

typedef struct stream_stat {
    char queue[JP_NAME_MAX + 1];
    int prio;
    char key[KEY_MAX];
    long long length, pending;
    char start[ENTRY_ID_MAX];  /* XRANGE start of the first undelivered entry */
    long long oldest_ms;       /* its id's time, 0 if none */
} stream_stat;

static int rq_stats(jp_queue *q, json_t **ret_stats, jp_err *err)
{
    redisq *r = (redisq *)q;
    json_t *keys = NULL, *all = NULL;
    stream_stat *st = NULL;
    redisReply **rep = NULL;
    size_t n = 0, i = 0, nrange = 0;
    const char *k;
    json_t *v;
    conn *c = NULL;
    int rc;

    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    rc = scan_keys(r, c, "jobplane:{*}:*", "stream", &keys, err);
    if (rc < 0)
        goto out;
    st = jp_xcalloc(json_object_size(keys) + 1, sizeof *st);
    json_object_foreach(keys, k, v) {
        if (parse_stream_key(k, strlen(k), st[n].queue, &st[n].prio)) {
            snprintf(st[n].key, sizeof st[n].key, "%s", k);
            n++;
        }
    }
    rep = jp_xcalloc(2 * n + 1, sizeof *rep);
    for (i = 0; i < n; i++) {
        const char *a1[] = {"XINFO", "GROUPS", st[i].key};
        const char *a2[] = {"XLEN", st[i].key};
        redisAppendCommandArgv(c->ctx, 3, a1, NULL);
        redisAppendCommandArgv(c->ctx, 2, a2, NULL);
    }
    rc = read_replies(r, c, rep, 2 * n, err);
    if (rc < 0)
        goto out;
    for (i = 0; i < n; i++) {
        const redisReply *groups = rep[2 * i], *xlen = rep[2 * i + 1];
        const redisReply *g = NULL;
        long long len = xlen && xlen->type == REDIS_REPLY_INTEGER ? xlen->integer : 0;
        for (size_t j = 0; is_array(groups, 0) && j < groups->elements && !g; j++) {
            const redisReply *name = flat_get(groups->element[j], "name");
            if (is_string(name) && strcmp(name->str, GROUP) == 0)
                g = groups->element[j];
        }
        strcpy(st[i].start, "-");
        st[i].length = len;
        if (g) {
            const redisReply *pend = flat_get(g, "pending");
            const redisReply *lastid = flat_get(g, "last-delivered-id");
            st[i].pending = pend && pend->type == REDIS_REPLY_INTEGER ? pend->integer : 0;
            /* Waiting entries are those neither delivered nor deleted, since
             * acknowledged entries are deleted at once. The group's "lag"
             * is not used: it still counts entries deleted before delivery. */
            st[i].length = len - st[i].pending;
            if (is_string(lastid) && entry_id_valid(lastid->str, lastid->len))
                snprintf(st[i].start, sizeof st[i].start, "(%s", lastid->str);
        }
        if (st[i].length < 0)
            st[i].length = 0;
    }
    free_replies(rep, 2 * n);
    for (i = 0; i < n; i++) {
        if (st[i].length > 0) {
            const char *argv[] = {"XRANGE", st[i].key, st[i].start, "+", "COUNT", "1"};
            redisAppendCommandArgv(c->ctx, 6, argv, NULL);
            nrange++;
        }
    }
    rc = read_replies(r, c, rep, nrange, err);
    if (rc < 0)
        goto out;
    size_t ri = 0;
    for (i = 0; i < n; i++) {
        if (st[i].length <= 0)
            continue;
        const redisReply *e = rep[ri++];
        if (is_array(e, 1) && is_array(e->element[0], 1) && is_string(e->element[0]->element[0]))
            st[i].oldest_ms = strtoll(e->element[0]->element[0]->str, NULL, 10);
    }
    free_replies(rep, nrange);
    all = json_object();
    int64_t now = jp_now_ms();
    for (i = 0; i < n; i++) {
        if (st[i].length <= 0 && st[i].pending <= 0)
            continue;
        json_t *per = json_object_get(all, st[i].queue);
        if (!per) {
            per = json_object();
            json_object_set_new(all, st[i].queue, per);
        }
        int64_t age = st[i].oldest_ms ? now - st[i].oldest_ms : 0;
        json_object_set_new(per, jp_priority_name(st[i].prio),
                            json_pack("{s:I,s:I,s:I}", "length", (json_int_t)st[i].length,
                                      "pending", (json_int_t)st[i].pending, "oldest_age_ms",
                                      (json_int_t)(age > 0 ? age : 0)));
    }
    *ret_stats = all;
out:
    conn_put(r, c);
    free(rep);
    free(st);
    json_decref(keys);
    return rc;
}

/* ---- open, free ---- */

static void rq_free(jp_queue *q)
{
    redisq *r = (redisq *)q;
    for (int i = 0; i < r->nconns; i++)
        if (r->conns[i].ctx)
            redisFree(r->conns[i].ctx);
    free(r->conns);
    free(r->known);
    free(r->consumer);
    endpoint_done(&r->ep);
    pthread_cond_destroy(&r->pool_cv);
    pthread_mutex_destroy(&r->pool_mu);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->epoch_mu);
    free(r);
}

static const jp_queue_ops redis_ops = {
    .abi = 1,
    .name = "redis",
    .push = rq_push,
    .pop = rq_pop,
    .ack = rq_ack,
    .renew = rq_renew,
    .reclaim = rq_reclaim,
    .ping = rq_ping,
    .wake = rq_wake,
    .stats = rq_stats,
    .free = rq_free,
};

/* Refuses a Redis that may evict keys: it would silently drop queued jobs. */
static int check_server(redisq *r, bool allow_evicting, jp_err *err)
{
    redisReply *rep[2] = {NULL, NULL};
    conn *c = NULL;
    int rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    redisAppendCommand(c->ctx, "PING");
    redisAppendCommand(c->ctx, "CONFIG GET maxmemory-policy");
    rc = read_replies(r, c, rep, 2, err);
    if (rc < 0)
        goto out;
    if (is_error(rep[0])) {
        rc = reply_err(&r->ep, rep[0], err);
    } else if (!allow_evicting && is_array(rep[1], 2) && is_string(rep[1]->element[1]) &&
               strcmp(rep[1]->element[1]->str, "noeviction") != 0) {
        /* An error reply (CONFIG disabled or renamed) leaves nothing to check. */
        rc = jp_err_set(err, JP_EINVAL,
                        "Redis maxmemory-policy is %.40s: it may evict queued jobs; set it to "
                        "noeviction or pass --allow-evicting-redis",
                        rep[1]->element[1]->str);
    }
    free_replies(rep, 2);
out:
    conn_put(r, c);
    return rc;
}

int jp_queue_redis_open(const char *url, const jp_queue_options *opts, jp_queue **ret_queue,
                        jp_err *err)
{
    jp_queue_options none = {0};
    redisq *r;
    pthread_condattr_t ca;
    int rc;

    if (!opts)
        opts = &none;
    if (opts->consumer && (!opts->consumer[0] || strlen(opts->consumer) > JP_WORKER_ID_MAX))
        return jp_err_set(err, JP_EINVAL, "consumer name must be 1 to %d characters",
                          JP_WORKER_ID_MAX);
    r = jp_xcalloc(1, sizeof *r);
    rc = parse_url(url, &r->ep, err);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->base.ops = &redis_ops;
    r->consumer = jp_xstrdup(opts->consumer);
    r->lease_ms = opts->lease_ms > 0 ? opts->lease_ms : DEFAULT_LEASE_MS;
    r->nconns = opts->pool_size > 0 ? opts->pool_size : DEFAULT_POOL;
    if (r->nconns > MAX_POOL)
        r->nconns = MAX_POOL;
    r->conns = jp_xcalloc((size_t)r->nconns, sizeof *r->conns);
    pthread_mutex_init(&r->pool_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->pool_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->epoch_mu, NULL);
    atomic_init(&r->woken, false);
    atomic_init(&r->weighted, false);
    atomic_init(&r->rng, (uint64_t)jp_now_ms() ^ ((uint64_t)(uintptr_t)r << 16) ^
                             (uint64_t)getpid());
    rc = check_server(r, opts->allow_evicting, err);
    if (rc < 0) {
        rq_free(&r->base);
        return rc;
    }
    *ret_queue = &r->base;
    return 0;
}

static redisq *as_redis(jp_queue *q)
{
    return q && q->ops == &redis_ops ? (redisq *)q : NULL;
}

void jp_redis_set_weighted(jp_queue *q, bool on)
{
    redisq *r = as_redis(q);
    if (r)
        atomic_store(&r->weighted, on);
}

#define REDIS_OR_FAIL(r, q, err)                                                     \
    do {                                                                             \
        if (!((r) = as_redis(q)))                                                    \
            return jp_err_set((err), JP_EINVAL, "this needs a Redis queue (redis://)"); \
    } while (0)

/* ---- presence ---- */

static bool worker_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 0 && n <= JP_WORKER_ID_MAX;
}

/* A presence value as text; NULL for members presence does not store. */
static char *presence_value(const json_t *v)
{
    if (json_is_string(v))
        return jp_xstrndup(json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        return jp_xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_real(v))
        return jp_xasprintf("%.17g", json_real_value(v));
    if (json_is_array(v)) {
        jp_buf b;
        size_t i;
        json_t *e;
        jp_buf_init(&b, 0);
        json_array_foreach(v, i, e) {
            char *s = json_is_array(e) ? NULL : presence_value(e);
            if (!s)
                continue;
            if (b.len)
                jp_buf_append(&b, ",", 1);
            jp_buf_append(&b, s, strlen(s));
            free(s);
        }
        return jp_buf_steal(&b);
    }
    return NULL;
}

int jp_redis_presence_set(jp_queue *q, const char *worker_id, const json_t *fields, int ttl_s,
                          jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    size_t cap = 4 + 2 * json_object_size(fields), argc = 0, nown = 0;
    const char **argv;
    char **own;
    char key[sizeof WORKER_PREFIX + JP_WORKER_ID_MAX], ttl[16];
    const char *name;
    json_t *v;
    conn *c = NULL;
    int rc;

    if (!worker_id_valid(worker_id))
        return jp_err_set(err, JP_EINVAL, "worker id must be 1 to %d characters", JP_WORKER_ID_MAX);
    if (ttl_s <= 0)
        return jp_err_set(err, JP_EINVAL, "presence TTL must be positive");
    snprintf(key, sizeof key, WORKER_PREFIX "%s", worker_id);
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    argv = jp_xmalloc(cap * sizeof *argv);
    own = jp_xmalloc(cap * sizeof *own);
    argv[argc++] = "HSET";
    argv[argc++] = key;
    argv[argc++] = "id";
    argv[argc++] = worker_id;
    json_object_foreach((json_t *)fields, name, v) {
        char *s;
        if (strcmp(name, "id") == 0 || !(s = presence_value(v)))
            continue;
        own[nown++] = s;
        argv[argc++] = name;
        argv[argc++] = s;
    }
    rc = conn_get(r, &c, err);
    if (rc == 0) {
        const char *exp[] = {"EXPIRE", key, ttl};
        redisAppendCommandArgv(c->ctx, (int)argc, argv, NULL);
        redisAppendCommandArgv(c->ctx, 3, exp, NULL);
        rc = finish_pipeline(r, c, 2, false, err);
        conn_put(r, c);
    }
    for (size_t i = 0; i < nown; i++)
        free(own[i]);
    free(own);
    free(argv);
    return rc;
}

int jp_redis_presence_del(jp_queue *q, const char *worker_id, jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    char key[sizeof WORKER_PREFIX + JP_WORKER_ID_MAX];
    conn *c = NULL;
    int rc;

    if (!worker_id_valid(worker_id))
        return jp_err_set(err, JP_EINVAL, "worker id must be 1 to %d characters", JP_WORKER_ID_MAX);
    snprintf(key, sizeof key, WORKER_PREFIX "%s", worker_id);
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    const char *argv[] = {"DEL", key};
    redisAppendCommandArgv(c->ctx, 2, argv, NULL);
    rc = finish_pipeline(r, c, 1, false, err);
    conn_put(r, c);
    return rc;
}

static bool decimal_integer(const char *s, size_t n, json_int_t *ret)
{
    size_t i = s[0] == '-' ? 1 : 0;
    if (n == i || n - i > 18)
        return false;
    for (size_t k = i; k < n; k++)
        if (s[k] < '0' || s[k] > '9')
            return false;
    *ret = strtoll(s, NULL, 10);
    return true;
}

static json_t *split_list(const char *s, size_t n)
{
    json_t *a = json_array();
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',')
            continue;
        if (i > start) {
            json_t *e = json_stringn(s + start, i - start);
            if (e)
                json_array_append_new(a, e);
        }
        start = i + 1;
    }
    return a;
}

static json_t *worker_from_hash(const char *id, const redisReply *h)
{
    json_t *jid = json_string(id), *o;
    if (!jid)
        return NULL;  /* not UTF-8: no id to show it under */
    o = json_object();
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        json_int_t num;
        json_t *jv;
        if (!is_string(f) || !is_string(v) || strlen(f->str) != f->len)
            continue;
        if (strcmp(f->str, "queues") == 0 || strcmp(f->str, "strategies") == 0)
            jv = split_list(v->str, v->len);
        else if (decimal_integer(v->str, v->len, &num))
            jv = json_integer(num);
        else
            jv = json_stringn(v->str, v->len);
        if (jv)
            json_object_set_new(o, f->str, jv);
    }
    json_object_set_new(o, "id", jid);
    return o;
}

static int cmp_worker(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "id")),
                  json_string_value(json_object_get(y, "id")));
}

int jp_redis_workers(jp_queue *q, json_t **ret_workers, jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    json_t *keys = NULL, **objs = NULL, *out;
    redisReply **rep = NULL;
    const char **ids = NULL;
    size_t n = 0, nobj = 0;
    const char *k;
    json_t *v;
    conn *c = NULL;
    int rc;

    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    rc = scan_keys(r, c, WORKER_PREFIX "*", "hash", &keys, err);
    if (rc < 0)
        goto out;
    ids = jp_xcalloc(json_object_size(keys) + 1, sizeof *ids);
    json_object_foreach(keys, k, v) {
        const char *id = k + strlen(WORKER_PREFIX);
        if (!worker_id_valid(id))
            continue;
        const char *argv[] = {"HGETALL", k};
        redisAppendCommandArgv(c->ctx, 2, argv, NULL);
        ids[n++] = id;
    }
    rep = jp_xcalloc(n + 1, sizeof *rep);
    rc = read_replies(r, c, rep, n, err);
    if (rc < 0)
        goto out;
    objs = jp_xcalloc(n + 1, sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        /* Empty: it expired between SCAN and HGETALL. */
        if (is_array(rep[i], 2) && (objs[nobj] = worker_from_hash(ids[i], rep[i])))
            nobj++;
    }
    free_replies(rep, n);
    qsort(objs, nobj, sizeof *objs, cmp_worker);
    out = json_array();
    for (size_t i = 0; i < nobj; i++)
        json_array_append_new(out, objs[i]);
    *ret_workers = out;
out:
    conn_put(r, c);
    free(objs);
    free(rep);
    free(ids);
    json_decref(keys);
    return rc;
}

/* ---- cancel channel ---- */

int jp_redis_publish_cancel(jp_queue *q, const char *job_id, jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    conn *c = NULL;
    int rc;

    if (!job_id || !job_id[0] || strlen(job_id) > CANCEL_ID_MAX)
        return jp_err_set(err, JP_EINVAL, "bad job id to cancel");
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    const char *argv[] = {"PUBLISH", CANCEL_CHANNEL, job_id};
    redisAppendCommandArgv(c->ctx, 3, argv, NULL);
    rc = finish_pipeline(r, c, 1, false, err);
    conn_put(r, c);
    return rc;
}

struct jp_redis_sub {
    endpoint ep;
    jp_cancel_fn fn;
    void *arg;
    redisContext *ctx;  /* subscribed connection, or NULL while reconnecting */
    int stop_pipe[2];   /* a byte on [1] stops the thread at once */
    pthread_t thread;
};

static int sub_connect(jp_redis_sub *s, jp_err *err)
{
    redisContext *ctx = NULL;
    void *x = NULL;
    int rc = connect_endpoint(&s->ep, &ctx, err);
    if (rc < 0)
        return rc;
    const char *argv[] = {"SUBSCRIBE", CANCEL_CHANNEL};
    redisAppendCommandArgv(ctx, 2, argv, NULL);
    if (redisGetReply(ctx, &x) != REDIS_OK || !x) {
        rc = jp_err_set(err, JP_EUNAVAIL, "redis %s: %s", s->ep.addr, ctx->errstr);
        redisFree(ctx);
        return rc;
    }
    if (is_error(x)) {
        rc = reply_err(&s->ep, x, err);
        freeReplyObject(x);
        redisFree(ctx);
        return rc;
    }
    freeReplyObject(x);
    s->ctx = ctx;
    return 0;
}

static void sub_drop(jp_redis_sub *s)
{
    if (s->ctx)
        redisFree(s->ctx);
    s->ctx = NULL;
}

/* Waits up to ms for the stop byte; true when it came. */
static bool sub_stopped(jp_redis_sub *s, int ms)
{
    struct pollfd p = {.fd = s->stop_pipe[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static void sub_deliver(jp_redis_sub *s, const redisReply *m)
{
    /* ["message", channel, payload] */
    if (!is_array(m, 3) || !is_string(m->element[0]) || strcmp(m->element[0]->str, "message") != 0)
        return;
    const redisReply *id = m->element[2];
    if (is_string(id) && id->len > 0 && id->len <= CANCEL_ID_MAX && strlen(id->str) == id->len)
        s->fn(s->arg, id->str);
}

static void *sub_main(void *arg)
{
    jp_redis_sub *s = arg;
    for (;;) {
        if (!s->ctx && sub_connect(s, NULL) < 0) {
            if (sub_stopped(s, SUB_RETRY_MS))
                break;
            continue;
        }
        void *x = NULL;
        if (redisGetReplyFromReader(s->ctx, &x) != REDIS_OK) {
            sub_drop(s);
            continue;
        }
        if (x) {
            sub_deliver(s, x);
            freeReplyObject(x);
            continue;
        }
        /* Wait for data or the stop byte; nothing is read from the socket
         * until it is readable, so no read ever times out. */
        struct pollfd p[2] = {{.fd = s->ctx->fd, .events = POLLIN},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR) {
            sub_drop(s);
            continue;
        }
        if (p[1].revents)
            break;
        if (p[0].revents && redisBufferRead(s->ctx) != REDIS_OK) {
            sub_drop(s);
            /* Redis went away: pause before the first reconnect. */
            if (sub_stopped(s, SUB_RETRY_MS))
                break;
        }
    }
    return NULL;
}

int jp_redis_cancel_subscribe(const char *url, jp_cancel_fn fn, void *arg, jp_redis_sub **ret,
                              jp_err *err)
{
    jp_redis_sub *s;
    int rc;

    if (!fn)
        return jp_err_set(err, JP_EINVAL, "no cancel callback");
    s = jp_xcalloc(1, sizeof *s);
    rc = parse_url(url, &s->ep, err);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->fn = fn;
    s->arg = arg;
    if (pipe2(s->stop_pipe, O_CLOEXEC) != 0) {
        rc = jp_err_set(err, JP_EINTERNAL, "pipe: %s", strerror(errno));
        endpoint_done(&s->ep);
        free(s);
        return rc;
    }
    /* Subscribed before returning when Redis is up, so that nothing
     * published after this call is missed; else the thread keeps trying. */
    sub_connect(s, NULL);
    rc = pthread_create(&s->thread, NULL, sub_main, s);
    if (rc != 0) {
        rc = jp_err_set(err, JP_EINTERNAL, "cannot start the cancel subscriber: %s", strerror(rc));
        sub_drop(s);
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
        endpoint_done(&s->ep);
        free(s);
        return rc;
    }
    *ret = s;
    return 0;
}

void jp_redis_cancel_unsubscribe(jp_redis_sub *s)
{
    if (!s)
        return;
    ssize_t w;
    do
        w = write(s->stop_pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->thread, NULL);
    sub_drop(s);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    endpoint_done(&s->ep);
    free(s);
}

/* ---- reconciler views ---- */

int jp_redis_stream_job_ids(jp_queue *q, const char *queue, int priority, size_t limit,
                            json_t **ret_ids, bool *ret_complete, jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    char key[KEY_MAX], start[sizeof ((jp_qmsg *)0)->handle + 1] = "-", count[24];
    json_t *ids;
    size_t read = 0;
    bool complete = false;
    conn *c = NULL;
    int rc;

    if (!queue || !jp_name_valid(queue))
        return jp_err_set(err, JP_EINVAL, "bad queue name");
    if (priority < 0 || priority >= JP_PRIO__COUNT)
        return jp_err_set(err, JP_EINVAL, "bad priority %d", priority);
    jp_redis_stream_key(queue, priority, key, sizeof key);
    rc = conn_get(r, &c, err);
    if (rc < 0)
        return rc;
    ids = json_object();
    for (;;) {
        /* At the limit, one more entry tells whether that was all. */
        size_t page = limit - read > RANGE_PAGE ? RANGE_PAGE : limit - read;
        redisReply *rep = NULL;
        snprintf(count, sizeof count, "%zu", page ? page : 1);
        const char *argv[] = {"XRANGE", key, start, "+", "COUNT", count};
        rc = command_argv(r, c, 6, argv, NULL, &rep, err);
        if (rc < 0)
            break;
        if (is_error(rep)) {
            rc = reply_err(&r->ep, rep, err);
        } else if (!is_array(rep, 0)) {
            rc = unexpected(&r->ep, "XRANGE", err);
        } else if (page == 0) {
            complete = rep->elements == 0;
        } else {
            for (size_t i = 0; i < rep->elements; i++) {
                jp_qmsg m;
                if (!entry_to_msg(queue, priority, rep->element[i], &m))
                    continue;
                if (m.job_id[0])
                    json_object_set_new(ids, m.job_id, json_true());
                json_decref(m.data);
                snprintf(start, sizeof start, "(%s", m.handle);
            }
            read += rep->elements;
            complete = rep->elements < page;
        }
        size_t got = rep && rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0;
        freeReplyObject(rep);
        if (rc < 0 || page == 0 || got < page)
            break;
    }
    conn_put(r, c);
    if (rc < 0) {
        json_decref(ids);
        return rc;
    }
    *ret_ids = ids;
    *ret_complete = complete;
    return 0;
}

int jp_redis_epoch_check(jp_queue *q, jp_err *err)
{
    redisq *r;
    REDIS_OR_FAIL(r, q, err);
    char token[EPOCH_MAX + 1];
    redisReply *rep[2] = {NULL, NULL};
    conn *c = NULL;
    int rc, lost = 0;

    pthread_mutex_lock(&r->epoch_mu);
    rc = conn_get(r, &c, err);
    if (rc < 0)
        goto out;
    /* SET NX then GET: after it, the key holds the marker everyone adopts.
     * A fresh marker each time, so that peers notice a loss too. */
    jp_uuid7(token);
    const char *set[] = {"SET", EPOCH_KEY, token, "NX"};
    const char *get[] = {"GET", EPOCH_KEY};
    redisAppendCommandArgv(c->ctx, 4, set, NULL);
    redisAppendCommandArgv(c->ctx, 2, get, NULL);
    rc = read_replies(r, c, rep, 2, err);
    if (rc < 0)
        goto out;
    if (is_error(rep[0]) || is_error(rep[1])) {
        rc = reply_err(&r->ep, is_error(rep[0]) ? rep[0] : rep[1], err);
    } else if (rep[1]->type != REDIS_REPLY_STRING || rep[1]->len == 0 ||
               rep[1]->len > EPOCH_MAX || strlen(rep[1]->str) != rep[1]->len) {
        rc = unexpected(&r->ep, "GET " EPOCH_KEY, err);
    } else if (r->epoch[0]) {
        /* Ours gone: set again by us (the SET succeeded) or by a peer. */
        lost = strcmp(rep[1]->str, r->epoch) != 0 || rep[0]->type != REDIS_REPLY_NIL;
        memcpy(r->epoch, rep[1]->str, rep[1]->len + 1);
    } else {
        memcpy(r->epoch, rep[1]->str, rep[1]->len + 1);
    }
    free_replies(rep, 2);
out:
    if (c)
        conn_put(r, c);
    pthread_mutex_unlock(&r->epoch_mu);
    return rc < 0 ? rc : lost;
}
