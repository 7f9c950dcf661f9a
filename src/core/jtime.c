/* Clocks and RFC 3339 timestamp formatting and parsing. */
#include "core/jtime.h"

#include <ctype.h>
#include <string.h>
#include <time.h>

int64_t jp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t jp_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes `v` as exactly `n` decimal digits (v is already in range). */
static char *put(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

/* RFC 3339 years have four digits. */
#define MIN_MS (-62167219200000LL)  /* 0000-01-01T00:00:00.000Z */
#define MAX_MS (253402300799999LL)  /* 9999-12-31T23:59:59.999Z */

void jp_time_format(int64_t ms, char out[JP_TIME_STR_MAX])
{
    if (ms < MIN_MS)
        ms = MIN_MS;
    if (ms > MAX_MS)
        ms = MAX_MS;
    /* Floor division so that times before the epoch still format sanely. */
    int64_t secs = ms / 1000;
    int64_t frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof tm), tm.tm_year = 70, tm.tm_mday = 1;
    /* By hand rather than snprintf: this runs for every timestamp of every job shown. */
    char *p = out;
    p = put(p, (unsigned)(tm.tm_year + 1900), 4);
    *p++ = '-';
    p = put(p, (unsigned)(tm.tm_mon + 1), 2);
    *p++ = '-';
    p = put(p, (unsigned)tm.tm_mday, 2);
    *p++ = 'T';
    p = put(p, (unsigned)tm.tm_hour, 2);
    *p++ = ':';
    p = put(p, (unsigned)tm.tm_min, 2);
    *p++ = ':';
    p = put(p, (unsigned)tm.tm_sec, 2);
    *p++ = '.';
    p = put(p, (unsigned)frac, 3);
    *p++ = 'Z';
    *p = '\0';
}

/* Reads exactly `n` decimal digits at *p, advancing it. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (!isdigit(c))
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

bool jp_time_parse(const char *s, int64_t *ret_ms)
{
    int year, mon, day, hour, min, sec;
    int frac_ms = 0;
    int offset_s = 0;
    const char *p = s;

    if (!s)
        return false;
    if (!digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &mon) || *p++ != '-' ||
        !digits(&p, 2, &day))
        return false;
    if (*p != 'T' && *p != 't')
        return false;
    p++;
    if (!digits(&p, 2, &hour) || *p++ != ':' || !digits(&p, 2, &min) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        /* Keep milliseconds, truncate the rest (any length is accepted). */
        int scale = 100;
        while (isdigit((unsigned char)*p)) {
            frac_ms += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om))
            return false;
        if (oh > 23 || om > 59)
            return false;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p != '\0')
        return false;

    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
        min > 59 || sec > 60)
        return false;
    if (sec == 60)  /* a leap second folds into the next one, as timegm would */
        sec = 59, frac_ms = 999;

    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *ret_ms = ((int64_t)t - offset_s) * 1000 + frac_ms;
    return true;
}
