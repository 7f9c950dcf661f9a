/* Unit tests of flag and environment parsing and the --help text. */
#include "core/opts.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct config {
    const char *listen;
    const char *redis;
    int64_t workers;
    bool verbose;
    bool metrics;
} config;

static config cfg;

static const jp_opt table[] = {
    {"listen", "JPTEST_LISTEN", JP_OPT_STR, &cfg.listen, "127.0.0.1:8080", 0, 0, "ADDR",
     "Address to listen on"},
    {"redis", "JPTEST_REDIS_URL", JP_OPT_STR, &cfg.redis, NULL, 0, 0, "URL",
     "Redis for distributed mode"},
    {"workers", "JPTEST_WORKERS", JP_OPT_INT, &cfg.workers, "4", 1, 256, "N", "Engine threads"},
    {"verbose", NULL, JP_OPT_BOOL, &cfg.verbose, "false", 0, 0, NULL, "Log more"},
    {"metrics", "JPTEST_METRICS", JP_OPT_BOOL, &cfg.metrics, "true", 0, 0, NULL,
     "Serve /metrics"},
};
#define NOPTS (sizeof table / sizeof table[0])

static int setup(void **state)
{
    memset(&cfg, 0, sizeof cfg);
    unsetenv("JPTEST_LISTEN");
    unsetenv("JPTEST_REDIS_URL");
    unsetenv("JPTEST_WORKERS");
    unsetenv("JPTEST_METRICS");
    return 0;
}

/* Parses a NULL-terminated argument list (argv[0] = "prog" is added). */
static int parse_args(int *argi, jp_err *err, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    return jp_opts_parse(table, NOPTS, argc, argv, argi, err);
}

static void test_defaults_apply(void **state)
{
    int argi = -1;
    assert_int_equal(parse_args(&argi, NULL, NULL), 0);
    assert_int_equal(argi, 1);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_null(cfg.redis);
    assert_int_equal(cfg.workers, 4);
    assert_false(cfg.verbose);
    assert_true(cfg.metrics);
}

static void test_env_overrides_default(void **state)
{
    setenv("JPTEST_LISTEN", "0.0.0.0:9000", 1);
    setenv("JPTEST_WORKERS", "16", 1);
    setenv("JPTEST_METRICS", "no", 1);
    int argi;
    assert_int_equal(parse_args(&argi, NULL, NULL), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    assert_int_equal(cfg.workers, 16);
    assert_false(cfg.metrics);
}

static void test_argv_overrides_env(void **state)
{
    setenv("JPTEST_LISTEN", "0.0.0.0:9000", 1);
    setenv("JPTEST_WORKERS", "16", 1);
    int argi;
    assert_int_equal(parse_args(&argi, NULL, "--listen", "10.0.0.1:80", "--workers", "2", NULL), 0);
    assert_int_equal(argi, 5);
    assert_string_equal(cfg.listen, "10.0.0.1:80");
    assert_int_equal(cfg.workers, 2);
}

static void test_equals_form(void **state)
{
    int argi;
    assert_int_equal(parse_args(&argi, NULL, "--listen=[::1]:8080", "--workers=8",
                                "--redis=redis://h:6379/0?x=y", NULL), 0);
    assert_string_equal(cfg.listen, "[::1]:8080");
    assert_int_equal(cfg.workers, 8);
    assert_string_equal(cfg.redis, "redis://h:6379/0?x=y");
    assert_int_equal(argi, 4);
}

static void test_bool_forms(void **state)
{
    int argi;
    assert_int_equal(parse_args(&argi, NULL, "--verbose", "--no-metrics", NULL), 0);
    assert_true(cfg.verbose);
    assert_false(cfg.metrics);
    assert_int_equal(argi, 3);
    /* a bool flag does not eat the next argument */
    assert_int_equal(parse_args(&argi, NULL, "--verbose", "submit", NULL), 0);
    assert_int_equal(argi, 2);
    assert_int_equal(parse_args(&argi, NULL, "--metrics=false", NULL), 0);
    assert_false(cfg.metrics);
    const char *yes[] = {"1", "true", "yes", "TRUE"};
    const char *no[] = {"0", "false", "no", "No"};
    for (int i = 0; i < 4; i++) {
        setenv("JPTEST_METRICS", no[i], 1);
        assert_int_equal(parse_args(&argi, NULL, NULL), 0);
        assert_false(cfg.metrics);
        setenv("JPTEST_METRICS", yes[i], 1);
        assert_int_equal(parse_args(&argi, NULL, NULL), 0);
        assert_true(cfg.metrics);
    }
}

static void test_bad_bool_env(void **state)
{
    jp_err err = {0};
    int argi;
    setenv("JPTEST_METRICS", "maybe", 1);
    assert_int_equal(parse_args(&argi, &err, NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "JPTEST_METRICS"));
}

static void test_empty_env_is_unset(void **state)
{
    setenv("JPTEST_WORKERS", "", 1);
    int argi;
    assert_int_equal(parse_args(&argi, NULL, NULL), 0);
    assert_int_equal(cfg.workers, 4);
}

static void test_unknown_flag(void **state)
{
    jp_err err = {0};
    int argi = -1;
    assert_int_equal(parse_args(&argi, &err, "--listn", "x", NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "--listn"));
    assert_int_equal(argi, -1);
    assert_int_equal(parse_args(&argi, &err, "-x", NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "-x"));
    /* --no- only negates booleans */
    assert_int_equal(parse_args(&argi, &err, "--no-workers", NULL), JP_EINVAL);
    assert_int_equal(parse_args(&argi, &err, "--no-verbose=1", NULL), JP_EINVAL);
}

static void test_missing_value(void **state)
{
    jp_err err = {0};
    int argi;
    assert_int_equal(parse_args(&argi, &err, "--listen", NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "--listen"));
}

static void test_bad_number(void **state)
{
    const char *bad[] = {"abc", "4x", "", " 4", "4 ", "0x10", "1e3", "99999999999999999999", "+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jp_err err = {0};
        int argi;
        if (parse_args(&argi, &err, "--workers", bad[i], NULL) != JP_EINVAL)
            fail_msg("accepted --workers \"%s\"", bad[i]);
        assert_non_null(strstr(err.msg, "--workers"));
    }
    jp_err err = {0};
    int argi;
    setenv("JPTEST_WORKERS", "many", 1);
    assert_int_equal(parse_args(&argi, &err, NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "JPTEST_WORKERS"));
}

static void test_out_of_range(void **state)
{
    jp_err err = {0};
    int argi;
    assert_int_equal(parse_args(&argi, &err, "--workers", "0", NULL), JP_EINVAL);
    assert_non_null(strstr(err.msg, "out of range"));
    assert_int_equal(parse_args(&argi, &err, "--workers", "257", NULL), JP_EINVAL);
    assert_int_equal(parse_args(&argi, &err, "--workers", "-3", NULL), JP_EINVAL);
    assert_int_equal(parse_args(&argi, NULL, "--workers", "256", NULL), 0);
    assert_int_equal(cfg.workers, 256);
    assert_int_equal(parse_args(&argi, NULL, "--workers", "1", NULL), 0);
    assert_int_equal(cfg.workers, 1);
}

static void test_unbounded_int_accepts_negative(void **state)
{
    int64_t v = 0;
    const jp_opt one[] = {{"offset", NULL, JP_OPT_INT, &v, "0", 0, 0, "N", "Offset"}};
    char *argv[] = {"prog", "--offset", "-42", NULL};
    int argi;
    assert_int_equal(jp_opts_parse(one, 1, 3, argv, &argi, NULL), 0);
    assert_int_equal(v, -42);
}

static void test_stops_at_first_operand(void **state)
{
    int argi;
    assert_int_equal(parse_args(&argi, NULL, "--workers", "3", "submit", "--listen", "x", NULL), 0);
    assert_int_equal(argi, 3);
    assert_string_equal(cfg.listen, "127.0.0.1:8080"); /* after the operand: not parsed */
    assert_int_equal(parse_args(&argi, NULL, "--", "--listen", NULL), 0);
    assert_int_equal(argi, 2);
    assert_int_equal(parse_args(&argi, NULL, "-", NULL), 0);
    assert_int_equal(argi, 1);
}

static void test_help_returns_one(void **state)
{
    int argi;
    assert_int_equal(parse_args(&argi, NULL, "--help", NULL), 1);
    assert_int_equal(parse_args(&argi, NULL, "--workers", "2", "-h", NULL), 1);
    /* help wins over a later bad flag */
    assert_int_equal(parse_args(&argi, NULL, "--help", "--bogus", NULL), 1);
}

static void test_usage_lists_every_option(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    jp_opts_usage(f, "prog [options]", table, NOPTS);
    fclose(f);
    assert_non_null(strstr(text, "usage: prog [options]"));
    assert_non_null(strstr(text, "--listen ADDR"));
    assert_non_null(strstr(text, "(JPTEST_LISTEN, default 127.0.0.1:8080)"));
    assert_non_null(strstr(text, "Address to listen on"));
    assert_non_null(strstr(text, "--redis URL"));
    assert_non_null(strstr(text, "(JPTEST_REDIS_URL)"));
    assert_non_null(strstr(text, "--workers N"));
    assert_non_null(strstr(text, "(JPTEST_WORKERS, default 4)"));
    assert_non_null(strstr(text, "--verbose "));
    assert_non_null(strstr(text, "(default false)"));
    assert_non_null(strstr(text, "(JPTEST_METRICS, default true)"));
    assert_non_null(strstr(text, "--help"));
    /* one line per option, help texts aligned in one column */
    int col = -1;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *h = strstr(text, table[i].help);
        assert_non_null(h);
        const char *line = h;
        while (line > text && line[-1] != '\n')
            line--;
        if (col < 0)
            col = (int)(h - line);
        assert_int_equal((int)(h - line), col);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_apply, setup),
        cmocka_unit_test_setup(test_env_overrides_default, setup),
        cmocka_unit_test_setup(test_argv_overrides_env, setup),
        cmocka_unit_test_setup(test_equals_form, setup),
        cmocka_unit_test_setup(test_bool_forms, setup),
        cmocka_unit_test_setup(test_bad_bool_env, setup),
        cmocka_unit_test_setup(test_empty_env_is_unset, setup),
        cmocka_unit_test_setup(test_unknown_flag, setup),
        cmocka_unit_test_setup(test_missing_value, setup),
        cmocka_unit_test_setup(test_bad_number, setup),
        cmocka_unit_test_setup(test_out_of_range, setup),
        cmocka_unit_test_setup(test_unbounded_int_accepts_negative, setup),
        cmocka_unit_test_setup(test_stops_at_first_operand, setup),
        cmocka_unit_test_setup(test_help_returns_one, setup),
        cmocka_unit_test_setup(test_usage_lists_every_option, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
