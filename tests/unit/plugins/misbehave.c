/* A test plugin whose strategies break the rules of a run in every way the
 * host must survive, plus "echo", which returns its payload unchanged. */
#include <jobplane/plugin.h>

#include <stdlib.h>
#include <string.h>

JOBPLANE_PLUGIN_DECLARE_ABI;

#define HOST ((const jobplane_host *)ctx)

static int run_echo(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                    jobplane_output *out)
{
    (void)task;
    return HOST->set_result(out, payload, len) == JOBPLANE_OK ? 0 : 1;
}

static int run_badjson(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                       jobplane_output *out)
{
    (void)payload;
    (void)len;
    (void)task;
    return HOST->set_result(out, "{\"a\":", 5) == JOBPLANE_EINVAL ? 0 : 1;
}

static int run_silent(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                      jobplane_output *out)
{
    (void)ctx;
    (void)payload;
    (void)len;
    (void)task;
    (void)out;
    return 0;
}

static int run_fail_silent(void *ctx, const char *payload, size_t len,
                           const jobplane_task *task, jobplane_output *out)
{
    (void)ctx;
    (void)payload;
    (void)len;
    (void)task;
    (void)out;
    return 7;
}

static int run_partial(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                       jobplane_output *out)
{
    (void)payload;
    (void)len;
    (void)task;
    HOST->set_result(out, "{\"progress\":50}", 15);
    HOST->set_error(out, "disk_full", "no space left on /data", 1);
    return 1;
}

/* set_error decides, even when run then claims success. */
static int run_error_rc0(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                         jobplane_output *out)
{
    (void)payload;
    (void)len;
    (void)task;
    HOST->set_error(out, "gave_up", "gave up", 0);
    return 0;
}

/* A later valid result replaces a refused one. */
static int run_second_try(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                          jobplane_output *out)
{
    (void)payload;
    (void)len;
    (void)task;
    if (HOST->set_result(out, "nope", 4) != JOBPLANE_EINVAL)
        return 1;
    return HOST->set_result(out, "{\"ok\":true}", 11) == JOBPLANE_OK ? 0 : 1;
}

static int run_badcode(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                       jobplane_output *out)
{
    (void)payload;
    (void)len;
    (void)task;
    HOST->set_error(out, "Not A Code!", "boom", 1);
    return 1;
}

static int run_toobig(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                      jobplane_output *out)
{
    size_t n = JOBPLANE_RESULT_MAX + 1;
    char *big = malloc(n);
    int rc;

    (void)payload;
    (void)len;
    (void)task;
    if (!big)
        return 1;
    memset(big, ' ', n);
    big[0] = '1';
    rc = HOST->set_result(out, big, n);
    free(big);
    return rc == JOBPLANE_ETOOBIG ? 0 : 1;
}

JOBPLANE_PLUGIN_EXPORT int jobplane_plugin_init(const jobplane_host *host,
                                                jobplane_registry *reg)
{
    static const struct {
        const char *name;
        int (*run)(void *, const char *, size_t, const jobplane_task *, jobplane_output *);
    } all[] = {
        {"echo", run_echo},         {"badjson", run_badjson},     {"silent", run_silent},
        {"fail-silent", run_fail_silent}, {"partial", run_partial}, {"error-rc0", run_error_rc0},
        {"second-try", run_second_try}, {"badcode", run_badcode}, {"toobig", run_toobig},
    };

    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        jobplane_strategy s = {
            .abi = JOBPLANE_PLUGIN_ABI,
            .size = sizeof(jobplane_strategy),
            .name = all[i].name,
            .ctx = (void *)host,
            .run = all[i].run,
        };
        if (host->register_strategy(reg, &s) != JOBPLANE_OK)
            return 1;
    }
    return 0;
}
