/* An example jobplane plugin with two strategies: "upper" shows payload in,
 * result out and error out; "spin" shows how to wait and stop promptly on
 * cancellation or at the deadline.
 *
 *   upper  {"text": "Hello"}  ->  {"text": "HELLO"}   (ASCII letters only)
 *   spin   {"ms": 250}?       ->  {"waited_ms": 250}  (without "ms": until
 *                                                     cancelled or timed out)
 *
 * It needs nothing but include/jobplane/plugin.h:
 *
 *   cc -std=c11 -Wall -Wextra -fPIC -shared -Iinclude upper.c -o upper.so
 *   jobplane-worker --plugin ./upper.so …
 *
 * Payloads arrive as JSON text. A real plugin would use a JSON library; this
 * one scans the little it needs by hand to stay self-contained. */
#define _POSIX_C_SOURCE 200809L

#include <jobplane/plugin.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

JOBPLANE_PLUGIN_DECLARE_ABI;

/* ---- a minimal JSON scanner (input is valid JSON: the host made it) ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex4(const char *p, const char *end, unsigned *ret)
{
    unsigned v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *ret = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the JSON string at p (on its opening quote) into a new buffer of
 * *ret_len bytes (the caller frees it). Returns the position after the
 * closing quote, or NULL when malformed. Decoding never grows the text. */
static const char *decode_string(const char *p, const char *end, char **ret_s, size_t *ret_len)
{
    char *s, *o;

    if (p >= end || *p != '"')
        return NULL;
    s = o = malloc((size_t)(end - p));
    if (!s)
        return NULL;
    for (p++; p < end && *p != '"'; p++) {
        unsigned cp, lo;

        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        if (++p == end)
            break;
        switch (*p) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (hex4(p + 1, end, &cp) < 0)
                goto bad;
            p += 4;
            /* A character beyond the BMP comes as a surrogate pair. */
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 7 && p[1] == '\\' && p[2] == 'u' &&
                hex4(p + 3, end, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            o += put_utf8(o, cp);
            break;
        default: /* \" \\ \/ */
            *o++ = *p;
        }
    }
    if (p >= end)
        goto bad;
    *ret_s = s;
    *ret_len = (size_t)(o - s);
    return p + 1;
bad:
    free(s);
    return NULL;
}

/* The position after the JSON value at p, or NULL. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;

    do {
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (p >= end)
                return NULL;
            p++;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (*p == ',' || *p == ':') {
            p++;
        } else {
            while (p < end && !strchr(" \t\r\n,:]}", *p))
                p++;
        }
    } while (depth > 0);
    return depth == 0 ? p : NULL;
}

/* Finds member `key` of the JSON object in json[0..len): *ret_value is where
 * its value starts. Returns 1 if found, 0 if not, -1 if json is no object. */
static int find_member(const char *json, size_t len, const char *key, const char **ret_value)
{
    const char *end = json + len;
    const char *p = skip_ws(json, end);

    if (p >= end || *p != '{')
        return -1;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        char *name;
        size_t n;
        int match;

        p = decode_string(p, end, &name, &n);
        if (!p)
            return -1;
        match = n == strlen(key) && memcmp(name, key, n) == 0;
        free(name);
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return -1;
        p = skip_ws(p + 1, end);
        if (match) {
            *ret_value = p;
            return 1;
        }
        p = skip_value(p, end);
        if (!p)
            return -1;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return 0;
}

/* ---- upper ---- */

static int run_upper(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                     jobplane_output *out)
{
    const jobplane_host *host = ctx;
    const char *value;
    char *text, *json, *o;
    size_t n;
    int rc;

    (void)task; /* too quick to need cancelling */
    if (find_member(payload, len, "text", &value) != 1 || *value != '"') {
        host->set_error(out, "invalid_payload", "payload must be {\"text\": \"...\"}", 0);
        return 1;
    }
    if (!decode_string(value, payload + len, &text, &n)) {
        host->set_error(out, "invalid_payload", "\"text\" is not a valid string", 0);
        return 1;
    }

    /* Each byte becomes at most six ("\u001f"), plus {"text":""}. */
    json = malloc(n * 6 + 16);
    if (!json) {
        free(text);
        host->set_error(out, "out_of_memory", "cannot allocate the result", 1);
        return 1;
    }
    o = json + sprintf(json, "{\"text\":\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 'a' && c <= 'z')
            *o++ = (char)(c - 'a' + 'A'); /* ASCII only: UTF-8 bytes stay as they are */
        else if (c == '"' || c == '\\')
            o += sprintf(o, "\\%c", c);
        else if (c < 0x20)
            o += sprintf(o, "\\u%04x", c);
        else
            *o++ = (char)c;
    }
    o += sprintf(o, "\"}");

    /* The host copies the result, so our buffers are ours to free. */
    rc = host->set_result(out, json, (size_t)(o - json));
    free(json);
    free(text);
    return rc == JOBPLANE_OK ? 0 : 1;
}

/* ---- spin ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int run_spin(void *ctx, const char *payload, size_t len, const jobplane_task *task,
                    jobplane_output *out)
{
    const jobplane_host *host = ctx;
    long long want = -1, start = now_ms();
    const char *value;
    char result[64];

    if (find_member(payload, len, "ms", &value) == 1) {
        char *endp;
        errno = 0;
        want = strtoll(value, &endp, 10);
        if (errno || endp == value || want < 0 || (*endp && strchr(".eE", *endp))) {
            host->set_error(out, "invalid_payload", "\"ms\" must be a non-negative integer", 0);
            return 1;
        }
    }

    for (;;) {
        long long wait = host->remaining_ms(task);
        int fd = host->cancel_fd(task);

        if (host->cancelled(task)) {
            host->set_error(out, "cancelled", "cancelled while spinning", 0);
            return 1;
        }
        if (wait == 0) {
            host->set_error(out, "timeout", "the deadline passed while spinning", 1);
            return 1;
        }
        if (want >= 0) {
            long long left = want - (now_ms() - start);
            if (left <= 0)
                break;
            if (left < wait)
                wait = left;
        }
        /* Without a cancel fd, look at the flag often instead. */
        if (fd < 0 && wait > 50)
            wait = 50;
        if (wait > INT_MAX)
            wait = INT_MAX;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, fd >= 0 ? 1 : 0, (int)wait) < 0 && errno != EINTR) {
            snprintf(result, sizeof result, "poll failed (errno %d)", errno);
            host->set_error(out, "internal", result, 1);
            return 1;
        }
    }

    snprintf(result, sizeof result, "{\"waited_ms\":%lld}", want);
    return host->set_result(out, result, strlen(result)) == JOBPLANE_OK ? 0 : 1;
}

/* ---- entry point ---- */

JOBPLANE_PLUGIN_EXPORT int jobplane_plugin_init(const jobplane_host *host,
                                                jobplane_registry *reg)
{
    /* The host table lives as long as the process: hand it to each run. */
    jobplane_strategy upper = {
        .abi = JOBPLANE_PLUGIN_ABI,
        .size = sizeof(jobplane_strategy),
        .name = "upper",
        .ctx = (void *)host,
        .run = run_upper,
    };
    jobplane_strategy spin = upper;
    int rc;

    if (host->abi != JOBPLANE_PLUGIN_ABI || !JOBPLANE_HOST_HAS(host, set_error))
        return 1;
    spin.name = "spin";
    spin.run = run_spin;
    rc = host->register_strategy(reg, &upper);
    if (rc == JOBPLANE_OK)
        rc = host->register_strategy(reg, &spin);
    return rc;
}
