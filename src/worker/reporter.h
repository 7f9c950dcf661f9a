/* How a worker makes a job's state change durable: through the control
 * plane's API (POST /api/v1/jobs/status, many reports per request) or
 * straight into the shared database through the store, with the same
 * transition rules either way. A call's reports travel together, on the
 * caller's thread; calls on one reporter are serialised. */
#ifndef JP_WORKER_REPORTER_H
#define JP_WORKER_REPORTER_H

#include "core/err.h"
#include "store/store.h"

typedef struct jp_reporter jp_reporter;

/* Reports to the control plane at `base_url` with bearer `token` (may be NULL). */
int jp_reporter_api_new(const char *base_url, const char *token, jp_reporter **ret,
                        jp_err *err);
/* Reports into the database at `url` (postgres://… or sqlite://…). The
 * caller sets each FAIL's backoff_ms, as the server would. */
int jp_reporter_db_new(const char *url, jp_reporter **ret, jp_err *err);
void jp_reporter_free(jp_reporter *r);

/* Makes ops[0..n) durable and waits: op.ev.kind is START, COMPLETE or FAIL
 * (attempt, worker_id, result, error, retryable, backoff_ms set by the
 * caller). Returns 0 when every op was judged (each op.rc: 0 accepted,
 * JP_ECONFLICT refused (also when op.refused), JP_ENOTFOUND, JP_EINVAL), or
 * JP_EUNAVAIL when nothing is known to be durable: try again later. */
int jp_reporter_send(jp_reporter *r, jp_store_op *ops, size_t n, jp_err *err);

#endif
