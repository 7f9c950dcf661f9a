/* The jobplane plugin interface: how a shared object adds strategies to a
 * jobplane execution engine (jobplane-worker --plugin PATH.so).
 *
 * This header is the whole contract. It depends on nothing but <stddef.h>; a
 * plugin needs no jobplane library and no symbol of the host process, so link
 * it with nothing beyond what it uses itself:
 *
 *     cc -std=c11 -fPIC -shared -I/path/to/jobplane/include my.c -o my.so
 *
 * Payloads and results cross the interface as JSON text, so neither side's
 * JSON library or allocator leaks into the other.
 *
 * A plugin defines exactly two symbols (see the end of this file):
 *
 *     JOBPLANE_PLUGIN_DECLARE_ABI;
 *
 *     JOBPLANE_PLUGIN_EXPORT int jobplane_plugin_init(const jobplane_host *host,
 *                                                     jobplane_registry *reg)
 *     {
 *         jobplane_strategy upper = {       // copied by the host
 *             .abi = JOBPLANE_PLUGIN_ABI, .size = sizeof(jobplane_strategy),
 *             .name = "upper", .ctx = (void *)host, .run = run_upper,
 *         };
 *         return host->register_strategy(reg, &upper);
 *     }
 *
 * examples/plugins/upper.c is a complete plugin.
 *
 * Loading, step by step. The host dlopen()s the file with RTLD_NOW |
 * RTLD_LOCAL (an unresolved symbol fails the load), reads jobplane_plugin_abi
 * and refuses the plugin unless it equals the host's JOBPLANE_PLUGIN_ABI, then
 * calls jobplane_plugin_init once. A file that cannot be opened, lacks either
 * symbol or declares another ABI is refused with an error naming the file, and
 * none of its code beyond its ELF constructors has run. If init returns
 * non-zero, reports an error through set_init_error, registers no strategy,
 * or any register_strategy call fails (even if init ignores that and returns
 * 0), the whole load fails and the host reports why.
 *
 * Lifetime. Once init has been called the shared object is never unloaded
 * while the process runs, so static data, strategy contexts and threads the
 * plugin starts may live for the rest of the process; there is no fini hook.
 * The same file may be loaded more than once in a process (one engine each,
 * e.g. in tests): dlopen returns the same copy and init runs again, so init
 * must cope with being called repeatedly.
 *
 * Threads. init runs on the loading thread before any run. A strategy's run
 * is called from many threads at once, for different jobs, with the same ctx:
 * whatever run shares through ctx or static data must be thread-safe. Every
 * host function is safe to call from any thread, within the rules of each
 * object's lifetime given below.
 *
 * Versioning, in the manner of SQLite's extension tables. JOBPLANE_PLUGIN_ABI
 * changes only when a change breaks existing plugins; then a host refuses a
 * plugin built for another number. Compatible growth appends members to the
 * end of jobplane_host and jobplane_strategy: each struct starts with `abi`
 * and `size`, so a plugin built against a newer header tests
 * JOBPLANE_HOST_HAS(host, member) before using a newer host member, and a
 * host reads only the strategy members it knows and that `size` covers.
 *
 * What the host does not protect against: a plugin runs inside the process,
 * so a crash, a hang that ignores cancellation or a memory error in it takes
 * down or stalls the whole worker. */
#ifndef JOBPLANE_PLUGIN_H
#define JOBPLANE_PLUGIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this interface. */
#define JOBPLANE_PLUGIN_ABI 1

/* Return codes of host functions. Success is 0; failures are negative. */
#define JOBPLANE_OK 0
#define JOBPLANE_EINVAL (-1)    /* a bad argument: NULL, bad name, not JSON, … */
#define JOBPLANE_ECONFLICT (-2) /* a strategy of that name is already registered */
#define JOBPLANE_ETOOBIG (-3)   /* larger than JOBPLANE_RESULT_MAX */

/* Strategy names and error codes: 1 to 64 of [a-z0-9_-]. */
#define JOBPLANE_NAME_MAX 64
/* The largest result text set_result accepts, in bytes. */
#define JOBPLANE_RESULT_MAX ((size_t)16 << 20)
/* Error messages longer than this many bytes are cut. */
#define JOBPLANE_MESSAGE_MAX 4096

/* Makes a symbol visible from the shared object even when the plugin is
 * compiled with -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define JOBPLANE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define JOBPLANE_PLUGIN_EXPORT
#endif

/* Opaque handles owned by the host. */
typedef struct jobplane_registry jobplane_registry; /* valid during init only */
typedef struct jobplane_task jobplane_task;         /* valid during one run only */
typedef struct jobplane_output jobplane_output;     /* valid during one run only */

/* A strategy: turns a job's payload into a result or an error. The host
 * copies this struct and the name during register_strategy, so both may be
 * temporaries; ctx and run must stay valid for the life of the process. */
typedef struct jobplane_strategy {
    int abi;          /* JOBPLANE_PLUGIN_ABI */
    size_t size;      /* sizeof(jobplane_strategy) as the plugin was built */
    const char *name; /* 1 to JOBPLANE_NAME_MAX of [a-z0-9_-], unique in the engine */
    void *ctx;        /* handed to every run, unchanged; may be NULL */

    /* Runs one job. `payload_json` is the job's payload as compact JSON text
     * of `payload_len` bytes, NUL-terminated, valid UTF-8 (a job without a
     * payload gets "null"); it belongs to the host and is valid until run
     * returns.
     *
     * To succeed: call host->set_result(out, …) and return 0.
     * To fail: call host->set_error(out, code, message, retryable) and
     * return non-zero. A result set before failing is kept with the error as
     * partial output for inspection (like a failed command's stdout).
     *
     * Anything else is a "plugin_error" failure: returning 0 without a valid
     * result, returning non-zero without an error, or a result that is not
     * JSON. A call to set_error always makes the run a failure.
     *
     * run must stop promptly when the task is cancelled or its deadline
     * passes (host->cancelled, host->remaining_ms, host->cancel_fd); the
     * host reports such a run as "cancelled" or "timeout" whatever run
     * says. `task` and `out` are valid only until run returns: a thread the
     * plugin starts must finish with them before that. Host calls on one
     * `out` must not overlap in time. */
    int (*run)(void *ctx, const char *payload_json, size_t payload_len,
               const jobplane_task *task, jobplane_output *out);
} jobplane_strategy;

/* What the host offers the plugin. Valid for the life of the process. */
typedef struct jobplane_host {
    int abi;     /* the host's JOBPLANE_PLUGIN_ABI */
    size_t size; /* sizeof(jobplane_host) as the host was built */

    /* Registers a strategy; call only from init, with init's `reg`.
     * Returns JOBPLANE_OK, JOBPLANE_EINVAL (bad abi, size, name or run) or
     * JOBPLANE_ECONFLICT (the name is taken, in the engine or by an earlier
     * call). Any failure fails the load. A plugin's strategies are enabled
     * as soon as the load succeeds: --strategies names built-ins only, and
     * each plugin adds its own. */
    int (*register_strategy)(jobplane_registry *reg, const jobplane_strategy *strategy);

    /* Explains why init is failing (copied; call from init, then return
     * non-zero). The host shows it in its error naming the plugin.
     * Returns JOBPLANE_OK, or JOBPLANE_EINVAL for a NULL argument. */
    int (*set_init_error)(jobplane_registry *reg, const char *message);

    /* 1 once the task has been cancelled, else 0. */
    int (*cancelled)(const jobplane_task *task);

    /* Milliseconds left before the task's deadline; 0 once it has passed. */
    long long (*remaining_ms)(const jobplane_task *task);

    /* A file descriptor that becomes readable, and stays so, when the task is
     * cancelled: add it to a poll() set (POLLIN) to wait for data and
     * cancellation at once. It belongs to the host: never read, write or
     * close it. -1 when the host has none (it ran out of descriptors); then
     * check cancelled() at least every 50 ms. */
    int (*cancel_fd)(const jobplane_task *task);

    /* Sets the run's result to the JSON text `json` (`len` bytes, no NUL
     * needed; any JSON value, usually an object). The host parses and copies
     * it, so the plugin may free its buffer as soon as this returns. A later
     * call replaces an earlier one. Returns JOBPLANE_OK; JOBPLANE_EINVAL
     * when the text is not valid JSON (the run then fails with
     * "plugin_error" unless a later call sets a valid result) or
     * JOBPLANE_ETOOBIG past JOBPLANE_RESULT_MAX (likewise). */
    int (*set_result)(jobplane_output *out, const char *json, size_t len);

    /* Sets the run's error: `code` is a short machine-readable name (1 to
     * JOBPLANE_NAME_MAX of [a-z0-9_-], e.g. "invalid_payload"), `message` a
     * one-line explanation for people (UTF-8, copied, cut past
     * JOBPLANE_MESSAGE_MAX bytes; NULL means none), `retryable` non-zero if
     * running the job again may succeed. A later call replaces an earlier
     * one. Returns JOBPLANE_OK, or JOBPLANE_EINVAL for a bad code (the run
     * then fails with "plugin_error", quoting the message). */
    int (*set_error)(jobplane_output *out, const char *code, const char *message,
                     int retryable);
} jobplane_host;

/* True if `host` has `member` (a plugin built against a newer header). */
#define JOBPLANE_HOST_HAS(host, member) \
    ((host)->size >= offsetof(jobplane_host, member) + sizeof((host)->member))

/* ---- what the plugin defines ---- */

/* The ABI the plugin was built for; define it with JOBPLANE_PLUGIN_DECLARE_ABI. */
JOBPLANE_PLUGIN_EXPORT extern const int jobplane_plugin_abi;

/* (In C++ a namespace-scope const would otherwise have internal linkage.) */
#ifdef __cplusplus
#define JOBPLANE_PLUGIN_DECLARE_ABI \
    extern "C" JOBPLANE_PLUGIN_EXPORT const int jobplane_plugin_abi = JOBPLANE_PLUGIN_ABI
#else
#define JOBPLANE_PLUGIN_DECLARE_ABI \
    JOBPLANE_PLUGIN_EXPORT const int jobplane_plugin_abi = JOBPLANE_PLUGIN_ABI
#endif

/* Called once per load, after the ABI check. Registers the plugin's
 * strategies with host->register_strategy(reg, …). Returns 0 on success,
 * non-zero to refuse the load (after set_init_error, ideally). */
JOBPLANE_PLUGIN_EXPORT int jobplane_plugin_init(const jobplane_host *host,
                                                jobplane_registry *reg);

#ifdef __cplusplus
}
#endif

#endif
