/* Unit tests of the plugin loader: the example plugin through jp_engine_run,
 * and test plugins that fail to load or misbehave while running.
 *
 * Usage: test_plugin EXAMPLE.so TEST_PLUGIN_DIR (or the environment variables
 * JOBPLANE_TEST_PLUGIN and JOBPLANE_TEST_PLUGIN_DIR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/jtime.h"
#include "engine/engine.h"
#include "engine/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_example; /* examples/plugins' jobplane-example.so */
static const char *g_dir;     /* where misbehave.so, noinit.so, … are */

/* ---- helpers ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

/* The path of test plugin `name` (.so added); static storage per call site
 * is enough as each test uses one at a time. */
static const char *test_plugin(const char *name)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.so", g_dir, name);
    return path;
}

/* A fresh engine with the default built-ins and `plugin` loaded. */
static jp_engine *engine_with(const char *plugin)
{
    jp_engine *e = NULL;
    jp_err err = {0};

    assert_int_equal(jp_engine_new(NULL, &e, &err), 0);
    if (jp_plugin_load(e, plugin, &err) != 0)
        fail_msg("loading %s: %s", plugin, err.msg);
    return e;
}

/* Expects loading `plugin` into a fresh engine to fail with `code`, the
 * plugin named in the message along with `mention`. */
static void expect_load_failure(const char *plugin, int code, const char *mention)
{
    jp_engine *e = NULL;
    jp_err err = {0};

    assert_int_equal(jp_engine_new(NULL, &e, &err), 0);
    assert_int_equal(jp_plugin_load(e, plugin, &err), code);
    assert_int_equal(err.code, code);
    assert_contains(err.msg, plugin);
    assert_contains(err.msg, mention);
    jp_engine_free(e);
}

/* Checks the outcome conventions every run must keep. */
static void check_outcome(int rc, const jp_outcome *out)
{
    if (rc == 0) {
        assert_non_null(out->result);
        assert_null(out->error);
    } else {
        assert_int_equal(rc, -1);
        assert_true(json_is_object(out->error));
        assert_true(json_is_string(json_object_get(out->error, "code")));
        assert_true(json_is_string(json_object_get(out->error, "message")));
    }
}

/* Runs `payload` (JSON text, NULL for none) with a fresh task of `timeout_ms`. */
static int run(jp_engine *e, const char *strategy, const char *payload, int64_t timeout_ms,
               jp_outcome *out)
{
    json_error_t jerr;
    json_t *p = NULL;
    jp_task *t = jp_task_new(timeout_ms);
    int rc;

    if (payload) {
        p = json_loads(payload, JSON_DECODE_ANY, &jerr);
        if (!p)
            fail_msg("bad test payload %s: %s", payload, jerr.text);
    }
    rc = jp_engine_run(e, strategy, p, t, out);
    check_outcome(rc, out);
    jp_task_free(t);
    json_decref(p);
    return rc;
}

static const char *err_code(const jp_outcome *o)
{
    return json_string_value(json_object_get(o->error, "code"));
}

static const char *err_msg(const jp_outcome *o)
{
    return json_string_value(json_object_get(o->error, "message"));
}

/* Expects `strategy` of misbehave.so to fail with "plugin_error". */
static void expect_plugin_error(jp_engine *e, const char *strategy, const char *mention)
{
    jp_outcome out;

    assert_int_equal(run(e, strategy, "{}", 5000, &out), -1);
    assert_string_equal(err_code(&out), "plugin_error");
    assert_false(out.retryable);
    assert_contains(err_msg(&out), strategy);
    assert_contains(err_msg(&out), mention);
    jp_outcome_done(&out);
}

typedef struct canceller {
    jp_task *task;
    int delay_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    sleep_ms(c->delay_ms);
    jp_task_cancel(c->task);
    return NULL;
}

/* ---- the example plugin ---- */

static void test_upper_uppercases_text(void **state)
{
    jp_engine *e = engine_with(g_example);
    jp_outcome out;

    assert_int_equal(run(e, "upper", "{\"n\":[1,{\"x\":\"}\"}],\"text\":\"Hello, w\\u00f6rld \\\"q\\\"\\n\"}",
                         5000, &out),
                     0);
    assert_string_equal(json_string_value(json_object_get(out.result, "text")),
                        "HELLO, W\xc3\xb6RLD \"Q\"\n");
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_upper_without_text_is_invalid_payload(void **state)
{
    jp_engine *e = engine_with(g_example);
    const char *bad[] = {"{}", "{\"text\":5}", "[\"text\"]", NULL};
    jp_outcome out;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(run(e, "upper", bad[i], 5000, &out), -1);
        assert_string_equal(err_code(&out), "invalid_payload");
        assert_false(out.retryable);
        assert_contains(err_msg(&out), "text");
        assert_null(out.result);
        jp_outcome_done(&out);
    }
    jp_engine_free(e);
}

static void test_spin_cancelled_from_another_thread_returns_promptly(void **state)
{
    jp_engine *e = engine_with(g_example);
    canceller c = {jp_task_new(10000), 100};
    jp_outcome out;
    pthread_t thr;

    int64_t start = jp_mono_ms();
    assert_int_equal(pthread_create(&thr, NULL, cancel_later, &c), 0);
    int rc = jp_engine_run(e, "spin", NULL, c.task, &out);
    int64_t took = jp_mono_ms() - start;
    pthread_join(thr, NULL);

    check_outcome(rc, &out);
    assert_int_equal(rc, -1);
    assert_string_equal(err_code(&out), "cancelled");
    assert_false(out.retryable);
    assert_true(took >= 90);
    assert_true(took < 2000);
    jp_outcome_done(&out);
    jp_task_free(c.task);
    jp_engine_free(e);
}

static void test_spin_stops_at_the_deadline(void **state)
{
    jp_engine *e = engine_with(g_example);
    jp_outcome out;

    int64_t start = jp_mono_ms();
    assert_int_equal(run(e, "spin", "{}", 150, &out), -1);
    int64_t took = jp_mono_ms() - start;
    assert_string_equal(err_code(&out), "timeout");
    assert_true(out.retryable);
    assert_true(took >= 140);
    assert_true(took < 2000);
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_spin_waits_the_ms_asked(void **state)
{
    jp_engine *e = engine_with(g_example);
    jp_outcome out;

    int64_t start = jp_mono_ms();
    assert_int_equal(run(e, "spin", "{\"ms\":40}", 5000, &out), 0);
    assert_true(jp_mono_ms() - start >= 40);
    assert_int_equal(json_integer_value(json_object_get(out.result, "waited_ms")), 40);
    jp_outcome_done(&out);

    assert_int_equal(run(e, "spin", "{\"ms\":\"soon\"}", 5000, &out), -1);
    assert_string_equal(err_code(&out), "invalid_payload");
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_plugin_strategies_are_enabled_without_listing(void **state)
{
    jp_engine_config cfg = {.strategies = "noop"};
    jp_engine *e = NULL;
    jp_err err = {0};

    assert_int_equal(jp_engine_new(&cfg, &e, &err), 0);
    assert_false(jp_engine_has(e, "upper"));
    assert_int_equal(jp_plugin_load(e, g_example, &err), 0);
    assert_true(jp_engine_has(e, "upper"));
    assert_true(jp_engine_has(e, "spin"));
    assert_false(jp_engine_has(e, "sleep"));
    assert_string_equal(jp_engine_names(e), "noop,upper,spin");
    jp_engine_free(e);
}

static void test_same_plugin_serves_several_engines(void **state)
{
    jp_engine *a = engine_with(g_example);
    jp_engine *b = engine_with(g_example);
    jp_outcome out;

    jp_engine_free(a);
    assert_int_equal(run(b, "upper", "{\"text\":\"b\"}", 5000, &out), 0);
    assert_string_equal(json_string_value(json_object_get(out.result, "text")), "B");
    jp_outcome_done(&out);
    jp_engine_free(b);
}

static void test_bare_file_name_means_current_directory(void **state)
{
    char cwd[PATH_MAX], dir[PATH_MAX];
    const char *slash = strrchr(g_example, '/');
    jp_engine *e = NULL;
    jp_err err = {0};

    assert_non_null(slash);
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - g_example), g_example);
    assert_int_equal(jp_engine_new(NULL, &e, &err), 0);
    assert_int_equal(chdir(dir), 0);
    int rc = jp_plugin_load(e, slash + 1, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_true(jp_engine_has(e, "upper"));
    jp_engine_free(e);
}

typedef struct runner {
    jp_engine *engine;
    int id;
    int ok; /* runs that gave the right answer */
} runner;

static void *run_many(void *arg)
{
    runner *r = arg;

    for (int i = 0; i < 50; i++) {
        char payload[64], want[64];
        json_t *p;
        jp_task *t = jp_task_new(5000);
        jp_outcome out;

        snprintf(payload, sizeof payload, "{\"text\":\"t%d-%d\"}", r->id, i);
        snprintf(want, sizeof want, "T%d-%d", r->id, i);
        p = json_loads(payload, 0, NULL);
        if (jp_engine_run(r->engine, "upper", p, t, &out) == 0) {
            const char *got = json_string_value(json_object_get(out.result, "text"));
            if (got && strcmp(got, want) == 0)
                r->ok++;
        }
        jp_outcome_done(&out);
        json_decref(p);
        jp_task_free(t);
    }
    return NULL;
}

static void test_concurrent_runs(void **state)
{
    jp_engine *e = engine_with(g_example);
    runner r[8];
    pthread_t thr[8];

    for (int i = 0; i < 8; i++) {
        r[i] = (runner){e, i, 0};
        assert_int_equal(pthread_create(&thr[i], NULL, run_many, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(thr[i], NULL);
        assert_int_equal(r[i].ok, 50);
    }
    jp_engine_free(e);
}

/* ---- loading ---- */

static void test_missing_file_is_refused_with_its_path(void **state)
{
    expect_load_failure("/nonexistent/dir/plugin.so", JP_EINVAL, "cannot load plugin");
}

static void test_empty_path_is_refused(void **state)
{
    jp_engine *e = NULL;
    jp_err err = {0};

    assert_int_equal(jp_engine_new(NULL, &e, &err), 0);
    assert_int_equal(jp_plugin_load(e, "", &err), JP_EINVAL);
    assert_int_equal(jp_plugin_load(e, NULL, &err), JP_EINVAL);
    jp_engine_free(e);
}

static void test_library_without_abi_symbol_is_refused(void **state)
{
    /* libc is loaded already and certainly no plugin. */
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    struct link_map *map = NULL;

    assert_non_null(libc);
    assert_int_equal(dlinfo(libc, RTLD_DI_LINKMAP, &map), 0);
    assert_non_null(strchr(map->l_name, '/'));
    expect_load_failure(map->l_name, JP_EINVAL, "jobplane_plugin_abi");
    dlclose(libc);
}

static void test_plugin_without_init_entry_is_refused(void **state)
{
    expect_load_failure(test_plugin("noinit"), JP_EINVAL, "jobplane_plugin_init");
}

static void test_other_abi_is_refused_before_init_runs(void **state)
{
    /* Its init aborts: reaching it would end this test binary. */
    expect_load_failure(test_plugin("abi99"), JP_EINVAL, "ABI 99");
}

static void test_init_failure_gives_the_plugins_reason(void **state)
{
    expect_load_failure(test_plugin("initfail"), JP_EINVAL, "license file");
}

static void test_plugin_registering_nothing_is_refused(void **state)
{
    expect_load_failure(test_plugin("empty"), JP_EINVAL, "no strategy");
}

static void test_bad_strategy_name_fails_the_load(void **state)
{
    jp_engine *e = NULL;
    jp_err err = {0};
    const char *path = test_plugin("badname");

    assert_int_equal(jp_engine_new(NULL, &e, &err), 0);
    /* The plugin ignores the refusal and returns 0. */
    assert_int_equal(jp_plugin_load(e, path, &err), JP_EINVAL);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "Bad Name");
    /* Nothing of a refused plugin reaches the engine. */
    assert_false(jp_engine_has(e, "badname-ok"));
    jp_engine_free(e);
}

static void test_short_strategy_struct_is_refused(void **state)
{
    expect_load_failure(test_plugin("badsize"), JP_EINVAL, "bytes");
}

static void test_name_registered_twice_by_one_plugin_conflicts(void **state)
{
    expect_load_failure(test_plugin("twice"), JP_ECONFLICT, "\"twice\"");
}

static void test_loading_a_plugin_twice_conflicts(void **state)
{
    jp_engine *e = engine_with(g_example);
    jp_err err = {0};

    assert_int_equal(jp_plugin_load(e, g_example, &err), JP_ECONFLICT);
    assert_contains(err.msg, g_example);
    assert_contains(err.msg, "\"upper\"");
    /* The first copy still works. */
    assert_true(jp_engine_has(e, "upper"));
    jp_engine_free(e);
}

static void test_name_of_disabled_builtin_conflicts(void **state)
{
    /* exec is registered but disabled by default. */
    expect_load_failure(test_plugin("clash"), JP_ECONFLICT, "\"exec\"");
}

/* ---- misbehaving runs ---- */

static void test_invalid_json_result_is_plugin_error(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    expect_plugin_error(e, "badjson", "not valid JSON");
    jp_engine_free(e);
}

static void test_neither_result_nor_error_is_plugin_error(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    expect_plugin_error(e, "silent", "neither a result nor an error");
    expect_plugin_error(e, "fail-silent", "returned 7");
    jp_engine_free(e);
}

static void test_invalid_error_code_is_plugin_error(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    expect_plugin_error(e, "badcode", "boom");
    jp_engine_free(e);
}

static void test_oversized_result_is_plugin_error(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    expect_plugin_error(e, "toobig", "bytes");
    jp_engine_free(e);
}

static void test_failure_keeps_partial_result(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    jp_outcome out;

    assert_int_equal(run(e, "partial", "{}", 5000, &out), -1);
    assert_string_equal(err_code(&out), "disk_full");
    assert_string_equal(err_msg(&out), "no space left on /data");
    assert_true(out.retryable);
    assert_int_equal(json_integer_value(json_object_get(out.result, "progress")), 50);
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_set_error_fails_the_run_whatever_it_returns(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    jp_outcome out;

    assert_int_equal(run(e, "error-rc0", "{}", 5000, &out), -1);
    assert_string_equal(err_code(&out), "gave_up");
    assert_false(out.retryable);
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_later_valid_result_replaces_refused_one(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    jp_outcome out;

    assert_int_equal(run(e, "second-try", "{}", 5000, &out), 0);
    assert_true(json_is_true(json_object_get(out.result, "ok")));
    jp_outcome_done(&out);
    jp_engine_free(e);
}

static void test_payload_crosses_as_json_text(void **state)
{
    jp_engine *e = engine_with(test_plugin("misbehave"));
    const char *payloads[] = {
        "{\"a\":[1,2.5,true,null],\"s\":\"\\u00e9\\ud83d\\ude00 \\\"\\\\\\n\",\"o\":{}}",
        "[]", "\"just a string\"", "42", "null",
    };
    jp_outcome out;

    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        json_t *want = json_loads(payloads[i], JSON_DECODE_ANY, NULL);
        assert_non_null(want);
        assert_int_equal(run(e, "echo", payloads[i], 5000, &out), 0);
        assert_true(json_equal(out.result, want));
        json_decref(want);
        jp_outcome_done(&out);
    }
    /* A job without a payload gets JSON null. */
    assert_int_equal(run(e, "echo", NULL, 5000, &out), 0);
    assert_true(json_is_null(out.result));
    jp_outcome_done(&out);
    jp_engine_free(e);
}

int main(int argc, char **argv)
{
    g_example = argc > 1 ? argv[1] : getenv("JOBPLANE_TEST_PLUGIN");
    g_dir = argc > 2 ? argv[2] : getenv("JOBPLANE_TEST_PLUGIN_DIR");
    if (!g_example || !g_dir) {
        fprintf(stderr, "usage: %s EXAMPLE_PLUGIN.so TEST_PLUGIN_DIR\n", argv[0]);
        return 2;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upper_uppercases_text),
        cmocka_unit_test(test_upper_without_text_is_invalid_payload),
        cmocka_unit_test(test_spin_cancelled_from_another_thread_returns_promptly),
        cmocka_unit_test(test_spin_stops_at_the_deadline),
        cmocka_unit_test(test_spin_waits_the_ms_asked),
        cmocka_unit_test(test_plugin_strategies_are_enabled_without_listing),
        cmocka_unit_test(test_same_plugin_serves_several_engines),
        cmocka_unit_test(test_bare_file_name_means_current_directory),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_missing_file_is_refused_with_its_path),
        cmocka_unit_test(test_empty_path_is_refused),
        cmocka_unit_test(test_library_without_abi_symbol_is_refused),
        cmocka_unit_test(test_plugin_without_init_entry_is_refused),
        cmocka_unit_test(test_other_abi_is_refused_before_init_runs),
        cmocka_unit_test(test_init_failure_gives_the_plugins_reason),
        cmocka_unit_test(test_plugin_registering_nothing_is_refused),
        cmocka_unit_test(test_bad_strategy_name_fails_the_load),
        cmocka_unit_test(test_short_strategy_struct_is_refused),
        cmocka_unit_test(test_name_registered_twice_by_one_plugin_conflicts),
        cmocka_unit_test(test_loading_a_plugin_twice_conflicts),
        cmocka_unit_test(test_name_of_disabled_builtin_conflicts),
        cmocka_unit_test(test_invalid_json_result_is_plugin_error),
        cmocka_unit_test(test_neither_result_nor_error_is_plugin_error),
        cmocka_unit_test(test_invalid_error_code_is_plugin_error),
        cmocka_unit_test(test_oversized_result_is_plugin_error),
        cmocka_unit_test(test_failure_keeps_partial_result),
        cmocka_unit_test(test_set_error_fails_the_run_whatever_it_returns),
        cmocka_unit_test(test_later_valid_result_replaces_refused_one),
        cmocka_unit_test(test_payload_crosses_as_json_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
