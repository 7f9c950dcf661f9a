/* jobplane-worker: reads its configuration, starts the worker and stops it
 * gracefully on SIGTERM or SIGINT. */
#include "core/err.h"
#include "core/log.h"
#include "core/opts.h"
#include "worker/worker.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char synopsis[] =
    "jobplane-worker --redis redis://host:port/db [options]\n"
    "\n"
    "An execution engine worker: takes jobs from Redis Streams, runs them, and\n"
    "reports each outcome to the control plane (--report api) or straight into\n"
    "the shared database (--report db) before acknowledging the message.\n"
    "Every option can also be set by the environment variable shown.\n";

int main(int argc, char **argv)
{
    jp_worker_config c;
    const char *log_level = NULL;
    jp_err err;
    int argi = 0;
    memset(&c, 0, sizeof c);

    const jp_opt opts[] = {
        {"redis", "JOBPLANE_REDIS_URL", JP_OPT_STR, &c.redis, NULL, 0, 0, "URL",
         "Redis to take jobs from (required)"},
        {"control-plane", "JOBPLANE_CONTROL_PLANE_URL", JP_OPT_STR, &c.control_plane,
         "http://127.0.0.1:8080", 0, 0, "URL", "the control plane, for --report api"},
        {"token", "JOBPLANE_TOKEN", JP_OPT_STR, &c.token, NULL, 0, 0, "TOKEN",
         "bearer token (role worker) for the control plane"},
        {"report", "JOBPLANE_REPORT", JP_OPT_STR, &c.report, "api", 0, 0, "api|db",
         "report status through the control plane's API, or into the database"},
        {"database", "JOBPLANE_DATABASE_URL", JP_OPT_STR, &c.database, NULL, 0, 0, "URL",
         "the shared database, for --report db (postgres://…)"},
        {"queues", "JOBPLANE_QUEUES", JP_OPT_STR, &c.queues, "default", 0, 0, "LIST",
         "queues to serve, comma-separated"},
        {"concurrency", "JOBPLANE_CONCURRENCY", JP_OPT_INT, &c.concurrency, "16", 1, 4096, "N",
         "jobs run at once"},
        {"strategies", "JOBPLANE_STRATEGIES", JP_OPT_STR, &c.strategies, "noop,sleep,http", 0,
         0, "LIST", "built-in strategies to run; add exec to enable running programs"},
        {"exec-allow", "JOBPLANE_EXEC_ALLOW", JP_OPT_STR, &c.exec_allow, NULL, 0, 0, "LIST",
         "programs exec may run (absolute paths, comma-separated); unset: any"},
        {"plugin", "JOBPLANE_PLUGINS", JP_OPT_STR, &c.plugins, NULL, 0, 0, "PATH.so",
         "load strategies from shared objects (comma-separated paths)"},
        {"id", "JOBPLANE_WORKER_ID", JP_OPT_STR, &c.id, NULL, 0, 0, "NAME",
         "this worker's id and consumer name (default host:pid)"},
        {"lease-seconds", "JOBPLANE_LEASE_SECONDS", JP_OPT_INT, &c.lease_s, "30", 1, 3600, "N",
         "a job whose worker stops renewing for this long is taken over"},
        {"drain-timeout", "JOBPLANE_DRAIN_TIMEOUT", JP_OPT_INT, &c.drain_timeout_s, "30", 0,
         86400, "SECONDS", "on SIGTERM, wait this long for running jobs"},
        {"weighted", "JOBPLANE_WEIGHTED", JP_OPT_BOOL, &c.weighted, "false", 0, 0, NULL,
         "weighted priorities (8:4:2:1) instead of strict, so low is never starved"},
        {"allow-evicting-redis", "JOBPLANE_ALLOW_EVICTING_REDIS", JP_OPT_BOOL, &c.allow_evicting,
         "false", 0, 0, NULL, "accept a Redis whose maxmemory-policy may evict queued jobs"},
        {"retry-backoff-ms", "JOBPLANE_RETRY_BACKOFF_MS", JP_OPT_INT, &c.retry_backoff_ms,
         "1000", 1, 86400000, "MS", "report db: first retry delay (as the server's)"},
        {"retry-backoff-max-ms", "JOBPLANE_RETRY_BACKOFF_MAX_MS", JP_OPT_INT,
         &c.retry_backoff_max_ms, "3600000", 1, 7LL * 86400000, "MS",
         "report db: longest retry delay"},
        {"max-output-bytes", "JOBPLANE_MAX_OUTPUT_BYTES", JP_OPT_INT, &c.max_output_bytes,
         "1048576", 0, 64LL << 20, "N", "output kept per exec stream / http body"},
        {"log-level", "JOBPLANE_LOG_LEVEL", JP_OPT_STR, &log_level, "info", 0, 0, "LEVEL",
         "debug, info, warn or error"},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];

    jp_err_clear(&err);
    int rc = jp_opts_parse(opts, nopts, argc, argv, &argi, &err);
    if (rc == 1) {
        jp_opts_usage(stdout, synopsis, opts, nopts);
        return 0;
    }
    if (rc < 0 || argi < argc) {
        fprintf(stderr, "jobplane-worker: %s (see --help)\n",
                rc < 0 ? jp_err_msg(&err) : "unexpected argument");
        return 2;
    }
    int lvl = jp_log_level_parse(log_level);
    if (lvl < 0) {
        fprintf(stderr, "jobplane-worker: unknown log level \"%s\"\n", log_level);
        return 2;
    }
    jp_log_set_level((jp_log_level)lvl);
    if (!c.redis) {
        fprintf(stderr, "jobplane-worker: --redis (JOBPLANE_REDIS_URL) is required\n");
        return 2;
    }
    if (strcmp(c.report, "api") != 0 && strcmp(c.report, "db") != 0) {
        fprintf(stderr, "jobplane-worker: --report must be api or db\n");
        return 2;
    }
    if (strcmp(c.report, "db") == 0 && !c.database) {
        fprintf(stderr, "jobplane-worker: --report db needs --database (JOBPLANE_DATABASE_URL)\n");
        return 2;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    jp_worker *w = NULL;
    if (jp_worker_start(&c, &w, &err) < 0) {
        jp_error("cannot start: %s", jp_err_msg(&err));
        return 1;
    }
    jp_info("jobplane-worker %s serving queues %s with %lld slot(s), reporting via %s",
            jp_worker_id(w), c.queues, (long long)c.concurrency, c.report);
    int sig = 0;
    sigwait(&sigs, &sig);
    jp_info("%s: stopping (running jobs get up to %llds)", sig == SIGINT ? "SIGINT" : "SIGTERM",
            (long long)c.drain_timeout_s);
    jp_worker_stop(w);
    jp_info("stopped");
    return 0;
}
