/* The execution engine worker: takes jobs from Redis Streams, runs them with
 * the engine, reports each state change durably and only then acknowledges
 * the message (DESIGN.md §2, §4). */
#ifndef JP_WORKER_WORKER_H
#define JP_WORKER_WORKER_H

#include "core/err.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct jp_worker jp_worker;

typedef struct jp_worker_config {
    const char *redis;          /* redis://host:port/db */
    const char *control_plane;  /* report api: http://host:port */
    const char *token;          /* bearer token for the control plane, or NULL */
    const char *report;         /* "api" or "db" */
    const char *database;       /* report db: the store URL */
    const char *queues;         /* comma-separated */
    int64_t concurrency;        /* jobs at once */
    const char *strategies;     /* built-ins to enable */
    const char *exec_allow;
    const char *plugins;        /* comma-separated .so paths, or NULL */
    const char *id;             /* consumer name; NULL: host:pid */
    int64_t lease_s;            /* a message idle this long may be taken over */
    int64_t drain_timeout_s;    /* SIGTERM: wait this long for running jobs */
    bool weighted;              /* weighted instead of strict priorities */
    bool allow_evicting;
    int64_t retry_backoff_ms;   /* report db: backoff the server would use */
    int64_t retry_backoff_max_ms;
    int64_t max_output_bytes;
} jp_worker_config;

/* Connects (Redis, and the control plane or database), loads plugins and
 * starts the threads. The config's strings must outlive the worker. */
int jp_worker_start(const jp_worker_config *cfg, jp_worker **ret, jp_err *err);

/* Stops taking jobs, waits up to the drain timeout for running ones, then
 * stops the rest and reports them failed (retryable, to run again at once),
 * acknowledges what was reported, and frees. */
void jp_worker_stop(jp_worker *w);

/* The worker's id (its consumer name). */
const char *jp_worker_id(const jp_worker *w);

#endif
