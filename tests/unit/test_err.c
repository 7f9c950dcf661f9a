/* Unit tests of the error table and jp_err. */
#include "core/err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_err_set_returns_code_and_formats(void **state)
{
    jp_err err = {0};
    int rc = jp_err_set(&err, JP_ENOTFOUND, "job %s not found", "abc");
    assert_int_equal(rc, JP_ENOTFOUND);
    assert_int_equal(err.code, JP_ENOTFOUND);
    assert_string_equal(err.msg, "job abc not found");
    assert_string_equal(jp_err_msg(&err), "job abc not found");
}

static void test_err_set_accepts_null(void **state)
{
    assert_int_equal(jp_err_set(NULL, JP_EINVAL, "x"), JP_EINVAL);
    jp_err_clear(NULL);
}

static void test_err_set_truncates_long_messages(void **state)
{
    jp_err err;
    char big[JP_ERR_MSG_MAX * 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    jp_err_set(&err, JP_EINVAL, "%s", big);
    assert_int_equal(strlen(err.msg), JP_ERR_MSG_MAX - 1);
}

static void test_err_clear_resets(void **state)
{
    jp_err err;
    jp_err_set(&err, JP_EINVAL, "bad");
    jp_err_clear(&err);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");
}

static void test_err_api_codes_and_http_status(void **state)
{
    assert_string_equal(jp_err_api_code(JP_EINVAL), "invalid_argument");
    assert_int_equal(jp_err_http_status(JP_EINVAL), 400);
    assert_string_equal(jp_err_api_code(JP_ENOTFOUND), "not_found");
    assert_int_equal(jp_err_http_status(JP_ENOTFOUND), 404);
    assert_string_equal(jp_err_api_code(JP_ECONFLICT), "conflict");
    assert_int_equal(jp_err_http_status(JP_ECONFLICT), 409);
    assert_string_equal(jp_err_api_code(JP_ETOOBIG), "too_large");
    assert_int_equal(jp_err_http_status(JP_ETOOBIG), 413);
    assert_string_equal(jp_err_api_code(JP_EUNAVAIL), "unavailable");
    assert_int_equal(jp_err_http_status(JP_EUNAVAIL), 503);
    assert_int_equal(jp_err_http_status(JP_EUNAUTH), 401);
    assert_int_equal(jp_err_http_status(JP_EPERM), 403);
    assert_int_equal(jp_err_http_status(JP_ERATE), 429);
}

static void test_err_unknown_code_is_internal(void **state)
{
    assert_string_equal(jp_err_api_code(-999), "internal");
    assert_int_equal(jp_err_http_status(-999), 500);
    assert_int_equal(jp_err_http_status(0), 500);
}

static void test_err_msg_falls_back_to_code(void **state)
{
    jp_err err = {.code = JP_ECONFLICT};
    assert_string_equal(jp_err_msg(&err), "conflict");
    assert_string_equal(jp_err_msg(NULL), "internal");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_returns_code_and_formats),
        cmocka_unit_test(test_err_set_accepts_null),
        cmocka_unit_test(test_err_set_truncates_long_messages),
        cmocka_unit_test(test_err_clear_resets),
        cmocka_unit_test(test_err_api_codes_and_http_status),
        cmocka_unit_test(test_err_unknown_code_is_internal),
        cmocka_unit_test(test_err_msg_falls_back_to_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
