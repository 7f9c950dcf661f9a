/* The noop strategy: accepts any payload and succeeds at once with {}. */
#include "engine/strategies/strategies.h"

static int noop_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    out->result = json_object();
    return 0;
}

jp_strategy jp_strategy_noop(void)
{
    return (jp_strategy){.abi = JP_STRATEGY_ABI, .name = "noop", .ctx = NULL, .run = noop_run};
}
