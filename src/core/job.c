/* The job record: names, validation of create requests, and its JSON forms. */
#include "core/job.h"

#include "core/jtime.h"
#include "core/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERROR_MESSAGE_MAX 4096  /* bytes of an error message kept */
#define ERROR_CODE_MAX 128      /* bytes of an error code kept */
#define ERROR_JSON_MAX 1024     /* bytes of a non-string error's JSON text kept */
#define ATTEMPT_LIMIT 1000000   /* no job is ever delivered this often */

static const char *const status_names[JP_ST__COUNT] = {
    "pending", "scheduled", "queued", "running", "completed", "failed", "cancelled",
};

static const char *const priority_names[JP_PRIO__COUNT] = {
    "emergency", "high", "normal", "low",
};

jp_job *jp_job_new(void)
{
    jp_job *job = jp_xcalloc(1, sizeof *job);
    job->payload = json_null();
    job->priority = JP_PRIO_NORMAL;
    job->max_attempts = JP_DEFAULT_MAX_ATTEMPTS;
    job->timeout_seconds = JP_DEFAULT_TIMEOUT_S;
    return job;
}

void jp_job_free(jp_job *job)
{
    if (!job)
        return;
    free(job->queue);
    free(job->strategy);
    json_decref(job->payload);
    free(job->key);
    free(job->idempotency_key);
    json_decref(job->result);
    json_decref(job->error);
    free(job->worker_id);
    free(job);
}

void jp_jobs_free(jp_job **jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++)
        jp_job_free(jobs[i]);
    free(jobs);
}

const char *jp_status_name(jp_status st)
{
    if ((int)st < 0 || st >= JP_ST__COUNT)
        return "unknown";
    return status_names[st];
}

int jp_status_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < JP_ST__COUNT; i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}

bool jp_status_terminal(jp_status st)
{
    return st == JP_ST_COMPLETED || st == JP_ST_FAILED || st == JP_ST_CANCELLED;
}

const char *jp_priority_name(int prio)
{
    if (prio < 0 || prio >= JP_PRIO__COUNT)
        return "unknown";
    return priority_names[prio];
}

int jp_priority_from_json(const json_t *v)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        return n >= 0 && n < JP_PRIO__COUNT ? (int)n : -1;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        for (int i = 0; i < JP_PRIO__COUNT; i++)
            if (strcmp(s, priority_names[i]) == 0)
                return i;
    }
    return -1;
}

bool jp_name_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= JP_NAME_MAX)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

/* ---- UTF-8-safe strings for error objects ---- */

/* Length of the valid UTF-8 sequence at s (at most `left` bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return c ? 1 : 0;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A JSON string of at most `max` bytes of `s`: cut at a character boundary,
 * bytes that are not UTF-8 (a program's stderr may hold anything) become '?'. */
static json_t *bounded_string(const char *s, size_t max)
{
    size_t len = strlen(s);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, out = 0;
    char *buf = NULL;
    json_t *v;

    /* Fast path: valid and short enough, as nearly every message is. */
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        if (n == 0 || i + n > max)
            break;
        i += n;
    }
    if (i == len)
        return json_stringn_nocheck(s, len);

    buf = jp_xmalloc(max + 1);
    memcpy(buf, s, i);
    out = i;
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        if (n == 0) {
            if (out + 1 > max)
                break;
            buf[out++] = '?';
            i++;
            continue;
        }
        if (out + n > max)
            break;
        memcpy(buf + out, s + i, n);
        out += n;
        i += n;
    }
    v = json_stringn_nocheck(buf, out);
    free(buf);
    return v;
}

json_t *jp_error_json(const char *code, const char *message)
{
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "code",
                                bounded_string(code && *code ? code : "job_error", ERROR_CODE_MAX));
    json_object_set_new_nocheck(o, "message", bounded_string(message ? message : "",
                                                             ERROR_MESSAGE_MAX));
    return o;
}

json_t *jp_error_normalise(const json_t *v)
{
    if (!v || json_is_null(v))
        return jp_error_json("job_error", "failed");
    if (json_is_string(v))
        return jp_error_json("job_error", json_string_value(v));
    if (json_is_object(v)) {
        const json_t *code = json_object_get(v, "code");
        const json_t *msg = json_object_get(v, "message");
        return jp_error_json(json_is_string(code) ? json_string_value(code) : "job_error",
                             json_is_string(msg) ? json_string_value(msg) : "");
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "code", json_string_nocheck("job_error"));
    json_object_set_new_nocheck(o, "message", bounded_string(text ? text : "", ERROR_JSON_MAX));
    free(text);
    return o;
}

/* ---- field readers: each message names the field ---- */

/* A string without NUL bytes whose length is within [min, max]. */
static bool string_ok(const json_t *v, size_t min, size_t max)
{
    if (!json_is_string(v))
        return false;
    size_t n = json_string_length(v);
    return n >= min && n <= max && strlen(json_string_value(v)) == n;
}

static int read_name(const json_t *v, const char *field, const char *def, char **out, jp_err *err)
{
    if (!v || json_is_null(v)) {
        if (!def)
            return jp_err_set(err, JP_EINVAL, "field \"%s\" is required", field);
        *out = jp_xstrdup(def);
        return 0;
    }
    if (!json_is_string(v))
        return jp_err_set(err, JP_EINVAL, "field \"%s\" must be a string", field);
    if (!jp_name_valid(json_string_value(v)) || strlen(json_string_value(v)) != json_string_length(v))
        return jp_err_set(err, JP_EINVAL,
                          "field \"%s\" must be 1 to %d characters of a-z, 0-9, '_' and '-'",
                          field, JP_NAME_MAX);
    *out = jp_xstrdup(json_string_value(v));
    return 0;
}

/* An optional string of 1..max bytes; absent or null leaves *out NULL. */
static int read_opt_string(const json_t *v, const char *field, size_t max, char **out, jp_err *err)
{
    if (!v || json_is_null(v))
        return 0;
    if (!string_ok(v, 1, max))
        return jp_err_set(err, JP_EINVAL, "field \"%s\" must be a string of 1 to %zu bytes, or null",
                          field, max);
    *out = jp_xstrndup(json_string_value(v), json_string_length(v));
    return 0;
}

/* A JSON integer (not a real, not a boolean) within [min, max]. */
static int read_int(const json_t *v, const char *field, json_int_t min, json_int_t max, int *out,
                    jp_err *err)
{
    if (!json_is_integer(v))
        return jp_err_set(err, JP_EINVAL, "field \"%s\" must be an integer", field);
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return jp_err_set(err, JP_EINVAL, "field \"%s\" must be between %lld and %lld", field,
                          (long long)min, (long long)max);
    *out = (int)n;
    return 0;
}

static int read_priority(const json_t *v, int *out, jp_err *err)
{
    if (!v || json_is_null(v)) {
        *out = JP_PRIO_NORMAL;
        return 0;
    }
    int p = jp_priority_from_json(v);
    if (p < 0)
        return jp_err_set(err, JP_EINVAL,
                          "field \"priority\" must be emergency, high, normal, low or an "
                          "integer 0 to 3");
    *out = p;
    return 0;
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static const char *const request_fields[] = {
    "strategy", "payload", "queue", "priority", "key", "idempotency_key",
    "timeout_seconds", "max_attempts", "run_at", "delay_seconds",
};

static bool request_field_known(const char *name)
{
    for (size_t i = 0; i < sizeof request_fields / sizeof request_fields[0]; i++)
        if (strcmp(name, request_fields[i]) == 0)
            return true;
    return false;
}

/* Sets status and run_at from run_at/delay_seconds; both absent = run now. */
static int read_schedule(const json_t *body, int64_t now_ms, jp_job *job, jp_err *err)
{
    const json_t *run_at = json_object_get(body, "run_at");
    const json_t *delay = json_object_get(body, "delay_seconds");
    int64_t when = 0;

    if (run_at && json_is_null(run_at))
        run_at = NULL;
    if (delay && json_is_null(delay))
        delay = NULL;
    if (run_at && delay)
        return jp_err_set(err, JP_EINVAL,
                          "fields \"run_at\" and \"delay_seconds\" cannot both be given");
    if (run_at) {
        if (!json_is_string(run_at) || !jp_time_parse(json_string_value(run_at), &when))
            return jp_err_set(err, JP_EINVAL,
                              "field \"run_at\" must be an RFC 3339 timestamp such as "
                              "\"2026-11-26T10:00:00Z\"");
        if (when > now_ms + (int64_t)JP_DELAY_LIMIT_S * 1000)
            return jp_err_set(err, JP_EINVAL, "field \"run_at\" must be within %d days from now",
                              JP_DELAY_LIMIT_S / 86400);
    } else if (delay) {
        if (!json_is_number(delay))
            return jp_err_set(err, JP_EINVAL, "field \"delay_seconds\" must be a number");
        double d = json_number_value(delay);
        if (!(d >= 0 && d <= JP_DELAY_LIMIT_S))
            return jp_err_set(err, JP_EINVAL, "field \"delay_seconds\" must be between 0 and %d",
                              JP_DELAY_LIMIT_S);
        /* Rounded up, so any positive delay really delays. */
        int64_t ms = (int64_t)ceil(d * 1000.0);
        when = ms > 0 ? now_ms + ms : 0;
    }
    if (when > now_ms) {
        job->status = JP_ST_SCHEDULED;
        job->run_at_ms = when;
    } else {
        job->status = JP_ST_QUEUED;
        job->run_at_ms = 0;
    }
    return 0;
}

int jp_job_from_request(const json_t *body, int64_t now_ms, jp_job **ret_job, jp_err *err)
{
    jp_job *job = NULL;
    const char *name;
    const json_t *v;
    int rc;

    if (!json_is_object(body))
        return jp_err_set(err, JP_EINVAL, "the request body must be a JSON object");
    json_object_foreach((json_t *)body, name, v) {
        if (!request_field_known(name))
            return jp_err_set(err, JP_EINVAL, "unknown field \"%.64s\"", name);
    }

    job = jp_job_new();
    rc = read_name(json_object_get(body, "strategy"), "strategy", NULL, &job->strategy, err);
    if (rc < 0)
        goto out;
    rc = read_name(json_object_get(body, "queue"), "queue", "default", &job->queue, err);
    if (rc < 0)
        goto out;
    rc = read_priority(json_object_get(body, "priority"), &job->priority, err);
    if (rc < 0)
        goto out;
    rc = read_opt_string(json_object_get(body, "key"), "key", JP_KEY_MAX, &job->key, err);
    if (rc < 0)
        goto out;
    rc = read_opt_string(json_object_get(body, "idempotency_key"), "idempotency_key", JP_KEY_MAX,
                         &job->idempotency_key, err);
    if (rc < 0)
        goto out;
    v = json_object_get(body, "timeout_seconds");
    if (v && !json_is_null(v)) {
        rc = read_int(v, "timeout_seconds", 1, JP_TIMEOUT_LIMIT_S, &job->timeout_seconds, err);
        if (rc < 0)
            goto out;
    }
    v = json_object_get(body, "max_attempts");
    if (v && !json_is_null(v)) {
        rc = read_int(v, "max_attempts", 1, JP_MAX_ATTEMPTS_LIMIT, &job->max_attempts, err);
        if (rc < 0)
            goto out;
    }
    rc = read_schedule(body, now_ms, job, err);
    if (rc < 0)
        goto out;
    v = json_object_get(body, "payload");
    if (v) {
        json_decref(job->payload);
        /* Shared, not copied: the payload can be large and is never modified. */
        job->payload = json_incref((json_t *)v);
    }
    if (job->idempotency_key) {
        char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(job->request_hash, sizeof job->request_hash, "%016llx",
                 (unsigned long long)fnv1a64(canon ? canon : ""));
        free(canon);
    }
    jp_uuid7(job->id);
    job->created_at_ms = now_ms;
    job->updated_at_ms = now_ms;
    *ret_job = job;
    job = NULL;
    rc = 0;
out:
    jp_job_free(job);
    return rc;
}

/* ---- output forms ---- */

static json_t *string_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

static json_t *time_or_null(int64_t ms)
{
    char buf[JP_TIME_STR_MAX];
    if (ms == 0)
        return json_null();
    jp_time_format(ms, buf);
    return json_string_nocheck(buf);
}

static json_t *ref_or_null(json_t *v)
{
    return v ? json_incref(v) : json_null();
}

json_t *jp_job_to_json(const jp_job *job)
{
    json_t *o = json_object();
    /* Keys are literals, so the _nocheck setters skip a pointless UTF-8 scan;
     * insertion order is the order of DESIGN.md §2. */
    json_object_set_new_nocheck(o, "id", string_or_null(job->id));
    json_object_set_new_nocheck(o, "queue", string_or_null(job->queue));
    json_object_set_new_nocheck(o, "strategy", string_or_null(job->strategy));
    json_object_set_new_nocheck(o, "payload", ref_or_null(job->payload));
    json_object_set_new_nocheck(o, "priority", json_string_nocheck(jp_priority_name(job->priority)));
    json_object_set_new_nocheck(o, "key", string_or_null(job->key));
    json_object_set_new_nocheck(o, "status", json_string_nocheck(jp_status_name(job->status)));
    json_object_set_new_nocheck(o, "attempts", json_integer(job->attempts));
    json_object_set_new_nocheck(o, "max_attempts", json_integer(job->max_attempts));
    json_object_set_new_nocheck(o, "timeout_seconds", json_integer(job->timeout_seconds));
    json_object_set_new_nocheck(o, "run_at", time_or_null(job->run_at_ms));
    json_object_set_new_nocheck(o, "idempotency_key", string_or_null(job->idempotency_key));
    json_object_set_new_nocheck(o, "result", ref_or_null(job->result));
    json_object_set_new_nocheck(o, "error", ref_or_null(job->error));
    json_object_set_new_nocheck(o, "worker_id", string_or_null(job->worker_id));
    json_object_set_new_nocheck(o, "created_at", time_or_null(job->created_at_ms));
    json_object_set_new_nocheck(o, "started_at", time_or_null(job->started_at_ms));
    json_object_set_new_nocheck(o, "completed_at", time_or_null(job->completed_at_ms));
    json_object_set_new_nocheck(o, "updated_at", time_or_null(job->updated_at_ms));
    return o;
}

json_t *jp_job_to_message(const jp_job *job, int attempt)
{
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "id", string_or_null(job->id));
    json_object_set_new_nocheck(o, "queue", string_or_null(job->queue));
    json_object_set_new_nocheck(o, "strategy", string_or_null(job->strategy));
    json_object_set_new_nocheck(o, "payload", ref_or_null(job->payload));
    json_object_set_new_nocheck(o, "priority", json_integer(job->priority));
    json_object_set_new_nocheck(o, "key", string_or_null(job->key));
    json_object_set_new_nocheck(o, "timeout_seconds", json_integer(job->timeout_seconds));
    json_object_set_new_nocheck(o, "max_attempts", json_integer(job->max_attempts));
    json_object_set_new_nocheck(o, "attempt", json_integer(attempt));
    return o;
}

int jp_job_from_message(const json_t *data, jp_job **ret_job, int *ret_attempt, jp_err *err)
{
    jp_job *job = NULL;
    const json_t *v;
    int attempt = 0;
    int rc;

    if (!json_is_object(data))
        return jp_err_set(err, JP_EINVAL, "job_data must be a JSON object");
    job = jp_job_new();
    v = json_object_get(data, "id");
    if (!json_is_string(v) || !jp_uuid_valid(json_string_value(v))) {
        rc = jp_err_set(err, JP_EINVAL, "job_data field \"id\" must be a UUID");
        goto out;
    }
    memcpy(job->id, json_string_value(v), JP_UUID_STR_LEN + 1);
    rc = read_name(json_object_get(data, "queue"), "queue", NULL, &job->queue, err);
    if (rc < 0)
        goto out;
    rc = read_name(json_object_get(data, "strategy"), "strategy", NULL, &job->strategy, err);
    if (rc < 0)
        goto out;
    v = json_object_get(data, "priority");
    if (!v || (job->priority = jp_priority_from_json(v)) < 0) {
        rc = jp_err_set(err, JP_EINVAL, "job_data field \"priority\" must be an integer 0 to 3");
        goto out;
    }
    rc = read_opt_string(json_object_get(data, "key"), "key", JP_KEY_MAX, &job->key, err);
    if (rc < 0)
        goto out;
    rc = read_int(json_object_get(data, "timeout_seconds"), "timeout_seconds", 1,
                  JP_TIMEOUT_LIMIT_S, &job->timeout_seconds, err);
    if (rc < 0)
        goto out;
    rc = read_int(json_object_get(data, "max_attempts"), "max_attempts", 1, JP_MAX_ATTEMPTS_LIMIT,
                  &job->max_attempts, err);
    if (rc < 0)
        goto out;
    rc = read_int(json_object_get(data, "attempt"), "attempt", 1, ATTEMPT_LIMIT, &attempt, err);
    if (rc < 0)
        goto out;
    v = json_object_get(data, "payload");
    if (v) {
        json_decref(job->payload);
        job->payload = json_incref((json_t *)v);
    }
    *ret_job = job;
    job = NULL;
    if (ret_attempt)
        *ret_attempt = attempt;
    rc = 0;
out:
    jp_job_free(job);
    return rc;
}

/* ---- worker reports ---- */

static const char *const report_fields[] = {
    "status", "attempt", "worker_id", "result", "error", "retryable",
};

int jp_report_from_json(const json_t *body, jp_report *rep, jp_err *err)
{
    jp_report r = {.retryable = true};
    const char *name;
    const json_t *v;
    int rc;

    if (!json_is_object(body))
        return jp_err_set(err, JP_EINVAL, "the report must be a JSON object");
    json_object_foreach((json_t *)body, name, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof report_fields / sizeof report_fields[0]; i++)
            known = known || strcmp(name, report_fields[i]) == 0;
        if (!known)
            return jp_err_set(err, JP_EINVAL, "unknown field \"%.64s\"", name);
    }

    v = json_object_get(body, "status");
    if (!v)
        return jp_err_set(err, JP_EINVAL, "field \"status\" is required");
    int st = json_is_string(v) ? jp_status_parse(json_string_value(v)) : -1;
    if (st != JP_ST_RUNNING && st != JP_ST_COMPLETED && st != JP_ST_FAILED)
        return jp_err_set(err, JP_EINVAL,
                          "field \"status\" must be \"running\", \"completed\" or \"failed\"");
    r.status = (jp_status)st;
    v = json_object_get(body, "attempt");
    if (!v)
        return jp_err_set(err, JP_EINVAL, "field \"attempt\" is required");
    rc = read_int(v, "attempt", 1, ATTEMPT_LIMIT, &r.attempt, err);
    if (rc < 0)
        return rc;
    v = json_object_get(body, "retryable");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return jp_err_set(err, JP_EINVAL, "field \"retryable\" must be a boolean");
        r.retryable = json_is_true(v);
    }
    rc = read_opt_string(json_object_get(body, "worker_id"), "worker_id", JP_WORKER_ID_MAX,
                         &r.worker_id, err);
    if (rc < 0)
        return rc;
    v = json_object_get(body, "result");
    if (v && !json_is_null(v))
        r.result = json_incref((json_t *)v);
    v = json_object_get(body, "error");
    if (v && !json_is_null(v))
        r.error = jp_error_normalise(v);
    *rep = r;
    return 0;
}

void jp_report_done(jp_report *rep)
{
    if (!rep)
        return;
    free(rep->worker_id);
    json_decref(rep->result);
    json_decref(rep->error);
    memset(rep, 0, sizeof *rep);
}
