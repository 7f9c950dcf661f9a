/* The http strategy: one HTTP(S) request with libcurl, bounded by the task's
 * deadline and cancellation, with optional extraction of values from the
 * response by JSON pointer or XPath. */
#include "engine/strategies/strategies.h"

#include "core/jtime.h"
#include "core/mem.h"

#include <curl/curl.h>
#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xpath.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define URL_MAX (64 * 1024)
#define HEADERS_MAX 100
#define HEADER_NAME_MAX 256
#define HEADER_VALUE_MAX (64 * 1024)
#define EXPECT_MAX 64
#define EXTRACT_MAX 64
#define EXPR_MAX 4096
#define RESPONSE_HEADERS_MAX 256
#define REDIRECTS_MAX 5
/* Bounds on what an extraction can produce from one response. */
#define XPATH_NODES_MAX 1000
#define XPATH_TEXT_MAX ((size_t)16 << 20)
#define XPATH_OPS_MAX 10000000UL /* steps of evaluation: bounds the CPU one expression takes */

static const char *const known_fields[] = {
    "method", "url", "headers", "body", "expect_status", "extract", "max_body_bytes", NULL,
};

/* The request, validated. */
typedef struct request {
    char method[17];
    const char *url;            /* borrowed from the payload */
    struct curl_slist *headers; /* owned */
    bool has_body;
    const char *body; /* borrowed, or `owned_body` */
    size_t body_len;
    char *owned_body;
    json_int_t expect[EXPECT_MAX];
    size_t n_expect;       /* 0 = any 2xx */
    const json_t *extract; /* borrowed; NULL = none */
    size_t cap;            /* bytes of body kept */
} request;

/* What came back, filled in by curl's callbacks. */
typedef struct response {
    jp_buf body;
    size_t cap;
    bool truncated;  /* the body went past cap and the transfer was cut */
    json_t *headers; /* lowercased name -> value, of the last response */
    jp_task *task;
} response;

static void silent_generic(void *ctx, const char *msg, ...)
{
}

static void silent_structured(void *ctx, xmlErrorPtr error)
{
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
}

/* The libraries' set-up (OpenSSL's among it) costs a process about 2 MiB
 * that an engine which never runs an http job would carry for nothing, so it
 * waits for the first run. That needs a curl whose global init is
 * thread-safe; with an older one it happens here, single-threaded. */
void jp_http_global_init(void)
{
#ifdef CURL_VERSION_THREADSAFE
    if (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_THREADSAFE)
        return;
#endif
    pthread_once(&lib_once, lib_init);
}

/* ---- payload ---- */

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int parse_headers(const json_t *h, request *rq, bool *ret_has_ct, jp_outcome *out)
{
    const char *name;
    json_t *value;

    if (!json_is_object(h))
        return jp_engine_bad_payload(out, "headers must be an object of strings");
    if (json_object_size(h) > HEADERS_MAX)
        return jp_engine_bad_payload(out, "headers has %zu entries (at most %d)",
                                     json_object_size(h), HEADERS_MAX);
    json_object_foreach((json_t *)h, name, value) {
        size_t nlen = strlen(name);
        if (nlen == 0 || nlen > HEADER_NAME_MAX)
            return jp_engine_bad_payload(out, "header name \"%.64s\" is empty or too long", name);
        for (size_t i = 0; i < nlen; i++) {
            if (name[i] == '\r' || name[i] == '\n')
                return jp_engine_bad_payload(out, "header name \"%.64s\" must not contain CR or LF",
                                             name);
            if (!tchar((unsigned char)name[i]))
                return jp_engine_bad_payload(out, "header name \"%.64s\" is not a valid token",
                                             name);
        }
        if (!json_is_string(value))
            return jp_engine_bad_payload(out, "headers.%s must be a string", name);
        const char *v = json_string_value(value);
        size_t vlen = json_string_length(value);
        if (vlen > HEADER_VALUE_MAX)
            return jp_engine_bad_payload(out, "headers.%s is too long (at most %d bytes)", name,
                                         HEADER_VALUE_MAX);
        if (memchr(v, '\r', vlen) || memchr(v, '\n', vlen) || strlen(v) != vlen)
            return jp_engine_bad_payload(out, "headers.%s must not contain CR, LF or NUL", name);
        if (strcasecmp(name, "content-type") == 0)
            *ret_has_ct = true;
        /* "Name;" is curl's way to send a header with an empty value ("Name:" removes it). */
        char *line = vlen ? jp_xasprintf("%s: %s", name, v) : jp_xasprintf("%s;", name);
        rq->headers = curl_slist_append(rq->headers, line);
        free(line);
    }
    return 0;
}

static int parse_expect(const json_t *v, request *rq, jp_outcome *out)
{
    const json_t *one[1] = {v};
    size_t n = 1;

    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n == 0 || n > EXPECT_MAX)
            return jp_engine_bad_payload(out, "expect_status must list 1 to %d statuses",
                                         EXPECT_MAX);
    } else if (!json_is_integer(v)) {
        return jp_engine_bad_payload(out,
                                     "expect_status must be an integer or an array of integers");
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
        if (!json_is_integer(s) || json_integer_value(s) < 100 || json_integer_value(s) > 599)
            return jp_engine_bad_payload(out,
                                         "expect_status values must be integers from 100 to 599");
        rq->expect[rq->n_expect++] = json_integer_value(s);
    }
    return 0;
}

static int parse_extract(const json_t *v, request *rq, jp_outcome *out)
{
    const char *name;
    json_t *expr;

    if (!json_is_object(v))
        return jp_engine_bad_payload(out,
                                     "extract must be an object of name: XPath or JSON pointer");
    if (json_object_size(v) > EXTRACT_MAX)
        return jp_engine_bad_payload(out, "extract has %zu entries (at most %d)",
                                     json_object_size(v), EXTRACT_MAX);
    json_object_foreach((json_t *)v, name, expr) {
        if (!json_is_string(expr))
            return jp_engine_bad_payload(out, "extract.%.64s must be a string", name);
        if (json_string_length(expr) > EXPR_MAX ||
            strlen(json_string_value(expr)) != json_string_length(expr))
            return jp_engine_bad_payload(out, "extract.%.64s is too long or contains NUL", name);
    }
    rq->extract = json_object_size(v) ? v : NULL;
    return 0;
}

static int parse_url(const json_t *v, request *rq, jp_outcome *out)
{
    CURLU *u = NULL;
    char *scheme = NULL;
    int rc = -1;

    if (!v)
        return jp_engine_bad_payload(out, "url is required");
    if (!json_is_string(v))
        return jp_engine_bad_payload(out, "url must be a string");
    const char *url = json_string_value(v);
    if (json_string_length(v) > URL_MAX || strlen(url) != json_string_length(v))
        return jp_engine_bad_payload(out, "url is too long or contains NUL");
    u = curl_url();
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc) {
        jp_engine_bad_payload(out, "url \"%.200s\" is not an absolute http(s) URL: %s", url,
                              curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) || !scheme ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        jp_engine_bad_payload(out, "url scheme must be http or https, not \"%.32s\"",
                              scheme ? scheme : "");
        goto out;
    }
    rq->url = url;
    rc = 0;
out:
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

static int parse(const jp_http_conf *conf, const json_t *payload, request *rq, jp_outcome *out)
{
    bool has_ct = false;
    const json_t *v;

    if (!json_is_object(payload))
        return jp_engine_bad_payload(out, "payload must be an object with a \"url\"");
    if (jp_engine_check_fields(payload, known_fields, out) < 0)
        return -1;

    strcpy(rq->method, "GET");
    v = json_object_get(payload, "method");
    if (v && !json_is_null(v)) {
        const char *m = json_string_value(v);
        size_t len = m ? json_string_length(v) : 0;
        bool ok = m && len >= 1 && len <= 16 && strlen(m) == len;
        for (size_t i = 0; ok && i < len; i++)
            ok = m[i] >= 'A' && m[i] <= 'Z';
        if (!ok)
            return jp_engine_bad_payload(out,
                                         "method must be 1 to 16 capital letters, like \"GET\"");
        memcpy(rq->method, m, len + 1);
    }

    if (parse_url(json_object_get(payload, "url"), rq, out) < 0)
        return -1;

    v = json_object_get(payload, "headers");
    if (v && !json_is_null(v) && parse_headers(v, rq, &has_ct, out) < 0)
        return -1;

    v = json_object_get(payload, "body");
    if (v && !json_is_null(v)) {
        rq->has_body = true;
        if (json_is_string(v)) {
            rq->body = json_string_value(v);
            rq->body_len = json_string_length(v);
        } else {
            rq->owned_body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!rq->owned_body)
                return jp_engine_bad_payload(out, "body cannot be encoded as JSON");
            rq->body = rq->owned_body;
            rq->body_len = strlen(rq->owned_body);
            if (!has_ct)
                rq->headers = curl_slist_append(rq->headers, "Content-Type: application/json");
        }
    }

    v = json_object_get(payload, "expect_status");
    if (v && !json_is_null(v) && parse_expect(v, rq, out) < 0)
        return -1;

    v = json_object_get(payload, "extract");
    if (v && !json_is_null(v) && parse_extract(v, rq, out) < 0)
        return -1;

    rq->cap = conf->max_body;
    v = json_object_get(payload, "max_body_bytes");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return jp_engine_bad_payload(out, "max_body_bytes must be a non-negative integer");
        if ((unsigned long long)json_integer_value(v) < rq->cap)
            rq->cap = (size_t)json_integer_value(v);
    }
    return 0;
}

/* ---- transfer ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    response *r = ud;
    size_t len = size * n;
    size_t room = r->cap > r->body.len ? r->cap - r->body.len : 0;
    size_t keep = len < room ? len : room;

    if (keep)
        jp_buf_append(&r->body, p, keep);
    if (keep < len) {
        /* Enough: what follows would be thrown away, so stop the transfer. */
        r->truncated = true;
        return CURL_WRITEFUNC_ERROR;
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    response *r = ud;
    size_t len = size * n;

    /* A status line starts each response of a redirect chain (and 1xx ones). */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        json_object_clear(r->headers);
        return len;
    }
    char *colon = memchr(p, ':', len);
    if (!colon || colon == p || p[0] == ' ' || p[0] == '\t' ||
        json_object_size(r->headers) >= RESPONSE_HEADERS_MAX)
        return len;
    size_t nlen = (size_t)(colon - p);
    char *name = jp_xstrndup(p, nlen);
    for (size_t i = 0; i < nlen; i++)
        if (name[i] >= 'A' && name[i] <= 'Z')
            name[i] = (char)(name[i] - 'A' + 'a');
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    json_t *value = jp_engine_utf8_string(v, (size_t)(end - v));
    json_t *key = jp_engine_utf8_string(name, nlen);
    json_object_set_new(r->headers, json_string_value(key), value);
    json_decref(key);
    free(name);
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    response *r = ud;
    return jp_task_cancelled(r->task) ? 1 : 0;
}

static void setup(CURL *h, const request *rq, response *r, char *errbuf, int64_t timeout_ms)
{
    curl_easy_setopt(h, CURLOPT_URL, rq->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)REDIRECTS_MAX);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > LONG_MAX ? LONG_MAX : timeout_ms));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "jobplane");
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);

    bool is_get = strcmp(rq->method, "GET") == 0, is_head = strcmp(rq->method, "HEAD") == 0;
    if (rq->has_body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
    } else if (!strcmp(rq->method, "POST") || !strcmp(rq->method, "PUT") ||
               !strcmp(rq->method, "PATCH")) {
        /* Sends Content-Length: 0, which some servers insist on. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    if (is_head)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (!(is_get && !rq->has_body) && strcmp(rq->method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, rq->headers);
}

/* Runs the transfer on a private multi handle so the wait can also watch the
 * task's cancel fd: cancellation is seen at once, not at curl's next tick.
 * Returns the transfer's CURLcode; *ret_why is "cancelled" or "timeout" when
 * the task stopped it. */
static CURLcode perform(CURL *h, jp_task *task, const char **ret_why)
{
    CURLM *m = curl_multi_init();
    CURLcode res = CURLE_OK;
    bool done = false;
    int still = 1;

    *ret_why = NULL;
    if (!m)
        return CURLE_OUT_OF_MEMORY;
    curl_multi_add_handle(m, h);
    for (;;) {
        if (curl_multi_perform(m, &still) != CURLM_OK || !still)
            break;
        if (jp_task_cancelled(task)) {
            *ret_why = "cancelled";
            break;
        }
        if (jp_task_remaining_ms(task) == 0) {
            *ret_why = "timeout";
            break;
        }
        int cfd = jp_task_cancel_fd(task);
        struct curl_waitfd wfd = {.fd = cfd, .events = CURL_WAIT_POLLIN};
        curl_multi_poll(m, cfd >= 0 ? &wfd : NULL, cfd >= 0 ? 1 : 0,
                        jp_engine_poll_timeout(task, 1000), NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) {
            res = msg->data.result;
            done = true;
        }
    curl_multi_remove_handle(m, h);
    curl_multi_cleanup(m);
    if (!done && !*ret_why)
        res = CURLE_FAILED_INIT;
    return res;
}

/* ---- extraction ---- */

/* Looks up RFC 6901 pointer `ptr` in doc. Returns 0 with *ret (borrowed; NULL
 * when absent) or -1 for a malformed pointer. */
static int pointer_get(json_t *doc, const char *ptr, json_t **ret)
{
    json_t *cur = doc;
    jp_buf tok;

    if (*ptr != '/' && *ptr != '\0')
        return -1;
    jp_buf_init(&tok, 0);
    while (*ptr == '/') {
        ptr++;
        tok.len = 0;
        jp_buf_append(&tok, "", 0);
        for (; *ptr && *ptr != '/'; ptr++) {
            char c = *ptr;
            if (c == '~') {
                if (ptr[1] == '0')
                    c = '~';
                else if (ptr[1] == '1')
                    c = '/';
                else {
                    jp_buf_done(&tok);
                    return -1;
                }
                ptr++;
            }
            jp_buf_append(&tok, &c, 1);
        }
        if (!cur)
            continue;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok.data, tok.len);
        } else if (json_is_array(cur)) {
            size_t idx = 0;
            bool ok = tok.len > 0 && (tok.len == 1 || tok.data[0] != '0');
            for (size_t i = 0; ok && i < tok.len; i++) {
                ok = tok.data[i] >= '0' && tok.data[i] <= '9' && idx <= (SIZE_MAX - 9) / 10;
                idx = idx * 10 + (size_t)(tok.data[i] - '0');
            }
            cur = ok ? json_array_get(cur, idx) : NULL;
        } else {
            cur = NULL;
        }
    }
    jp_buf_done(&tok);
    *ret = cur;
    return 0;
}

/* Text of a node, with surrounding whitespace trimmed. New reference. */
static json_t *node_text(xmlNodePtr node)
{
    xmlChar *content = xmlNodeGetContent(node);
    const char *s = content ? (const char *)content : "";
    size_t len = strlen(s);

    while (len && strchr(" \t\r\n\f\v", s[len - 1]))
        len--;
    while (len && strchr(" \t\r\n\f\v", *s))
        s++, len--;
    json_t *v = jp_engine_utf8_string(s, len);
    xmlFree(content);
    return v;
}

static json_t *xpath_value(xmlXPathObjectPtr obj)
{
    switch (obj->type) {
    case XPATH_NODESET: {
        int n = obj->nodesetval ? obj->nodesetval->nodeNr : 0;
        if (n == 0)
            return json_null();
        if (n == 1)
            return node_text(obj->nodesetval->nodeTab[0]);
        json_t *arr = json_array();
        size_t total = 0;
        for (int i = 0; i < n && i < XPATH_NODES_MAX && total < XPATH_TEXT_MAX; i++) {
            json_t *t = node_text(obj->nodesetval->nodeTab[i]);
            total += json_string_length(t);
            json_array_append_new(arr, t);
        }
        return arr;
    }
    case XPATH_BOOLEAN:
        return json_boolean(obj->boolval);
    case XPATH_NUMBER: {
        double d = obj->floatval;
        if (d != d || d > 9e15 || d < -9e15) {
            json_t *r = json_real(d); /* NULL for NaN and infinities, which JSON lacks */
            return r ? r : json_null();
        }
        if (d == (double)(json_int_t)d)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case XPATH_STRING: {
        const char *s = obj->stringval ? (const char *)obj->stringval : "";
        return jp_engine_utf8_string(s, strlen(s));
    }
    default:
        return json_null();
    }
}

/* The charset parameter of a Content-Type, or NULL. The copy is the caller's. */
static char *content_charset(const json_t *headers)
{
    const char *ct = json_string_value(json_object_get(headers, "content-type"));
    const char *p = ct ? strcasestr(ct, "charset=") : NULL;
    if (!p)
        return NULL;
    p += 8;
    if (*p == '"')
        p++;
    size_t len = strcspn(p, "\"; \t");
    return len && len < 64 ? jp_xstrndup(p, len) : NULL;
}

static bool valid_utf8(const char *p, size_t len)
{
    json_t *probe = json_stringn(p, len);
    bool ok = probe != NULL;
    json_decref(probe);
    return ok;
}

/* Evaluates every extract expression against the raw body. Returns 0 with
 * *ret (new object) or -1 with out->error set. */
static int extract_all(const request *rq, response *r, json_t **ret, jp_outcome *out)
{
    json_t *doc_json = NULL, *res = json_object();
    htmlDocPtr doc = NULL;
    bool json_tried = false, html_tried = false;
    const char *name;
    json_t *expr_v;
    int rc = -1;

    /* Per-thread handlers: libxml2 would otherwise print every parse complaint. */
    xmlSetStructuredErrorFunc(NULL, silent_structured);
    xmlSetGenericErrorFunc(NULL, silent_generic);

    json_object_foreach((json_t *)rq->extract, name, expr_v) {
        const char *expr = json_string_value(expr_v);
        /* "" and "/a/b" are JSON pointers; "//title" (an empty first key
         * is no real use) and everything else is XPath. */
        if (expr[0] == '\0' || (expr[0] == '/' && expr[1] != '/')) {
            json_t *v = NULL;
            if (!json_tried) {
                json_tried = true;
                doc_json = json_loadb(r->body.data ? r->body.data : "", r->body.len,
                                      JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            }
            if (!doc_json) {
                jp_engine_fail(out, "extract_failed", false,
                               "extract.%.64s: \"%.200s\" is a JSON pointer but the response "
                               "body is not JSON (for HTML, use an XPath such as \"//title\")",
                               name, expr);
                goto out;
            }
            if (pointer_get(doc_json, expr, &v) < 0) {
                jp_engine_fail(out, "extract_failed", false,
                               "extract.%.64s: \"%.200s\" is not a valid JSON pointer", name, expr);
                goto out;
            }
            json_object_set(res, name, v ? v : json_null());
            continue;
        }
        xmlXPathContextPtr ctx = NULL;
        xmlXPathCompExprPtr comp = NULL;
        xmlXPathObjectPtr obj = NULL;
        if (!html_tried) {
            html_tried = true;
            if (r->body.len > 0 && r->body.len < INT_MAX) {
                char *charset = content_charset(r->headers);
                const char *enc = charset                                 ? charset
                                  : valid_utf8(r->body.data, r->body.len) ? "UTF-8"
                                                                          : NULL;
                doc = htmlReadMemory(r->body.data, (int)r->body.len, NULL, enc,
                                     HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET |
                                         HTML_PARSE_RECOVER);
                free(charset);
            }
        }
        ctx = xmlXPathNewContext(doc);
        if (ctx)
            ctx->opLimit = XPATH_OPS_MAX;
        comp = ctx ? xmlXPathCtxtCompile(ctx, (const xmlChar *)expr) : NULL;
        if (!comp) {
            xmlXPathFreeContext(ctx);
            jp_engine_fail(out, "extract_failed", false,
                           "extract.%.64s: \"%.200s\" is not a valid XPath expression", name, expr);
            goto out;
        }
        if (doc) {
            obj = xmlXPathCompiledEval(comp, ctx);
            if (!obj) {
                xmlXPathFreeCompExpr(comp);
                xmlXPathFreeContext(ctx);
                jp_engine_fail(out, "extract_failed", false,
                               "extract.%.64s: XPath \"%.200s\" could not be evaluated (unknown "
                               "function or too costly)",
                               name, expr);
                goto out;
            }
            json_object_set_new(res, name, xpath_value(obj));
        } else {
            json_object_set_new(res, name, json_null());
        }
        xmlXPathFreeObject(obj);
        xmlXPathFreeCompExpr(comp);
        xmlXPathFreeContext(ctx);
    }
    *ret = res;
    res = NULL;
    rc = 0;
out:
    json_decref(res);
    json_decref(doc_json);
    xmlFreeDoc(doc);
    return rc;
}

/* ---- the strategy ---- */

static bool status_expected(const request *rq, long status)
{
    if (rq->n_expect == 0)
        return status >= 200 && status <= 299;
    for (size_t i = 0; i < rq->n_expect; i++)
        if (rq->expect[i] == status)
            return true;
    return false;
}

static void expected_text(const request *rq, char *buf, size_t size)
{
    size_t off = 0;

    if (rq->n_expect == 0) {
        snprintf(buf, size, "2xx");
        return;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < rq->n_expect && off + 8 < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%lld", i ? ", " : "",
                                (long long)rq->expect[i]);
}

static int http_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    const jp_http_conf *conf = ctx;
    request rq = {0};
    response r = {0};
    CURL *h = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    const char *why = NULL;
    long status = 0;
    int rc = -1;

    pthread_once(&lib_once, lib_init);
    jp_buf_init(&r.body, 0);
    r.headers = json_object();
    r.task = task;
    if (parse(conf, payload, &rq, out) < 0)
        goto out;
    r.cap = rq.cap;

    h = curl_easy_init();
    if (!h) {
        jp_engine_fail(out, "internal", true, "cannot create an HTTP client handle");
        goto out;
    }
    int64_t remaining = jp_task_remaining_ms(task);
    setup(h, &rq, &r, errbuf, remaining > 0 ? remaining : 1);

    int64_t start = jp_mono_ms();
    CURLcode res = perform(h, task, &why);
    int64_t duration = jp_mono_ms() - start;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

    if (res == CURLE_WRITE_ERROR && r.truncated)
        res = CURLE_OK;
    if (status > 0) {
        json_t *result = json_object();
        json_object_set_new(result, "status", json_integer(status));
        json_object_set(result, "headers", r.headers);
        json_object_set_new(result, "body", jp_engine_utf8_string(r.body.data, r.body.len));
        json_object_set_new(result, "truncated", json_boolean(r.truncated));
        json_object_set_new(result, "extracted", json_null());
        json_object_set_new(result, "duration_ms", json_integer(duration));
        out->result = result;
    }

    if ((why && strcmp(why, "cancelled") == 0) ||
        (res == CURLE_ABORTED_BY_CALLBACK && jp_task_cancelled(task))) {
        jp_engine_fail(out, "cancelled", false, "%s %.200s: cancelled after %lld ms", rq.method,
                       rq.url, (long long)duration);
        goto out;
    }
    if (why || res == CURLE_OPERATION_TIMEDOUT) {
        jp_engine_fail(out, "timeout", true, "%s %.200s: timed out after %lld ms", rq.method,
                       rq.url, (long long)duration);
        goto out;
    }
    if (res != CURLE_OK) {
        /* Requests that can never work, whatever the other end does. */
        bool permanent = res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_URL_MALFORMAT ||
                         res == CURLE_TOO_MANY_REDIRECTS;
        jp_engine_fail(out, "http_error", !permanent, "%s %.200s: %s", rq.method, rq.url,
                       errbuf[0] ? errbuf : curl_easy_strerror(res));
        goto out;
    }
    if (!out->result) {
        jp_engine_fail(out, "http_error", true, "%s %.200s: no response", rq.method, rq.url);
        goto out;
    }
    if (!status_expected(&rq, status)) {
        char want[256];
        expected_text(&rq, want, sizeof want);
        jp_engine_fail(out, "http_status", status >= 500 || status == 429,
                       "%s %.200s: status %ld (expected %s)", rq.method, rq.url, status, want);
        goto out;
    }
    if (rq.extract) {
        json_t *extracted = NULL;
        if (extract_all(&rq, &r, &extracted, out) < 0)
            goto out;
        json_object_set_new(out->result, "extracted", extracted);
    }
    rc = 0;
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(rq.headers);
    free(rq.owned_body);
    jp_buf_done(&r.body);
    json_decref(r.headers);
    return rc;
}

jp_strategy jp_strategy_http(jp_http_conf *ctx)
{
    return (jp_strategy){.abi = JP_STRATEGY_ABI, .name = "http", .ctx = ctx, .run = http_run};
}
