/* Loading strategy plugins: shared objects that speak include/jobplane/plugin.h. */
#ifndef JP_ENGINE_PLUGIN_H
#define JP_ENGINE_PLUGIN_H

#include "core/err.h"
#include "engine/engine.h"

/* Loads the plugin at `path` (a file name without a slash means one in the
 * current directory, not a search of the library path) and registers its
 * strategies with `e`, enabled: a worker's --strategies lists built-ins
 * only, and each plugin adds its own on top.
 *
 * Returns 0, or:
 *   JP_EINVAL    the file cannot be loaded (the dlerror() text is quoted),
 *                lacks jobplane_plugin_abi or jobplane_plugin_init, was built
 *                for another plugin ABI, its init failed, registered no
 *                strategy or registered a malformed one;
 *   JP_ECONFLICT one of its strategy names is already registered in `e`.
 * Every message names the plugin file (and the strategy, when one is to
 * blame).
 *
 * Once the plugin's init has run, the shared object stays loaded for the
 * life of the process, whatever the outcome, and so does what the loader
 * keeps for each strategy (the engine does not own it). On JP_ECONFLICT the
 * plugin's strategies registered before the conflicting one stay registered;
 * callers treat a failed load as fatal anyway.
 *
 * Thread-safe; the same file may be loaded into several engines. */
int jp_plugin_load(jp_engine *e, const char *path, jp_err *err);

#endif
