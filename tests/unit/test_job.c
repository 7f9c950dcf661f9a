/* Unit tests of the job model: request validation, JSON forms, reports, errors. */
#include "core/job.h"
#include "core/jtime.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NOW 1795687200000LL /* 2026-11-26T10:00:00.000Z */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return v;
}

/* Builds a job from a request text; returns the rc, the job on success. */
static int request(const char *text, jp_job **job, jp_err *err)
{
    json_t *body = parse(text);
    *job = NULL;
    int rc = jp_job_from_request(body, NOW, job, err);
    json_decref(body);
    return rc;
}

static jp_job *request_ok(const char *text)
{
    jp_job *job;
    jp_err err = {0};
    if (request(text, &job, &err) != 0)
        fail_msg("rejected %s: %s", text, err.msg);
    return job;
}

/* Asserts the request is refused with JP_EINVAL and a message containing `needle`. */
static void request_bad(const char *text, const char *needle)
{
    jp_job *job = (jp_job *)0x1;
    jp_err err = {0};
    json_t *body = parse(text);
    int rc = jp_job_from_request(body, NOW, &job, &err);
    json_decref(body);
    if (rc != JP_EINVAL)
        fail_msg("accepted %s", text);
    assert_ptr_equal(job, (jp_job *)0x1); /* out-param untouched */
    if (!strstr(err.msg, needle))
        fail_msg("%s: message \"%s\" lacks \"%s\"", text, err.msg, needle);
}

static void test_names_of_status_and_priority(void **state)
{
    const char *st[] = {"pending", "scheduled", "queued", "running", "completed", "failed",
                        "cancelled"};
    for (int i = 0; i < JP_ST__COUNT; i++) {
        assert_string_equal(jp_status_name(i), st[i]);
        assert_int_equal(jp_status_parse(st[i]), i);
    }
    assert_int_equal(jp_status_parse("done"), -1);
    assert_int_equal(jp_status_parse(NULL), -1);
    assert_true(jp_status_terminal(JP_ST_COMPLETED));
    assert_true(jp_status_terminal(JP_ST_FAILED));
    assert_true(jp_status_terminal(JP_ST_CANCELLED));
    assert_false(jp_status_terminal(JP_ST_RUNNING));
    assert_false(jp_status_terminal(JP_ST_SCHEDULED));
    assert_string_equal(jp_priority_name(0), "emergency");
    assert_string_equal(jp_priority_name(3), "low");
}

static void test_priority_from_json(void **state)
{
    const char *good[] = {"\"emergency\"", "\"high\"", "\"normal\"", "\"low\"", "0", "1", "2", "3"};
    int want[] = {0, 1, 2, 3, 0, 1, 2, 3};
    for (int i = 0; i < 8; i++) {
        json_t *v = parse(good[i]);
        assert_int_equal(jp_priority_from_json(v), want[i]);
        json_decref(v);
    }
    const char *bad[] = {"\"urgent\"", "\"HIGH\"", "4", "-1", "1.0", "true", "null", "[1]"};
    for (int i = 0; i < 8; i++) {
        json_t *v = parse(bad[i]);
        assert_int_equal(jp_priority_from_json(v), -1);
        json_decref(v);
    }
    assert_int_equal(jp_priority_from_json(NULL), -1);
}

static void test_name_valid(void **state)
{
    assert_true(jp_name_valid("default"));
    assert_true(jp_name_valid("a-b_c9"));
    char max[JP_NAME_MAX + 2];
    memset(max, 'a', JP_NAME_MAX);
    max[JP_NAME_MAX] = '\0';
    assert_true(jp_name_valid(max));
    max[JP_NAME_MAX] = 'a';
    max[JP_NAME_MAX + 1] = '\0';
    assert_false(jp_name_valid(max));
    assert_false(jp_name_valid(""));
    assert_false(jp_name_valid(NULL));
    assert_false(jp_name_valid("Default"));
    assert_false(jp_name_valid("a b"));
    assert_false(jp_name_valid("a:b"));
    assert_false(jp_name_valid("a}b"));
}

static void test_request_minimal_gets_defaults(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\"}");
    assert_true(jp_uuid_valid(job->id));
    assert_string_equal(job->strategy, "noop");
    assert_string_equal(job->queue, "default");
    assert_true(json_is_null(job->payload));
    assert_int_equal(job->priority, JP_PRIO_NORMAL);
    assert_null(job->key);
    assert_null(job->idempotency_key);
    assert_string_equal(job->request_hash, "");
    assert_int_equal(job->timeout_seconds, 300);
    assert_int_equal(job->max_attempts, 3);
    assert_int_equal(job->status, JP_ST_QUEUED);
    assert_int_equal(job->run_at_ms, 0);
    assert_int_equal(job->attempts, 0);
    assert_int_equal(job->created_at_ms, NOW);
    assert_int_equal(job->updated_at_ms, NOW);
    assert_int_equal(job->started_at_ms, 0);
    assert_int_equal(job->completed_at_ms, 0);
    assert_null(job->result);
    assert_null(job->error);
    assert_null(job->worker_id);
    jp_job_free(job);
}

static void test_request_all_fields(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"http\",\"payload\":{\"url\":\"https://x/\"},"
                             "\"queue\":\"crawl-1\",\"priority\":\"high\",\"key\":\"example.com\","
                             "\"idempotency_key\":\"order-42\",\"timeout_seconds\":60,"
                             "\"max_attempts\":5}");
    assert_string_equal(job->strategy, "http");
    assert_string_equal(job->queue, "crawl-1");
    assert_string_equal(json_string_value(json_object_get(job->payload, "url")), "https://x/");
    assert_int_equal(job->priority, JP_PRIO_HIGH);
    assert_string_equal(job->key, "example.com");
    assert_string_equal(job->idempotency_key, "order-42");
    assert_int_equal(strlen(job->request_hash), 16);
    assert_int_equal(job->timeout_seconds, 60);
    assert_int_equal(job->max_attempts, 5);
    jp_job_free(job);
}

static void test_request_priority_as_integer(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"priority\":0}");
    assert_int_equal(job->priority, JP_PRIO_EMERGENCY);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"priority\":3}");
    assert_int_equal(job->priority, JP_PRIO_LOW);
    jp_job_free(job);
}

static void test_request_ids_are_fresh(void **state)
{
    jp_job *a = request_ok("{\"strategy\":\"noop\"}");
    jp_job *b = request_ok("{\"strategy\":\"noop\"}");
    assert_true(strcmp(a->id, b->id) < 0);
    jp_job_free(a);
    jp_job_free(b);
}

static void test_request_nulls_mean_absent(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"key\":null,\"idempotency_key\":null,"
                             "\"run_at\":null,\"payload\":null}");
    assert_null(job->key);
    assert_null(job->idempotency_key);
    assert_int_equal(job->status, JP_ST_QUEUED);
    jp_job_free(job);
}

static void test_request_rejects_non_object(void **state)
{
    request_bad("[]", "object");
    request_bad("\"noop\"", "object");
    request_bad("null", "object");
    jp_job *job = NULL;
    assert_int_equal(jp_job_from_request(NULL, NOW, &job, NULL), JP_EINVAL);
    assert_null(job);
}

static void test_request_rejects_unknown_field(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"priorty\":\"high\"}", "unknown field \"priorty\"");
    request_bad("{\"strategy\":\"noop\",\"id\":\"x\"}", "unknown field \"id\"");
}

static void test_request_rejects_bad_strategy(void **state)
{
    request_bad("{}", "field \"strategy\" is required");
    request_bad("{\"strategy\":null}", "field \"strategy\" is required");
    request_bad("{\"strategy\":5}", "field \"strategy\" must be a string");
    request_bad("{\"strategy\":\"\"}", "field \"strategy\"");
    request_bad("{\"strategy\":\"No Op\"}", "field \"strategy\"");
    request_bad("{\"strategy\":\"a\\u0000b\"}", "field \"strategy\"");
}

static void test_request_rejects_bad_queue(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"queue\":1}", "field \"queue\" must be a string");
    request_bad("{\"strategy\":\"noop\",\"queue\":\"a{b}\"}", "field \"queue\"");
    char text[256];
    snprintf(text, sizeof text, "{\"strategy\":\"noop\",\"queue\":\"%065d\"}", 0);
    request_bad(text, "field \"queue\"");
}

static void test_request_rejects_bad_priority(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"priority\":\"urgent\"}", "field \"priority\" must be");
    request_bad("{\"strategy\":\"noop\",\"priority\":4}", "field \"priority\"");
    request_bad("{\"strategy\":\"noop\",\"priority\":-1}", "field \"priority\"");
    request_bad("{\"strategy\":\"noop\",\"priority\":1.0}", "field \"priority\"");
    request_bad("{\"strategy\":\"noop\",\"priority\":true}", "field \"priority\"");
}

static void test_request_rejects_bad_keys(void **state)
{
    char text[512 + 64];
    char big[JP_KEY_MAX + 2];
    memset(big, 'k', JP_KEY_MAX + 1);
    big[JP_KEY_MAX + 1] = '\0';
    request_bad("{\"strategy\":\"noop\",\"key\":\"\"}", "field \"key\"");
    request_bad("{\"strategy\":\"noop\",\"key\":7}", "field \"key\"");
    request_bad("{\"strategy\":\"noop\",\"key\":\"a\\u0000b\"}", "field \"key\"");
    snprintf(text, sizeof text, "{\"strategy\":\"noop\",\"key\":\"%s\"}", big);
    request_bad(text, "field \"key\"");
    request_bad("{\"strategy\":\"noop\",\"idempotency_key\":\"\"}", "field \"idempotency_key\"");
    request_bad("{\"strategy\":\"noop\",\"idempotency_key\":{}}", "field \"idempotency_key\"");
    snprintf(text, sizeof text, "{\"strategy\":\"noop\",\"idempotency_key\":\"%s\"}", big);
    request_bad(text, "field \"idempotency_key\"");
    /* exactly the limit is fine */
    big[JP_KEY_MAX] = '\0';
    snprintf(text, sizeof text, "{\"strategy\":\"noop\",\"key\":\"%s\"}", big);
    jp_job *job = request_ok(text);
    assert_int_equal(strlen(job->key), JP_KEY_MAX);
    jp_job_free(job);
}

static void test_request_rejects_bad_timeout(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":0}", "field \"timeout_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":-5}", "field \"timeout_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":604801}", "field \"timeout_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":1.5}",
                "field \"timeout_seconds\" must be an integer");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":10.0}",
                "field \"timeout_seconds\" must be an integer");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":\"10\"}", "field \"timeout_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":true}", "field \"timeout_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"timeout_seconds\":99999999999999999}",
                "field \"timeout_seconds\"");
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"timeout_seconds\":604800}");
    assert_int_equal(job->timeout_seconds, JP_TIMEOUT_LIMIT_S);
    jp_job_free(job);
}

static void test_request_rejects_bad_max_attempts(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"max_attempts\":0}", "field \"max_attempts\"");
    request_bad("{\"strategy\":\"noop\",\"max_attempts\":101}", "field \"max_attempts\"");
    request_bad("{\"strategy\":\"noop\",\"max_attempts\":false}", "field \"max_attempts\"");
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"max_attempts\":100}");
    assert_int_equal(job->max_attempts, 100);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"max_attempts\":1}");
    assert_int_equal(job->max_attempts, 1);
    jp_job_free(job);
}

static void test_request_run_at_future_is_scheduled(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"run_at\":\"2026-11-26T11:00:00Z\"}");
    assert_int_equal(job->status, JP_ST_SCHEDULED);
    assert_int_equal(job->run_at_ms, NOW + 3600 * 1000);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"run_at\":\"2026-11-26T12:00:00.5+02:00\"}");
    assert_int_equal(job->status, JP_ST_SCHEDULED);
    assert_int_equal(job->run_at_ms, NOW + 500);
    jp_job_free(job);
}

static void test_request_run_at_past_or_now_is_queued(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"run_at\":\"2020-01-01T00:00:00Z\"}");
    assert_int_equal(job->status, JP_ST_QUEUED);
    assert_int_equal(job->run_at_ms, 0);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"run_at\":\"2026-11-26T10:00:00Z\"}");
    assert_int_equal(job->status, JP_ST_QUEUED);
    assert_int_equal(job->run_at_ms, 0);
    jp_job_free(job);
}

static void test_request_rejects_bad_run_at(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"run_at\":\"tomorrow\"}", "field \"run_at\"");
    request_bad("{\"strategy\":\"noop\",\"run_at\":1795687200}", "field \"run_at\"");
    request_bad("{\"strategy\":\"noop\",\"run_at\":\"2026-11-26T10:00:00\"}", "field \"run_at\"");
    request_bad("{\"strategy\":\"noop\",\"run_at\":\"2099-01-01T00:00:00Z\"}", "field \"run_at\"");
}

static void test_request_delay_is_scheduled(void **state)
{
    jp_job *job = request_ok("{\"strategy\":\"noop\",\"delay_seconds\":30}");
    assert_int_equal(job->status, JP_ST_SCHEDULED);
    assert_int_equal(job->run_at_ms, NOW + 30000);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"delay_seconds\":1.25}");
    assert_int_equal(job->status, JP_ST_SCHEDULED);
    assert_int_equal(job->run_at_ms, NOW + 1250);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"delay_seconds\":0.0001}");
    assert_int_equal(job->status, JP_ST_SCHEDULED);
    assert_true(job->run_at_ms > NOW);
    jp_job_free(job);
    job = request_ok("{\"strategy\":\"noop\",\"delay_seconds\":0}");
    assert_int_equal(job->status, JP_ST_QUEUED);
    assert_int_equal(job->run_at_ms, 0);
    jp_job_free(job);
}

static void test_request_rejects_bad_delay(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":-1}", "field \"delay_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":\"5\"}", "field \"delay_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":31622401}", "field \"delay_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":1e300}", "field \"delay_seconds\"");
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":true}", "field \"delay_seconds\"");
}

static void test_request_rejects_run_at_with_delay(void **state)
{
    request_bad("{\"strategy\":\"noop\",\"delay_seconds\":5,"
                "\"run_at\":\"2026-11-26T11:00:00Z\"}",
                "\"run_at\" and \"delay_seconds\"");
}

static void test_request_payload_is_shared_not_copied(void **state)
{
    json_t *body = parse("{\"strategy\":\"noop\",\"payload\":[1,2,3]}");
    json_t *payload = json_object_get(body, "payload");
    jp_job *job = NULL;
    assert_int_equal(jp_job_from_request(body, NOW, &job, NULL), 0);
    assert_ptr_equal(job->payload, payload);
    json_decref(body);
    assert_int_equal(json_array_size(job->payload), 3); /* still alive: the job holds a ref */
    jp_job_free(job);
}

static void test_request_hash_same_for_same_body(void **state)
{
    jp_job *a = request_ok("{\"strategy\":\"noop\",\"idempotency_key\":\"k\",\"payload\":{\"a\":1,\"b\":2}}");
    jp_job *b = request_ok("{\"payload\":{\"b\":2,\"a\":1},\"idempotency_key\":\"k\",\"strategy\":\"noop\"}");
    jp_job *c = request_ok("{\"strategy\":\"noop\",\"idempotency_key\":\"k\",\"payload\":{\"a\":1,\"b\":3}}");
    jp_job *d = request_ok("{\"strategy\":\"noop\",\"payload\":{\"a\":1,\"b\":2}}");
    assert_int_equal(strlen(a->request_hash), 16);
    for (int i = 0; i < 16; i++)
        assert_non_null(strchr("0123456789abcdef", a->request_hash[i]));
    assert_string_equal(a->request_hash, b->request_hash);
    assert_string_not_equal(a->request_hash, c->request_hash);
    assert_string_equal(d->request_hash, "");
    jp_job_free(a);
    jp_job_free(b);
    jp_job_free(c);
    jp_job_free(d);
}

static jp_job *full_job(void)
{
    jp_job *job = jp_job_new();
    memcpy(job->id, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f", JP_UUID_STR_LEN + 1);
    job->queue = strdup("default");
    job->strategy = strdup("http");
    json_decref(job->payload);
    job->payload = parse("{\"url\":\"https://example.com/\"}");
    job->priority = JP_PRIO_NORMAL;
    job->key = strdup("example.com");
    job->status = JP_ST_COMPLETED;
    job->attempts = 1;
    job->max_attempts = 3;
    job->timeout_seconds = 300;
    job->idempotency_key = strdup("order-42");
    job->result = parse("{\"status\":200}");
    job->worker_id = strdup("worker-a:1234");
    job->created_at_ms = NOW;
    job->started_at_ms = NOW + 4;
    job->completed_at_ms = NOW + 120;
    job->updated_at_ms = NOW + 120;
    return job;
}

static void test_to_json_has_design_fields_in_order(void **state)
{
    static const char *const fields[] = {
        "id", "queue", "strategy", "payload", "priority", "key", "status", "attempts",
        "max_attempts", "timeout_seconds", "run_at", "idempotency_key", "result", "error",
        "worker_id", "created_at", "started_at", "completed_at", "updated_at",
    };
    jp_job *job = full_job();
    json_t *o = jp_job_to_json(job);
    assert_int_equal(json_object_size(o), 19);
    char *text = json_dumps(o, JSON_COMPACT);
    const char *p = text;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\":", fields[i]);
        const char *at = strstr(p, quoted);
        if (!at)
            fail_msg("field %s missing or out of order in %s", fields[i], text);
        p = at + strlen(quoted);
    }
    assert_string_equal(json_string_value(json_object_get(o, "priority")), "normal");
    assert_string_equal(json_string_value(json_object_get(o, "status")), "completed");
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "2026-11-26T10:00:00.000Z");
    assert_string_equal(json_string_value(json_object_get(o, "started_at")),
                        "2026-11-26T10:00:00.004Z");
    assert_string_equal(json_string_value(json_object_get(o, "completed_at")),
                        "2026-11-26T10:00:00.120Z");
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "result"), "status")),
                     200);
    assert_ptr_equal(json_object_get(o, "payload"), job->payload); /* shared, not copied */
    free(text);
    json_decref(o);
    jp_job_free(job);
}

static void test_to_json_unset_fields_are_null(void **state)
{
    jp_job *job = jp_job_new();
    memcpy(job->id, "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f", JP_UUID_STR_LEN + 1);
    job->queue = strdup("default");
    job->strategy = strdup("noop");
    job->status = JP_ST_QUEUED;
    job->created_at_ms = job->updated_at_ms = NOW;
    json_t *o = jp_job_to_json(job);
    const char *nulls[] = {"payload", "key", "run_at", "idempotency_key", "result", "error",
                           "worker_id", "started_at", "completed_at"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        json_t *v = json_object_get(o, nulls[i]);
        if (!json_is_null(v))
            fail_msg("field %s is not null", nulls[i]);
    }
    assert_string_equal(json_string_value(json_object_get(o, "status")), "queued");
    json_decref(o);
    job->run_at_ms = NOW + 1000;
    o = jp_job_to_json(job);
    assert_string_equal(json_string_value(json_object_get(o, "run_at")), "2026-11-26T10:00:01.000Z");
    json_decref(o);
    jp_job_free(job);
}

static void test_message_round_trip(void **state)
{
    jp_job *job = full_job();
    job->priority = JP_PRIO_HIGH;
    json_t *msg = jp_job_to_message(job, 2);
    assert_int_equal(json_object_size(msg), 9);
    assert_int_equal(json_integer_value(json_object_get(msg, "priority")), 1);
    assert_int_equal(json_integer_value(json_object_get(msg, "attempt")), 2);
    /* the wire form goes through text */
    char *text = json_dumps(msg, JSON_COMPACT);
    json_t *back = parse(text);
    jp_job *got = NULL;
    int attempt = 0;
    jp_err err = {0};
    assert_int_equal(jp_job_from_message(back, &got, &attempt, &err), 0);
    assert_int_equal(attempt, 2);
    assert_string_equal(got->id, job->id);
    assert_string_equal(got->queue, "default");
    assert_string_equal(got->strategy, "http");
    assert_true(json_equal(got->payload, job->payload));
    assert_int_equal(got->priority, JP_PRIO_HIGH);
    assert_string_equal(got->key, "example.com");
    assert_int_equal(got->timeout_seconds, 300);
    assert_int_equal(got->max_attempts, 3);
    jp_job_free(got);
    json_decref(back);
    free(text);
    json_decref(msg);
    jp_job_free(job);
}

static void test_message_without_key(void **state)
{
    jp_job *job = full_job();
    free(job->key);
    job->key = NULL;
    json_t *msg = jp_job_to_message(job, 1);
    assert_true(json_is_null(json_object_get(msg, "key")));
    jp_job *got = NULL;
    int attempt;
    assert_int_equal(jp_job_from_message(msg, &got, &attempt, NULL), 0);
    assert_null(got->key);
    jp_job_free(got);
    json_decref(msg);
    jp_job_free(job);
}

static void message_bad(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    jp_job *job = (jp_job *)0x1;
    int attempt = -7;
    jp_err err = {0};
    if (jp_job_from_message(v, &job, &attempt, &err) != JP_EINVAL)
        fail_msg("accepted %s", text);
    assert_ptr_equal(job, (jp_job *)0x1);
    assert_int_equal(attempt, -7);
    assert_true(err.msg[0] != '\0');
    json_decref(v);
}

#define GOOD_MSG_HEAD "\"id\":\"01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f\",\"queue\":\"default\",\"strategy\":\"noop\""

static void test_message_parser_rejects_garbage(void **state)
{
    message_bad("null");
    message_bad("[]");
    message_bad("42");
    message_bad("\"job\"");
    message_bad("{}");
    message_bad("{\"id\":\"not-a-uuid\",\"queue\":\"default\",\"strategy\":\"noop\",\"priority\":2,"
                "\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{\"id\":7," "\"queue\":\"default\",\"strategy\":\"noop\",\"priority\":2,"
                "\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":9,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":0,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":\"1\",\"max_attempts\":1,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1000,\"attempt\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":0}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1e99}");
    message_bad("{" GOOD_MSG_HEAD ",\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1,\"key\":[]}");
    message_bad("{\"id\":\"01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f\",\"queue\":\"../x\",\"strategy\":\"noop\","
                "\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    message_bad("{\"id\":\"01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f\",\"queue\":\"default\",\"strategy\":null,"
                "\"priority\":2,\"timeout_seconds\":1,\"max_attempts\":1,\"attempt\":1}");
    assert_int_equal(jp_job_from_message(NULL, &(jp_job *){NULL}, NULL, NULL), JP_EINVAL);
}

/* Every truncation and single-byte change of a good message: none may crash. */
static void test_message_parser_survives_mutations(void **state)
{
    const char *good = "{" GOOD_MSG_HEAD ",\"payload\":{\"a\":[1,2]},\"priority\":2,\"key\":\"k\","
                       "\"timeout_seconds\":30,\"max_attempts\":3,\"attempt\":1}";
    size_t len = strlen(good);
    char *buf = malloc(len + 1);
    const char subst[] = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', 'x', ' ', 'n'};
    int accepted = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        for (size_t s = 0; s <= sizeof subst; s++) {
            memcpy(buf, good, len + 1);
            if (s < sizeof subst && cut < len)
                buf[cut] = subst[s];
            else
                buf[cut] = '\0';
            json_t *v = json_loads(buf, JSON_DECODE_ANY, NULL);
            jp_job *job = NULL;
            int attempt;
            if (v && jp_job_from_message(v, &job, &attempt, NULL) == 0) {
                assert_non_null(job);
                assert_true(attempt >= 1);
                accepted++;
            }
            jp_job_free(job);
            json_decref(v);
        }
    }
    assert_true(accepted > 0); /* the unmutated message itself */
    free(buf);
}

static int report(const char *text, jp_report *rep, jp_err *err)
{
    json_t *v = parse(text);
    int rc = jp_report_from_json(v, rep, err);
    json_decref(v);
    return rc;
}

static void test_report_completed(void **state)
{
    jp_report rep;
    assert_int_equal(report("{\"status\":\"completed\",\"attempt\":2,\"worker_id\":\"w1\","
                            "\"result\":{\"ok\":true}}", &rep, NULL), 0);
    assert_int_equal(rep.status, JP_ST_COMPLETED);
    assert_int_equal(rep.attempt, 2);
    assert_string_equal(rep.worker_id, "w1");
    assert_true(json_is_true(json_object_get(rep.result, "ok")));
    assert_null(rep.error);
    assert_true(rep.retryable);
    jp_report_done(&rep);
    assert_null(rep.worker_id);
    assert_null(rep.result);
    jp_report_done(&rep); /* twice is harmless */
}

static void test_report_failed_normalises_error(void **state)
{
    jp_report rep;
    assert_int_equal(report("{\"status\":\"failed\",\"attempt\":1,\"error\":\"boom\","
                            "\"retryable\":false}", &rep, NULL), 0);
    assert_int_equal(rep.status, JP_ST_FAILED);
    assert_false(rep.retryable);
    assert_string_equal(json_string_value(json_object_get(rep.error, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(rep.error, "message")), "boom");
    assert_null(rep.worker_id);
    jp_report_done(&rep);
    assert_int_equal(report("{\"status\":\"running\",\"attempt\":1}", &rep, NULL), 0);
    assert_int_equal(rep.status, JP_ST_RUNNING);
    jp_report_done(&rep);
}

static void report_bad(const char *text, const char *needle)
{
    jp_report rep = {.attempt = -3};
    jp_err err = {0};
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    if (jp_report_from_json(v, &rep, &err) != JP_EINVAL)
        fail_msg("accepted %s", text);
    json_decref(v);
    assert_int_equal(rep.attempt, -3); /* untouched */
    if (!strstr(err.msg, needle))
        fail_msg("%s: message \"%s\" lacks \"%s\"", text, err.msg, needle);
}

static void test_report_rejects_bad_fields(void **state)
{
    report_bad("[]", "object");
    report_bad("{\"attempt\":1}", "\"status\"");
    report_bad("{\"status\":\"queued\",\"attempt\":1}", "\"status\"");
    report_bad("{\"status\":\"done\",\"attempt\":1}", "\"status\"");
    report_bad("{\"status\":1,\"attempt\":1}", "\"status\"");
    report_bad("{\"status\":\"completed\"}", "\"attempt\"");
    report_bad("{\"status\":\"completed\",\"attempt\":0}", "\"attempt\"");
    report_bad("{\"status\":\"completed\",\"attempt\":\"1\"}", "\"attempt\"");
    report_bad("{\"status\":\"completed\",\"attempt\":1.5}", "\"attempt\"");
    report_bad("{\"status\":\"failed\",\"attempt\":1,\"retryable\":\"yes\"}", "\"retryable\"");
    report_bad("{\"status\":\"failed\",\"attempt\":1,\"worker_id\":5}", "\"worker_id\"");
    report_bad("{\"status\":\"failed\",\"attempt\":1,\"extra\":5}", "unknown field \"extra\"");
    char text[400];
    snprintf(text, sizeof text, "{\"status\":\"running\",\"attempt\":1,\"worker_id\":\"%0129d\"}", 0);
    report_bad(text, "\"worker_id\"");
}

static void test_error_normalise_forms(void **state)
{
    json_t *in, *out;

    out = jp_error_normalise(NULL);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "failed");
    json_decref(out);

    in = parse("null");
    out = jp_error_normalise(in);
    assert_string_equal(json_string_value(json_object_get(out, "message")), "failed");
    json_decref(out);
    json_decref(in);

    in = parse("{\"code\":\"timeout\",\"message\":\"took too long\",\"extra\":1}");
    out = jp_error_normalise(in);
    assert_int_equal(json_object_size(out), 2);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "timeout");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "took too long");
    json_decref(out);
    json_decref(in);

    in = parse("{\"message\":\"m\"}");
    out = jp_error_normalise(in);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "m");
    json_decref(out);
    json_decref(in);

    in = parse("{\"code\":5}");
    out = jp_error_normalise(in);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "");
    json_decref(out);
    json_decref(in);

    in = parse("[1,{\"a\":true}]");
    out = jp_error_normalise(in);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "[1,{\"a\":true}]");
    json_decref(out);
    json_decref(in);

    in = parse("42");
    out = jp_error_normalise(in);
    assert_string_equal(json_string_value(json_object_get(out, "message")), "42");
    json_decref(out);
    json_decref(in);
}

static void test_error_normalise_caps_lengths(void **state)
{
    /* a long string message is cut at 4096 bytes */
    char *big = malloc(10001);
    memset(big, 'x', 10000);
    big[10000] = '\0';
    json_t *in = json_string(big);
    json_t *out = jp_error_normalise(in);
    assert_int_equal(json_string_length(json_object_get(out, "message")), 4096);
    json_decref(out);
    json_decref(in);

    /* a long non-string is cut at 1024 bytes of its JSON text */
    in = json_array();
    for (int i = 0; i < 1000; i++)
        json_array_append_new(in, json_integer(123456));
    out = jp_error_normalise(in);
    assert_int_equal(json_string_length(json_object_get(out, "message")), 1024);
    json_decref(out);
    json_decref(in);

    /* cutting never splits a UTF-8 character: 3-byte "€" repeated */
    char *euro = malloc(3 * 2000 + 1);
    for (int i = 0; i < 2000; i++)
        memcpy(euro + 3 * i, "\xe2\x82\xac", 3);
    euro[3 * 2000] = '\0';
    out = jp_error_json("job_error", euro);
    json_t *msg = json_object_get(out, "message");
    assert_non_null(msg);
    assert_int_equal(json_string_length(msg), 4095);
    json_decref(out);
    free(euro);
    free(big);
}

static void test_error_json_repairs_invalid_utf8(void **state)
{
    json_t *out = jp_error_json("exec", "bad \xff\xfe bytes \xc3");
    assert_string_equal(json_string_value(json_object_get(out, "code")), "exec");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "bad ?? bytes ?");
    json_decref(out);
    out = jp_error_json(NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(out, "code")), "job_error");
    assert_string_equal(json_string_value(json_object_get(out, "message")), "");
    json_decref(out);
}

static void test_jobs_free_accepts_null(void **state)
{
    jp_job_free(NULL);
    jp_jobs_free(NULL, 0);
    jp_job **jobs = malloc(2 * sizeof *jobs);
    jobs[0] = jp_job_new();
    jobs[1] = full_job();
    jp_jobs_free(jobs, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_of_status_and_priority),
        cmocka_unit_test(test_priority_from_json),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_request_minimal_gets_defaults),
        cmocka_unit_test(test_request_all_fields),
        cmocka_unit_test(test_request_priority_as_integer),
        cmocka_unit_test(test_request_ids_are_fresh),
        cmocka_unit_test(test_request_nulls_mean_absent),
        cmocka_unit_test(test_request_rejects_non_object),
        cmocka_unit_test(test_request_rejects_unknown_field),
        cmocka_unit_test(test_request_rejects_bad_strategy),
        cmocka_unit_test(test_request_rejects_bad_queue),
        cmocka_unit_test(test_request_rejects_bad_priority),
        cmocka_unit_test(test_request_rejects_bad_keys),
        cmocka_unit_test(test_request_rejects_bad_timeout),
        cmocka_unit_test(test_request_rejects_bad_max_attempts),
        cmocka_unit_test(test_request_run_at_future_is_scheduled),
        cmocka_unit_test(test_request_run_at_past_or_now_is_queued),
        cmocka_unit_test(test_request_rejects_bad_run_at),
        cmocka_unit_test(test_request_delay_is_scheduled),
        cmocka_unit_test(test_request_rejects_bad_delay),
        cmocka_unit_test(test_request_rejects_run_at_with_delay),
        cmocka_unit_test(test_request_payload_is_shared_not_copied),
        cmocka_unit_test(test_request_hash_same_for_same_body),
        cmocka_unit_test(test_to_json_has_design_fields_in_order),
        cmocka_unit_test(test_to_json_unset_fields_are_null),
        cmocka_unit_test(test_message_round_trip),
        cmocka_unit_test(test_message_without_key),
        cmocka_unit_test(test_message_parser_rejects_garbage),
        cmocka_unit_test(test_message_parser_survives_mutations),
        cmocka_unit_test(test_report_completed),
        cmocka_unit_test(test_report_failed_normalises_error),
        cmocka_unit_test(test_report_rejects_bad_fields),
        cmocka_unit_test(test_error_normalise_forms),
        cmocka_unit_test(test_error_normalise_caps_lengths),
        cmocka_unit_test(test_error_json_repairs_invalid_utf8),
        cmocka_unit_test(test_jobs_free_accepts_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
