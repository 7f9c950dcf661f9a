/* jobplane-server: wires the store, the queue, the scheduler, the engine and
 * the HTTP API together, then waits for SIGINT/SIGTERM to drain and exit. */
#include "core/err.h"
#include "core/jtime.h"
#include "core/log.h"
#include "core/opts.h"
#include "queue/queue.h"
#include "server/app.h"
#include "server/auth.h"
#include "server/http.h"
#include "server/routes.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char synopsis[] =
#ifdef JP_WITH_ENGINE
    "jobplane-server [options]\n"
    "\n"
    "The jobplane control plane. With no options it is a complete job system:\n"
    "HTTP API on 127.0.0.1:8080, SQLite at ./jobplane.db, and the execution\n"
    "engine on threads in this process (embedded mode). With --redis, jobs go\n"
    "through Redis Streams to jobplane-worker processes (distributed mode).\n"
#else
    "jobplane-server --redis redis://host:port/db [options]\n"
    "\n"
    "The jobplane control plane, built without the execution engine: jobs go\n"
    "through Redis Streams to jobplane-worker processes (distributed mode).\n"
#endif
    "Every option can also be set by the environment variable shown.\n";

/* The URL without its password, for logs. */
static const char *redact(const char *url, char *buf, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    if (!at) {
        snprintf(buf, len, "%s", url);
        return buf;
    }
    snprintf(buf, len, "%.*s***%s", (int)(scheme + 3 - url), url, at);
    return buf;
}

static bool is_loopback(const char *listen)
{
    return strncmp(listen, "127.", 4) == 0 || strncmp(listen, "localhost:", 10) == 0 ||
           strncmp(listen, "[::1]:", 6) == 0;
}

int main(int argc, char **argv)
{
    jp_app app;
    jp_err err;
    int argi = 0, status = 1;
    jp_http *http = NULL;
    memset(&app, 0, sizeof app);
    jp_config *c = &app.cfg;

    const jp_opt opts[] = {
        {"listen", "JOBPLANE_LISTEN", JP_OPT_STR, &c->listen, "127.0.0.1:8080", 0, 0, "ADDR",
         "address to serve the HTTP API on (host:port; loopback only without tokens)"},
        {"database", "JOBPLANE_DATABASE_URL", JP_OPT_STR, &c->database, "sqlite://./jobplane.db",
         0, 0, "URL", "the job database (sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB)"},
        {"redis", "JOBPLANE_REDIS_URL", JP_OPT_STR, &c->redis, NULL, 0, 0, "URL",
         "distributed mode: queue jobs on Redis Streams (redis://host:port/db) for workers"},
        {"tokens", "JOBPLANE_TOKENS_FILE", JP_OPT_STR, &c->tokens, NULL, 0, 0, "FILE",
         "bearer tokens, one \"<role> <token>\" per line (roles: client, worker, admin)"},
#ifdef JP_WITH_ENGINE
        /* Only a build with the engine runs jobs in-process. */
        {"workers", "JOBPLANE_WORKERS", JP_OPT_INT, &c->workers, "8", 0, 1024, "N",
         "embedded mode: engine threads running jobs in this process (0: none)"},
        {"strategies", "JOBPLANE_STRATEGIES", JP_OPT_STR, &c->strategies, "noop,sleep,http", 0, 0,
         "LIST", "embedded mode: strategies run; add exec to enable running programs"},
        {"exec-allow", "JOBPLANE_EXEC_ALLOW", JP_OPT_STR, &c->exec_allow, NULL, 0, 0, "LIST",
         "embedded mode: programs exec may run (absolute paths); unset: any"},
        {"max-output-bytes", "JOBPLANE_MAX_OUTPUT_BYTES", JP_OPT_INT, &c->max_output_bytes,
         "1048576", 0, 64LL << 20, "N", "embedded mode: output kept per exec stream / http body"},
        {"drain-timeout", "JOBPLANE_DRAIN_TIMEOUT", JP_OPT_INT, &c->drain_timeout_s, "30", 0,
         86400, "SECONDS", "embedded mode: on SIGTERM, wait this long for running jobs"},
#endif
        {"max-body-bytes", "JOBPLANE_MAX_BODY_BYTES", JP_OPT_INT, &c->max_body_bytes, "1048576",
         1024, 1LL << 30, "N", "largest request body accepted (larger: 413)"},
        {"max-connections", "JOBPLANE_MAX_CONNECTIONS", JP_OPT_INT, &c->max_connections, "1024",
         1, 65536, "N", "most client connections served at once"},
        {"idle-timeout", "JOBPLANE_IDLE_TIMEOUT", JP_OPT_INT, &c->idle_timeout_s, "30", 1, 3600,
         "SECONDS", "close connections idle (or trickling) this long"},
        {"retry-backoff-ms", "JOBPLANE_RETRY_BACKOFF_MS", JP_OPT_INT, &c->retry_backoff_ms,
         "1000", 1, 86400000, "MS", "delay before the first retry; doubles each attempt, 50-100% jitter"},
        {"retry-backoff-max-ms", "JOBPLANE_RETRY_BACKOFF_MAX_MS", JP_OPT_INT,
         &c->retry_backoff_max_ms, "3600000", 1, 7LL * 86400000, "MS", "longest retry delay"},
        {"reconcile-interval", "JOBPLANE_RECONCILE_INTERVAL", JP_OPT_INT,
         &c->reconcile_interval_s, "5", 1, 3600, "SECONDS",
         "distributed mode: how often to put back what Redis lost"},
        {"lease-seconds", "JOBPLANE_LEASE_SECONDS", JP_OPT_INT, &c->lease_s, "30", 1, 3600, "N",
         "distributed mode: the workers' lease (to judge runs nobody finishes)"},
        {"allow-evicting-redis", "JOBPLANE_ALLOW_EVICTING_REDIS", JP_OPT_BOOL,
         &c->allow_evicting, "false", 0, 0, NULL,
         "accept a Redis whose maxmemory-policy may evict queued jobs"},
        {"log-level", "JOBPLANE_LOG_LEVEL", JP_OPT_STR, &c->log_level, "info", 0, 0, "LEVEL",
         "debug, info, warn or error"},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];

    jp_err_clear(&err);
    int rc = jp_opts_parse(opts, nopts, argc, argv, &argi, &err);
    if (rc == 1) {
        jp_opts_usage(stdout, synopsis, opts, nopts);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "jobplane-server: %s (see --help)\n", jp_err_msg(&err));
        return 2;
    }
    if (argi < argc) {
        fprintf(stderr, "jobplane-server: unexpected argument \"%s\" (see --help)\n", argv[argi]);
        return 2;
    }
    int lvl = jp_log_level_parse(c->log_level);
    if (lvl < 0) {
        fprintf(stderr, "jobplane-server: unknown log level \"%s\"\n", c->log_level);
        return 2;
    }
    jp_log_set_level((jp_log_level)lvl);

    app.distributed = c->redis != NULL;
    const char *fault = getenv("JOBPLANE_FAULT");
    app.crash_before_enqueue = fault && strcmp(fault, "crash-before-enqueue") == 0;
    app.runnable = app.distributed ? JP_ST_PENDING : JP_ST_QUEUED;
#ifndef JP_WITH_ENGINE
    if (!app.distributed) {
        fprintf(stderr, "jobplane-server: this build has no execution engine, so embedded mode "
                        "is unavailable; give --redis (JOBPLANE_REDIS_URL) and run jobs with "
                        "jobplane-worker\n");
        return 2;
    }
#endif

    /* Signals are taken by sigwait below; every thread inherits this mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (c->tokens && jp_auth_load(c->tokens, &app.auth, &err) < 0) {
        fprintf(stderr, "jobplane-server: %s\n", jp_err_msg(&err));
        return 2;
    }
    char listen[128];
    snprintf(listen, sizeof listen, "%s", c->listen);
    if (!app.auth && !is_loopback(listen)) {
        const char *colon = strrchr(c->listen, ':');
        snprintf(listen, sizeof listen, "127.0.0.1%s", colon ? colon : ":8080");
        jp_warn("no API tokens are configured, so the API is served on loopback only: %s "
                "instead of %s",
                listen, c->listen);
    }

    app.started_ms = jp_now_ms();
    char shown[256];
    /* The database may still be starting (a compose stack, a reboot): wait for it. */
    for (int tries = 0;; tries++) {
        rc = jp_store_open(c->database, &app.store, &err);
        if (rc != JP_EUNAVAIL || tries == 30)
            break;
        if (tries == 0)
            jp_warn("database %s: %s; retrying for 30s", redact(c->database, shown, sizeof shown),
                    jp_err_msg(&err));
        sleep(1);
    }
    if (rc < 0) {
        jp_error("cannot open the database %s: %s", redact(c->database, shown, sizeof shown),
                 jp_err_msg(&err));
        goto out;
    }
    if (jp_group_new(app.store, &app.group, &err) < 0) {
        jp_error("%s", jp_err_msg(&err));
        goto out;
    }
    if (app.distributed) {
        jp_queue_options qo = {.allow_evicting = c->allow_evicting, .pool_size = 8};
        /* Redis may still be starting (a compose stack, a reboot): wait for it. */
        for (int tries = 0;; tries++) {
            rc = jp_queue_open(c->redis, &qo, &app.queue, &err);
            if (rc != JP_EUNAVAIL || tries == 30)
                break;
            if (tries == 0)
                jp_warn("%s; retrying for 30s", jp_err_msg(&err));
            sleep(1);
        }
        if (rc < 0) {
            jp_error("cannot use Redis: %s", jp_err_msg(&err));
            goto out;
        }
    } else {
        app.queue = jp_queue_memory_new();
    }
    /* Before the engine starts: a job this process has begun must not be
     * taken for one a previous process left running. */
    size_t queued = 0, lost = 0;
    if (jp_app_recover(&app, &queued, &lost, &err) < 0) {
        jp_error("cannot recover jobs from the database: %s", jp_err_msg(&err));
        goto out;
    }
#ifdef JP_WITH_ENGINE
    if (!app.distributed && jp_embedded_start(&app, &app.engine, &err) < 0) {
        jp_error("cannot start the engine: %s", jp_err_msg(&err));
        goto out;
    }
#endif
    if (queued || lost)
        jp_info("recovered %zu queued job(s); %zu job(s) that were running will run again",
                queued, lost);
    if (jp_scheduler_start(&app, &app.sched, &err) < 0 ||
        (app.distributed && jp_reconciler_start(&app, &app.reconciler, &err) < 0)) {
        jp_error("%s", jp_err_msg(&err));
        goto out;
    }
    /* Long polls hold a connection each: leave half of them to everything else. */
    app.waiters = jp_waiters_new((size_t)c->max_connections / 2);
    jp_http_config hc = {
        .listen = listen,
        .max_body_bytes = (size_t)c->max_body_bytes,
        .max_connections = (unsigned)c->max_connections,
        .idle_timeout_s = (unsigned)c->idle_timeout_s,
    };
    if (jp_http_start(&hc, jp_routes_handle, &app, &http, &err) < 0) {
        jp_error("%s", jp_err_msg(&err));
        goto out;
    }
    if (app.distributed)
        jp_info("jobplane-server listening on http://%s (distributed mode: %s database, "
                "redis %s)",
                jp_http_address(http), jp_store_backend(app.store),
                redact(c->redis, shown, sizeof shown));
    else
        jp_info("jobplane-server listening on http://%s (embedded mode: %s, %lld engine "
                "thread(s), strategies %s)",
                jp_http_address(http), redact(c->database, shown, sizeof shown),
                (long long)c->workers, c->strategies);
    if (app.auth)
        jp_info("API tokens: %zu loaded from %s", jp_auth_count(app.auth), c->tokens);

    int sig = 0;
    sigwait(&sigs, &sig);
    jp_info("%s: stopping (running jobs get up to %llds to finish)",
            sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)c->drain_timeout_s);
    status = 0;
out:
    /* Long polls get their answer (the job as it stands) before HTTP stops,
     * which would otherwise wait them out or cut them off. A handler's answer
     * is written once it returns: a moment's grace lets those go out. */
    if (jp_waiters_shutdown(app.waiters, 2000) > 0)
        usleep(50 * 1000);
    jp_http_stop(http);
    jp_reconciler_stop(app.reconciler);
    jp_scheduler_stop(app.sched);
#ifdef JP_WITH_ENGINE
    jp_embedded_stop(app.engine);
    app.engine = NULL;
#endif
    jp_group_free(app.group);
    jp_queue_free(app.queue);
    jp_store_close(app.store);
    jp_auth_free(app.auth);
    jp_waiters_free(app.waiters);
    if (status == 0)
        jp_info("stopped");
    return status;
}
