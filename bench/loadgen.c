/* Benchmark load generator: HTTP/1.1 keep-alive over raw loopback sockets,
 * many connections multiplexed by one epoll thread, so the client costs far
 * less CPU than the server it measures. Prints one JSON object per run. */
#include "core/mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_RESP_BYTES (64 * 1024 * 1024)
#define MAX_SAMPLES (20 * 1000 * 1000)
#define RECONNECT_DELAY_NS (10 * 1000 * 1000LL)
#define DRAIN_GRACE_NS (10 * 1000 * 1000 * 1000LL)
#define JOB_TIMEOUT_NS (30 * 1000 * 1000 * 1000LL)
#define LONG_POLL_WAIT_MS 5000
#define NS_PER_S 1000000000LL

/* What the whole run was asked to do. */
typedef struct opts {
    const char *mode;
    struct sockaddr_in addr;
    char host[64];        /* Host header value */
    char prefix[256];     /* path prefix from the URL, without a trailing slash */
    const char *token;    /* bearer token, or NULL */
    int connections;
    double duration_s;    /* enqueue: how long to send */
    double rate;          /* enqueue: requests per second; 0 = as fast as possible */
    long batch;           /* batch: jobs per request */
    long total;           /* batch: jobs in all */
    long count;           /* latency: jobs measured */
    double max_seconds;   /* latency: give up after this long */
    const char *strategy;
    bool no_long_poll;
} opts;

/* One response, once its head has been read. */
typedef struct resp {
    int status;
    size_t head_len;  /* bytes up to and including the blank line */
    size_t body_len;  /* from Content-Length */
    bool close;       /* the server will close after it */
} resp;

typedef enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY } cstate;

typedef struct conn {
    int fd;
    cstate state;
    const char *out;   /* request being sent (not owned) */
    size_t out_len;
    size_t out_off;
    char *in;          /* response bytes so far */
    size_t in_len;
    size_t in_cap;
    bool have_head;
    resp r;
    int64_t sent_ns;   /* when the current request went out */
    long tag;          /* jobs in the current request (batch) */
    int64_t retry_ns;  /* C_DOWN: reconnect not before this */
    bool want_out;     /* EPOLLOUT registered */
} conn;

/* Latency samples, in ns. */
typedef struct samples {
    int64_t *v;
    size_t n;
    size_t cap;
} samples;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void samples_add(samples *s, int64_t v)
{
    if (s->n == MAX_SAMPLES)
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = jp_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = v;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in ms. */
static double pct_ms(const samples *s, double q)
{
    if (s->n == 0)
        return 0.0;
    size_t rank = (size_t)(q * (double)s->n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return (double)s->v[rank - 1] / 1e6;
}

static void print_latency(const char *name, samples *s)
{
    double sum = 0;
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    for (size_t i = 0; i < s->n; i++)
        sum += (double)s->v[i];
    printf("\"%s\":{\"count\":%zu,\"mean_ms\":%.4f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,"
           "\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f}",
           name, s->n, s->n ? sum / (double)s->n / 1e6 : 0.0, pct_ms(s, 0.50), pct_ms(s, 0.90),
           pct_ms(s, 0.99), pct_ms(s, 0.999), pct_ms(s, 1.0));
}

/* Copies up to `len` bytes of `src` into `dst` as the inside of a JSON
 * string: quotes and backslashes escaped, control bytes and bytes past
 * ASCII made spaces, trailing blanks dropped. */
static void json_escape(char *dst, size_t cap, const char *src, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len && w + 3 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '"' || ch == '\\') {
            dst[w++] = '\\';
            dst[w++] = (char)ch;
        } else {
            dst[w++] = ch < 0x20 || ch >= 0x7f ? ' ' : (char)ch;
        }
    }
    while (w > 0 && dst[w - 1] == ' ')
        w--;
    dst[w] = '\0';
}

/* Accepts http://127.0.0.1:PORT[/prefix] (or localhost): the benchmark only
 * ever talks to a server on this machine's loopback. */
static int parse_url(const char *url, opts *o)
{
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return -1;
    const char *h = url + sizeof scheme - 1;
    const char *colon = strchr(h, ':');
    if (!colon || (size_t)(colon - h) >= 32)
        return -1;
    char host[32];
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port <= 0 || port > 65535 || (*end && *end != '/'))
        return -1;
    size_t plen = strlen(end);
    while (plen > 0 && end[plen - 1] == '/')
        plen--;
    if (plen >= sizeof o->prefix)
        return -1;
    memcpy(o->prefix, end, plen);
    o->prefix[plen] = '\0';
    memset(&o->addr, 0, sizeof o->addr);
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)port);
    o->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    snprintf(o->host, sizeof o->host, "127.0.0.1:%ld", port);
    return 0;
}

/* A complete request with headers; the caller frees it. */
static char *build_request(const opts *o, const char *method, const char *path, const char *body,
                           size_t *ret_len)
{
    char auth[512] = "";
    if (o->token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", o->token);
    size_t blen = body ? strlen(body) : 0;
    char *head = jp_xasprintf("%s %s%s HTTP/1.1\r\nHost: %s\r\n%s%s"
                              "Content-Length: %zu\r\n\r\n",
                              method, o->prefix, path, o->host, auth,
                              body ? "Content-Type: application/json\r\n" : "", blen);
    size_t hlen = strlen(head);
    char *req = jp_xmalloc(hlen + blen + 1);
    memcpy(req, head, hlen);
    if (blen)
        memcpy(req + hlen, body, blen);
    req[hlen + blen] = '\0';
    free(head);
    *ret_len = hlen + blen;
    return req;
}

/* Case-insensitive search for header `name` in [p, end); returns its value
 * (leading blanks skipped) or NULL. `p` starts after the status line. */
static const char *find_header(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

/* Looks for a complete response head in c->in. Returns 1 when parsed, 0 when
 * more bytes are needed, -1 on a response this client cannot read. */
static int parse_head(conn *c)
{
    if (c->in_len < 12)
        return 0;
    char *blank = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!blank)
        return c->in_len > MAX_HEAD_BYTES ? -1 : 0;
    const char *end = blank + 2;
    if (strncmp(c->in, "HTTP/1.", 7) != 0 || c->in[8] != ' ')
        return -1;
    int status = atoi(c->in + 9);
    if (status < 100 || status > 999)
        return -1;
    const char *line2 = memchr(c->in, '\n', (size_t)(end - c->in));
    if (!line2)
        return -1;
    line2++;
    size_t vlen;
    const char *v;
    resp r = {.status = status, .head_len = (size_t)(blank + 4 - c->in)};
    if ((v = find_header(line2, end, "Transfer-Encoding", &vlen)) != NULL)
        return -1; /* the server always sends Content-Length */
    if ((v = find_header(line2, end, "Content-Length", &vlen)) != NULL) {
        char num[24];
        if (vlen == 0 || vlen >= sizeof num)
            return -1;
        memcpy(num, v, vlen);
        num[vlen] = '\0';
        char *e;
        unsigned long long n = strtoull(num, &e, 10);
        if (*e || n > MAX_RESP_BYTES)
            return -1;
        r.body_len = (size_t)n;
    } else if (!(status == 204 || status == 304 || status < 200)) {
        return -1;
    }
    if ((v = find_header(line2, end, "Connection", &vlen)) != NULL && vlen == 5 &&
        strncasecmp(v, "close", 5) == 0)
        r.close = true;
    c->r = r;
    c->have_head = true;
    return 1;
}

static void conn_reset_buffers(conn *c)
{
    c->in_len = 0;
    c->have_head = false;
    c->out = NULL;
    c->out_len = c->out_off = 0;
}

static void conn_close(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = C_DOWN;
    c->want_out = false;
    conn_reset_buffers(c);
}

/* Starts a non-blocking connect. Returns 0 (connected or in progress) or -1. */
static int conn_open(conn *c, const opts *o)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    conn_reset_buffers(c);
    if (connect(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) == 0) {
        c->state = C_IDLE;
        return 0;
    }
    if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        return 0;
    }
    close(fd);
    c->fd = -1;
    c->state = C_DOWN;
    return -1;
}

/* Writes what it can. Returns 1 when all is sent, 0 when the socket is full, -1 on error. */
static int conn_flush(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    return 1;
}

/* Reads what is there. Returns 1 when a whole response is in c->in, 0 when
 * more is needed, -1 on error or when the peer closed. */
static int conn_fill(conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
            if (cap > MAX_RESP_BYTES + MAX_HEAD_BYTES)
                return -1;
            c->in = jp_xrealloc(c->in, cap);
            c->in_cap = cap;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
        } else if (n == 0) {
            return -1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            return -1;
        }
        if (!c->have_head && parse_head(c) < 0)
            return -1;
        if (c->have_head && c->in_len >= c->r.head_len + c->r.body_len)
            return 1;
    }
    if (!c->have_head && parse_head(c) < 0)
        return -1;
    return c->have_head && c->in_len >= c->r.head_len + c->r.body_len;
}

/* ---- the multiplexed modes: enqueue and batch ---- */

typedef struct runner {
    const opts *o;
    int ep;
    conn *conns;
    int n;
    const char *req;      /* the one request every connection sends */
    size_t req_len;
    const char *last_req; /* batch: a shorter final request, or NULL */
    size_t last_req_len;
    long last_tag;
    long tag;             /* jobs per request */
    /* counters */
    long issued;          /* requests sent */
    long done;            /* requests answered or failed */
    long ok;              /* 2xx answers */
    long errors;          /* non-2xx answers and requests lost to a broken connection */
    long conn_errors;     /* connections that broke or could not be made */
    long jobs_ok;         /* jobs accepted (sum of tags of 2xx answers) */
    long status_counts[10];
    int first_error_status;
    char first_error[256];
    samples lat;
    int64_t last_done_ns;
    long max_behind;      /* rate mode: most requests overdue at once (all connections busy) */
} runner;

static void ep_set(runner *rn, conn *c, bool add)
{
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0u)};
    ev.data.ptr = c;
    epoll_ctl(rn->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
}

static void runner_open(runner *rn, conn *c, int64_t now)
{
    if (conn_open(c, rn->o) < 0) {
        rn->conn_errors++;
        c->retry_ns = now + RECONNECT_DELAY_NS;
        return;
    }
    c->want_out = c->state == C_CONNECTING;
    ep_set(rn, c, true);
}

/* A connection broke: a request in flight on it counts as an error. */
static void runner_broken(runner *rn, conn *c, int64_t now)
{
    if (c->state == C_BUSY) {
        rn->done++;
        rn->errors++;
        if (!rn->first_error[0])
            snprintf(rn->first_error, sizeof rn->first_error, "connection lost mid-request");
    }
    if (c->state == C_BUSY || c->state == C_CONNECTING)
        rn->conn_errors++;
    conn_close(c);
    c->retry_ns = now + RECONNECT_DELAY_NS;
}

static void runner_send(runner *rn, conn *c, bool last, int64_t now)
{
    c->out = last ? rn->last_req : rn->req;
    c->out_len = last ? rn->last_req_len : rn->req_len;
    c->tag = last ? rn->last_tag : rn->tag;
    c->out_off = 0;
    c->in_len = 0;
    c->have_head = false;
    c->state = C_BUSY;
    c->sent_ns = now;
    rn->issued++;
    int rc = conn_flush(c);
    if (rc < 0) {
        runner_broken(rn, c, now);
        return;
    }
    bool want = rc == 0;
    if (want != c->want_out) {
        c->want_out = want;
        ep_set(rn, c, false);
    }
}

static void runner_answered(runner *rn, conn *c, int64_t now)
{
    int st = c->r.status;
    rn->done++;
    rn->status_counts[st / 100 % 10]++;
    samples_add(&rn->lat, now - c->sent_ns);
    rn->last_done_ns = now;
    if (st >= 200 && st < 300) {
        rn->ok++;
        rn->jobs_ok += c->tag;
    } else {
        rn->errors++;
        if (!rn->first_error[0]) {
            rn->first_error_status = st;
            json_escape(rn->first_error, sizeof rn->first_error, c->in + c->r.head_len,
                        c->r.body_len < 200 ? c->r.body_len : 200);
        }
    }
    size_t used = c->r.head_len + c->r.body_len;
    bool extra = c->in_len > used; /* nothing was pipelined: stray bytes are a protocol error */
    if (c->r.close || extra) {
        conn_close(c);
        c->retry_ns = now;
        return;
    }
    c->state = C_IDLE;
    c->in_len = 0;
    c->have_head = false;
}

static void runner_event(runner *rn, conn *c, uint32_t events, int64_t now)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            runner_broken(rn, c, now);
            return;
        }
        c->state = C_IDLE;
        c->want_out = false;
        ep_set(rn, c, false);
        return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY && c->out_off < c->out_len) {
        int rc = conn_flush(c);
        if (rc < 0) {
            runner_broken(rn, c, now);
            return;
        }
        if (rc == 1 && c->want_out) {
            c->want_out = false;
            ep_set(rn, c, false);
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state != C_BUSY) {
            /* An idle keep-alive connection the server closed. */
            char b;
            if (recv(c->fd, &b, 1, MSG_PEEK) <= 0) {
                conn_close(c);
                c->retry_ns = now;
            }
            return;
        }
        int rc = conn_fill(c);
        if (rc < 0)
            runner_broken(rn, c, now);
        else if (rc == 1)
            runner_answered(rn, c, now);
    }
}

/* How many requests should have gone out by `now`. */
static long runner_target(const runner *rn, long limit, int64_t start, int64_t now)
{
    if (rn->o->rate <= 0)
        return limit;
    double due = (double)(now - start) / 1e9 * rn->o->rate;
    long t = (long)due + 1;
    return t < limit ? t : limit;
}

/* Runs until `limit` requests are answered or the deadline passes (then waits
 * a grace period for those in flight). */
static void runner_run(runner *rn, long limit, int64_t start, int64_t deadline)
{
    struct epoll_event evs[64];
    bool sending = true;
    int64_t stop_at = 0;
    long max_behind = 0;
    for (;;) {
        int64_t now = now_ns();
        if (sending && (g_stop || now >= deadline || rn->issued >= limit)) {
            sending = false;
            stop_at = now;
        }
        int busy = 0;
        for (int i = 0; i < rn->n; i++)
            busy += rn->conns[i].state == C_BUSY || rn->conns[i].state == C_CONNECTING;
        if (!sending && (busy == 0 || now - stop_at > DRAIN_GRACE_NS))
            break;
        if (sending) {
            long target = runner_target(rn, limit, start, now);
            for (int i = 0; i < rn->n && rn->issued < target; i++) {
                conn *c = &rn->conns[i];
                if (c->state == C_DOWN && now >= c->retry_ns)
                    runner_open(rn, c, now);
                if (c->state == C_IDLE)
                    runner_send(rn, c, rn->last_req && rn->issued == limit - 1, now);
            }
            if (rn->o->rate > 0 && target - rn->issued > max_behind)
                max_behind = target - rn->issued;
        }
        int timeout_ms = 100;
        int idle = 0;
        for (int i = 0; i < rn->n; i++)
            idle += rn->conns[i].state == C_IDLE;
        /* Overdue with every connection busy: wait for an answer, do not spin. */
        if (sending && rn->o->rate > 0 && idle > 0) {
            double next = (double)(rn->issued + 1) / rn->o->rate * 1e9;
            int64_t wait = start + (int64_t)next - now;
            timeout_ms = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
            if (timeout_ms > 100)
                timeout_ms = 100;
        }
        for (int i = 0; i < rn->n; i++)
            if (rn->conns[i].state == C_DOWN && sending)
                timeout_ms = timeout_ms < 10 ? timeout_ms : 10;
        int k = epoll_wait(rn->ep, evs, 64, timeout_ms);
        now = now_ns();
        for (int i = 0; i < k; i++)
            runner_event(rn, evs[i].data.ptr, evs[i].events, now);
    }
    /* Requests still unanswered after the grace period are errors. */
    for (int i = 0; i < rn->n; i++) {
        conn *c = &rn->conns[i];
        if (c->state == C_BUSY) {
            rn->done++;
            rn->errors++;
        }
        conn_close(c);
    }
    rn->max_behind = max_behind;
}

static int runner_init(runner *rn, const opts *o)
{
    memset(rn, 0, sizeof *rn);
    rn->o = o;
    rn->n = o->connections;
    rn->ep = epoll_create1(EPOLL_CLOEXEC);
    if (rn->ep < 0)
        return -1;
    rn->conns = jp_xcalloc((size_t)rn->n, sizeof *rn->conns);
    int64_t now = now_ns();
    for (int i = 0; i < rn->n; i++) {
        rn->conns[i].fd = -1;
        runner_open(rn, &rn->conns[i], now);
    }
    return 0;
}

static void runner_done(runner *rn)
{
    for (int i = 0; i < rn->n; i++) {
        conn_close(&rn->conns[i]);
        free(rn->conns[i].in);
    }
    free(rn->conns);
    free(rn->lat.v);
    if (rn->ep >= 0)
        close(rn->ep);
}

static void print_common(const runner *rn, double secs)
{
    printf("\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"conn_errors\":%ld,\"seconds\":%.4f,",
           rn->done, rn->ok, rn->errors, rn->conn_errors, secs);
    printf("\"status_classes\":{\"1xx\":%ld,\"2xx\":%ld,\"3xx\":%ld,\"4xx\":%ld,\"5xx\":%ld},",
           rn->status_counts[1], rn->status_counts[2], rn->status_counts[3],
           rn->status_counts[4], rn->status_counts[5]);
    if (rn->first_error[0])
        printf("\"first_error\":{\"status\":%d,\"body\":\"%s\"},", rn->first_error_status,
               rn->first_error);
}

static int mode_enqueue(const opts *o)
{
    runner rn;
    char body[256];
    snprintf(body, sizeof body, "{\"strategy\":\"%s\"}", o->strategy);
    size_t len;
    char *req = build_request(o, "POST", "/api/v1/jobs", body, &len);
    if (runner_init(&rn, o) < 0) {
        free(req);
        return 1;
    }
    rn.req = req;
    rn.req_len = len;
    rn.tag = 1;
    int64_t start = now_ns();
    runner_run(&rn, (long)1 << 60, start, start + (int64_t)(o->duration_s * 1e9));
    int64_t end = rn.last_done_ns > start ? rn.last_done_ns : now_ns();
    double secs = (double)(end - start) / 1e9;
    printf("{\"mode\":\"enqueue\",\"connections\":%d,\"target_rate\":%.1f,", o->connections,
           o->rate);
    print_common(&rn, secs);
    printf("\"per_second\":%.1f,\"max_behind\":%ld,", secs > 0 ? (double)rn.ok / secs : 0.0,
           rn.max_behind);
    print_latency("request_latency", &rn.lat);
    printf("}\n");
    runner_done(&rn);
    free(req);
    return 0;
}

static char *batch_body(const opts *o, long n)
{
    jp_buf b;
    jp_buf_init(&b, 0);
    char one[256];
    int len = snprintf(one, sizeof one, "{\"strategy\":\"%s\"}", o->strategy);
    jp_buf_append(&b, "{\"jobs\":[", 9);
    for (long i = 0; i < n; i++) {
        if (i)
            jp_buf_append(&b, ",", 1);
        jp_buf_append(&b, one, (size_t)len);
    }
    jp_buf_append(&b, "]}", 2);
    return jp_buf_steal(&b);
}

static int mode_batch(const opts *o)
{
    runner rn;
    long full = o->total / o->batch, rest = o->total % o->batch;
    long requests = full + (rest ? 1 : 0);
    char *body = batch_body(o, o->batch);
    char *body_last = rest ? batch_body(o, rest) : NULL;
    size_t len, last_len = 0;
    char *req = build_request(o, "POST", "/api/v1/jobs/batch", body, &len);
    char *req_last = body_last ? build_request(o, "POST", "/api/v1/jobs/batch", body_last,
                                               &last_len)
                               : NULL;
    int rc = 0;
    if (runner_init(&rn, o) < 0) {
        rc = 1;
        goto out;
    }
    rn.req = req;
    rn.req_len = len;
    rn.tag = o->batch;
    rn.last_req = req_last;
    rn.last_req_len = last_len;
    rn.last_tag = rest;
    int64_t start = now_ns();
    runner_run(&rn, requests, start, start + (int64_t)(o->duration_s * 1e9));
    int64_t end = rn.last_done_ns > start ? rn.last_done_ns : now_ns();
    double secs = (double)(end - start) / 1e9;
    printf("{\"mode\":\"batch\",\"connections\":%d,\"batch\":%ld,\"total\":%ld,", o->connections,
           o->batch, o->total);
    print_common(&rn, secs);
    printf("\"jobs_ok\":%ld,\"per_second\":%.1f,", rn.jobs_ok,
           secs > 0 ? (double)rn.jobs_ok / secs : 0.0);
    print_latency("request_latency", &rn.lat);
    printf("}\n");
    runner_done(&rn);
out:
    free(req);
    free(req_last);
    free(body);
    free(body_last);
    return rc;
}

/* ---- latency: one connection, one job at a time ---- */

/* Sends a request and waits for its whole response, up to `deadline`.
 * Reconnects once if the kept-alive connection turns out to be closed.
 * Returns 0, or -1 (connection failure or timeout). */
static int roundtrip(conn *c, const opts *o, const char *req, size_t len, int64_t deadline)
{
    for (int tries = 0; tries < 2; tries++) {
        bool fresh = false;
        if (c->state == C_DOWN) {
            if (c->fd >= 0)
                conn_close(c);
            if (conn_open(c, o) < 0)
                return -1;
            fresh = true;
        }
        if (c->state == C_CONNECTING) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int64_t left = deadline - now_ns();
            if (left <= 0 || poll(&p, 1, (int)(left / 1000000) + 1) <= 0) {
                conn_close(c);
                return -1;
            }
            int err = 0;
            socklen_t sl = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0 || err) {
                conn_close(c);
                return -1;
            }
            c->state = C_IDLE;
        }
        c->out = req;
        c->out_len = len;
        c->out_off = 0;
        c->in_len = 0;
        c->have_head = false;
        c->state = C_BUSY;
        int rc = 0;
        for (;;) {
            if (c->out_off < c->out_len) {
                int f = conn_flush(c);
                if (f < 0) {
                    rc = -1;
                    break;
                }
            }
            rc = conn_fill(c);
            if (rc != 0)
                break;
            struct pollfd p = {.fd = c->fd,
                               .events = POLLIN | (c->out_off < c->out_len ? POLLOUT : 0)};
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                rc = -2;
                break;
            }
            if (poll(&p, 1, (int)(left / 1000000) + 1) < 0 && errno != EINTR) {
                rc = -1;
                break;
            }
        }
        if (rc == 1) {
            c->state = C_IDLE;
            if (c->r.close)
                c->state = C_DOWN; /* closed and reopened before the next request */
            return 0;
        }
        bool nothing_back = c->in_len == 0;
        conn_close(c);
        /* A stale keep-alive connection fails before any byte comes back:
         * that one is worth a second try on a fresh socket. */
        if (rc == -2 || fresh || !nothing_back)
            return -1;
    }
    return -1;
}

/* The response body as JSON, or NULL. */
static json_t *resp_json(const conn *c)
{
    return json_loadb(c->in + c->r.head_len, c->r.body_len, 0, NULL);
}

static const char *job_status(json_t *j)
{
    return json_string_value(json_object_get(j, "status"));
}

static bool terminal(const char *st)
{
    return st && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
                  strcmp(st, "cancelled") == 0);
}

/* POSTs a job and returns its id (caller frees), or NULL. */
static char *submit(conn *c, const opts *o, const char *req, size_t len, int64_t deadline,
                    int *ret_status)
{
    *ret_status = 0;
    if (roundtrip(c, o, req, len, deadline) < 0)
        return NULL;
    *ret_status = c->r.status;
    if (c->r.status != 201 && c->r.status != 200)
        return NULL;
    json_t *j = resp_json(c);
    const char *id = json_string_value(json_object_get(j, "id"));
    char *ret = id ? jp_xstrdup(id) : NULL;
    json_decref(j);
    return ret;
}

/* GETs the job once; returns its status (caller frees) or NULL. */
static char *poll_job(conn *c, const opts *o, const char *id, int wait_ms, int64_t deadline)
{
    char path[256];
    if (wait_ms > 0)
        snprintf(path, sizeof path, "/api/v1/jobs/%s?wait_ms=%d", id, wait_ms);
    else
        snprintf(path, sizeof path, "/api/v1/jobs/%s", id);
    size_t len;
    char *req = build_request(o, "GET", path, NULL, &len);
    int rc = roundtrip(c, o, req, len, deadline);
    free(req);
    if (rc < 0 || c->r.status != 200)
        return NULL;
    json_t *j = resp_json(c);
    char *st = jp_xstrdup(job_status(j));
    json_decref(j);
    return st;
}

/* Does GET ?wait_ms=N hold the answer until the job ends? Tried with a job
 * that sleeps: a server without long-poll answers at once with "running"
 * or "queued". */
static bool probe_long_poll(conn *c, const opts *o)
{
    const char *body = "{\"strategy\":\"sleep\",\"payload\":{\"ms\":200}}";
    size_t len;
    char *req = build_request(o, "POST", "/api/v1/jobs", body, &len);
    int64_t deadline = now_ns() + 10 * NS_PER_S;
    int st;
    char *id = submit(c, o, req, len, deadline, &st);
    free(req);
    if (!id)
        return false;
    char *status = poll_job(c, o, id, 2000, deadline);
    bool ok = terminal(status);
    free(status);
    /* Let the probe job finish so it does not delay the first measured one. */
    while (!ok && now_ns() < deadline) {
        status = poll_job(c, o, id, 0, deadline);
        bool done = !status || terminal(status);
        free(status);
        if (done)
            break;
        usleep(5000);
    }
    free(id);
    return ok;
}

static int mode_latency(const opts *o)
{
    conn c = {.fd = -1, .state = C_DOWN};
    samples lat = {0};
    long errors = 0, polls = 0, not_completed = 0, timeouts = 0;
    char first_error[200] = "";
    bool long_poll = !o->no_long_poll && probe_long_poll(&c, o);
    char body[256];
    snprintf(body, sizeof body, "{\"strategy\":\"%s\"}", o->strategy);
    size_t len;
    char *req = build_request(o, "POST", "/api/v1/jobs", body, &len);
    int64_t start = now_ns();
    int64_t give_up = start + (int64_t)(o->max_seconds * 1e9);
    long i;
    for (i = 0; i < o->count && !g_stop && now_ns() < give_up; i++) {
        int64_t t0 = now_ns();
        int64_t deadline = t0 + JOB_TIMEOUT_NS;
        int st;
        char *id = submit(&c, o, req, len, deadline, &st);
        if (!id) {
            errors++;
            if (!first_error[0])
                snprintf(first_error, sizeof first_error, "submit failed (HTTP %d)", st);
            continue;
        }
        bool done = false;
        while (!done) {
            if (now_ns() >= deadline) {
                timeouts++;
                errors++;
                if (!first_error[0])
                    snprintf(first_error, sizeof first_error, "job %s not done in time", id);
                break;
            }
            char *status = poll_job(&c, o, id, long_poll ? LONG_POLL_WAIT_MS : 0, deadline);
            polls++;
            if (!status) {
                errors++;
                if (!first_error[0])
                    snprintf(first_error, sizeof first_error, "GET of job %s failed", id);
                break;
            }
            if (terminal(status)) {
                done = true;
                if (strcmp(status, "completed") == 0) {
                    samples_add(&lat, now_ns() - t0);
                } else {
                    not_completed++;
                    errors++;
                    if (!first_error[0])
                        snprintf(first_error, sizeof first_error, "job %s ended %s", id, status);
                }
            }
            free(status);
        }
        free(id);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"mode\":\"latency\",\"asked\":%ld,\"attempted\":%ld,\"errors\":%ld,"
           "\"timeouts\":%ld,\"not_completed\":%ld,\"long_poll\":%s,\"polls_per_job\":%.2f,"
           "\"seconds\":%.4f,",
           o->count, i, errors, timeouts, not_completed, long_poll ? "true" : "false",
           i ? (double)polls / (double)i : 0.0, secs);
    if (first_error[0])
        printf("\"first_error\":\"%s\",", first_error);
    print_latency("latency", &lat);
    /* The flat figures the orchestrator reads. */
    printf(",\"count\":%zu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f}\n", lat.n,
           pct_ms(&lat, 0.5), pct_ms(&lat, 0.99), pct_ms(&lat, 1.0));
    free(lat.v);
    free(req);
    conn_close(&c);
    free(c.in);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen MODE --url http://127.0.0.1:PORT [options]\n"
            "\n"
            "modes:\n"
            "  enqueue   POST /api/v1/jobs, one job per request, for --duration seconds,\n"
            "            as fast as the connections allow or at --rate requests/s\n"
            "  batch     POST /api/v1/jobs/batch until --total jobs are sent, --batch per request\n"
            "  latency   one connection: submit a job, wait until it is completed, --count times\n"
            "\n"
            "options:\n"
            "  --url URL            the server (loopback only)\n"
            "  --connections N      keep-alive connections (default 16; latency uses one)\n"
            "  --duration S         enqueue: seconds to send (default 5); batch: time limit (60)\n"
            "  --rate R             enqueue: a steady R requests/s instead of flat out\n"
            "  --batch N            batch: jobs per request (default 100)\n"
            "  --total N            batch: jobs in all (default 50000)\n"
            "  --count N            latency: jobs to measure (default 2000)\n"
            "  --max-seconds S      latency: stop after S seconds (default 120)\n"
            "  --strategy NAME      strategy of the jobs (default noop)\n"
            "  --token T            bearer token\n"
            "  --no-long-poll       latency: poll, even if the server offers ?wait_ms=\n"
            "\n"
            "Prints one JSON object. SIGINT or SIGTERM stops sending; answers in flight\n"
            "are awaited and the figures printed.\n");
}

int main(int argc, char **argv)
{
    opts o = {.connections = 16, .duration_s = -1, .batch = 100, .total = 50000,
              .count = 2000, .max_seconds = 120, .strategy = "noop"};
    const char *url = NULL;
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"connections", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {"batch", required_argument, NULL, 'b'},
        {"total", required_argument, NULL, 'n'},
        {"count", required_argument, NULL, 'k'},
        {"max-seconds", required_argument, NULL, 'm'},
        {"strategy", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {"no-long-poll", no_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    if (argc < 2 || argv[1][0] == '-') {
        usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    o.mode = argv[1];
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u': url = optarg; break;
        case 'c': o.connections = atoi(optarg); break;
        case 'd': o.duration_s = atof(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'b': o.batch = atol(optarg); break;
        case 'n': o.total = atol(optarg); break;
        case 'k': o.count = atol(optarg); break;
        case 'm': o.max_seconds = atof(optarg); break;
        case 's': o.strategy = optarg; break;
        case 't': o.token = optarg; break;
        case 'L': o.no_long_poll = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!url || parse_url(url, &o) < 0) {
        fprintf(stderr, "loadgen: --url must be http://127.0.0.1:PORT (loopback only)\n");
        return 2;
    }
    if (o.connections < 1 || o.connections > MAX_CONNS || o.batch < 1 || o.batch > 1000 ||
        o.total < 1 || o.count < 1 || o.rate < 0 || o.max_seconds <= 0 ||
        strlen(o.strategy) > 64 || strspn(o.strategy, "abcdefghijklmnopqrstuvwxyz0123456789_-") !=
                                       strlen(o.strategy) ||
        (o.token && strlen(o.token) > 256)) {
        fprintf(stderr, "loadgen: an option is out of range (see --help)\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);

    int rc;
    if (strcmp(o.mode, "enqueue") == 0) {
        if (o.duration_s < 0)
            o.duration_s = 5;
        rc = mode_enqueue(&o);
    } else if (strcmp(o.mode, "batch") == 0) {
        if (o.duration_s < 0)
            o.duration_s = 60;
        rc = mode_batch(&o);
    } else if (strcmp(o.mode, "latency") == 0) {
        rc = mode_latency(&o);
    } else {
        fprintf(stderr, "loadgen: unknown mode \"%s\" (enqueue, batch or latency)\n", o.mode);
        return 2;
    }
    fflush(stdout);
    return rc;
}
