/* jobplane: the command-line client of the control plane's HTTP API. */
#include "client/client.h"
#include "core/err.h"
#include "core/jtime.h"
#include "core/mem.h"
#include "core/opts.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* Exit statuses: scripts tell outcomes apart by these, so they never change. */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,         /* the API refused, or the awaited job did not complete */
    EXIT_USAGE = 2,        /* bad command line; nothing was sent */
    EXIT_UNREACHABLE = 3,  /* no HTTP answer from the server */
    EXIT_WAIT_TIMEOUT = 124,
};

#define DEFAULT_SERVER "http://127.0.0.1:8080"
#define UNSET INT64_MIN   /* an integer flag that was not given */
#define OPTS_MAX 24
#define PAYLOAD_FILE_MAX ((size_t)64 << 20)
#define POLL_FIRST_MS 5
#define POLL_MAX_MS 200
#define LONG_POLL_MS 30000  /* ?wait_ms= of each GET while waiting for a job */

/* What every command needs: the connection and the output form. */
typedef struct cli {
    jp_client *client;
    bool json;  /* print the server's JSON rather than text */
} cli;

typedef struct globals {
    const char *server;
    const char *token;
    bool json;
} globals;

typedef struct command {
    const char *name;
    const char *synopsis;  /* what follows "jobplane <name>" in help */
    const char *summary;
    int npos;              /* positional arguments: 0, or 1 (a job ID) */
    size_t args_size;      /* size of the command's own flag values */
    /* Fills `o` with the command's flags (pointing into `args`), marks the
     * integer ones unset, and returns how many; NULL for none. */
    size_t (*table)(void *args, jp_opt *o);
    int (*run)(cli *c, void *args, const char *id);
} command;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Errors are one line on stderr, prefixed like every message of the tool. */
static void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("jobplane: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Replaces control characters: text from the server must not break a line
 * or drive the terminal. */
static char *sanitize(char *s)
{
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return s;
}

static size_t global_table(globals *g, bool after_command, jp_opt *o)
{
    /* After the command the same flags override what came before, so they
     * take no defaults or variables there (those would reset earlier values). */
    o[0] = (jp_opt){"server", after_command ? NULL : "JOBPLANE_SERVER", JP_OPT_STR, &g->server,
                    after_command ? NULL : DEFAULT_SERVER, 0, 0, "URL",
                    "Control plane to talk to"};
    o[1] = (jp_opt){"token", after_command ? NULL : "JOBPLANE_TOKEN", JP_OPT_STR, &g->token,
                    NULL, 0, 0, "T", "Bearer token sent with every request"};
    o[2] = (jp_opt){"json", NULL, JP_OPT_BOOL, &g->json, NULL, 0, 0, NULL,
                    "Print the server's JSON instead of text"};
    return 3;
}

/* ---- output ---- */

static void print_json(const cli *c, const json_t *v)
{
    json_dumpf(v, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2));
    fputc('\n', stdout);
}

static bool json_int(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v) && isfinite(json_real_value(v))) {
        *out = (int64_t)json_real_value(v);
        return true;
    }
    return false;
}

/* A table cell for any JSON value ("-" when absent or null). Caller frees. */
static char *cell(const json_t *v)
{
    int64_t n;
    char *s;

    if (!v || json_is_null(v))
        return jp_xstrdup("-");
    if (json_is_string(v))
        return jp_xstrdup(json_string_value(v));
    if (json_is_integer(v) && json_int(v, &n))
        return jp_xasprintf("%lld", (long long)n);
    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return jp_xstrdup("?");
    char *copy = jp_xstrdup(s);
    free(s);
    return copy;
}

static char *duration_cell(const json_t *v)
{
    int64_t ms;

    if (!json_int(v, &ms))
        return jp_xstrdup("-");
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        return jp_xasprintf("%lldms", (long long)ms);
    if (ms < 60000)
        return jp_xasprintf("%lld.%llds", (long long)(ms / 1000), (long long)(ms % 1000 / 100));
    if (ms < 3600000)
        return jp_xasprintf("%lldm%02llds", (long long)(ms / 60000),
                            (long long)(ms % 60000 / 1000));
    return jp_xasprintf("%lldh%02lldm", (long long)(ms / 3600000),
                        (long long)(ms % 3600000 / 60000));
}

/* "code: message" of a job or attempt error object. */
static char *error_cell(const json_t *e)
{
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));

    if (!e || json_is_null(e))
        return jp_xstrdup("-");
    if (code && msg)
        return jp_xasprintf("%s: %s", code, msg);
    if (code || msg)
        return jp_xstrdup(code ? code : msg);
    return cell(e);
}

#define TABLE_COLS_MAX 8

/* Rows printed in batches (one per list page) with columns as wide as the
 * widest cell seen so far: the output streams, yet lines up. */
typedef struct table {
    int ncols;
    const char *head[TABLE_COLS_MAX];
    size_t width[TABLE_COLS_MAX];  /* display columns */
    char **cells;                  /* pending rows, ncols each, owned */
    size_t nrows, cap;             /* in rows */
    bool head_done;
    FILE *out;                     /* stdout unless changed after table_init */
    size_t clip;                   /* cells wider than this are shortened; 0 = never */
} table;

/* Display width of UTF-8 text: its code points (wide characters are rare in
 * these fields and would only misalign a line). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* Shortens `s` in place to at most `maxw` display columns, the last two
 * being "..", so one long name cannot push a table off the screen. */
static void clip_text(char *s, size_t maxw)
{
    size_t w = 0;
    char *p;

    if (maxw < 3 || text_width(s) <= maxw)
        return;
    /* The kept prefix is shorter than `s` by at least 3 code points, so
     * there is room for "..". */
    for (p = s; *p; p++)
        if (((unsigned char)*p & 0xC0) != 0x80 && ++w > maxw - 2)
            break;
    memcpy(p, "..", 3);
}

static void table_init(table *t, int ncols, const char *const *head)
{
    memset(t, 0, sizeof *t);
    t->out = stdout;
    t->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        t->head[i] = head[i];
        t->width[i] = text_width(head[i]);
    }
}

/* Adds a row of ncols cells, taking ownership of them. */
static void table_add(table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->cells = jp_xrealloc(t->cells, t->cap * (size_t)t->ncols * sizeof *t->cells);
    }
    for (int i = 0; i < t->ncols; i++) {
        char *s = sanitize(row[i]);
        size_t w;
        if (t->clip)
            clip_text(s, t->clip);
        w = text_width(s);
        t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = s;
        if (w > t->width[i])
            t->width[i] = w;
    }
    t->nrows++;
}

static void print_row(const table *t, const char *const *row)
{
    for (int i = 0; i < t->ncols; i++) {
        fputs(row[i], t->out);
        if (i + 1 < t->ncols)
            for (size_t w = text_width(row[i]); w < t->width[i] + 2; w++)
                fputc(' ', t->out);
    }
    fputc('\n', t->out);
}

/* Prints the header (once) and the pending rows, then forgets them. */
static void table_flush(table *t)
{
    if (!t->head_done) {
        print_row(t, t->head);
        t->head_done = true;
    }
    for (size_t r = 0; r < t->nrows; r++) {
        char **row = t->cells + r * (size_t)t->ncols;
        print_row(t, (const char *const *)row);
        for (int i = 0; i < t->ncols; i++)
            free(row[i]);
    }
    t->nrows = 0;
}

static void table_done(table *t)
{
    for (size_t k = 0; k < t->nrows * (size_t)t->ncols; k++)
        free(t->cells[k]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* ---- requests ---- */

/* One request whose answer must be a 2xx JSON object. Returns EXIT_OK with
 * *ret_body, or another exit status with the reason in `err`. */
static int call_quiet(cli *c, const char *method, const char *path, const json_t *body,
                      json_t **ret_body, jp_err *err)
{
    json_t *resp = NULL;
    long status = 0;
    int rc;

    rc = jp_client_request(c->client, method, path, body, &status, &resp, err);
    if (rc < 0)
        return rc == JP_EUNAVAIL ? EXIT_UNREACHABLE : EXIT_FAIL;
    if (status < 200 || status > 299) {
        jp_client_api_error(status, resp, err);
        json_decref(resp);
        return EXIT_FAIL;
    }
    if (!json_is_object(resp)) {
        json_decref(resp);
        jp_err_set(err, JP_EINTERNAL, "server answered HTTP %ld without a JSON object", status);
        return EXIT_FAIL;
    }
    *ret_body = resp;
    return EXIT_OK;
}

/* call_quiet that prints the reason of a failure. */
static int call(cli *c, const char *method, const char *path, const json_t *body,
                json_t **ret_body)
{
    jp_err err = {0};
    int ex = call_quiet(c, method, path, body, ret_body, &err);
    if (ex != EXIT_OK)
        fail("%s", jp_err_msg(&err));
    return ex;
}

/* "/api/v1/jobs/<id>[/<action>]" with the id escaped. Caller frees. */
static char *job_path(const char *id, const char *action)
{
    char *e = jp_client_escape(id);
    char *p = jp_xasprintf("/api/v1/jobs/%s%s%s", e, action ? "/" : "", action ? action : "");
    free(e);
    return p;
}

static const char *job_id(const json_t *job)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    return id ? id : "?";
}

/* ---- submit ---- */

typedef struct submit_args {
    const char *strategy, *payload, *queue, *priority, *key, *idempotency_key, *run_at;
    const char *wait_timeout;
    int64_t timeout, max_attempts, delay;
    bool wait;
} submit_args;

static size_t submit_table(void *v, jp_opt *o)
{
    submit_args *a = v;
    size_t n = 0;

    a->timeout = a->max_attempts = a->delay = UNSET;
    o[n++] = (jp_opt){"strategy", NULL, JP_OPT_STR, &a->strategy, NULL, 0, 0, "S",
                      "Strategy that runs the job: noop, sleep, http, exec, ... (required)"};
    o[n++] = (jp_opt){"payload", NULL, JP_OPT_STR, &a->payload, NULL, 0, 0, "JSON",
                      "The job's input as JSON, or @FILE to read it from a file (@- stdin)"};
    o[n++] = (jp_opt){"queue", NULL, JP_OPT_STR, &a->queue, NULL, 0, 0, "Q",
                      "Queue name (the server's default: default)"};
    o[n++] = (jp_opt){"priority", NULL, JP_OPT_STR, &a->priority, NULL, 0, 0, "P",
                      "emergency, high, normal, low, or 0..3"};
    o[n++] = (jp_opt){"key", NULL, JP_OPT_STR, &a->key, NULL, 0, 0, "K",
                      "Grouping key (a domain, a tenant) for per-key limits"};
    o[n++] = (jp_opt){"idempotency-key", NULL, JP_OPT_STR, &a->idempotency_key, NULL, 0, 0, "K",
                      "Submitting the same request with this key again returns the first job"};
    o[n++] = (jp_opt){"timeout", NULL, JP_OPT_INT, &a->timeout, NULL, 0, 0, "S",
                      "Seconds one attempt may run"};
    o[n++] = (jp_opt){"max-attempts", NULL, JP_OPT_INT, &a->max_attempts, NULL, 0, 0, "N",
                      "Attempts before the job fails for good"};
    o[n++] = (jp_opt){"delay", NULL, JP_OPT_INT, &a->delay, NULL, 0, 0, "S",
                      "Run no sooner than S seconds from now"};
    o[n++] = (jp_opt){"run-at", NULL, JP_OPT_STR, &a->run_at, NULL, 0, 0, "TIME",
                      "Run no sooner than this RFC 3339 time"};
    o[n++] = (jp_opt){"wait", NULL, JP_OPT_BOOL, &a->wait, NULL, 0, 0, NULL,
                      "Wait for the job to finish and print it; exit 0 only if it completed"};
    o[n++] = (jp_opt){"wait-timeout", NULL, JP_OPT_STR, &a->wait_timeout, NULL, 0, 0, "S",
                      "With --wait, give up after S seconds (exit 124; default: never)"};
    return n;
}

/* Reads --payload's text: inline, or from a file with @FILE. Returns EXIT_OK
 * and *ret_value (a new reference). */
static int read_payload(const char *arg, json_t **ret_value)
{
    json_error_t je;
    json_t *v = NULL;
    jp_buf buf;
    FILE *f = NULL;
    int ex = EXIT_OK;

    jp_buf_init(&buf, PAYLOAD_FILE_MAX);
    if (arg[0] != '@') {
        v = json_loads(arg, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    } else {
        const char *name = arg + 1;
        char chunk[8192];
        size_t got;
        f = strcmp(name, "-") == 0 ? stdin : fopen(name, "rb");
        if (!f) {
            fail("--payload: cannot open %s: %s", name, strerror(errno));
            ex = EXIT_USAGE;
            goto out;
        }
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (jp_buf_append(&buf, chunk, got) < 0) {
                fail("--payload: %s is larger than %zu bytes", name, (size_t)PAYLOAD_FILE_MAX);
                ex = EXIT_USAGE;
                goto out;
            }
        }
        if (ferror(f)) {
            fail("--payload: cannot read %s: %s", name, strerror(errno));
            ex = EXIT_USAGE;
            goto out;
        }
        v = json_loadb(jp_buf_cstr(&buf), buf.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    }
    if (!v) {
        fail("--payload is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        ex = EXIT_USAGE;
        goto out;
    }
    *ret_value = v;
out:
    if (f && f != stdin)
        fclose(f);
    jp_buf_done(&buf);
    return ex;
}

/* Sets body[field] to the string `value` if given; false when it is not UTF-8. */
static bool put_str(json_t *body, const char *field, const char *value)
{
    if (!value)
        return true;
    return json_object_set_new(body, field, json_string(value)) == 0;
}

static void put_int(json_t *body, const char *field, int64_t value)
{
    if (value != UNSET)
        json_object_set_new(body, field, json_integer((json_int_t)value));
}

/* Builds the create request from the flags, or prints why not. */
static int submit_body(const submit_args *a, json_t **ret_body)
{
    json_t *body = json_object();
    json_t *payload = NULL;
    int ex = EXIT_USAGE;
    const struct {
        const char *flag, *field, *value;
    } strs[] = {
        {"strategy", "strategy", a->strategy},
        {"queue", "queue", a->queue},
        {"key", "key", a->key},
        {"idempotency-key", "idempotency_key", a->idempotency_key},
        {"run-at", "run_at", a->run_at},
    };

    if (!a->strategy) {
        fail("submit: --strategy is required (see 'jobplane submit --help')");
        goto out;
    }
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (!put_str(body, strs[i].field, strs[i].value)) {
            fail("--%s is not valid UTF-8", strs[i].flag);
            goto out;
        }
    }
    if (a->payload) {
        ex = read_payload(a->payload, &payload);
        if (ex != EXIT_OK)
            goto out;
        json_object_set_new(body, "payload", payload);
        ex = EXIT_USAGE;
    }
    if (a->priority) {
        /* A number goes as a number, a name as a name; the server judges both. */
        char *end = NULL;
        long long n;
        errno = 0;
        n = strtoll(a->priority, &end, 10);
        if (*a->priority && *end == '\0' && errno == 0) {
            json_object_set_new(body, "priority", json_integer((json_int_t)n));
        } else if (!put_str(body, "priority", a->priority)) {
            fail("--priority is not valid UTF-8");
            goto out;
        }
    }
    put_int(body, "timeout_seconds", a->timeout);
    put_int(body, "max_attempts", a->max_attempts);
    put_int(body, "delay_seconds", a->delay);
    *ret_body = body;
    body = NULL;
    ex = EXIT_OK;
out:
    json_decref(body);
    return ex;
}

static bool status_terminal(const char *st)
{
    return st && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
                  strcmp(st, "cancelled") == 0);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Asks for the job until it is terminal. Each GET has the server hold its
 * answer until the job ends (?wait_ms=), so the end is seen as it happens.
 * A server that answers sooner with a job still going (one without
 * long-poll, or with too many requests waiting) is asked again after a
 * pause backing off from 5 ms to 200 ms, so a slow job costs little.
 * `limit_ms` <= 0 means no limit. Takes a reference to `job` (the create
 * response). */
static int wait_for(cli *c, json_t *job, int64_t limit_ms, const char *limit_text)
{
    char *path = job_path(job_id(job), NULL);
    int64_t deadline = limit_ms > 0 ? jp_mono_ms() + limit_ms : 0;
    int64_t delay = POLL_FIRST_MS;
    bool held = true;  /* the last GET was held as asked: ask again at once */
    const char *st;
    jp_err err = {0};
    int ex;

    json_incref(job);
    for (;;) {
        st = json_string_value(json_object_get(job, "status"));
        if (status_terminal(st))
            break;
        int64_t wait = LONG_POLL_MS;
        if (!held) {
            int64_t pause = delay;
            if (deadline && deadline - jp_mono_ms() < pause)
                pause = deadline - jp_mono_ms();
            if (pause > 0)
                sleep_ms(pause);
            delay = delay * 2 < POLL_MAX_MS ? delay * 2 : POLL_MAX_MS;
        }
        if (deadline) {
            int64_t left = deadline - jp_mono_ms();
            if (left <= 0) {
                fail("job %s is still %s after %ss (--wait-timeout)", job_id(job),
                     st ? st : "unknown", limit_text);
                ex = EXIT_WAIT_TIMEOUT;
                goto out;
            }
            if (left < wait)
                wait = left;
            /* A request must not outlive the deadline either; a little
             * grace lets the last answer still arrive. */
            jp_client_set_timeout(c->client, (long)left + 100);
        }

        char *query = jp_xasprintf("%s?wait_ms=%lld", path, (long long)wait);
        json_t *next = NULL;
        int64_t sent = jp_mono_ms();
        ex = call_quiet(c, "GET", query, NULL, &next, &err);
        held = jp_mono_ms() - sent >= wait / 2;
        free(query);
        if (ex == EXIT_UNREACHABLE && deadline && jp_mono_ms() >= deadline) {
            fail("job %s is still %s after %ss (--wait-timeout)", job_id(job),
                 st ? st : "unknown", limit_text);
            ex = EXIT_WAIT_TIMEOUT;
            goto out;
        }
        if (ex != EXIT_OK) {
            fail("%s", jp_err_msg(&err));
            goto out;
        }
        json_decref(job);
        job = next;
    }
    print_json(c, job);
    if (strcmp(st, "completed") == 0) {
        ex = EXIT_OK;
    } else if (strcmp(st, "failed") == 0) {
        /* The API's error form, "<message> (<code>)", for the job's error too. */
        const json_t *e = json_object_get(job, "error");
        char *msg = jp_xstrdup(json_string_value(json_object_get(e, "message")));
        char *code = jp_xstrdup(json_string_value(json_object_get(e, "code")));
        if (msg && code)
            fail("job %s failed: %s (%s)", job_id(job), sanitize(msg), sanitize(code));
        else if (msg || code)
            fail("job %s failed: %s", job_id(job), sanitize(msg ? msg : code));
        else
            fail("job %s failed", job_id(job));
        free(msg);
        free(code);
        ex = EXIT_FAIL;
    } else {
        fail("job %s was cancelled", job_id(job));
        ex = EXIT_FAIL;
    }
out:
    jp_client_set_timeout(c->client, 0);
    json_decref(job);
    free(path);
    return ex;
}

/* Parses seconds (fractions allowed), more than 0 and at least `min`, into ms. */
static bool parse_seconds(const char *s, double min, int64_t *ret_ms)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v) || v <= 0 || v < min || v > 1e9)
        return false;
    *ret_ms = (int64_t)ceil(v * 1000);
    return true;
}

static int run_submit(cli *c, void *v, const char *id)
{
    submit_args *a = v;
    json_t *body = NULL, *job = NULL;
    int64_t limit_ms = 0;
    int ex;

    if (a->wait_timeout && !parse_seconds(a->wait_timeout, 0, &limit_ms)) {
        fail("--wait-timeout: \"%.64s\" is not a positive number of seconds", a->wait_timeout);
        return EXIT_USAGE;
    }
    if (a->wait_timeout && !a->wait) {
        fail("--wait-timeout needs --wait");
        return EXIT_USAGE;
    }
    ex = submit_body(a, &body);
    if (ex != EXIT_OK)
        return ex;
    ex = call(c, "POST", "/api/v1/jobs", body, &job);
    if (ex != EXIT_OK)
        goto out;
    if (!json_string_value(json_object_get(job, "id"))) {
        fail("server answered without a job id");
        ex = EXIT_FAIL;
        goto out;
    }
    if (a->wait)
        ex = wait_for(c, job, limit_ms, a->wait_timeout);
    else if (c->json)
        print_json(c, job);
    else
        printf("%s\n", job_id(job));
out:
    json_decref(job);
    json_decref(body);
    return ex;
}

/* ---- get, cancel, retry ---- */

static int run_get(cli *c, void *v, const char *id)
{
    char *path = job_path(id, NULL);
    json_t *job = NULL;
    int ex = call(c, "GET", path, NULL, &job);

    if (ex == EXIT_OK)
        print_json(c, job);
    json_decref(job);
    free(path);
    return ex;
}

/* POSTs an action on a job and prints "<id> <new status>". */
static int job_action(cli *c, const char *id, const char *action)
{
    char *path = job_path(id, action);
    json_t *job = NULL;
    int ex = call(c, "POST", path, NULL, &job);

    if (ex == EXIT_OK) {
        if (c->json) {
            print_json(c, job);
        } else {
            char *st = cell(json_object_get(job, "status"));
            char *jid = jp_xstrdup(job_id(job));
            printf("%s %s\n", sanitize(jid), sanitize(st));
            free(jid);
            free(st);
        }
    }
    json_decref(job);
    free(path);
    return ex;
}

static int run_cancel(cli *c, void *v, const char *id)
{
    return job_action(c, id, "cancel");
}

static int run_retry(cli *c, void *v, const char *id)
{
    return job_action(c, id, "retry");
}

/* ---- list ---- */

typedef struct list_args {
    const char *status, *queue, *key, *cursor;
    int64_t limit;
    bool all;
} list_args;

static size_t list_table(void *v, jp_opt *o)
{
    list_args *a = v;
    size_t n = 0;

    a->limit = UNSET;
    o[n++] = (jp_opt){"status", NULL, JP_OPT_STR, &a->status, NULL, 0, 0, "S",
                      "Only jobs in this state (pending, scheduled, queued, running, completed, "
                      "failed, cancelled)"};
    o[n++] = (jp_opt){"queue", NULL, JP_OPT_STR, &a->queue, NULL, 0, 0, "Q", "Only this queue"};
    o[n++] = (jp_opt){"key", NULL, JP_OPT_STR, &a->key, NULL, 0, 0, "K",
                      "Only jobs with this grouping key"};
    o[n++] = (jp_opt){"limit", NULL, JP_OPT_INT, &a->limit, NULL, 0, 0, "N",
                      "Jobs per page (the server's default: 50; at most 1000)"};
    o[n++] = (jp_opt){"cursor", NULL, JP_OPT_STR, &a->cursor, NULL, 0, 0, "C",
                      "Start at this page (printed as \"next: C\" by the previous one)"};
    o[n++] = (jp_opt){"all", NULL, JP_OPT_BOOL, &a->all, NULL, 0, 0, NULL,
                      "Follow the pages to the end"};
    return n;
}

static void add_query(jp_buf *q, const char *name, const char *value)
{
    char *e;

    if (!value)
        return;
    e = jp_client_escape(value);
    jp_buf_append(q, q->len ? "&" : "?", 1);
    jp_buf_append(q, name, strlen(name));
    jp_buf_append(q, "=", 1);
    jp_buf_append(q, e, strlen(e));
    free(e);
}

static char *list_path(const list_args *a, const char *cursor)
{
    char limit[32];
    jp_buf q;
    char *p;

    jp_buf_init(&q, 0);
    add_query(&q, "status", a->status);
    add_query(&q, "queue", a->queue);
    add_query(&q, "key", a->key);
    if (a->limit != UNSET) {
        snprintf(limit, sizeof limit, "%lld", (long long)a->limit);
        add_query(&q, "limit", limit);
    }
    add_query(&q, "cursor", cursor);
    p = jp_xasprintf("/api/v1/jobs%s", jp_buf_cstr(&q));
    jp_buf_done(&q);
    return p;
}

static void add_job_row(table *t, const json_t *job)
{
    int64_t att = 0, max = 0;
    bool has_att = json_int(json_object_get(job, "attempts"), &att);
    bool has_max = json_int(json_object_get(job, "max_attempts"), &max);
    char *row[7];

    row[0] = cell(json_object_get(job, "id"));
    row[1] = cell(json_object_get(job, "status"));
    row[2] = cell(json_object_get(job, "queue"));
    row[3] = cell(json_object_get(job, "strategy"));
    row[4] = cell(json_object_get(job, "priority"));
    if (has_att && has_max)
        row[5] = jp_xasprintf("%lld/%lld", (long long)att, (long long)max);
    else
        row[5] = cell(json_object_get(job, "attempts"));
    row[6] = cell(json_object_get(job, "created_at"));
    table_add(t, row);
}

static int run_list(cli *c, void *v, const char *id)
{
    static const char *const head[] = {"ID", "STATUS", "QUEUE", "STRATEGY",
                                       "PRIORITY", "ATTEMPTS", "CREATED"};
    list_args *a = v;
    json_t *page = NULL, *gathered = NULL;
    char *cursor = jp_xstrdup(a->cursor);
    table t;
    int ex = EXIT_OK;

    table_init(&t, 7, head);
    if (c->json && a->all)
        gathered = json_array();
    for (;;) {
        char *path = list_path(a, cursor);
        json_t *jobs;
        const char *next;
        size_t i;
        json_t *job;

        json_decref(page);
        page = NULL;
        ex = call(c, "GET", path, NULL, &page);
        free(path);
        if (ex != EXIT_OK)
            goto out;
        jobs = json_object_get(page, "jobs");
        if (!json_is_array(jobs)) {
            fail("server answered a list without \"jobs\"");
            ex = EXIT_FAIL;
            goto out;
        }
        next = json_string_value(json_object_get(page, "next_cursor"));
        if (next && !*next)
            next = NULL;
        if (gathered) {
            json_array_extend(gathered, jobs);
        } else if (c->json) {
            print_json(c, page);
        } else {
            json_array_foreach(jobs, i, job)
                add_job_row(&t, job);
            table_flush(&t);
        }
        if (!next)
            break;
        if (!a->all) {
            char *shown = sanitize(jp_xstrdup(next));
            fprintf(stderr, "next: %s\n", shown);
            free(shown);
            break;
        }
        if (cursor && strcmp(cursor, next) == 0) {
            fail("server repeated list cursor %.64s; stopping", next);
            ex = EXIT_FAIL;
            goto out;
        }
        free(cursor);
        cursor = jp_xstrdup(next);
    }
    if (gathered) {
        json_t *all = json_pack("{s:O,s:n}", "jobs", gathered, "next_cursor");
        print_json(c, all);
        json_decref(all);
    }
out:
    table_done(&t);
    json_decref(gathered);
    json_decref(page);
    free(cursor);
    return ex;
}

/* ---- attempts ---- */

static int run_attempts(cli *c, void *v, const char *id)
{
    static const char *const head[] = {"ATTEMPT", "OUTCOME", "WORKER",
                                       "STARTED", "DURATION", "ERROR"};
    char *path = job_path(id, "attempts");
    json_t *resp = NULL, *list, *att;
    size_t i;
    table t;
    int ex;

    table_init(&t, 6, head);
    ex = call(c, "GET", path, NULL, &resp);
    if (ex != EXIT_OK)
        goto out;
    if (c->json) {
        print_json(c, resp);
        goto out;
    }
    list = json_object_get(resp, "attempts");
    if (!json_is_array(list)) {
        fail("server answered without \"attempts\"");
        ex = EXIT_FAIL;
        goto out;
    }
    json_array_foreach(list, i, att) {
        char *row[6];
        row[0] = cell(json_object_get(att, "attempt"));
        row[1] = cell(json_object_get(att, "outcome"));
        row[2] = cell(json_object_get(att, "worker_id"));
        row[3] = cell(json_object_get(att, "started_at"));
        row[4] = duration_cell(json_object_get(att, "duration_ms"));
        row[5] = error_cell(json_object_get(att, "error"));
        table_add(&t, row);
    }
    table_flush(&t);
out:
    table_done(&t);
    json_decref(resp);
    free(path);
    return ex;
}

/* ---- stats ---- */

static const char *const STATUSES[] = {"pending", "scheduled", "queued", "running",
                                       "completed", "failed", "cancelled"};
static const char *const PRIORITIES[] = {"emergency", "high", "normal", "low"};

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static int compare_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void add_queue_row(table *t, const char *queue, const char *prio, const json_t *s)
{
    int64_t len = 0;
    char *row[5];

    row[0] = jp_xstrdup(queue);
    row[1] = jp_xstrdup(prio);
    row[2] = cell(json_object_get(s, "length"));
    row[3] = cell(json_object_get(s, "pending"));
    /* An empty queue has no oldest job, whatever age the server reports. */
    if (json_int(json_object_get(s, "length"), &len) && len == 0)
        row[4] = jp_xstrdup("-");
    else
        row[4] = duration_cell(json_object_get(s, "oldest_age_ms"));
    table_add(t, row);
}

static const char *const QUEUE_HEAD[] = {"QUEUE", "PRIORITY", "LENGTH", "PENDING", "OLDEST"};

/* Adds a row to `t` (made with QUEUE_HEAD) for each queue and priority of a
 * stats answer's "queues", sorted by name. */
static void add_queue_rows(table *t, const json_t *queues)
{
    size_t nq = json_object_size(queues), k = 0;
    const char **names = jp_xcalloc(nq ? nq : 1, sizeof *names);
    const char *name, *prio;
    json_t *per, *s;

    json_object_foreach((json_t *)queues, name, per)
        names[k++] = name;
    qsort(names, nq, sizeof *names, compare_str);
    for (k = 0; k < nq; k++) {
        per = json_object_get(queues, names[k]);
        /* Priorities in dispatch order, then any the server adds later. */
        for (size_t p = 0; p < 4; p++)
            if ((s = json_object_get(per, PRIORITIES[p])))
                add_queue_row(t, names[k], PRIORITIES[p], s);
        json_object_foreach(per, prio, s)
            if (!in_list(prio, PRIORITIES, 4))
                add_queue_row(t, names[k], prio, s);
    }
    free(names);
}

static void print_queues(const json_t *queues)
{
    table t;

    table_init(&t, 5, QUEUE_HEAD);
    add_queue_rows(&t, queues);
    table_flush(&t);
    table_done(&t);
}

static int run_stats(cli *c, void *v, const char *id)
{
    static const char *const head[] = {"STATUS", "COUNT"};
    json_t *resp = NULL, *counts, *n;
    const char *st;
    table t;
    int ex;

    table_init(&t, 2, head);
    ex = call(c, "GET", "/api/v1/queue/stats", NULL, &resp);
    if (ex != EXIT_OK)
        goto out;
    if (c->json) {
        print_json(c, resp);
        goto out;
    }
    counts = json_object_get(resp, "counts");
    for (size_t i = 0; i < 7; i++) {
        char *row[2] = {jp_xstrdup(STATUSES[i]), cell(json_object_get(counts, STATUSES[i]))};
        if (!json_object_get(counts, STATUSES[i])) {
            free(row[1]);
            row[1] = jp_xstrdup("0");
        }
        table_add(&t, row);
    }
    json_object_foreach(counts, st, n) {
        if (!in_list(st, STATUSES, 7)) {
            char *row[2] = {jp_xstrdup(st), cell(n)};
            table_add(&t, row);
        }
    }
    table_flush(&t);
    fputc('\n', stdout);
    print_queues(json_object_get(resp, "queues"));
out:
    table_done(&t);
    json_decref(resp);
    return ex;
}

/* ---- workers ---- */

/* A JSON array as "a,b,c" ("-" when empty); any other value as a cell. */
static char *list_cell(const json_t *v)
{
    jp_buf b;
    size_t i;
    json_t *x;
    char *s;

    if (!json_is_array(v))
        return cell(v);
    if (json_array_size(v) == 0)
        return jp_xstrdup("-");
    jp_buf_init(&b, 0);
    json_array_foreach(v, i, x) {
        s = cell(x);
        if (i > 0)
            jp_buf_append(&b, ",", 1);
        jp_buf_append(&b, s, strlen(s));
        free(s);
    }
    s = jp_xstrdup(jp_buf_cstr(&b));
    jp_buf_done(&b);
    return s;
}

/* An age in ms as "0.4s ago", "3m05s ago", "2h10m ago" or "3d04h ago". */
static char *age_text(int64_t ms)
{
    long long v;

    /* A worker whose clock runs a little ahead of ours was just seen. */
    v = ms > 0 ? (long long)ms : 0;
    if (v < 60000)
        return jp_xasprintf("%lld.%llds ago", v / 1000, v % 1000 / 100);
    if (v < 3600000)
        return jp_xasprintf("%lldm%02llds ago", v / 60000, v % 60000 / 1000);
    if (v < 86400000)
        return jp_xasprintf("%lldh%02lldm ago", v / 3600000, v % 3600000 / 60000);
    return jp_xasprintf("%lldd%02lldh ago", v / 86400000, v % 86400000 / 3600000);
}

static char *heartbeat_cell(const json_t *v, int64_t now_ms)
{
    const char *s = json_string_value(v);
    int64_t at;

    if (s && jp_time_parse(s, &at))
        return age_text(now_ms - at);
    return cell(v);
}

/* "in_flight/concurrency", with "-" for either one missing. */
static char *load_cell(const json_t *w)
{
    const json_t *busy = json_object_get(w, "in_flight");
    const json_t *cap = json_object_get(w, "concurrency");
    char *a, *b, *s;

    if ((!busy || json_is_null(busy)) && (!cap || json_is_null(cap)))
        return jp_xstrdup("-");
    a = cell(busy);
    b = cell(cap);
    s = jp_xasprintf("%s/%s", a, b);
    free(a);
    free(b);
    return s;
}

static int run_workers(cli *c, void *v, const char *id)
{
    static const char *const head[] = {"ID",         "HOST",      "QUEUES",
                                       "STRATEGIES", "IN-FLIGHT", "LAST-HEARTBEAT"};
    json_t *resp = NULL, *list, *w;
    int64_t now;
    size_t i;
    table t;
    int ex;

    table_init(&t, 6, head);
    ex = call(c, "GET", "/api/v1/workers", NULL, &resp);
    if (ex != EXIT_OK)
        goto out;
    if (c->json) {
        print_json(c, resp);
        goto out;
    }
    list = json_object_get(resp, "workers");
    if (!json_is_array(list)) {
        fail("server answered without \"workers\"");
        ex = EXIT_FAIL;
        goto out;
    }
    if (json_array_size(list) == 0) {
        fail("no live workers");
        goto out;
    }
    now = jp_now_ms();
    json_array_foreach(list, i, w) {
        char *row[6];
        row[0] = cell(json_object_get(w, "id"));
        row[1] = cell(json_object_get(w, "host"));
        row[2] = list_cell(json_object_get(w, "queues"));
        row[3] = list_cell(json_object_get(w, "strategies"));
        row[4] = load_cell(w);
        row[5] = heartbeat_cell(json_object_get(w, "last_heartbeat"), now);
        table_add(&t, row);
    }
    table_flush(&t);
out:
    table_done(&t);
    json_decref(resp);
    return ex;
}

/* ---- watch ---- */

#define WATCH_MIN_INTERVAL 0.1     /* seconds */
#define WATCH_REQUEST_MIN_MS 2000  /* a hung server costs a frame at most this, or 2 intervals */
#define WATCH_NAME_MAX 24          /* widest queue name shown, in columns */
#define WATCH_URL_MAX 40
#define WATCH_COUNT_COLS 4         /* status counts per line */

/* Set by SIGINT while watching: a signal handler can reach nothing else. */
static volatile sig_atomic_t watch_interrupted;

static void on_sigint(int sig)
{
    watch_interrupted = 1;
}

typedef struct watch_args {
    const char *interval;
    int64_t count;
} watch_args;

static size_t watch_table(void *v, jp_opt *o)
{
    watch_args *a = v;
    size_t n = 0;

    a->count = UNSET;
    o[n++] = (jp_opt){"interval", NULL, JP_OPT_STR, &a->interval, "1", 0, 0, "S",
                      "Seconds between refreshes, at least 0.1"};
    o[n++] = (jp_opt){"count", NULL, JP_OPT_INT, &a->count, NULL, 1, INT32_MAX, "N",
                      "Stop after N refreshes (default: until Ctrl-C)"};
    return n;
}

/* What one refresh learnt. */
typedef struct snapshot {
    json_t *stats;    /* the stats answer, or NULL when there was none */
    json_t *workers;  /* the workers answer, or NULL when unavailable */
    char error[JP_ERR_MSG_MAX];  /* why stats is NULL, one line */
    bool unreachable;            /* no HTTP answer at all */
    bool has_rate;
    double rate;                 /* jobs completed per second since the last refresh */
} snapshot;

/* What carries from one refresh to the next. */
typedef struct watch_state {
    int64_t interval_ms;
    bool tty;               /* stdout is a terminal: redraw in place */
    bool has_prev;          /* prev_* hold the last answered refresh */
    int64_t prev_completed;
    int64_t prev_at;        /* monotonic ms */
} watch_state;

static void snapshot_done(snapshot *s)
{
    json_decref(s->stats);
    json_decref(s->workers);
    s->stats = s->workers = NULL;
}

static void fetch(cli *c, watch_state *w, snapshot *s)
{
    jp_err err = {0};
    json_t *counts;
    int64_t done, now;
    int ex;

    memset(s, 0, sizeof *s);
    ex = call_quiet(c, "GET", "/api/v1/queue/stats", NULL, &s->stats, &err);
    now = jp_mono_ms();
    if (ex != EXIT_OK) {
        s->unreachable = ex == EXIT_UNREACHABLE;
        snprintf(s->error, sizeof s->error, "%s", jp_err_msg(&err));
        sanitize(s->error);
        w->has_prev = false;
        return;
    }
    counts = json_object_get(s->stats, "counts");
    if (!json_int(json_object_get(counts, "completed"), &done)) {
        w->has_prev = false;
    } else {
        /* A count that went down means another database: no rate then. */
        if (w->has_prev && now > w->prev_at && done >= w->prev_completed) {
            s->has_rate = true;
            s->rate = (double)(done - w->prev_completed) * 1000.0 / (double)(now - w->prev_at);
        }
        w->has_prev = true;
        w->prev_completed = done;
        w->prev_at = now;
    }
    /* Servers without the workers list (or with it failing) still get
     * watched: the line is just left out. */
    if (call_quiet(c, "GET", "/api/v1/workers", NULL, &s->workers, &err) != EXIT_OK ||
        !json_is_array(json_object_get(s->workers, "workers"))) {
        json_decref(s->workers);
        s->workers = NULL;
    }
}

/* Terminal height in lines, or 0 when unknown. */
static int terminal_rows(void)
{
    struct winsize ws;

    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0)
        return 0;
    return ws.ws_row;
}

static void put_count(FILE *f, int *col, int *lines, const char *name, const json_t *v)
{
    char *shown = sanitize(jp_xstrdup(name));
    char *n = v ? cell(v) : jp_xstrdup("0");

    clip_text(shown, 12);
    clip_text(sanitize(n), 16);
    if (*col == WATCH_COUNT_COLS) {
        fputc('\n', f);
        (*lines)++;
        *col = 0;
    }
    fprintf(f, "%s%-9s %6s", *col ? "   " : "", shown, n);
    (*col)++;
    free(n);
    free(shown);
}

/* Appends "workers N   in flight B/C" from a workers answer. */
static void put_workers(FILE *f, const json_t *resp)
{
    const json_t *list = json_object_get(resp, "workers");
    int64_t busy = 0, cap = 0, n;
    bool any_busy = false, all_cap = true;
    json_t *x;
    size_t i;

    json_array_foreach(list, i, x) {
        if (json_int(json_object_get(x, "in_flight"), &n)) {
            busy += n;
            any_busy = true;
        }
        if (json_int(json_object_get(x, "concurrency"), &n))
            cap += n;
        else
            all_cap = false;
    }
    fprintf(f, "   workers %zu", json_array_size(list));
    if (any_busy) {
        fprintf(f, "   in flight %lld", (long long)busy);
        if (all_cap)
            fprintf(f, "/%lld", (long long)cap);
    }
}

/* One frame of text; each line ends with "\n" and none is empty, so a
 * blank line can separate frames. */
static void draw_text(FILE *f, const cli *c, const watch_state *w, const snapshot *s)
{
    const json_t *counts, *v;
    const char *st;
    char *url = sanitize(jp_xstrdup(jp_client_url(c->client)));
    char clock[16] = "";
    time_t now = time(NULL);
    struct tm tm;
    int col = 0, lines = 0, rows;
    table t;

    if (localtime_r(&now, &tm))
        strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    clip_text(url, WATCH_URL_MAX);
    fprintf(f, "jobplane watch  %s  every %gs  %s\n", url, (double)w->interval_ms / 1000.0,
            clock);
    free(url);
    if (!s->stats) {
        fprintf(f, "server %s: %s\n", s->unreachable ? "unreachable" : "error", s->error);
        return;
    }
    lines = 1;
    counts = json_object_get(s->stats, "counts");
    for (size_t i = 0; i < 7; i++)
        put_count(f, &col, &lines, STATUSES[i], json_object_get(counts, STATUSES[i]));
    json_object_foreach((json_t *)counts, st, v)
        if (!in_list(st, STATUSES, 7))
            put_count(f, &col, &lines, st, v);
    fputc('\n', f);
    lines++;

    if (s->has_rate)
        fprintf(f, "completed/s %.1f", s->rate);
    else
        fputs("completed/s -", f);
    if (s->workers)
        put_workers(f, s->workers);
    fputc('\n', f);
    lines++;

    table_init(&t, 5, QUEUE_HEAD);
    t.out = f;
    t.clip = WATCH_NAME_MAX;
    add_queue_rows(&t, json_object_get(s->stats, "queues"));
    if (t.nrows == 0) {
        fputs("no queues\n", f);
    } else {
        /* On a terminal the frame must fit, or the top would scroll away:
         * the table header, the rows, a "more" line and the cursor's line. */
        rows = w->tty ? terminal_rows() - lines - 2 : 0;
        if (w->tty && rows > 0 && t.nrows > (size_t)rows) {
            size_t keep = (size_t)rows - 1, dropped = t.nrows - keep;
            for (size_t k = keep * (size_t)t.ncols; k < t.nrows * (size_t)t.ncols; k++)
                free(t.cells[k]);
            t.nrows = keep;
            table_flush(&t);
            fprintf(f, "... %zu more\n", dropped);
        } else {
            table_flush(&t);
        }
    }
    table_done(&t);
}

/* One frame as a line of JSON, for scripts. */
static void draw_json(FILE *f, const snapshot *s)
{
    char at[JP_TIME_STR_MAX];
    json_t *frame;

    jp_time_format(jp_now_ms(), at);
    frame = json_pack("{s:s}", "time", at);
    if (s->stats) {
        json_object_set(frame, "stats", s->stats);
        json_object_set_new(frame, "completed_per_second",
                            s->has_rate ? json_real(s->rate) : json_null());
        json_object_set(frame, "workers", s->workers ? s->workers : json_null());
    } else {
        json_object_set_new(frame, "error",
                            json_pack("{s:s,s:s}", "code",
                                      s->unreachable ? "unreachable" : "error", "message",
                                      s->error));
    }
    json_dumpf(frame, f, JSON_COMPACT);
    fputc('\n', f);
    json_decref(frame);
}

/* Sleeps until the monotonic clock reads `at`; false when SIGINT came first. */
static bool pause_until(int64_t at)
{
    sigset_t block, old;

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (;;) {
        int64_t left = at - jp_mono_ms();
        struct timespec ts;
        if (watch_interrupted || left <= 0)
            break;
        ts.tv_sec = (time_t)(left / 1000);
        ts.tv_nsec = (long)(left % 1000) * 1000000L;
        /* SIGINT gets in only while waiting, so one arriving just after the
         * check still ends the wait at once. */
        ppoll(NULL, 0, &ts, &old);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return !watch_interrupted;
}

static int run_watch(cli *c, void *v, const char *id)
{
    watch_args *a = v;
    watch_state w = {0};
    struct sigaction sa, old_sa;
    int64_t next_at = 0, timeout_ms;
    int ex = EXIT_OK;

    if (!parse_seconds(a->interval, WATCH_MIN_INTERVAL, &w.interval_ms)) {
        fail("--interval: \"%.64s\" is not a number of seconds of at least %g", a->interval,
             WATCH_MIN_INTERVAL);
        return EXIT_USAGE;
    }
    w.tty = isatty(STDOUT_FILENO) && !c->json;
    timeout_ms = 2 * w.interval_ms > WATCH_REQUEST_MIN_MS ? 2 * w.interval_ms
                                                          : WATCH_REQUEST_MIN_MS;
    jp_client_set_timeout(c->client, (long)timeout_ms);

    watch_interrupted = 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;  /* no SA_RESTART: a sleep must end at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    jp_client_set_interrupt(c->client, &watch_interrupted);

    for (int64_t frame = 0; a->count == UNSET || frame < a->count; frame++) {
        snapshot s;
        char *text = NULL;
        size_t len = 0;
        FILE *f;

        if (frame > 0 && !pause_until(next_at))
            break;
        next_at = jp_mono_ms() + w.interval_ms;
        fetch(c, &w, &s);
        f = open_memstream(&text, &len);
        if (!f) {
            snapshot_done(&s);
            fail("cannot draw a frame: %s", strerror(errno));
            ex = EXIT_FAIL;
            break;
        }
        if (c->json)
            draw_json(f, &s);
        else
            draw_text(f, c, &w, &s);
        fclose(f);
        snapshot_done(&s);
        if (watch_interrupted) {
            free(text);
            break;
        }
        /* The frame goes out in one write, so a terminal never shows half. */
        if (w.tty)
            fputs("\033[H\033[J", stdout);
        fwrite(text, 1, len, stdout);
        if (!w.tty && !c->json)
            fputc('\n', stdout);
        free(text);
        if (fflush(stdout) != 0) {
            fail("cannot write the output: %s", strerror(errno));
            ex = EXIT_FAIL;
            break;
        }
    }
    if (watch_interrupted && ex == EXIT_OK)
        fputc('\n', stdout);
    jp_client_set_interrupt(c->client, NULL);
    jp_client_set_timeout(c->client, 0);
    sigaction(SIGINT, &old_sa, NULL);
    return ex;
}

/* ---- the command table and help ---- */

static const command COMMANDS[] = {
    {"submit", "--strategy S [options]", "Create a job and print its id (with --wait, the finished job)",
     0, sizeof(submit_args), submit_table, run_submit},
    {"get", "ID", "Print a job as JSON", 1, 0, NULL, run_get},
    {"list", "[options]", "List jobs, newest first", 0, sizeof(list_args), list_table, run_list},
    {"cancel", "ID", "Cancel a job: queued or scheduled, it never runs; running, it is stopped",
     1, 0, NULL, run_cancel},
    {"retry", "ID", "Run a failed or cancelled job again", 1, 0, NULL, run_retry},
    {"attempts", "ID", "Show a job's attempts: worker, start, duration, outcome, error", 1, 0,
     NULL, run_attempts},
    {"stats", "", "Count jobs by state, and show each queue's waiting jobs by priority", 0, 0,
     NULL, run_stats},
    {"workers", "", "List the live workers: queues, strategies, jobs in flight, last heartbeat",
     0, 0, NULL, run_workers},
    {"watch", "[options]",
     "Live counts, throughput, workers and queues (--json: one line per refresh)", 0,
     sizeof(watch_args), watch_table, run_watch},
};
#define NCOMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

/* The command's own flags (with throw-away storage), for help. */
static size_t own_flags(const command *cmd, void **ret_args, jp_opt *o)
{
    *ret_args = jp_xcalloc(1, cmd->args_size ? cmd->args_size : 1);
    return cmd->table ? cmd->table(*ret_args, o) : 0;
}

static void full_help(FILE *out)
{
    globals g = {0};
    jp_opt o[OPTS_MAX];
    size_t n = global_table(&g, false, o);

    jp_opts_usage(out, "jobplane [options] <command> [command options] [args]", o, n);
    fputs("\ncommands:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const command *cmd = &COMMANDS[i];
        void *args;
        size_t k, nf = own_flags(cmd, &args, o);

        fprintf(out, "  %s%s%s\n      %s\n", cmd->name, *cmd->synopsis ? " " : "", cmd->synopsis,
                cmd->summary);
        for (k = 0; k < nf; k++) {
            char left[96];
            snprintf(left, sizeof left, "--%s%s%s", o[k].name, o[k].meta ? " " : "",
                     o[k].meta ? o[k].meta : "");
            fprintf(out, "        %-22s %s%s%s%s\n", left, o[k].help, o[k].def ? " (default: " : "",
                    o[k].def ? o[k].def : "", o[k].def ? ")" : "");
        }
        free(args);
    }
    fputs("  help [COMMAND]\n      Print this help, or one command's\n", out);
    fputs("\n--server, --token and --json may also follow the command.\n"
          "Exit status: 0 success; 1 the server refused the request, or the job did not\n"
          "complete (submit --wait); 2 bad command line; 3 server unreachable;\n"
          "124 --wait-timeout passed.\n",
          out);
}

static void command_help(FILE *out, const command *cmd)
{
    jp_opt o[OPTS_MAX];
    void *args;
    size_t n = own_flags(cmd, &args, o);
    char *synopsis = jp_xasprintf("jobplane %s%s%s", cmd->name, *cmd->synopsis ? " " : "",
                                  cmd->synopsis);

    jp_opts_usage(out, synopsis, o, n);
    fprintf(out, "\n%s.\n--server, --token and --json (see 'jobplane --help') may also be given "
                 "here.\n",
            cmd->summary);
    free(synopsis);
    free(args);
}

/* ---- running a command ---- */

/* A copy of argv with the flags first and the operands after "--", so flags
 * may follow a job ID ("jobplane get ID --json") although the parser stops at
 * the first operand. The array is the caller's; the strings stay argv's. */
static char **flags_first(const jp_opt *o, size_t n, int argc, char **argv, int *ret_count)
{
    char **out = jp_xcalloc((size_t)argc + 2, sizeof *out);
    char **ops = jp_xcalloc((size_t)argc + 1, sizeof *ops);
    int k = 0, nops = 0;

    out[k++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (++i < argc)
                ops[nops++] = argv[i];
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            ops[nops++] = argv[i];
            continue;
        }
        out[k++] = argv[i];
        if (a[1] == '-' && !strchr(a, '=')) {
            for (size_t j = 0; j < n; j++) {
                if (strcmp(o[j].name, a + 2) == 0 && o[j].type != JP_OPT_BOOL && i + 1 < argc) {
                    out[k++] = argv[++i];  /* the flag's value, whatever it looks like */
                    break;
                }
            }
        }
    }
    if (nops > 0) {
        out[k++] = "--";
        for (int j = 0; j < nops; j++)
            out[k++] = ops[j];
    }
    out[k] = NULL;
    free(ops);
    *ret_count = k;
    return out;
}

static int run_command(const command *cmd, const globals *g, int argc, char **argv)
{
    jp_opt o[OPTS_MAX];
    globals late = {0};
    cli c = {0};
    void *args = jp_xcalloc(1, cmd->args_size ? cmd->args_size : 1);
    size_t nown = cmd->table ? cmd->table(args, o) : 0;
    size_t n = nown + global_table(&late, true, o + nown);
    int ac = 0;
    char **av = flags_first(o, n, argc, argv, &ac);
    const char *id = NULL;
    jp_err err = {0};
    int argi = 0, npos, rc, ex;

    rc = jp_opts_parse(o, n, ac, av, &argi, &err);
    if (rc == 1) {
        command_help(stdout, cmd);
        ex = EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        fail("%s: %s", cmd->name, jp_err_msg(&err));
        ex = EXIT_USAGE;
        goto out;
    }
    npos = ac - argi;
    if (npos < cmd->npos) {
        fail("%s: missing job ID (usage: jobplane %s %s)", cmd->name, cmd->name, cmd->synopsis);
        ex = EXIT_USAGE;
        goto out;
    }
    if (npos > cmd->npos) {
        fail("%s: unexpected argument \"%.64s\"", cmd->name, av[argi + cmd->npos]);
        ex = EXIT_USAGE;
        goto out;
    }
    if (cmd->npos == 1) {
        id = av[argi];
        if (!*id) {
            fail("%s: the job ID is empty", cmd->name);
            ex = EXIT_USAGE;
            goto out;
        }
    }
    c.json = g->json || late.json;
    rc = jp_client_new(late.server ? late.server : g->server, late.token ? late.token : g->token,
                       &c.client, &err);
    if (rc < 0) {
        fail("%s", jp_err_msg(&err));
        ex = EXIT_USAGE;
        goto out;
    }
    ex = cmd->run(&c, args, id);
out:
    jp_client_free(c.client);
    free(av);
    free(args);
    return ex;
}

int main(int argc, char **argv)
{
    globals g = {0};
    jp_opt o[OPTS_MAX];
    size_t n = global_table(&g, false, o);
    const command *cmd;
    jp_err err = {0};
    int argi = argc, rc, ex;

    rc = jp_opts_parse(o, n, argc, argv, &argi, &err);
    if (rc == 1) {
        full_help(stdout);
        return EXIT_OK;
    }
    if (rc < 0) {
        fail("%s", jp_err_msg(&err));
        return EXIT_USAGE;
    }
    if (argi >= argc) {
        fail("no command given (see 'jobplane --help')");
        return EXIT_USAGE;
    }
    if (strcmp(argv[argi], "help") == 0) {
        if (argi + 1 >= argc) {
            full_help(stdout);
            return EXIT_OK;
        }
        cmd = find_command(argv[argi + 1]);
        if (!cmd || argi + 2 < argc) {
            fail("help: unknown command \"%.64s\" (see 'jobplane --help')", argv[argi + 1]);
            return EXIT_USAGE;
        }
        command_help(stdout, cmd);
        return EXIT_OK;
    }
    cmd = find_command(argv[argi]);
    if (!cmd) {
        fail("unknown command \"%.64s\" (see 'jobplane --help')", argv[argi]);
        return EXIT_USAGE;
    }
    if (jp_client_global_init(&err) < 0) {
        fail("%s", jp_err_msg(&err));
        return EXIT_FAIL;
    }
    ex = run_command(cmd, &g, argc - argi, argv + argi);
    jp_client_global_cleanup();
    if (fflush(stdout) != 0 && ex == EXIT_OK) {
        fail("cannot write the output: %s", strerror(errno));
        ex = EXIT_FAIL;
    }
    return ex;
}
