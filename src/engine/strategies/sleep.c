/* The sleep strategy: waits {"ms": n} milliseconds, or less if cancelled or out of time. */
#include "engine/strategies/strategies.h"

#include "core/job.h"
#include "core/jtime.h"

#include <errno.h>
#include <poll.h>
#include <string.h>

#define SLEEP_MAX_MS ((json_int_t)JP_TIMEOUT_LIMIT_S * 1000)

static int sleep_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    static const char *const known[] = {"ms", NULL};
    json_int_t ms = 0;

    if (json_is_object(payload)) {
        if (jp_engine_check_fields(payload, known, out) < 0)
            return -1;
        json_t *v = json_object_get(payload, "ms");
        if (v && !json_is_null(v)) {
            if (!json_is_integer(v))
                return jp_engine_bad_payload(out, "ms must be an integer number of milliseconds");
            ms = json_integer_value(v);
            if (ms < 0 || ms > SLEEP_MAX_MS)
                return jp_engine_bad_payload(out, "ms must be between 0 and %lld",
                                             (long long)SLEEP_MAX_MS);
        }
    } else if (!json_is_null(payload)) {
        return jp_engine_bad_payload(out, "payload must be an object like {\"ms\": 250}");
    }

    int64_t start = jp_mono_ms();
    int64_t end = start + ms;
    for (;;) {
        int64_t now = jp_mono_ms();
        if (now >= end)
            break;
        if (jp_task_cancelled(task))
            return jp_engine_fail(out, "cancelled", false, "cancelled after %lld ms",
                                  (long long)(now - start));
        if (jp_task_remaining_ms(task) == 0)
            return jp_engine_fail(out, "timeout", true, "timed out after %lld of %lld ms",
                                  (long long)(now - start), (long long)ms);
        struct pollfd pfd = {.fd = jp_task_cancel_fd(task), .events = POLLIN};
        if (poll(&pfd, 1, jp_engine_poll_timeout(task, end - now)) < 0 && errno != EINTR)
            return jp_engine_fail(out, "internal", true, "poll failed: %s", strerrordesc_np(errno));
    }
    out->result = json_pack("{sI}", "slept_ms", ms);
    return 0;
}

jp_strategy jp_strategy_sleep(void)
{
    return (jp_strategy){.abi = JP_STRATEGY_ABI, .name = "sleep", .ctx = NULL, .run = sleep_run};
}
