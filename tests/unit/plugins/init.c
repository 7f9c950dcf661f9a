/* Test plugins that go wrong while loading, one way per build: compiled once
 * for each PLUGIN_<MODE> below into <mode>.so (see meson.build here). */
#include <jobplane/plugin.h>

#include <stdlib.h>

#if defined(PLUGIN_ABI99)
/* Built for an ABI this host does not speak: init must never run. */
JOBPLANE_PLUGIN_EXPORT const int jobplane_plugin_abi = 99;
#else
JOBPLANE_PLUGIN_DECLARE_ABI;
#endif

#if !defined(PLUGIN_NOINIT)

static int run_ok(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                  jobplane_output *out)
{
    const jobplane_host *host = ctx;
    (void)payload;
    (void)len;
    (void)task;
    return host->set_result(out, "{}", 2) == JOBPLANE_OK ? 0 : 1;
}

static jobplane_strategy named(const jobplane_host *host, const char *name)
{
    jobplane_strategy s = {
        .abi = JOBPLANE_PLUGIN_ABI,
        .size = sizeof(jobplane_strategy),
        .name = name,
        .ctx = (void *)host,
        .run = run_ok,
    };
    return s;
}

JOBPLANE_PLUGIN_EXPORT int jobplane_plugin_init(const jobplane_host *host,
                                                jobplane_registry *reg)
{
#if defined(PLUGIN_ABI99)
    (void)host;
    (void)reg;
    (void)named;
    abort();
#elif defined(PLUGIN_INITFAIL)
    (void)named;
    host->set_init_error(reg, "license file /nonexistent/license is missing");
    return 1;
#elif defined(PLUGIN_EMPTY)
    (void)host;
    (void)reg;
    (void)named;
    return 0;
#elif defined(PLUGIN_BADNAME)
    /* Ignores the refusal: the load must fail all the same. */
    jobplane_strategy s = named(host, "Bad Name");
    host->register_strategy(reg, &s);
    s = named(host, "badname-ok");
    host->register_strategy(reg, &s);
    return 0;
#elif defined(PLUGIN_BADSIZE)
    jobplane_strategy s = named(host, "badsize");
    s.size = sizeof(int);
    return host->register_strategy(reg, &s);
#elif defined(PLUGIN_TWICE)
    jobplane_strategy s = named(host, "twice");
    if (host->register_strategy(reg, &s) != JOBPLANE_OK)
        return 1;
    return host->register_strategy(reg, &s) == JOBPLANE_ECONFLICT ? 2 : 0;
#elif defined(PLUGIN_CLASH)
    /* "exec" is always registered, though disabled unless configured. */
    jobplane_strategy s = named(host, "clash-ok");
    if (host->register_strategy(reg, &s) != JOBPLANE_OK)
        return 1;
    s = named(host, "exec");
    return host->register_strategy(reg, &s);
#else
#error "build with one of -DPLUGIN_<MODE>"
#endif
}

#endif
