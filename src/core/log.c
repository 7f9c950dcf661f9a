/* One-line, thread-safe log records on stderr for the binaries. */
#include "core/log.h"

#include "core/jtime.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static atomic_int min_level = JP_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void jp_log_set_level(jp_log_level min)
{
    atomic_store(&min_level, (int)min);
}

int jp_log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return JP_LOG_WARN;
    return -1;
}

void jp_log(jp_log_level lvl, const char *fmt, ...)
{
    char line[2048];
    char ts[JP_TIME_STR_MAX];
    va_list ap;
    int n;
    size_t len;

    if ((int)lvl < atomic_load(&min_level))
        return;
    if ((int)lvl < JP_LOG_DEBUG || (int)lvl > JP_LOG_ERROR)
        lvl = JP_LOG_ERROR;
    jp_time_format(jp_now_ms(), ts);
    n = snprintf(line, sizeof line, "%s %s ", ts, level_names[lvl]);
    if (n < 0)
        return;
    len = (size_t)n;
    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof line - len, fmt, ap);
    va_end(ap);
    if (n > 0)
        len += (size_t)n;
    if (len > sizeof line - 2)
        len = sizeof line - 2;  /* truncated: keep room for the newline */
    /* A record is one line, whatever the message held. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    /* One write(2) per record keeps lines from different threads whole. */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}
