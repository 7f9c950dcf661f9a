/* Unit tests of the clocks and RFC 3339 formatting and parsing. */
#include "core/jtime.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define T_2026 1795687200000LL /* 2026-11-26T10:00:00.000Z */

static int64_t parse_ok(const char *s)
{
    int64_t ms = -1;
    if (!jp_time_parse(s, &ms))
        fail_msg("rejected %s", s);
    return ms;
}

static void test_format_has_milliseconds_and_z(void **state)
{
    char buf[JP_TIME_STR_MAX];
    jp_time_format(T_2026 + 4, buf);
    assert_string_equal(buf, "2026-11-26T10:00:00.004Z");
    jp_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    jp_time_format(951782400999LL, buf);
    assert_string_equal(buf, "2000-02-29T00:00:00.999Z");
}

static void test_format_before_epoch(void **state)
{
    char buf[JP_TIME_STR_MAX];
    jp_time_format(-1, buf);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
}

/* The calendar arithmetic agrees with the C library, day by day over centuries. */
static void test_format_agrees_with_gmtime(void **state)
{
    char buf[JP_TIME_STR_MAX], want[JP_TIME_STR_MAX + 16];
    for (int64_t day = -719162; day < 2932896; day += 31) { /* 0001 to 9999 */
        int64_t secs = day * 86400 + (day * 7919) % 86400;
        time_t t = (time_t)secs;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.123Z", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        jp_time_format(secs * 1000 + 123, buf);
        assert_string_equal(buf, want);
        assert_int_equal(parse_ok(buf), secs * 1000 + 123);
        assert_int_equal((int64_t)timegm(&tm), secs);
    }
}

static void test_format_clamps_to_four_digit_years(void **state)
{
    char buf[JP_TIME_STR_MAX];
    jp_time_format(INT64_MAX, buf);
    assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
    jp_time_format(INT64_MIN, buf);
    assert_string_equal(buf, "0000-01-01T00:00:00.000Z");
    assert_int_equal(parse_ok("0000-01-01T00:00:00Z"), -62167219200000LL);
    assert_int_equal(parse_ok("9999-12-31T23:59:59.999Z"), 253402300799999LL);
}

static void test_parse_leap_second(void **state)
{
    assert_int_equal(parse_ok("2016-12-31T23:59:60Z"), 1483228799999LL);
}

static void test_parse_utc(void **state)
{
    assert_int_equal(parse_ok("2026-11-26T10:00:00Z"), T_2026);
    assert_int_equal(parse_ok("2026-11-26T10:00:00.004Z"), T_2026 + 4);
    assert_int_equal(parse_ok("2026-11-26t10:00:00z"), T_2026);
}

static void test_parse_fraction_of_any_length(void **state)
{
    assert_int_equal(parse_ok("2026-11-26T10:00:00.5Z"), T_2026 + 500);
    assert_int_equal(parse_ok("2026-11-26T10:00:00.12Z"), T_2026 + 120);
    assert_int_equal(parse_ok("2026-11-26T10:00:00.123456789Z"), T_2026 + 123);
}

static void test_parse_offsets(void **state)
{
    assert_int_equal(parse_ok("2026-11-26T12:00:00+02:00"), T_2026);
    assert_int_equal(parse_ok("2026-11-26T04:30:00-05:30"), T_2026);
    assert_int_equal(parse_ok("2026-11-26T10:00:00+00:00"), T_2026);
    assert_int_equal(parse_ok("2026-11-27T01:00:00.250+15:00"), T_2026 + 250);
}

static void test_parse_round_trips_format(void **state)
{
    char buf[JP_TIME_STR_MAX];
    int64_t samples[] = {0, 1, 999, T_2026, T_2026 + 123, 4102444799999LL, jp_now_ms()};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        jp_time_format(samples[i], buf);
        assert_int_equal(parse_ok(buf), samples[i]);
    }
}

static void test_parse_rejects_garbage(void **state)
{
    const char *bad[] = {
        "", "now", "2026-11-26", "2026-11-26T10:00:00", "2026-11-26 10:00:00Z",
        "2026-11-26T10:00Z", "26-11-26T10:00:00Z", "2026-11-26T10:00:00.Z",
        "2026-11-26T10:00:00ZZ", "2026-11-26T10:00:00Z ", " 2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00+0200", "2026-11-26T10:00:00+02", "2026-1-26T10:00:00Z",
        "2026-11-26T10:00:00.12x4Z", "+2026-11-26T10:00:00Z", "1795687200",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        if (jp_time_parse(bad[i], &ms))
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(ms, 42);
    }
    int64_t ms = 42;
    assert_false(jp_time_parse(NULL, &ms));
}

static void test_parse_rejects_out_of_range(void **state)
{
    const char *bad[] = {
        "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-11-31T00:00:00Z",
        "2026-02-29T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-26T24:00:00Z",
        "2026-11-26T10:60:00Z", "2026-11-26T10:00:61Z", "2026-11-26T10:00:00+24:00",
        "2026-11-26T10:00:00+02:60",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms;
        if (jp_time_parse(bad[i], &ms))
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(parse_ok("2028-02-29T00:00:00Z"), 1835395200000LL);
}

static void test_clocks_advance(void **state)
{
    int64_t w = jp_now_ms();
    int64_t m1 = jp_mono_ms();
    assert_true(w > T_2026 - 10LL * 365 * 86400 * 1000); /* sane wall clock */
    int64_t m2 = jp_mono_ms();
    assert_true(m2 >= m1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_has_milliseconds_and_z),
        cmocka_unit_test(test_format_before_epoch),
        cmocka_unit_test(test_format_agrees_with_gmtime),
        cmocka_unit_test(test_format_clamps_to_four_digit_years),
        cmocka_unit_test(test_parse_leap_second),
        cmocka_unit_test(test_parse_utc),
        cmocka_unit_test(test_parse_fraction_of_any_length),
        cmocka_unit_test(test_parse_offsets),
        cmocka_unit_test(test_parse_round_trips_format),
        cmocka_unit_test(test_parse_rejects_garbage),
        cmocka_unit_test(test_parse_rejects_out_of_range),
        cmocka_unit_test(test_clocks_advance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
