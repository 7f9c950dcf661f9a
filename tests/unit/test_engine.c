/* Unit tests of the execution engine: the registry, tasks, and the noop,
 * sleep, exec and http strategies (http against a server on 127.0.0.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/jtime.h"
#include "engine/engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static jp_engine *g_engine; /* every built-in enabled, no allow-list */
static int g_port;          /* the test HTTP server */

/* ---- helpers ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static json_t *payload_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *payload_fmt(const char *fmt, ...)
{
    char buf[4096];
    json_error_t jerr;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_t *v = json_loads(buf, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        fail_msg("bad test payload %s: %s", buf, jerr.text);
    return v;
}

/* Checks the outcome conventions every run must keep. */
static void check_outcome(int rc, const jp_outcome *out)
{
    if (rc == 0) {
        assert_non_null(out->result);
        assert_null(out->error);
    } else {
        assert_int_equal(rc, -1);
        assert_true(json_is_object(out->error));
        assert_true(json_is_string(json_object_get(out->error, "code")));
        assert_true(json_is_string(json_object_get(out->error, "message")));
    }
    if (out->result) {
        char *s = json_dumps(out->result, JSON_ENCODE_ANY);
        assert_non_null(s);
        free(s);
    }
}

/* Runs `payload` (consumed) with a fresh task of `timeout_ms`. */
static int run_v(jp_engine *e, const char *strategy, json_t *payload, int64_t timeout_ms,
                 jp_outcome *out)
{
    jp_task *t = jp_task_new(timeout_ms);
    int rc = jp_engine_run(e, strategy, payload, t, out);
    check_outcome(rc, out);
    jp_task_free(t);
    json_decref(payload);
    return rc;
}

static int run(jp_engine *e, const char *strategy, const char *payload, int64_t timeout_ms,
               jp_outcome *out)
{
    return run_v(e, strategy, payload ? payload_fmt("%s", payload) : NULL, timeout_ms, out);
}

typedef struct canceller {
    jp_task *task;
    int delay_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    sleep_ms(c->delay_ms);
    jp_task_cancel(c->task);
    return NULL;
}

/* Runs with a task that another thread cancels after `delay_ms`. */
static int run_cancelled(const char *strategy, json_t *payload, int delay_ms, jp_outcome *out)
{
    canceller c = {jp_task_new(60000), delay_ms};
    pthread_t thr;

    assert_int_equal(pthread_create(&thr, NULL, cancel_later, &c), 0);
    int rc = jp_engine_run(g_engine, strategy, payload, c.task, out);
    pthread_join(thr, NULL);
    check_outcome(rc, out);
    jp_task_free(c.task);
    json_decref(payload);
    return rc;
}

static const char *err_code(const jp_outcome *o)
{
    return json_string_value(json_object_get(o->error, "code"));
}

static const char *err_msg(const jp_outcome *o)
{
    return json_string_value(json_object_get(o->error, "message"));
}

static const char *res_str(const jp_outcome *o, const char *key)
{
    return json_string_value(json_object_get(o->result, key));
}

static json_int_t res_int(const jp_outcome *o, const char *key)
{
    json_t *v = json_object_get(o->result, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

static void expect_invalid(jp_engine *e, const char *strategy, const char *payload,
                           const char *mention)
{
    jp_outcome out;
    assert_int_equal(run(e, strategy, payload, 5000, &out), -1);
    assert_string_equal(err_code(&out), "invalid_payload");
    assert_false(out.retryable);
    assert_contains(err_msg(&out), mention);
    jp_outcome_done(&out);
}

/* Waits (reaping the zombies we inherit as subreaper) until no process of
 * group `pgid` exists. */
static bool group_gone(pid_t pgid, int within_ms)
{
    int64_t end = jp_mono_ms() + within_ms;
    for (;;) {
        while (waitpid(-pgid, NULL, WNOHANG) > 0)
            ;
        if (kill(-pgid, 0) < 0 && errno == ESRCH)
            return true;
        if (jp_mono_ms() > end)
            return false;
        sleep_ms(10);
    }
}

/* ---- a tiny HTTP server on 127.0.0.1 ---- */

static int g_listen_fd = -1;
static pthread_t g_accept_thr;
static atomic_bool g_stop;
static atomic_int g_active; /* connections being served */

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int status, const char *ctype, const char *extra, const char *body,
                    size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-Test: yes\r\n%s\r\n",
                     status, ctype, len, extra ? extra : "");
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

/* Reads one request: method, path, lowercased headers and body. */
static bool read_request(int fd, char *method, char *path, json_t *headers, char **body,
                         size_t *body_len)
{
    static const size_t max = 1 << 20;
    char *buf = malloc(max + 1);
    size_t len = 0, content_length = 0;
    char *end = NULL;

    while (!end) {
        ssize_t n = recv(fd, buf + len, max - len, 0);
        if (n <= 0 || (len += (size_t)n) >= max) {
            free(buf);
            return false;
        }
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (sscanf(buf, "%15s %1023s", method, path) != 2) {
        free(buf);
        return false;
    }
    for (char *line = strstr(buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        char *colon = strchr(line, ':');
        char *eol = strstr(line, "\r\n");
        if (!colon || colon > eol)
            continue;
        char name[256] = "";
        size_t nl =
            (size_t)(colon - line) < sizeof name - 1 ? (size_t)(colon - line) : sizeof name - 1;
        for (size_t i = 0; i < nl; i++)
            name[i] = (char)(line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i]);
        name[nl] = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        json_object_set_new(headers, name, json_stringn(v, (size_t)(eol - v)));
        if (strcmp(name, "content-length") == 0)
            content_length = strtoul(v, NULL, 10);
    }
    size_t have = len - (size_t)(end + 4 - buf);
    memmove(buf, end + 4, have);
    while (have < content_length && content_length < max) {
        ssize_t n = recv(fd, buf + have, content_length - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    *body = buf;
    *body_len = have;
    return true;
}

static const char html_page[] =
    "<!DOCTYPE html><html><head><title>  Example Domain \n</title></head>"
    "<body><ul><li>one</li><li> two </li></ul><p id=\"x\">caf\xc3\xa9</p></body></html>";

static const char json_doc[] =
    "{\"a/b\": 1, \"m~n\": \"tilde\", \"items\": [{\"name\": \"first\"}, {\"name\": \"second\"}],"
    " \"nested\": {\"k\": [10, 20]}}";

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char method[16], path[1024];
    json_t *headers = json_object();
    char *body = NULL;
    size_t body_len = 0;

    if (!read_request(fd, method, path, headers, &body, &body_len))
        goto out;
    if (strcmp(path, "/html") == 0) {
        respond(fd, 200, "text/html; charset=utf-8", NULL, html_page, strlen(html_page));
    } else if (strcmp(path, "/json") == 0) {
        respond(fd, 200, "application/json", NULL, json_doc, strlen(json_doc));
    } else if (strcmp(path, "/500") == 0) {
        respond(fd, 500, "text/plain", NULL, "boom", 4);
    } else if (strcmp(path, "/404") == 0) {
        respond(fd, 404, "text/plain", NULL, "nope", 4);
    } else if (strcmp(path, "/429") == 0) {
        respond(fd, 429, "text/plain", NULL, "slow down", 9);
    } else if (strcmp(path, "/slow") == 0) {
        /* Answers after 5 s, or gives up as soon as the client goes away. */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 5000) == 0)
            respond(fd, 200, "text/plain", NULL, "late", 4);
    } else if (strcmp(path, "/big") == 0) {
        size_t n = 4 << 20;
        char *big = malloc(n);
        memset(big, 'x', n);
        respond(fd, 200, "text/plain", NULL, big, n);
        free(big);
    } else if (strcmp(path, "/binary") == 0) {
        respond(fd, 200, "text/plain", NULL, "ok \xff\xfe end", 10);
    } else if (strcmp(path, "/redirect") == 0) {
        respond(fd, 302, "text/plain", "Location: /json\r\n", "", 0);
    } else if (strcmp(path, "/redirect-file") == 0) {
        respond(fd, 302, "text/plain", "Location: file:///etc/passwd\r\n", "", 0);
    } else if (strcmp(path, "/echo") == 0) {
        json_t *e = json_pack("{ss ss sO s:s%}", "method", method, "path", path, "headers", headers,
                              "body", body, body_len);
        char *s = json_dumps(e, JSON_COMPACT);
        respond(fd, 200, "application/json", NULL, s, strlen(s));
        free(s);
        json_decref(e);
    } else {
        respond(fd, 404, "text/plain", NULL, "unknown path", 12);
    }
out:
    free(body);
    json_decref(headers);
    close(fd);
    atomic_fetch_sub(&g_active, 1);
    return NULL;
}

static void *accept_loop(void *arg)
{
    while (!atomic_load(&g_stop)) {
        struct pollfd pf = {.fd = g_listen_fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int fd = accept4(g_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_t thr;
        atomic_fetch_add(&g_active, 1);
        if (pthread_create(&thr, NULL, serve_conn, (void *)(intptr_t)fd) == 0) {
            pthread_detach(thr);
        } else {
            close(fd);
            atomic_fetch_sub(&g_active, 1);
        }
    }
    return NULL;
}

static int start_server(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t alen = sizeof a;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_listen_fd < 0 || bind(g_listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(g_listen_fd, 64) < 0 || getsockname(g_listen_fd, (struct sockaddr *)&a, &alen) < 0)
        return -1;
    g_port = ntohs(a.sin_port);
    atomic_store(&g_stop, false);
    return pthread_create(&g_accept_thr, NULL, accept_loop, NULL) == 0 ? 0 : -1;
}

static void stop_server(void)
{
    atomic_store(&g_stop, true);
    pthread_join(g_accept_thr, NULL);
    close(g_listen_fd);
    for (int i = 0; i < 600 && atomic_load(&g_active) > 0; i++)
        sleep_ms(10);
}

static int setup_all(void **state)
{
    jp_engine_config cfg = {.strategies = "noop,sleep,exec,http"};
    /* Requests must go to 127.0.0.1 directly, whatever proxy the machine sets. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    if (jp_engine_new(&cfg, &g_engine, NULL) < 0)
        return -1;
    return start_server();
}

static int teardown_all(void **state)
{
    stop_server();
    jp_engine_free(g_engine);
    return 0;
}

/* ---- registry ---- */

static int dummy_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    out->result = json_pack("{ss}", "dummy", (const char *)ctx);
    return 0;
}

static void test_defaults_enable_noop_sleep_http(void **state)
{
    jp_engine *e = NULL;
    assert_int_equal(jp_engine_new(NULL, &e, NULL), 0);
    assert_string_equal(jp_engine_names(e), "noop,sleep,http");
    assert_true(jp_engine_has(e, "noop"));
    assert_true(jp_engine_has(e, "sleep"));
    assert_true(jp_engine_has(e, "http"));
    assert_false(jp_engine_has(e, "exec"));
    assert_false(jp_engine_has(e, "nope"));
    jp_engine_free(e);
}

static void test_exec_enabled_only_when_named(void **state)
{
    jp_engine *e = NULL;
    jp_engine_config cfg = {.strategies = " exec , noop "};
    assert_int_equal(jp_engine_new(&cfg, &e, NULL), 0);
    assert_true(jp_engine_has(e, "exec"));
    assert_true(jp_engine_has(e, "noop"));
    assert_false(jp_engine_has(e, "http"));
    assert_string_equal(jp_engine_names(e), "noop,exec");
    jp_engine_free(e);
}

static void test_disabled_strategy_runs_as_unknown(void **state)
{
    jp_engine *e = NULL;
    jp_outcome out;
    assert_int_equal(jp_engine_new(NULL, &e, NULL), 0);
    assert_int_equal(run(e, "exec", "{\"command\": [\"/bin/echo\"]}", 1000, &out), -1);
    assert_string_equal(err_code(&out), "unknown_strategy");
    assert_false(out.retryable);
    jp_outcome_done(&out);
    assert_int_equal(run(e, "nosuch", "{}", 1000, &out), -1);
    assert_string_equal(err_code(&out), "unknown_strategy");
    assert_contains(err_msg(&out), "nosuch");
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_unknown_strategy_in_config_is_refused(void **state)
{
    jp_engine *e = NULL;
    jp_err err = {0};
    jp_engine_config cfg = {.strategies = "noop,bogus"};
    assert_int_equal(jp_engine_new(&cfg, &e, &err), JP_EINVAL);
    assert_null(e);
    assert_string_equal(err.msg, "unknown strategy \"bogus\" (known: noop, sleep, exec, http)");
}

static void test_relative_allow_list_entry_is_refused(void **state)
{
    jp_engine *e = NULL;
    jp_err err = {0};
    jp_engine_config cfg = {.strategies = "exec", .exec_allow = "/bin/echo,echo"};
    assert_int_equal(jp_engine_new(&cfg, &e, &err), JP_EINVAL);
    assert_null(e);
    assert_contains(err.msg, "\"echo\"");
}

static void test_register_adds_and_refuses_duplicates(void **state)
{
    jp_engine *e = NULL;
    jp_err err = {0};
    jp_outcome out;
    jp_strategy custom = {JP_STRATEGY_ABI, "custom", "hello", dummy_run};
    jp_strategy dup = {JP_STRATEGY_ABI, "noop", NULL, dummy_run};
    jp_strategy hidden = {JP_STRATEGY_ABI, "exec", NULL, dummy_run};
    jp_strategy bad_abi = {99, "other", NULL, dummy_run};
    jp_strategy bad_name = {JP_STRATEGY_ABI, "Bad Name", NULL, dummy_run};

    assert_int_equal(jp_engine_new(NULL, &e, NULL), 0);
    assert_int_equal(jp_engine_register(e, &custom, &err), 0);
    assert_true(jp_engine_has(e, "custom"));
    assert_string_equal(jp_engine_names(e), "noop,sleep,http,custom");
    assert_int_equal(jp_engine_register(e, &dup, &err), JP_ECONFLICT);
    /* A disabled built-in still owns its name. */
    assert_int_equal(jp_engine_register(e, &hidden, &err), JP_ECONFLICT);
    assert_int_equal(jp_engine_register(e, &custom, &err), JP_ECONFLICT);
    assert_int_equal(jp_engine_register(e, &bad_abi, &err), JP_EINVAL);
    assert_int_equal(jp_engine_register(e, &bad_name, &err), JP_EINVAL);
    assert_false(jp_engine_has(e, "other"));

    assert_int_equal(run(e, "custom", "null", 1000, &out), 0);
    assert_string_equal(res_str(&out, "dummy"), "hello");
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static int silent_fail_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    return -1;
}

static int overrun_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    sleep_ms(80);
    out->error = json_pack("{ss ss}", "code", "oops", "message", "gave up");
    return -1;
}

static void test_run_normalises_strategy_failures(void **state)
{
    jp_engine *e = NULL;
    jp_outcome out;
    jp_strategy silent = {JP_STRATEGY_ABI, "silent", NULL, silent_fail_run};
    jp_strategy overrun = {JP_STRATEGY_ABI, "overrun", NULL, overrun_run};

    assert_int_equal(jp_engine_new(NULL, &e, NULL), 0);
    assert_int_equal(jp_engine_register(e, &silent, NULL), 0);
    assert_int_equal(jp_engine_register(e, &overrun, NULL), 0);

    assert_int_equal(run(e, "silent", "{}", 1000, &out), -1);
    assert_string_equal(err_code(&out), "strategy_error");
    jp_outcome_done(&out);

    /* A failure after the deadline is a timeout, whatever the strategy said. */
    assert_int_equal(run(e, "overrun", "{}", 20, &out), -1);
    assert_string_equal(err_code(&out), "timeout");
    assert_true(out.retryable);
    assert_contains(err_msg(&out), "gave up");
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_run_of_cancelled_task_is_cancelled(void **state)
{
    jp_outcome out;
    jp_task *t = jp_task_new(1000);
    jp_task_cancel(t);
    assert_int_equal(jp_engine_run(g_engine, "noop", NULL, t, &out), -1);
    assert_string_equal(err_code(&out), "cancelled");
    assert_false(out.retryable);
    jp_outcome_done(&out);
    jp_task_free(t);
}

/* ---- task ---- */

static void test_task_deadline_and_cancel_fd(void **state)
{
    jp_task *t = jp_task_new(500);
    int64_t left = jp_task_remaining_ms(t);
    assert_true(left > 400 && left <= 500);
    assert_false(jp_task_cancelled(t));

    struct pollfd pf = {.fd = jp_task_cancel_fd(t), .events = POLLIN};
    assert_true(pf.fd >= 0);
    assert_true(fcntl(pf.fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(poll(&pf, 1, 0), 0);
    jp_task_cancel(t);
    jp_task_cancel(t);
    assert_true(jp_task_cancelled(t));
    assert_int_equal(poll(&pf, 1, 0), 1);
    jp_task_free(t);
    jp_task_free(NULL);

    t = jp_task_new(1);
    sleep_ms(5);
    assert_int_equal(jp_task_remaining_ms(t), 0);
    jp_task_free(t);
}

/* ---- noop ---- */

static void test_noop_returns_empty_object(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "noop", "[1, {\"any\": true}]", 1000, &out), 0);
    assert_true(json_is_object(out.result));
    assert_int_equal(json_object_size(out.result), 0);
    jp_outcome_done(&out);
}

/* ---- sleep ---- */

static void test_sleep_returns_slept_ms(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run(g_engine, "sleep", "{\"ms\": 40}", 1000, &out), 0);
    assert_true(jp_mono_ms() - t0 >= 40);
    assert_int_equal(res_int(&out, "slept_ms"), 40);
    jp_outcome_done(&out);

    assert_int_equal(run(g_engine, "sleep", "{}", 1000, &out), 0);
    assert_int_equal(res_int(&out, "slept_ms"), 0);
    jp_outcome_done(&out);
}

static void test_sleep_refuses_bad_ms(void **state)
{
    expect_invalid(g_engine, "sleep", "{\"ms\": \"ten\"}", "ms");
    expect_invalid(g_engine, "sleep", "{\"ms\": 1.5}", "ms");
    expect_invalid(g_engine, "sleep", "{\"ms\": -1}", "ms");
    expect_invalid(g_engine, "sleep", "{\"ms\": 99999999999}", "ms");
    expect_invalid(g_engine, "sleep", "{\"msec\": 5}", "msec");
    expect_invalid(g_engine, "sleep", "[5]", "payload");
}

static void test_sleep_cancel_is_prompt(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run_cancelled("sleep", payload_fmt("{\"ms\": 10000}"), 100, &out), -1);
    assert_true(jp_mono_ms() - t0 < 1000);
    assert_string_equal(err_code(&out), "cancelled");
    assert_false(out.retryable);
    jp_outcome_done(&out);
}

static void test_sleep_times_out(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run(g_engine, "sleep", "{\"ms\": 5000}", 100, &out), -1);
    int64_t took = jp_mono_ms() - t0;
    assert_true(took >= 100 && took < 1000);
    assert_string_equal(err_code(&out), "timeout");
    assert_true(out.retryable);
    jp_outcome_done(&out);
}

/* ---- exec ---- */

static void test_exec_captures_stdout(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"/bin/echo\", \"hello\", \"world\"]}", 5000, &out),
        0);
    assert_string_equal(res_str(&out, "stdout"), "hello world\n");
    assert_string_equal(res_str(&out, "stderr"), "");
    assert_int_equal(res_int(&out, "exit_code"), 0);
    assert_true(json_is_null(json_object_get(out.result, "signal")));
    assert_true(json_is_false(json_object_get(out.result, "truncated")));
    assert_true(res_int(&out, "duration_ms") >= 0);
    jp_outcome_done(&out);
}

static void test_exec_finds_bare_name_in_path(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "exec", "{\"command\": [\"echo\", \"hi\"]}", 5000, &out), 0);
    assert_string_equal(res_str(&out, "stdout"), "hi\n");
    jp_outcome_done(&out);
}

static void test_exec_captures_stderr(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"echo oops >&2; echo fine\"]}", 5000,
                         &out),
                     0);
    assert_string_equal(res_str(&out, "stderr"), "oops\n");
    assert_string_equal(res_str(&out, "stdout"), "fine\n");
    jp_outcome_done(&out);
}

static void test_exec_nonzero_exit_is_retryable_failure(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"echo bad input >&2; exit 3\"]}", 5000,
                         &out),
                     -1);
    assert_string_equal(err_code(&out), "exit_status");
    assert_string_equal(err_msg(&out), "exited with status 3");
    assert_true(out.retryable);
    assert_int_equal(res_int(&out, "exit_code"), 3);
    assert_string_equal(res_str(&out, "stderr"), "bad input\n");
    jp_outcome_done(&out);
}

static void test_exec_signal_is_failure(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"sh\", \"-c\", \"kill -TERM $$\"]}", 5000, &out),
        -1);
    assert_string_equal(err_code(&out), "signaled");
    assert_string_equal(res_str(&out, "signal"), "SIGTERM");
    assert_true(json_is_null(json_object_get(out.result, "exit_code")));
    jp_outcome_done(&out);
}

static void test_exec_passes_stdin(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"cat\"], \"stdin\": \"line one\\nline two\\n\"}", 5000,
                         &out),
                     0);
    assert_string_equal(res_str(&out, "stdout"), "line one\nline two\n");
    jp_outcome_done(&out);

    /* More than a pipe holds, while the child also writes. */
    size_t n = 3000000;
    char *big = malloc(n);
    memset(big, 'z', n);
    json_t *p = json_pack("{s[ss] s:s#}", "command", "wc", "-c", "stdin", big, n);
    free(big);
    assert_int_equal(run_v(g_engine, "exec", p, 5000, &out), 0);
    assert_contains(res_str(&out, "stdout"), "3000000");
    jp_outcome_done(&out);
}

static void test_exec_child_ignoring_stdin_is_fine(void **state)
{
    jp_outcome out;
    size_t n = 1000000;
    char *big = malloc(n);
    memset(big, 'z', n);
    /* The write hits a closed pipe: that must not raise SIGPIPE in this process. */
    json_t *p = json_pack("{s[s] s:s#}", "command", "true", "stdin", big, n);
    free(big);
    assert_int_equal(run_v(g_engine, "exec", p, 5000, &out), 0);
    assert_int_equal(res_int(&out, "exit_code"), 0);
    jp_outcome_done(&out);
}

static void test_exec_environment_is_minimal(void **state)
{
    jp_outcome out;
    setenv("JP_TEST_SECRET", "do-not-leak", 1);
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"/usr/bin/env\"], \"env\": {\"FOO\": \"bar baz\"}}", 5000,
                         &out),
                     0);
    const char *env = res_str(&out, "stdout");
    assert_contains(env, "FOO=bar baz\n");
    assert_contains(env, "PATH=/usr/local/bin:/usr/bin:/bin\n");
    assert_contains(env, "LANG=C.UTF-8\n");
    assert_contains(env, "HOME=/");
    assert_null(strstr(env, "JP_TEST_SECRET"));
    assert_null(strstr(env, "do-not-leak"));
    jp_outcome_done(&out);

    /* A payload may override the defaults. */
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"/usr/bin/env\"], \"env\": {\"LANG\": \"C\"}}", 5000,
                         &out),
                     0);
    assert_contains(res_str(&out, "stdout"), "LANG=C\n");
    assert_null(strstr(res_str(&out, "stdout"), "C.UTF-8"));
    jp_outcome_done(&out);
    unsetenv("JP_TEST_SECRET");
}

static void test_exec_runs_in_cwd(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"pwd\"], \"cwd\": \"/tmp\"}", 5000, &out), 0);
    assert_string_equal(res_str(&out, "stdout"), "/tmp\n");
    jp_outcome_done(&out);

    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"pwd\"], \"cwd\": \"/no/such/dir\"}", 5000, &out),
        -1);
    assert_string_equal(err_code(&out), "spawn_failed");
    assert_contains(err_msg(&out), "/no/such/dir");
    jp_outcome_done(&out);

    expect_invalid(g_engine, "exec", "{\"command\": [\"pwd\"], \"cwd\": \"tmp\"}", "cwd");
}

static void test_exec_truncates_output_at_cap(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"head -c 10000000 /dev/zero | tr '\\\\0' "
                         "a; echo done >&2\"],"
                         " \"max_output_bytes\": 1000}",
                         10000, &out),
                     0);
    assert_true(jp_mono_ms() - t0 < 5000);
    assert_int_equal(strlen(res_str(&out, "stdout")), 1000);
    assert_int_equal(res_str(&out, "stdout")[999], 'a');
    assert_string_equal(res_str(&out, "stderr"), "done\n");
    assert_true(json_is_true(json_object_get(out.result, "truncated")));
    jp_outcome_done(&out);
}

static void test_exec_engine_cap_bounds_payload_cap(void **state)
{
    jp_engine *e = NULL;
    jp_outcome out;
    jp_engine_config cfg = {.strategies = "exec", .max_output_bytes = 10};
    assert_int_equal(jp_engine_new(&cfg, &e, NULL), 0);
    assert_int_equal(
        run(e, "exec",
            "{\"command\": [\"/bin/echo\", \"0123456789abcdef\"], \"max_output_bytes\": 1000}",
            5000, &out),
        0);
    assert_string_equal(res_str(&out, "stdout"), "0123456789");
    assert_true(json_is_true(json_object_get(out.result, "truncated")));
    jp_outcome_done(&out);
    jp_engine_free(e);
}

/* The leader prints its pid, which is also its process group id. */
static pid_t pgid_from(const jp_outcome *out)
{
    const char *s = res_str(out, "stdout");
    assert_non_null(s);
    pid_t pgid = (pid_t)atoi(s);
    assert_true(pgid > 1);
    return pgid;
}

static void test_exec_timeout_kills_process_group(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"echo $$; sleep 100 & sleep 100\"]}", 300,
                         &out),
                     -1);
    int64_t took = jp_mono_ms() - t0;
    assert_true(took >= 300 && took < 2000);
    assert_string_equal(err_code(&out), "timeout");
    assert_true(out.retryable);
    assert_string_equal(res_str(&out, "signal"), "SIGKILL");
    assert_true(group_gone(pgid_from(&out), 2000));
    jp_outcome_done(&out);
}

static void test_exec_cancel_kills_process_group(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(
        run_cancelled("exec",
                      payload_fmt("{\"command\": [\"sh\", \"-c\", \"echo $$; sleep 100 & "
                                  "sleep 100\"]}"),
                      200, &out),
        -1);
    assert_true(jp_mono_ms() - t0 < 1000);
    assert_string_equal(err_code(&out), "cancelled");
    assert_false(out.retryable);
    assert_true(group_gone(pgid_from(&out), 2000));
    jp_outcome_done(&out);
}

static void test_exec_does_not_wait_for_background_leftovers(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    /* The background sleep holds stdout open; the job still ends with its program. */
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"echo $$; sleep 100 &\"]}", 10000, &out),
                     0);
    assert_true(jp_mono_ms() - t0 < 2000);
    assert_true(group_gone(pgid_from(&out), 2000));
    jp_outcome_done(&out);
}

static void test_exec_waits_for_program_that_closed_its_output(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run(g_engine, "exec",
                         "{\"command\": [\"sh\", \"-c\", \"exec >&- 2>&-; sleep 0.3; exit 4\"]}",
                         5000, &out),
                     -1);
    assert_true(jp_mono_ms() - t0 >= 300);
    assert_string_equal(err_code(&out), "exit_status");
    assert_int_equal(res_int(&out, "exit_code"), 4);
    jp_outcome_done(&out);
}

static void test_exec_allow_list(void **state)
{
    jp_engine *e = NULL;
    jp_outcome out;
    jp_engine_config cfg = {.strategies = "exec", .exec_allow = "/bin/echo, /bin/true"};
    assert_int_equal(jp_engine_new(&cfg, &e, NULL), 0);

    assert_int_equal(run(e, "exec", "{\"command\": [\"/bin/cat\", \"/etc/hostname\"]}", 5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "not_allowed");
    assert_false(out.retryable);
    assert_contains(err_msg(&out), "/bin/cat");
    jp_outcome_done(&out);

    /* A shell could run anything, so it is refused too. */
    assert_int_equal(run(e, "exec", "{\"command\": [\"sh\", \"-c\", \"echo hi\"]}", 5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "not_allowed");
    jp_outcome_done(&out);

    assert_int_equal(run(e, "exec", "{\"command\": [\"/bin/echo\", \"ok\"]}", 5000, &out), 0);
    assert_string_equal(res_str(&out, "stdout"), "ok\n");
    jp_outcome_done(&out);

    /* The same program by another path (or by name) is the same program. */
    assert_int_equal(run(e, "exec", "{\"command\": [\"echo\", \"ok\"]}", 5000, &out), 0);
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_exec_missing_program_is_spawn_failed(void **state)
{
    jp_outcome out;
    assert_int_equal(run(g_engine, "exec", "{\"command\": [\"/no/such/program\"]}", 5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "spawn_failed");
    assert_false(out.retryable);
    assert_contains(err_msg(&out), "/no/such/program");
    jp_outcome_done(&out);

    assert_int_equal(run(g_engine, "exec", "{\"command\": [\"no-such-program-xyz\"]}", 5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "spawn_failed");
    jp_outcome_done(&out);
}

static void test_exec_invalid_utf8_output_is_valid_json(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"printf\", \"ok \\\\377\\\\376 end\"]}", 5000, &out),
        0);
    assert_string_equal(res_str(&out, "stdout"), "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
    char *s = json_dumps(out.result, 0);
    assert_non_null(s);
    free(s);
    jp_outcome_done(&out);
}

static void test_exec_does_not_leak_fds(void **state)
{
    jp_outcome out;
    /* Deliberately inheritable: the child must still not see it. */
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd > 2);
    assert_int_equal(
        run(g_engine, "exec", "{\"command\": [\"ls\", \"/proc/self/fd\"]}", 5000, &out), 0);
    /* 3 is the directory ls itself opens. */
    assert_string_equal(res_str(&out, "stdout"), "0\n1\n2\n3\n");
    jp_outcome_done(&out);
    close(fd);
}

static void test_exec_refuses_bad_payloads(void **state)
{
    expect_invalid(g_engine, "exec", "{}", "command");
    expect_invalid(g_engine, "exec", "null", "command");
    expect_invalid(g_engine, "exec", "{\"command\": \"/bin/echo hi\"}", "command");
    expect_invalid(g_engine, "exec", "{\"command\": []}", "command");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\", 3]}", "command[1]");
    expect_invalid(g_engine, "exec", "{\"command\": [\"\"]}", "command[0]");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\", \"a\\u0000b\"]}", "command[1]");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"env\": {\"A\": 1}}",
                   "env.A");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"env\": {\"A=B\": \"x\"}}",
                   "env");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"env\": []}", "env");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"stdin\": 5}", "stdin");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"max_output_bytes\": -1}",
                   "max_output_bytes");
    expect_invalid(g_engine, "exec", "{\"command\": [\"/bin/echo\"], \"shell\": true}", "shell");

    json_t *args = json_array();
    for (int i = 0; i < 1025; i++)
        json_array_append_new(args, json_string("x"));
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "exec", json_pack("{so}", "command", args), 5000, &out), -1);
    assert_string_equal(err_code(&out), "invalid_payload");
    jp_outcome_done(&out);
}

typedef struct echo_job {
    int index;
    int failures;
} echo_job;

static void *echo_many(void *arg)
{
    echo_job *j = arg;
    for (int i = 0; i < 5; i++) {
        char want[32];
        jp_outcome out;
        jp_task *t = jp_task_new(5000);
        json_t *p = json_pack("{s[ss]}", "command", "/bin/echo", "x");
        snprintf(want, sizeof want, "%d-%d", j->index, i);
        json_array_set_new(json_object_get(p, "command"), 1, json_string(want));
        strcat(want, "\n");
        int rc = jp_engine_run(g_engine, "exec", p, t, &out);
        if (rc != 0 || strcmp(res_str(&out, "stdout"), want) != 0)
            j->failures++;
        jp_outcome_done(&out);
        jp_task_free(t);
        json_decref(p);
    }
    return NULL;
}

static void test_exec_concurrent_runs(void **state)
{
    pthread_t thr[8];
    echo_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (echo_job){i, 0};
        assert_int_equal(pthread_create(&thr[i], NULL, echo_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(thr[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
}

/* ---- http ---- */

static json_t *http_payload(const char *path, const char *extra)
{
    return payload_fmt("{\"url\": \"http://127.0.0.1:%d%s\"%s%s}", g_port, path, extra ? ", " : "",
                       extra ? extra : "");
}

static void test_http_get_returns_status_body_headers(void **state)
{
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "http", http_payload("/html", NULL), 5000, &out), 0);
    assert_int_equal(res_int(&out, "status"), 200);
    assert_contains(res_str(&out, "body"), "<title>  Example Domain");
    json_t *h = json_object_get(out.result, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "x-test")), "yes");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")),
                        "text/html; charset=utf-8");
    assert_true(json_is_false(json_object_get(out.result, "truncated")));
    assert_true(json_is_null(json_object_get(out.result, "extracted")));
    assert_true(res_int(&out, "duration_ms") >= 0);
    jp_outcome_done(&out);
}

static void test_http_post_sends_json_body_and_headers(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http",
              http_payload("/echo", "\"method\": \"POST\", \"body\": {\"a\": [1, 2]},"
                                    " \"headers\": {\"X-Custom\": \"v1\", \"X-Empty\": \"\"}"),
              5000, &out),
        0);
    json_t *echo = json_loads(res_str(&out, "body"), 0, NULL);
    assert_non_null(echo);
    assert_string_equal(json_string_value(json_object_get(echo, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(echo, "body")), "{\"a\":[1,2]}");
    json_t *h = json_object_get(echo, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "x-custom")), "v1");
    assert_string_equal(json_string_value(json_object_get(h, "x-empty")), "");
    json_decref(echo);
    jp_outcome_done(&out);
}

static void test_http_string_body_keeps_user_content_type(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http",
              http_payload("/echo", "\"method\": \"PUT\", \"body\": \"plain text\","
                                    " \"headers\": {\"Content-Type\": \"text/plain\"}"),
              5000, &out),
        0);
    json_t *echo = json_loads(res_str(&out, "body"), 0, NULL);
    assert_non_null(echo);
    assert_string_equal(json_string_value(json_object_get(echo, "method")), "PUT");
    assert_string_equal(json_string_value(json_object_get(echo, "body")), "plain text");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(echo, "headers"), "content-type")),
        "text/plain");
    json_decref(echo);
    jp_outcome_done(&out);
}

static void test_http_unexpected_status_fails_with_result(void **state)
{
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "http", http_payload("/404", NULL), 5000, &out), -1);
    assert_string_equal(err_code(&out), "http_status");
    assert_false(out.retryable);
    assert_contains(err_msg(&out), "404");
    assert_int_equal(res_int(&out, "status"), 404);
    assert_string_equal(res_str(&out, "body"), "nope");
    jp_outcome_done(&out);

    assert_int_equal(run_v(g_engine, "http", http_payload("/500", NULL), 5000, &out), -1);
    assert_string_equal(err_code(&out), "http_status");
    assert_true(out.retryable);
    jp_outcome_done(&out);

    assert_int_equal(run_v(g_engine, "http", http_payload("/429", NULL), 5000, &out), -1);
    assert_true(out.retryable);
    jp_outcome_done(&out);

    assert_int_equal(
        run_v(g_engine, "http", http_payload("/json", "\"expect_status\": [201, 204]"), 5000, &out),
        -1);
    assert_string_equal(err_code(&out), "http_status");
    assert_contains(err_msg(&out), "201, 204");
    jp_outcome_done(&out);
}

static void test_http_expect_status_accepts_listed(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http", http_payload("/404", "\"expect_status\": 404"), 5000, &out), 0);
    assert_int_equal(res_int(&out, "status"), 404);
    jp_outcome_done(&out);
}

static void test_http_connection_refused_is_retryable(void **state)
{
    jp_outcome out;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t alen = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* A port that was free a moment ago and has no listener. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);

    assert_int_equal(run_v(g_engine, "http",
                           payload_fmt("{\"url\": \"http://127.0.0.1:%d/\"}", ntohs(a.sin_port)),
                           5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "http_error");
    assert_true(out.retryable);
    assert_contains(err_msg(&out), "127.0.0.1");
    assert_null(out.result);
    jp_outcome_done(&out);
}

static void test_http_times_out_on_slow_server(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run_v(g_engine, "http", http_payload("/slow", NULL), 300, &out), -1);
    int64_t took = jp_mono_ms() - t0;
    assert_true(took >= 250 && took < 1500);
    assert_string_equal(err_code(&out), "timeout");
    assert_true(out.retryable);
    jp_outcome_done(&out);
}

static void test_http_cancel_is_prompt(void **state)
{
    jp_outcome out;
    int64_t t0 = jp_mono_ms();
    assert_int_equal(run_cancelled("http", http_payload("/slow", NULL), 200, &out), -1);
    assert_true(jp_mono_ms() - t0 < 1000);
    assert_string_equal(err_code(&out), "cancelled");
    assert_false(out.retryable);
    jp_outcome_done(&out);
}

static void test_http_body_cap_truncates(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http", http_payload("/big", "\"max_body_bytes\": 1000"), 5000, &out), 0);
    assert_int_equal(res_int(&out, "status"), 200);
    assert_int_equal(strlen(res_str(&out, "body")), 1000);
    assert_true(json_is_true(json_object_get(out.result, "truncated")));
    jp_outcome_done(&out);
}

static void test_http_xpath_extract(void **state)
{
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "http",
                           http_payload("/html", "\"extract\": {\"title\": \"//title\","
                                                 " \"items\": \"//li\", \"none\": \"//table\","
                                                 " \"count\": \"count(//li)\", \"id\": \"//p/@id\","
                                                 " \"text\": \"string(//p)\"}"),
                           5000, &out),
                     0);
    json_t *x = json_object_get(out.result, "extracted");
    assert_string_equal(json_string_value(json_object_get(x, "title")), "Example Domain");
    json_t *items = json_object_get(x, "items");
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(json_string_value(json_array_get(items, 0)), "one");
    assert_string_equal(json_string_value(json_array_get(items, 1)), "two");
    assert_true(json_is_null(json_object_get(x, "none")));
    assert_int_equal(json_integer_value(json_object_get(x, "count")), 2);
    assert_string_equal(json_string_value(json_object_get(x, "id")), "x");
    assert_string_equal(json_string_value(json_object_get(x, "text")), "caf\xc3\xa9");
    jp_outcome_done(&out);
}

static void test_http_json_pointer_extract(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http",
              http_payload("/json", "\"extract\": {\"slash\": \"/a~1b\", \"tilde\": \"/m~0n\","
                                    " \"second\": \"/items/1/name\", \"missing\": \"/nope\","
                                    " \"past\": \"/items/7\", \"obj\": \"/nested\","
                                    " \"whole\": \"\"}"),
              5000, &out),
        0);
    json_t *x = json_object_get(out.result, "extracted");
    assert_int_equal(json_integer_value(json_object_get(x, "slash")), 1);
    assert_string_equal(json_string_value(json_object_get(x, "tilde")), "tilde");
    assert_string_equal(json_string_value(json_object_get(x, "second")), "second");
    assert_true(json_is_null(json_object_get(x, "missing")));
    assert_true(json_is_null(json_object_get(x, "past")));
    assert_int_equal(
        json_integer_value(json_array_get(json_object_get(json_object_get(x, "obj"), "k"), 1)), 20);
    assert_true(json_is_object(json_object_get(x, "whole")));
    /* The body stays a string even when it is JSON. */
    assert_true(json_is_string(json_object_get(out.result, "body")));
    jp_outcome_done(&out);
}

static void test_http_bad_extract_fails_with_result(void **state)
{
    jp_outcome out;
    assert_int_equal(
        run_v(g_engine, "http", http_payload("/html", "\"extract\": {\"t\": \"//[\"}"), 5000, &out),
        -1);
    assert_string_equal(err_code(&out), "extract_failed");
    assert_false(out.retryable);
    assert_int_equal(res_int(&out, "status"), 200);
    jp_outcome_done(&out);

    /* A JSON pointer needs a JSON body. */
    assert_int_equal(
        run_v(g_engine, "http", http_payload("/html", "\"extract\": {\"t\": \"/a\"}"), 5000, &out),
        -1);
    assert_string_equal(err_code(&out), "extract_failed");
    assert_contains(err_msg(&out), "not JSON");
    jp_outcome_done(&out);

    assert_int_equal(run_v(g_engine, "http",
                           http_payload("/json", "\"extract\": {\"t\": \"/a~2\"}"), 5000, &out),
                     -1);
    assert_string_equal(err_code(&out), "extract_failed");
    jp_outcome_done(&out);
}

static void test_http_follows_redirects_but_not_to_other_protocols(void **state)
{
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "http", http_payload("/redirect", NULL), 5000, &out), 0);
    assert_int_equal(res_int(&out, "status"), 200);
    assert_contains(res_str(&out, "body"), "items");
    jp_outcome_done(&out);

    assert_int_equal(run_v(g_engine, "http", http_payload("/redirect-file", NULL), 5000, &out), -1);
    assert_string_equal(err_code(&out), "http_error");
    assert_false(out.retryable);
    jp_outcome_done(&out);
}

static void test_http_invalid_utf8_body_is_valid_json(void **state)
{
    jp_outcome out;
    assert_int_equal(run_v(g_engine, "http", http_payload("/binary", NULL), 5000, &out), 0);
    assert_string_equal(res_str(&out, "body"), "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
    jp_outcome_done(&out);
}

static void test_http_refuses_bad_payloads(void **state)
{
    expect_invalid(g_engine, "http", "{}", "url");
    expect_invalid(g_engine, "http", "\"http://127.0.0.1/\"", "payload");
    expect_invalid(g_engine, "http", "{\"url\": 5}", "url");
    expect_invalid(g_engine, "http", "{\"url\": \"file:///etc/passwd\"}", "scheme");
    expect_invalid(g_engine, "http", "{\"url\": \"gopher://127.0.0.1/\"}", "url");
    expect_invalid(g_engine, "http", "{\"url\": \"not a url\"}", "url");
    expect_invalid(
        g_engine, "http",
        "{\"url\": \"http://127.0.0.1/\", \"headers\": {\"X-A\": \"v\\r\\nX-Injected: 1\"}}",
        "headers.X-A");
    expect_invalid(g_engine, "http",
                   "{\"url\": \"http://127.0.0.1/\", \"headers\": {\"X-A\\r\\nB\": \"v\"}}",
                   "header");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"headers\": [\"a\"]}",
                   "headers");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"method\": \"get\"}",
                   "method");
    expect_invalid(g_engine, "http",
                   "{\"url\": \"http://127.0.0.1/\", \"method\": \"GETGETGETGETGETGET\"}",
                   "method");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"expect_status\": 99}",
                   "expect_status");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"expect_status\": []}",
                   "expect_status");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"extract\": {\"a\": 1}}",
                   "extract.a");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"max_body_bytes\": \"1\"}",
                   "max_body_bytes");
    expect_invalid(g_engine, "http", "{\"url\": \"http://127.0.0.1/\", \"timeout_ms\": 5}",
                   "timeout_ms");
}

static void *fetch_many(void *arg)
{
    int *failures = arg;
    for (int i = 0; i < 5; i++) {
        jp_outcome out;
        jp_task *t = jp_task_new(5000);
        json_t *p = http_payload(i % 2 ? "/html" : "/json",
                                 i % 2 ? "\"extract\": {\"v\": \"//title\"}"
                                       : "\"extract\": {\"v\": \"/items/0/name\"}");
        const char *want = i % 2 ? "Example Domain" : "first";
        int rc = jp_engine_run(g_engine, "http", p, t, &out);
        const char *got =
            json_string_value(json_object_get(json_object_get(out.result, "extracted"), "v"));
        if (rc != 0 || !got || strcmp(got, want) != 0)
            (*failures)++;
        jp_outcome_done(&out);
        jp_task_free(t);
        json_decref(p);
    }
    return NULL;
}

static void test_http_concurrent_runs(void **state)
{
    pthread_t thr[8];
    int failures[8] = {0};
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&thr[i], NULL, fetch_many, &failures[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(thr[i], NULL);
        assert_int_equal(failures[i], 0);
    }
}

/* Odd payloads of every type, to every strategy: an outcome, never a crash. */
static void test_odd_payloads_never_crash(void **state)
{
    static const char *payloads[] = {
        "null",
        "true",
        "0",
        "-1",
        "1e300",
        "\"\"",
        "[]",
        "{}",
        "[null]",
        "{\"command\": null}",
        "{\"command\": [null]}",
        "{\"command\": [[]]}",
        "{\"command\": {}}",
        "{\"ms\": null}",
        "{\"ms\": 1e300}",
        "{\"url\": null}",
        "{\"url\": \"\"}",
        "{\"url\": \"http://\"}",
        "{\"url\": \"http://127.0.0.1:0/\"}",
        "{\"url\": \"http://127.0.0.1:1/\", \"headers\": null, \"body\": null, \"extract\": {}}",
        "{\"command\": [\"/bin/true\"], \"env\": null, \"cwd\": null, \"stdin\": null}",
    };
    static const char *strategies[] = {"noop", "sleep", "exec", "http", ""};
    for (size_t i = 0; i < sizeof payloads / sizeof *payloads; i++) {
        for (size_t k = 0; k < sizeof strategies / sizeof *strategies; k++) {
            jp_outcome out;
            run(g_engine, strategies[k], payloads[i], 2000, &out);
            jp_outcome_done(&out);
        }
    }
}

int main(void)
{
    /* Orphans of the commands we run become our children, so the tests can
     * reap them and see their process groups disappear. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_enable_noop_sleep_http),
        cmocka_unit_test(test_exec_enabled_only_when_named),
        cmocka_unit_test(test_disabled_strategy_runs_as_unknown),
        cmocka_unit_test(test_unknown_strategy_in_config_is_refused),
        cmocka_unit_test(test_relative_allow_list_entry_is_refused),
        cmocka_unit_test(test_register_adds_and_refuses_duplicates),
        cmocka_unit_test(test_run_normalises_strategy_failures),
        cmocka_unit_test(test_run_of_cancelled_task_is_cancelled),
        cmocka_unit_test(test_task_deadline_and_cancel_fd),
        cmocka_unit_test(test_noop_returns_empty_object),
        cmocka_unit_test(test_sleep_returns_slept_ms),
        cmocka_unit_test(test_sleep_refuses_bad_ms),
        cmocka_unit_test(test_sleep_cancel_is_prompt),
        cmocka_unit_test(test_sleep_times_out),
        cmocka_unit_test(test_exec_captures_stdout),
        cmocka_unit_test(test_exec_finds_bare_name_in_path),
        cmocka_unit_test(test_exec_captures_stderr),
        cmocka_unit_test(test_exec_nonzero_exit_is_retryable_failure),
        cmocka_unit_test(test_exec_signal_is_failure),
        cmocka_unit_test(test_exec_passes_stdin),
        cmocka_unit_test(test_exec_child_ignoring_stdin_is_fine),
        cmocka_unit_test(test_exec_environment_is_minimal),
        cmocka_unit_test(test_exec_runs_in_cwd),
        cmocka_unit_test(test_exec_truncates_output_at_cap),
        cmocka_unit_test(test_exec_engine_cap_bounds_payload_cap),
        cmocka_unit_test(test_exec_timeout_kills_process_group),
        cmocka_unit_test(test_exec_cancel_kills_process_group),
        cmocka_unit_test(test_exec_does_not_wait_for_background_leftovers),
        cmocka_unit_test(test_exec_waits_for_program_that_closed_its_output),
        cmocka_unit_test(test_exec_allow_list),
        cmocka_unit_test(test_exec_missing_program_is_spawn_failed),
        cmocka_unit_test(test_exec_invalid_utf8_output_is_valid_json),
        cmocka_unit_test(test_exec_does_not_leak_fds),
        cmocka_unit_test(test_exec_refuses_bad_payloads),
        cmocka_unit_test(test_exec_concurrent_runs),
        cmocka_unit_test(test_http_get_returns_status_body_headers),
        cmocka_unit_test(test_http_post_sends_json_body_and_headers),
        cmocka_unit_test(test_http_string_body_keeps_user_content_type),
        cmocka_unit_test(test_http_unexpected_status_fails_with_result),
        cmocka_unit_test(test_http_expect_status_accepts_listed),
        cmocka_unit_test(test_http_connection_refused_is_retryable),
        cmocka_unit_test(test_http_times_out_on_slow_server),
        cmocka_unit_test(test_http_cancel_is_prompt),
        cmocka_unit_test(test_http_body_cap_truncates),
        cmocka_unit_test(test_http_xpath_extract),
        cmocka_unit_test(test_http_json_pointer_extract),
        cmocka_unit_test(test_http_bad_extract_fails_with_result),
        cmocka_unit_test(test_http_follows_redirects_but_not_to_other_protocols),
        cmocka_unit_test(test_http_invalid_utf8_body_is_valid_json),
        cmocka_unit_test(test_http_refuses_bad_payloads),
        cmocka_unit_test(test_http_concurrent_runs),
        cmocka_unit_test(test_odd_payloads_never_crash),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
