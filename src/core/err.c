/* The error table's lookups and the jp_err setters. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int jp_err_set(jp_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void jp_err_clear(jp_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *jp_err_api_code(int code)
{
    switch (code) {
#define JP_X_CASE(name, value, api, http) \
    case name:                            \
        return api;
        JP_ERRORS(JP_X_CASE)
#undef JP_X_CASE
    }
    return "internal";
}

int jp_err_http_status(int code)
{
    switch (code) {
#define JP_X_CASE(name, value, api, http) \
    case name:                            \
        return http;
        JP_ERRORS(JP_X_CASE)
#undef JP_X_CASE
    }
    return 500;
}

const char *jp_err_msg(const jp_err *err)
{
    if (err && err->msg[0])
        return err->msg;
    return jp_err_api_code(err ? err->code : JP_EINTERNAL);
}
