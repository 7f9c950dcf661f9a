/* Flags and environment variables parsed from one table, and the --help text. */
#include "core/opts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Where a value came from, for error messages: "--workers" or "JOBPLANE_WORKERS". */
typedef struct origin {
    const char *prefix;
    const char *name;
} origin;

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Strict decimal: optional sign, digits only, no blanks, within int64. */
static bool parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    char *end = NULL;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static int set_value(const jp_opt *o, const char *value, origin from, jp_err *err)
{
    switch (o->type) {
    case JP_OPT_STR:
        *(const char **)o->dst = value;
        return 0;
    case JP_OPT_INT: {
        int64_t v;
        if (!parse_int(value, &v))
            return jp_err_set(err, JP_EINVAL, "%s%s: \"%.64s\" is not a whole number", from.prefix,
                              from.name, value);
        if ((o->min || o->max) && (v < o->min || v > o->max))
            return jp_err_set(err, JP_EINVAL, "%s%s: %lld is out of range (%lld to %lld)",
                              from.prefix, from.name, (long long)v, (long long)o->min,
                              (long long)o->max);
        *(int64_t *)o->dst = v;
        return 0;
    }
    case JP_OPT_BOOL: {
        bool b;
        if (!parse_bool(value, &b))
            return jp_err_set(err, JP_EINVAL, "%s%s: \"%.64s\" is not true or false", from.prefix,
                              from.name, value);
        *(bool *)o->dst = b;
        return 0;
    }
    }
    return jp_err_set(err, JP_EINVAL, "%s%s: unknown option type", from.prefix, from.name);
}

static const jp_opt *find(const jp_opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

/* One argv option at argv[*i]; advances *i past any value it consumes. */
static int parse_arg(const jp_opt *opts, size_t n, int argc, char **argv, int *i, jp_err *err)
{
    const char *arg = argv[*i];
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const jp_opt *o = find(opts, n, name, len);
    origin from = {"--", NULL};
    char flag[80];

    snprintf(flag, sizeof flag, "%.*s", (int)(len < 64 ? len : 64), name);
    from.name = flag;
    if (!o && len > 3 && strncmp(name, "no-", 3) == 0) {
        const jp_opt *neg = find(opts, n, name + 3, len - 3);
        if (neg && neg->type == JP_OPT_BOOL) {
            if (eq)
                return jp_err_set(err, JP_EINVAL, "--%s takes no value", flag);
            *(bool *)neg->dst = false;
            return 0;
        }
    }
    if (!o)
        return jp_err_set(err, JP_EINVAL, "unknown flag --%s (see --help)", flag);
    if (o->type == JP_OPT_BOOL) {
        if (!eq) {
            *(bool *)o->dst = true;
            return 0;
        }
        return set_value(o, eq + 1, from, err);
    }
    if (eq)
        return set_value(o, eq + 1, from, err);
    if (*i + 1 >= argc)
        return jp_err_set(err, JP_EINVAL, "--%s needs a value", flag);
    (*i)++;
    return set_value(o, argv[*i], from, err);
}

int jp_opts_parse(const jp_opt *opts, size_t n, int argc, char **argv, int *ret_argi,
                  jp_err *err)
{
    int rc;
    int i;

    for (size_t k = 0; k < n; k++) {
        if (!opts[k].def)
            continue;
        rc = set_value(&opts[k], opts[k].def, (origin){"default of --", opts[k].name}, err);
        if (rc < 0)
            return rc;
    }
    for (size_t k = 0; k < n; k++) {
        const char *v = opts[k].env ? getenv(opts[k].env) : NULL;
        /* An empty variable (FOO= in a compose file) means "not set". */
        if (!v || !*v)
            continue;
        rc = set_value(&opts[k], v, (origin){"", opts[k].env}, err);
        if (rc < 0)
            return rc;
    }
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (ret_argi)
                *ret_argi = i;
            return 1;
        }
        if (arg[0] != '-' || arg[1] == '\0')
            break;  /* the first operand: a subcommand or a file */
        if (arg[1] != '-')
            return jp_err_set(err, JP_EINVAL, "unknown flag %.64s (flags are --long; see --help)",
                              arg);
        rc = parse_arg(opts, n, argc, argv, &i, err);
        if (rc < 0)
            return rc;
    }
    if (ret_argi)
        *ret_argi = i < argc ? i : argc;
    return 0;
}

static const char *meta_of(const jp_opt *o)
{
    if (o->type == JP_OPT_BOOL)
        return NULL;
    if (o->meta)
        return o->meta;
    return o->type == JP_OPT_INT ? "N" : "VALUE";
}

static void left_column(const jp_opt *o, char *buf, size_t size)
{
    const char *meta = meta_of(o);
    snprintf(buf, size, "--%s%s%s", o->name, meta ? " " : "", meta ? meta : "");
}

static void middle_column(const jp_opt *o, char *buf, size_t size)
{
    if (o->env && o->def)
        snprintf(buf, size, "(%s, default %s)", o->env, o->def);
    else if (o->env)
        snprintf(buf, size, "(%s)", o->env);
    else if (o->def)
        snprintf(buf, size, "(default %s)", o->def);
    else
        buf[0] = '\0';
}

void jp_opts_usage(FILE *out, const char *synopsis, const jp_opt *opts, size_t n)
{
    char left[160], middle[320];
    int wl = (int)strlen("-h, --help"), wm = 0;

    for (size_t k = 0; k < n; k++) {
        left_column(&opts[k], left, sizeof left);
        middle_column(&opts[k], middle, sizeof middle);
        if ((int)strlen(left) > wl)
            wl = (int)strlen(left);
        if ((int)strlen(middle) > wm)
            wm = (int)strlen(middle);
    }
    fprintf(out, "usage: %s\n\noptions:\n", synopsis ? synopsis : "");
    for (size_t k = 0; k < n; k++) {
        left_column(&opts[k], left, sizeof left);
        middle_column(&opts[k], middle, sizeof middle);
        fprintf(out, "  %-*s  %-*s  %s\n", wl, left, wm, middle, opts[k].help ? opts[k].help : "");
    }
    fprintf(out, "  %-*s  %-*s  %s\n", wl, "-h, --help", wm, "", "Show this help and exit");
}
