/* Clocks and RFC 3339 timestamp formatting and parsing. */
#include "core/jtime.h"

#include <ctype.h>
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

int64_t jp_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. Plain arithmetic rather
 * than timegm/gmtime_r: glibc takes a process-wide lock in those, and job
 * timestamps are converted on every request from every thread. The calendar
 * repeats every 400 years (146097 days); counting years from March puts the
 * leap day at the end of a year. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
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
#define MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define MAX_MS (253402300799999LL) /* 9999-12-31T23:59:59.999Z */

void jp_time_format(int64_t ms, char out[JP_TIME_STR_MAX])
{
    if (ms < MIN_MS)
        ms = MIN_MS;
    if (ms > MAX_MS)
        ms = MAX_MS;
    /* Floor division, so times before the epoch format correctly too. */
    int64_t secs = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    int64_t year;
    int mon, mday;
    civil_from_days(days, &year, &mon, &mday);

    /* By hand rather than snprintf: this runs for every timestamp of every job shown. */
    char *p = out;
    p = put(p, (unsigned)year, 4);
    *p++ = '-';
    p = put(p, (unsigned)mon, 2);
    *p++ = '-';
    p = put(p, (unsigned)mday, 2);
    *p++ = 'T';
    p = put(p, (unsigned)(sod / 3600), 2);
    *p++ = ':';
    p = put(p, (unsigned)(sod / 60 % 60), 2);
    *p++ = ':';
    p = put(p, (unsigned)(sod % 60), 2);
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

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
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
    if (sec == 60) { /* a leap second: the last instant of the minute before */
        sec = 59;
        frac_ms = 999;
    }
    int64_t secs = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    *ret_ms = (secs - offset_s) * 1000 + frac_ms;
    return true;
}
