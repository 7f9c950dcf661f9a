/* The CLI's HTTP client: libcurl with one reused handle, so a run of requests
 * (polling a job, following list pages) shares one keep-alive connection. */
#include "client/client.h"

#include "core/mem.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 10000L

struct jp_client {
    CURL *curl;
    struct curl_slist *headers;  /* sent with every request */
    char *base;                  /* without a trailing slash */
    long timeout_ms;             /* whole-request limit; 0 = none */
    const volatile sig_atomic_t *interrupt;  /* non-zero: abandon the request */
    char errbuf[CURL_ERROR_SIZE];
};

/* Where the write callback collects a response. */
typedef struct sink {
    jp_buf buf;
    bool too_big;  /* the body passed JP_CLIENT_MAX_RESPONSE */
} sink;

int jp_client_global_init(jp_err *err)
{
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cc != CURLE_OK)
        return jp_err_set(err, JP_EINTERNAL, "cannot initialise libcurl: %s",
                          curl_easy_strerror(cc));
    return 0;
}

void jp_client_global_cleanup(void)
{
    curl_global_cleanup();
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *userdata)
{
    sink *s = userdata;
    size_t n = size * nmemb;
    if (jp_buf_append(&s->buf, p, n) < 0) {
        s->too_big = true;
        return 0;  /* makes curl stop with CURLE_WRITE_ERROR */
    }
    return n;
}

int jp_client_new(const char *base_url, const char *token, jp_client **ret_client, jp_err *err)
{
    jp_client *c = NULL;
    char *auth = NULL;
    size_t len;
    int rc = 0;

    if (!base_url || (strncmp(base_url, "http://", 7) != 0 &&
                      strncmp(base_url, "https://", 8) != 0) ||
        has_control(base_url))
        return jp_err_set(err, JP_EINVAL, "server URL must look like http://host:port, not \"%.80s\"",
                          base_url ? base_url : "");
    if (token && has_control(token))
        return jp_err_set(err, JP_EINVAL, "token must not contain control characters");

    c = jp_xcalloc(1, sizeof *c);
    len = strlen(base_url);
    while (len > 0 && base_url[len - 1] == '/')
        len--;
    c->base = jp_xstrndup(base_url, len);
    c->headers = curl_slist_append(c->headers, "Accept: application/json");
    c->headers = curl_slist_append(c->headers, "Content-Type: application/json");
    /* Bodies are small and the server takes them at once: skip the
     * 100-continue round trip curl would otherwise make for larger POSTs. */
    c->headers = curl_slist_append(c->headers, "Expect:");
    if (token && *token) {
        auth = jp_xasprintf("Authorization: Bearer %s", token);
        c->headers = curl_slist_append(c->headers, auth);
    }
    if (!c->headers) {
        rc = jp_err_set(err, JP_EINTERNAL, "cannot build request headers");
        goto out;
    }
    *ret_client = c;
    c = NULL;
out:
    free(auth);
    jp_client_free(c);
    return rc;
}

/* The handle is made at the first request, not with the client: creating
 * it sets up libcurl and OpenSSL (about 2 MiB of memory), which a worker
 * with nothing to report yet need not carry. */
static int make_handle(jp_client *c, jp_err *err)
{
    if (c->curl)
        return 0;
    c->curl = curl_easy_init();
    if (!c->curl)
        return jp_err_set(err, JP_EINTERNAL, "cannot create an HTTP handle");
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "jobplane-cli");
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    jp_client_set_interrupt(c, c->interrupt);
    return 0;
}

void jp_client_free(jp_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    free(c->base);
    free(c);
}

const char *jp_client_url(const jp_client *c)
{
    return c->base;
}

void jp_client_set_timeout(jp_client *c, long ms)
{
    c->timeout_ms = ms > 0 ? ms : 0;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const jp_client *c = userdata;
    return *c->interrupt ? 1 : 0;  /* non-zero makes curl stop the transfer */
}

void jp_client_set_interrupt(jp_client *c, const volatile sig_atomic_t *flag)
{
    c->interrupt = flag;
    if (!c->curl)
        return; /* applied when the handle is made */
    /* curl retries a poll that a signal interrupts, so only its progress
     * callback, called at least once a second, can notice the flag. */
    curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, flag ? on_progress : NULL);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, flag ? c : NULL);
    curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, flag ? 0L : 1L);
}

/* The one-line reason a request never got an HTTP answer. */
static int transport_error(jp_client *c, CURLcode cc, jp_err *err)
{
    long os_errno = 0;
    char ebuf[128];
    const char *why;

    curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
    if (cc == CURLE_COULDNT_CONNECT && os_errno != 0)
        why = strerror_r((int)os_errno, ebuf, sizeof ebuf);
    else if (c->errbuf[0])
        why = c->errbuf;
    else
        why = curl_easy_strerror(cc);
    return jp_err_set(err, JP_EUNAVAIL, "cannot reach %s: %s", c->base, why);
}

int jp_client_request(jp_client *c, const char *method, const char *path, const json_t *body,
                      long *ret_status, json_t **ret_body, jp_err *err)
{
    bool is_get = strcmp(method, "GET") == 0;
    char *url = NULL, *text = NULL;
    json_t *parsed = NULL;
    long status = 0;
    sink out;
    CURLcode cc;
    int rc = 0;

    jp_buf_init(&out.buf, JP_CLIENT_MAX_RESPONSE);
    out.too_big = false;
    if (body && is_get)
        return jp_err_set(err, JP_EINVAL, "a GET request has no body");
    if ((rc = make_handle(c, err)) < 0)
        return rc;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return jp_err_set(err, JP_EINVAL, "request body cannot be encoded as JSON");
    }
    url = jp_xasprintf("%s%s", c->base, path);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    if (is_get) {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        /* The size must be set before COPYPOSTFIELDS, which copies that many bytes. */
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(text ? strlen(text) : 0));
        curl_easy_setopt(c->curl, CURLOPT_COPYPOSTFIELDS, text ? text : "");
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "POST") == 0 ? NULL : method);
    }
    c->errbuf[0] = '\0';
    cc = curl_easy_perform(c->curl);
    if (cc != CURLE_OK) {
        if (out.too_big)
            rc = jp_err_set(err, JP_ETOOBIG, "response from %s is larger than %zu bytes", c->base,
                            (size_t)JP_CLIENT_MAX_RESPONSE);
        else if (cc == CURLE_ABORTED_BY_CALLBACK && c->interrupt && *c->interrupt)
            rc = jp_err_set(err, JP_ECANCELLED, "request to %s interrupted", c->base);
        else
            rc = transport_error(c, cc, err);
        goto out;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (out.buf.len > 0)
        parsed = json_loadb(out.buf.data, out.buf.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    *ret_status = status;
    *ret_body = parsed;
out:
    jp_buf_done(&out.buf);
    free(text);
    free(url);
    return rc;
}

char *jp_client_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *e = jp_xmalloc(3 * n + 1), *p = e;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        /* RFC 3986 unreserved characters stay as they are. */
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        }
    }
    *p = '\0';
    return e;
}

static int code_by_name(const char *name)
{
#define JP_X_NAME(n, value, api, http) \
    if (strcmp(name, api) == 0)        \
        return n;
    JP_ERRORS(JP_X_NAME)
#undef JP_X_NAME
    return 0;
}

static int code_by_status(long status)
{
#define JP_X_STATUS(n, value, api, http) \
    if (status == http)                  \
        return n;
    JP_ERRORS(JP_X_STATUS)
#undef JP_X_STATUS
    return JP_EINTERNAL;
}

/* Replaces control characters so a server's text cannot break the one-line
 * error or drive the terminal. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

int jp_client_api_error(long status, const json_t *body, jp_err *err)
{
    const json_t *e = json_is_object(body) ? json_object_get(body, "error") : NULL;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    int rc, room;

    if (!code && !msg) {
        rc = code_by_status(status);
        return jp_err_set(err, rc, "server answered HTTP %ld (%s)", status, jp_err_api_code(rc));
    }
    if (!code)
        code = jp_err_api_code(code_by_status(status));
    rc = code_by_name(code);
    if (rc == 0)
        rc = code_by_status(status);
    /* Shorten a long message, never the code a script may look for. */
    room = JP_ERR_MSG_MAX - 4 - (int)strnlen(code, 64);
    jp_err_set(err, rc, "%.*s (%.64s)", room, msg ? msg : "request failed", code);
    if (err)
        one_line(err->msg);
    return rc;
}
