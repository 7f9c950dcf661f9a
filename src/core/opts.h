/* Command-line flags and environment variables from one declarative table.
 *
 * Every setting is both a flag (--listen) and a variable (JOBPLANE_LISTEN);
 * precedence is default < environment < command line. The same table prints
 * --help, so the help can never miss a setting. */
#ifndef JP_CORE_OPTS_H
#define JP_CORE_OPTS_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    JP_OPT_STR,   /* dst: const char **  (points into argv, environ or `def`) */
    JP_OPT_INT,   /* dst: int64_t *      (decimal; range checked by min/max) */
    JP_OPT_BOOL,  /* dst: bool *         (flag without value; env: 1/0/true/false/yes/no) */
} jp_opt_type;

typedef struct jp_opt {
    const char *name;  /* long flag without dashes: "listen" */
    const char *env;   /* "JOBPLANE_LISTEN", or NULL for flag-only */
    jp_opt_type type;
    void *dst;
    const char *def;   /* default as text ("127.0.0.1:8080"), NULL = unset */
    int64_t min, max;  /* JP_OPT_INT bounds (inclusive); both 0 = unbounded */
    const char *meta;  /* value placeholder in help: "ADDR" */
    const char *help;  /* one line */
} jp_opt;

/* Parses defaults, then the environment, then argv[1..]. Stops at the first
 * argument that is not an option (or after "--") and stores its index in
 * *ret_argi (argc when all were options). "--help"/"-h" stop parsing and
 * return 1. Returns 0 on success, or JP_EINVAL with a message naming the
 * flag or variable (unknown flag, missing value, bad number, out of range). */
int jp_opts_parse(const jp_opt *opts, size_t n, int argc, char **argv, int *ret_argi,
                  jp_err *err);

/* Prints "usage: <synopsis>" and one line per option with its variable and
 * default to `out`. */
void jp_opts_usage(FILE *out, const char *synopsis, const jp_opt *opts, size_t n);

#endif
