/* The HTTP API of DESIGN.md §3: parses and checks each request, calls the
 * app, shapes the answer. Nothing here touches the database directly. */
#include "server/routes.h"

#include "core/jtime.h"
#include "core/mem.h"
#include "core/uuid.h"

#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT_LIMIT 50
#define LIST_MAX_LIMIT 1000

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

static void get_job(jp_app *app, const char *id, jp_resp *resp)
{
    jp_job *job = NULL;
    jp_err err;
    jp_err_clear(&err);
    if (jp_store_get(app->store, id, &job, &err) < 0) {
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

static void report_status(jp_app *app, const char *id, const jp_req *req, jp_resp *resp)
{
    jp_report rep;
    jp_err err;
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
    jp_event ev = {
        .attempt = rep.attempt,
        .worker_id = rep.worker_id,
        .retryable = rep.retryable,
        .now_ms = jp_now_ms(),
    };
    switch (rep.status) {
    case JP_ST_RUNNING:
        ev.kind = JP_EV_START;
        break;
    case JP_ST_COMPLETED:
        ev.kind = JP_EV_COMPLETE;
        ev.result = rep.result;
        break;
    default:
        ev.kind = JP_EV_FAIL;
        ev.result = rep.result;
        ev.error = rep.error;
        ev.backoff_ms = jp_app_backoff_ms(app, rep.attempt);
        break;
    }
    apply_one(app, id, &ev, resp);
    jp_report_done(&rep);
    json_decref(body);
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
    jp_resp_json(resp, 200, json_pack("{s:s,s:s}", "status", "ready", "database", "ok"));
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
        {
            get_job(app, id, resp);
            return;
        }
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
                   .to = JP_ST_QUEUED,
                   .now_ms = jp_now_ms()};
    apply_one(app, id, &ev, resp);
}

void jp_routes_handle(void *arg, const jp_req *req, jp_resp *resp)
{
    jp_app *app = arg;
    const char *p = req->path;
    static const char jobs_prefix[] = "/api/v1/jobs/";

    if (strcmp(p, "/health") == 0) {
        if (!method_is(req, "GET") && !method_is(req, "HEAD"))
            {
            not_allowed(resp, req, "GET");
            return;
        }
        jp_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(p, "/ready") == 0) {
        if (!method_is(req, "GET") && !method_is(req, "HEAD"))
            {
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
        if (!method_is(req, "POST"))
            {
            not_allowed(resp, req, "POST");
            return;
        }
        create_batch(app, req, resp);
    } else if (strncmp(p, jobs_prefix, sizeof jobs_prefix - 1) == 0) {
        job_routes(app, req, p + sizeof jobs_prefix - 1, resp);
    } else if (strcmp(p, "/api/v1/queue/stats") == 0) {
        if (!method_is(req, "GET"))
            {
            not_allowed(resp, req, "GET");
            return;
        }
        queue_stats(app, resp);
    } else {
        jp_resp_error(resp, JP_ENOTFOUND, "no such endpoint: %.128s", p);
    }
}
