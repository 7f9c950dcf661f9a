/* The two reporters: a call's reports become one HTTP request to the
 * control plane, or one database transaction. The worker batches before it
 * calls (a fetch's starts, a round of outcomes) and gives each reporting
 * thread its own reporter, so a call goes out on the caller's thread: no
 * hand-off to another thread and back on the way of every report. */
#include "worker/reporter.h"

#include "client/client.h"
#include "core/batcher.h"

#include <pthread.h>
#include "core/mem.h"
#include "store/group.h"

#include <stdlib.h>
#include <string.h>

struct jp_reporter {
    pthread_mutex_t mu;  /* one call at a time */
    jp_batch_flush_fn flush;
    jp_client *client;  /* api mode */
    jp_store *store;    /* db mode */
};

static const char *report_status(jp_event_kind k)
{
    return k == JP_EV_START ? "running" : k == JP_EV_COMPLETE ? "completed" : "failed";
}

static json_t *report_json(const jp_store_op *op)
{
    json_t *r = json_pack("{s:s,s:s,s:i}", "id", op->job_id, "status",
                          report_status(op->ev.kind), "attempt", op->ev.attempt);
    if (op->ev.worker_id)
        json_object_set_new(r, "worker_id", json_string(op->ev.worker_id));
    if (op->ev.kind != JP_EV_START && op->ev.result)
        json_object_set(r, "result", (json_t *)op->ev.result);
    if (op->ev.kind == JP_EV_FAIL) {
        if (op->ev.error)
            json_object_set(r, "error", (json_t *)op->ev.error);
        json_object_set_new(r, "retryable", json_boolean(op->ev.retryable));
    }
    return r;
}

static int code_of(const char *name)
{
    if (!name || strcmp(name, "ok") == 0)
        return 0;
    if (strcmp(name, "conflict") == 0)
        return JP_ECONFLICT;
    if (strcmp(name, "not_found") == 0)
        return JP_ENOTFOUND;
    return JP_EINVAL;
}

/* One request for the whole round; each op's verdict comes back in order. */
static void flush_api(void *arg, jp_batch_item **items, size_t n)
{
    jp_reporter *r = arg;
    json_t *reports = json_array();
    for (size_t i = 0; i < n; i++) {
        jp_store_op *ops = items[i]->data;
        for (size_t k = 0; k < items[i]->n; k++)
            json_array_append_new(reports, report_json(&ops[k]));
    }
    size_t sent = json_array_size(reports);
    json_t *body = json_pack("{s:o}", "reports", reports);
    long status = 0;
    json_t *resp = NULL;
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_client_request(r->client, "POST", "/api/v1/jobs/status", body, &status, &resp,
                               &err);
    json_decref(body);
    json_t *results = rc == 0 ? json_object_get(resp, "results") : NULL;
    if (rc == 0 && status != 200) {
        /* 5xx, 401/403: nothing is known to be durable. */
        jp_err why;
        jp_err_clear(&why);
        jp_client_api_error(status, resp, &why);
        rc = jp_err_set(&err, JP_EUNAVAIL, "the control plane refused the reports: %s",
                        jp_err_msg(&why));
    } else if (rc == 0 && json_array_size(results) != sent) {
        rc = jp_err_set(&err, JP_EUNAVAIL, "the control plane answered %zu verdicts for %zu reports",
                        json_array_size(results), sent);
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        jp_store_op *ops = items[i]->data;
        items[i]->rc = rc;
        items[i]->err = err;
        for (size_t k = 0; rc == 0 && k < items[i]->n; k++, at++) {
            json_t *res = json_array_get(results, at);
            jp_store_op *op = &ops[k];
            op->rc = code_of(json_string_value(json_object_get(res, "code")));
            op->refused = false;
            jp_err_clear(&op->err);
            const char *msg = json_string_value(json_object_get(res, "message"));
            if (op->rc < 0)
                jp_err_set(&op->err, op->rc, "%s", msg ? msg : "refused");
            int after = jp_status_parse(json_string_value(json_object_get(res, "status")));
            if (after >= 0)
                op->after = (jp_status)after;
        }
    }
    json_decref(resp);
}

static void flush_db(void *arg, jp_batch_item **items, size_t n)
{
    jp_reporter *r = arg;
    size_t total = 0, at = 0;
    for (size_t i = 0; i < n; i++)
        total += items[i]->n;
    jp_store_op *ops = jp_xmalloc(total * sizeof *ops);
    for (size_t i = 0; i < n; i++) {
        memcpy(ops + at, items[i]->data, items[i]->n * sizeof *ops);
        at += items[i]->n;
    }
    jp_err err;
    jp_err_clear(&err);
    int rc = jp_store_apply(r->store, ops, total, &err);
    at = 0;
    for (size_t i = 0; i < n; i++) {
        jp_store_op *mine = items[i]->data;
        memcpy(mine, ops + at, items[i]->n * sizeof *ops);
        for (size_t k = 0; k < items[i]->n; k++)
            if (mine[k].rc == 0 && mine[k].refused)
                mine[k].rc = JP_ECONFLICT;
        at += items[i]->n;
        items[i]->rc = rc;
        items[i]->err = err;
    }
    free(ops);
}

int jp_reporter_api_new(const char *base_url, const char *token, jp_reporter **ret,
                        jp_err *err)
{
    jp_reporter *r = jp_xcalloc(1, sizeof *r);
    int rc = jp_client_new(base_url, token, &r->client, err);
    if (rc < 0)
        goto fail;
    jp_client_set_timeout(r->client, 30000);
    pthread_mutex_init(&r->mu, NULL);
    r->flush = flush_api;
    *ret = r;
    return 0;
fail:
    jp_client_free(r->client);
    free(r);
    return rc;
}

int jp_reporter_db_new(const char *url, jp_reporter **ret, jp_err *err)
{
    jp_reporter *r = jp_xcalloc(1, sizeof *r);
    int rc = jp_store_open(url, &r->store, err);
    if (rc < 0) {
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->flush = flush_db;
    *ret = r;
    return 0;
}

void jp_reporter_free(jp_reporter *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    jp_client_free(r->client);
    jp_store_close(r->store);
    free(r);
}

int jp_reporter_send(jp_reporter *r, jp_store_op *ops, size_t n, jp_err *err)
{
    if (!n)
        return 0;
    jp_batch_item it = {.data = ops, .n = n};
    jp_batch_item *items[1] = {&it};
    pthread_mutex_lock(&r->mu);
    r->flush(r, items, 1);
    pthread_mutex_unlock(&r->mu);
    if (it.rc < 0 && err)
        *err = it.err;
    return it.rc;
}
