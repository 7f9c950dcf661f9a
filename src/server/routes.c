/* The HTTP API of DESIGN.md §3: parses and checks each request, calls the
 * app, shapes the answer. Nothing here touches the database directly. */
#include "server/routes.h"

#include "core/jtime.h"
#include "core/mem.h"
#include "core/uuid.h"
#include "queue/redis.h"
#include "server/auth.h"

#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT_LIMIT 50
#define LIST_MAX_LIMIT 1000
#define WAIT_MAX_MS 60000     /* longest ?wait_ms= a GET of a job may hold */
#define WAIT_RECHECK_MS 250   /* distributed mode: re-read a waited-for job this often */

/* Parses the body as one JSON object. */
static json_t *parse_object(const jp_req *req, jp_resp *resp)
{
    json_error_t jerr;
    if (req->body_len == 0) {
        jp_resp_error(resp, JP_EINVAL, "request body is empty; expected a JSON object");
        return NULL;
    }
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        jp_resp_error(resp, JP_EINVAL, "body is not valid JSON: %s (line %d, column %d)",
                      jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        jp_resp_error(resp, JP_EINVAL, "body must be a JSON object");
        json_decref(v);
        return NULL;
    }
    return v;
}

static bool method_is(const jp_req *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

static void not_allowed(jp_resp *resp, const jp_req *req, const char *allow)
{
    jp_resp_error(resp, JP_EMETHOD, "%.16s is not allowed here (allowed: %s)", req->method, allow);
    resp->allow = allow;
}

/* Builds one job from a create request and checks its strategy here. */
static int job_from_request(jp_app *app, const json_t *body, int64_t now, jp_job **ret,
                            jp_err *err)
{
    jp_job *job = NULL;
    int rc = jp_job_from_request(body, now, &job, err);
    if (rc < 0)
        return rc;
    rc = jp_app_check_strategy(app, job->strategy, err);
    if (rc < 0) {
        jp_job_free(job);
        return rc;
    }
    *ret = job;
    return 0;
}

static void create_job(jp_app *app, const jp_req *req, jp_resp *resp)
{
    jp_err err;
    jp_job *job = NULL;
    bool existed = false;
    json_t *body = parse_object(req, resp);
    if (!body)
        return;
    jp_err_clear(&err);
    if (job_from_request(app, body, jp_now_ms(), &job, &err) < 0 ||
        jp_app_create(app, &job, 1, &existed, &err) < 0) {
        jp_resp_err(resp, &err);
        goto out;
    }
    jp_resp_json(resp, existed ? 200 : 201, jp_job_to_json(job));
out:
    jp_job_free(job);
    json_decref(body);
}

static void create_batch(jp_app *app, const jp_req *req, jp_resp *resp)
{
    jp_err err;
    jp_job **jobs = NULL;
    bool *existed = NULL;
    size_t n = 0, made = 0;
    json_t *body = parse_object(req, resp);
    if (!body)
        return;
    jp_err_clear(&err);
    json_t *arr = json_object_get(body, "jobs");
    if (!json_is_array(arr)) {
        jp_resp_error(resp, JP_EINVAL, "field \"jobs\" must be an array of jobs");
        goto out;
    }
    if (json_object_size(body) != 1) {
        jp_resp_error(resp, JP_EINVAL, "a batch body has only the field \"jobs\"");
        goto out;
    }
    n = json_array_size(arr);
    if (n == 0) {
        jp_resp_error(resp, JP_EINVAL, "field \"jobs\" is empty");
        goto out;
    }
    if (n > JP_BATCH_LIMIT) {
        jp_resp_error(resp, JP_ETOOBIG, "a batch holds at most %d jobs, got %zu", JP_BATCH_LIMIT,
                      n);
        goto out;
    }
    jobs = jp_xcalloc(n, sizeof *jobs);
    existed = jp_xcalloc(n, sizeof *existed);
    int64_t now = jp_now_ms();
    for (made = 0; made < n; made++) {
        if (job_from_request(app, json_array_get(arr, made), now, &jobs[made], &err) < 0) {
            jp_resp_error(resp, err.code, "jobs[%zu]: %s", made, jp_err_msg(&err));
            goto out;
        }
    }
    if (jp_app_create(app, jobs, n, existed, &err) < 0) {
        jp_resp_err(resp, &err);
        goto out;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, jp_job_to_json(jobs[i]));
    jp_resp_json(resp, 201, json_pack("{s:o}", "jobs", out));
out:
    jp_jobs_free(jobs, made);
    free(existed);
    json_decref(body);
}

static bool parse_limit(const char *s, size_t *ret)
{
    char *end;
    if (!s)
        return true;
    if (!*s || strlen(s) > 7)
        return false;
    long v = strtol(s, &end, 10);
    if (*end || v < 1 || v > LIST_MAX_LIMIT)
        return false;
    *ret = (size_t)v;
    return true;
}

static void list_jobs(jp_app *app, const jp_req *req, jp_resp *resp)
{
    jp_list_filter f = {.status = -1, .limit = LIST_DEFAULT_LIMIT};
    const char *status = jp_req_query(req, "status");
    jp_job **jobs = NULL;
    size_t n = 0;
    char *next = NULL;
    jp_err err;

    if (status && *status && (f.status = jp_status_parse(status)) < 0) {
        jp_resp_error(resp, JP_EINVAL, "unknown status \"%.32s\"", status);
        return;
    }
    if (!parse_limit(jp_req_query(req, "limit"), &f.limit)) {
        jp_resp_error(resp, JP_EINVAL, "limit must be an integer from 1 to %d", LIST_MAX_LIMIT);
        return;
    }
    f.queue = jp_req_query(req, "queue");
    f.key = jp_req_query(req, "key");
    f.cursor = jp_req_query(req, "cursor");
    if (f.queue && !*f.queue)
        f.queue = NULL;
    if (f.key && !*f.key)
        f.key = NULL;
    if (f.cursor && !*f.cursor)
        f.cursor = NULL;
    if (f.cursor && !jp_uuid_valid(f.cursor)) {
        jp_resp_error(resp, JP_EINVAL, "cursor is not one this server gave out");
        return;
    }
    jp_err_clear(&err);
    if (jp_store_list(app->store, &f, &jobs, &n, &next, &err) < 0) {
        jp_resp_err(resp, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, jp_job_to_json(jobs[i]));
    jp_resp_json(resp, 200,
                 json_pack("{s:o,s:o}", "jobs", arr, "next_cursor",
                           next ? json_string(next) : json_null()));
    jp_jobs_free(jobs, n);
    free(next);
}

/* Parses ?wait_ms= (absent: 0). */
static bool parse_wait_ms(const char *s, int64_t *ret)
{
    int64_t v = 0;
    if (!s) {
        *ret = 0;
        return true;
    }
    if (!*s || strlen(s) > 9)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v > WAIT_MAX_MS)
        return false;
    *ret = v;
    return true;
}

/* GET /api/v1/jobs/{id}[?wait_ms=N]: with N > 0, a job that has not ended
 * is answered once it ends, N ms pass, or the server stops, whichever is
 * first; the answer is the job as it then stands. */
static void get_job(jp_app *app, const char *id, int64_t wait_ms, jp_resp *resp)
{
    jp_job *job = NULL;
    jp_err err;
    /* +1: the clock reads whole ms, and the wait must not come up short. */
    int64_t deadline = jp_mono_ms() + wait_ms + 1;
    /* Registered before the read, so an end committed after the read wakes
     * it. NULL (too many waiting, or stopping): answer at once. */
    jp_waiter *w = wait_ms > 0 ? jp_waiters_add(app->waiters, id) : NULL;
    jp_err_clear(&err);
    int rc = jp_store_get(app->store, id, &job, &err);
    while (rc == 0 && w && !jp_status_terminal(job->status)) {
        int64_t now = jp_mono_ms(), until = deadline;
        if (now >= deadline)
            break;
        /* Workers that report straight into the database (--report db)
         * bypass this process: look at the job now and then as well. */
        if (app->distributed && until - now > WAIT_RECHECK_MS)
            until = now + WAIT_RECHECK_MS;
        jp_wait_result why = jp_waiters_wait(app->waiters, w, until);
        jp_job_free(job);
        job = NULL;
        rc = jp_store_get(app->store, id, &job, &err);
        if (why == JP_WAIT_CLOSED)
            break;
    }
    jp_waiters_remove(app->waiters, w);
    if (rc < 0) {
        jp_resp_err(resp, &err);
        return;
    }
    jp_resp_json(resp, 200, jp_job_to_json(job));
    jp_job_free(job);
}

/* Applies one event to job `id` and answers with the job as it is after. */
static void apply_one(jp_app *app, const char *id, const jp_event *ev, jp_resp *resp)
{
    jp_store_op op;
    jp_err err;
    memset(&op, 0, sizeof op);
    snprintf(op.job_id, sizeof op.job_id, "%s", id);
    op.ev = *ev;
    op.want_job = true;
    jp_err_clear(&err);
    if (jp_app_apply(app, &op, 1, &err) < 0) {
        jp_resp_err(resp, &err);
        return;
    }
    if (op.rc < 0 || op.refused)
        jp_resp_err(resp, &op.err);
    else
        jp_resp_json(resp, 200, jp_job_to_json(op.job));
    jp_job_free(op.job);
}

/* The store event a worker's report asks for. Borrows from `rep`. */
static void report_event(jp_app *app, const jp_report *rep, jp_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->attempt = rep->attempt;
    ev->worker_id = rep->worker_id;
    ev->now_ms = jp_now_ms();
    switch (rep->status) {
    case JP_ST_RUNNING:
        ev->kind = JP_EV_START;
        break;
    case JP_ST_COMPLETED:
        ev->kind = JP_EV_COMPLETE;
        ev->result = rep->result;
        break;
    default:
        ev->kind = JP_EV_FAIL;
        ev->result = rep->result;
        ev->error = rep->error;
        ev->retryable = rep->retryable;
        /* A worker that stopped a job only because it was shutting down
         * asks for it to run again at once rather than after a backoff. */
        const char *code = json_string_value(json_object_get(rep->error, "code"));
        ev->backoff_ms = code && strcmp(code, "worker_shutdown") == 0
                             ? 0
                             : jp_app_backoff_ms(app, rep->attempt);
        break;
    }
}

static void report_status(jp_app *app, const char *id, const jp_req *req, jp_resp *resp)
{
    jp_report rep;
    jp_err err;
    jp_event ev;
    json_t *body = parse_object(req, resp);
    if (!body)
        return;
    memset(&rep, 0, sizeof rep);
    jp_err_clear(&err);
    if (jp_report_from_json(body, &rep, &err) < 0) {
        jp_resp_err(resp, &err);
        json_decref(body);
        return;
    }
    report_event(app, &rep, &ev);
    apply_one(app, id, &ev, resp);
    jp_report_done(&rep);
    json_decref(body);
}

/* POST /api/v1/jobs/status: many workers' reports in one request and one
 * transaction; each gets its own verdict, in order. */
static void report_batch(jp_app *app, const jp_req *req, jp_resp *resp)
{
    json_t *body = parse_object(req, resp);
    if (!body)
        return;
    json_t *arr = json_object_get(body, "reports");
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n == 0 || json_object_size(body) != 1) {
        jp_resp_error(resp, JP_EINVAL, "body must be {\"reports\": [ … ]} with at least one report");
        json_decref(body);
        return;
    }
    if (n > JP_BATCH_LIMIT) {
        jp_resp_error(resp, JP_ETOOBIG, "at most %d reports per request", JP_BATCH_LIMIT);
        json_decref(body);
        return;
    }
    jp_report *reps = jp_xcalloc(n, sizeof *reps);
    jp_store_op *ops = jp_xcalloc(n, sizeof *ops);
    int *verdict = jp_xcalloc(n, sizeof *verdict); /* 0: applied; else a JP_E code */
    jp_err *why = jp_xcalloc(n, sizeof *why);
    size_t *op_of = jp_xcalloc(n, sizeof *op_of);
    size_t nops = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(arr, i);
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!json_is_object(r) || !id || !jp_uuid_valid(id)) {
            verdict[i] = jp_err_set(&why[i], JP_EINVAL, "reports[%zu]: \"id\" must be a job id", i);
            continue;
        }
        char idbuf[JP_UUID_STR_LEN + 1];
        snprintf(idbuf, sizeof idbuf, "%s", id);
        json_object_del(r, "id");
        if (jp_report_from_json(r, &reps[i], &why[i]) < 0) {
            verdict[i] = JP_EINVAL;
            continue;
        }
        memcpy(ops[nops].job_id, idbuf, sizeof ops[nops].job_id);
        report_event(app, &reps[i], &ops[nops].ev);
        op_of[i] = nops++;
    }
    jp_err err;
    jp_err_clear(&err);
    if (nops && jp_app_apply(app, ops, nops, &err) < 0) {
        jp_resp_err(resp, &err);
        goto out;
    }
    json_t *results = json_array();
    for (size_t i = 0; i < n; i++) {
        int code = verdict[i];
        const char *msg = code ? jp_err_msg(&why[i]) : NULL;
        jp_store_op *op = code ? NULL : &ops[op_of[i]];
        if (op && (op->rc < 0 || op->refused)) {
            code = op->rc < 0 ? op->rc : JP_ECONFLICT;
            msg = jp_err_msg(&op->err);
        }
        json_t *res = json_pack("{s:s}", "code", code ? jp_err_api_code(code) : "ok");
        if (op && op->rc == 0)
            json_object_set_new(res, "status", json_string(jp_status_name(op->after)));
        if (msg)
            json_object_set_new(res, "message", json_string(msg));
        json_array_append_new(results, res);
    }
    jp_resp_json(resp, 200, json_pack("{s:o}", "results", results));
out:
    for (size_t i = 0; i < n; i++)
        jp_report_done(&reps[i]);
    free(op_of);
    free(why);
    free(verdict);
    free(ops);
    free(reps);
    json_decref(body);
}

static void workers(jp_app *app, jp_resp *resp)
{
    json_t *list = NULL;
    jp_err err;
    jp_err_clear(&err);
    if (app->distributed) {
        if (jp_redis_workers(app->queue, &list, &err) < 0) {
            jp_resp_err(resp, &err);
            return;
        }
    } else {
        list = json_array();
#ifdef JP_WITH_ENGINE
        if (app->engine)
            json_array_append_new(list, jp_embedded_info(app->engine));
#endif
    }
    jp_resp_json(resp, 200, json_pack("{s:o}", "workers", list));
}

static void attempts(jp_app *app, const char *id, jp_resp *resp)
{
    json_t *arr = NULL;
    jp_err err;
    jp_err_clear(&err);
    if (jp_store_attempts(app->store, id, &arr, &err) < 0) {
        jp_resp_err(resp, &err);
        return;
    }
    jp_resp_json(resp, 200, json_pack("{s:s,s:o}", "job_id", id, "attempts", arr));
}

static void queue_stats(jp_app *app, jp_resp *resp)
{
    int64_t counts[JP_ST__COUNT];
    json_t *queues = NULL;
    jp_err err;
    jp_err_clear(&err);
    if (jp_store_counts(app->store, counts, &err) < 0 ||
        jp_queue_stats(app->queue, &queues, &err) < 0) {
        jp_resp_err(resp, &err);
        return;
    }
    json_t *c = json_object();
    for (int st = 0; st < JP_ST__COUNT; st++)
        json_object_set_new(c, jp_status_name(st), json_integer(counts[st]));
    jp_resp_json(resp, 200, json_pack("{s:o,s:o}", "counts", c, "queues", queues));
}

static void ready(jp_app *app, jp_resp *resp)
{
    jp_err err;
    jp_err_clear(&err);
    if (jp_store_ping(app->store, &err) < 0) {
        jp_resp_error(resp, JP_EUNAVAIL, "database: %s", jp_err_msg(&err));
        return;
    }
    if (app->distributed && jp_queue_ping(app->queue, &err) < 0) {
        jp_resp_error(resp, JP_EUNAVAIL, "redis: %s", jp_err_msg(&err));
        return;
    }
    jp_resp_json(resp, 200, json_pack("{s:s,s:s,s:s}", "status", "ready", "database", "ok",
                                      "queue", app->distributed ? "ok" : "in-process"));
}

/* /api/v1/jobs/{id}[/{action}] */
static void job_routes(jp_app *app, const jp_req *req, const char *rest, jp_resp *resp)
{
    char id[JP_UUID_STR_LEN + 1];
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *action = slash ? slash + 1 : NULL;

    if (idlen != JP_UUID_STR_LEN) {
        jp_resp_error(resp, JP_EINVAL, "\"%.*s\" is not a job id", (int)(idlen > 64 ? 64 : idlen),
                      rest);
        return;
    }
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    if (!jp_uuid_valid(id)) {
        jp_resp_error(resp, JP_EINVAL, "\"%s\" is not a job id", id);
        return;
    }
    if (!action) {
        if (!method_is(req, "GET"))
            {
            not_allowed(resp, req, "GET");
            return;
        }
        const char *wait_arg = jp_req_query(req, "wait_ms");
        int64_t wait_ms = 0;
        if (!parse_wait_ms(wait_arg, &wait_ms)) {
            jp_resp_error(resp, JP_EINVAL,
                          "wait_ms must be a whole number of milliseconds from 0 to %d, "
                          "not \"%.32s\"",
                          WAIT_MAX_MS, wait_arg);
            return;
        }
        get_job(app, id, wait_ms, resp);
        return;
    }
    if (strcmp(action, "attempts") == 0) {
        if (!method_is(req, "GET"))
            {
            not_allowed(resp, req, "GET");
            return;
        }
        {
            attempts(app, id, resp);
            return;
        }
    }
    bool cancel = strcmp(action, "cancel") == 0, retry = strcmp(action, "retry") == 0;
    bool status = strcmp(action, "status") == 0;
    if (!cancel && !retry && !status) {
        jp_resp_error(resp, JP_ENOTFOUND, "no such endpoint");
        return;
    }
    if (!method_is(req, "POST"))
        {
            not_allowed(resp, req, "POST");
            return;
        }
    if (status)
        {
            report_status(app, id, req, resp);
            return;
        }
    jp_event ev = {.kind = cancel ? JP_EV_CANCEL : JP_EV_RETRY,
                   .to = app->runnable,
                   .now_ms = jp_now_ms()};
    apply_one(app, id, &ev, resp);
}

/* Which roles may make this request; 0 for everyone. */
static int roles_for(const jp_req *req)
{
    const char *p = req->path;
    size_t len = strlen(p);
    if (strcmp(p, "/health") == 0 || strcmp(p, "/ready") == 0)
        return 0;
    if (!method_is(req, "POST"))
        return JP_ROLE_CLIENT | JP_ROLE_WORKER | JP_ROLE_ADMIN;
    if (len >= 7 && strcmp(p + len - 7, "/status") == 0)
        return JP_ROLE_WORKER | JP_ROLE_ADMIN;
    if (len >= 6 && strcmp(p + len - 6, "/retry") == 0)
        return JP_ROLE_ADMIN;
    return JP_ROLE_CLIENT | JP_ROLE_ADMIN;
}

static bool authorized(jp_app *app, const jp_req *req, jp_resp *resp)
{
    int need = roles_for(req);
    if (!app->auth || !need)
        return true;
    int have = jp_auth_role(app->auth, jp_req_header(req, "Authorization"));
    if (!have) {
        jp_resp_error(resp, JP_EUNAUTH, "a valid bearer token is required");
        return false;
    }
    if (!(have & need)) {
        jp_resp_error(resp, JP_EPERM, "this token's role may not %.8s %.128s", req->method,
                      req->path);
        return false;
    }
    return true;
}

void jp_routes_handle(void *arg, const jp_req *req, jp_resp *resp)
{
    jp_app *app = arg;
    const char *p = req->path;
    static const char jobs_prefix[] = "/api/v1/jobs/";

    if (!authorized(app, req, resp))
        return;
    if (strcmp(p, "/health") == 0) {
        if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
            not_allowed(resp, req, "GET");
            return;
        }
        jp_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(p, "/ready") == 0) {
        if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
            not_allowed(resp, req, "GET");
            return;
        }
        ready(app, resp);
    } else if (strcmp(p, "/api/v1/jobs") == 0) {
        if (method_is(req, "POST"))
            create_job(app, req, resp);
        else if (method_is(req, "GET"))
            list_jobs(app, req, resp);
        else
            not_allowed(resp, req, "GET, POST");
    } else if (strcmp(p, "/api/v1/jobs/batch") == 0) {
        if (!method_is(req, "POST")) {
            not_allowed(resp, req, "POST");
            return;
        }
        create_batch(app, req, resp);
    } else if (strcmp(p, "/api/v1/jobs/status") == 0) {
        if (!method_is(req, "POST")) {
            not_allowed(resp, req, "POST");
            return;
        }
        report_batch(app, req, resp);
    } else if (strncmp(p, jobs_prefix, sizeof jobs_prefix - 1) == 0) {
        job_routes(app, req, p + sizeof jobs_prefix - 1, resp);
    } else if (strcmp(p, "/api/v1/queue/stats") == 0) {
        if (!method_is(req, "GET")) {
            not_allowed(resp, req, "GET");
            return;
        }
        queue_stats(app, resp);
    } else if (strcmp(p, "/api/v1/workers") == 0) {
        if (!method_is(req, "GET")) {
            not_allowed(resp, req, "GET");
            return;
        }
        workers(app, resp);
    } else {
        jp_resp_error(resp, JP_ENOTFOUND, "no such endpoint: %.128s", p);
    }
}
