/* libmicrohttpd glue: one thread per connection (handlers may wait for a
 * group commit without stalling other clients), bounded connections and
 * idle time, request bodies collected up to a ceiling. */
#include "server/http.h"

#include "core/mem.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct jp_http {
    struct MHD_Daemon *daemon;
    jp_http_handler handler;
    void *arg;
    size_t max_body;
    char address[128];
};

typedef struct reqctx {
    jp_buf body;
    bool too_big;
    bool answered;  /* a response was queued before the body ended */
} reqctx;

void jp_resp_json(jp_resp *resp, int status, json_t *json)
{
    json_decref(resp->json);
    resp->status = status;
    resp->json = json;
}

static void set_error(jp_resp *resp, int code, const char *msg)
{
    json_t *m = json_string(msg);
    if (!m) {
        /* The message quotes client input that is not UTF-8. */
        char safe[JP_ERR_MSG_MAX];
        size_t i;
        for (i = 0; msg[i] && i < sizeof safe - 1; i++)
            safe[i] = (unsigned char)msg[i] < 0x80 ? msg[i] : '?';
        safe[i] = '\0';
        m = json_string(safe);
    }
    jp_resp_json(resp, jp_err_http_status(code),
                 json_pack("{s:{s:s,s:o}}", "error", "code", jp_err_api_code(code), "message", m));
}

void jp_resp_error(jp_resp *resp, int code, const char *fmt, ...)
{
    char msg[JP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_error(resp, code, msg);
}

void jp_resp_err(jp_resp *resp, const jp_err *err)
{
    set_error(resp, err->code ? err->code : JP_EINTERNAL, jp_err_msg(err));
}

const char *jp_req_query(const jp_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *jp_req_header(const jp_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, jp_resp *resp)
{
    char *text = NULL;
    size_t len = 0;
    if (resp->json) {
        text = json_dumps(resp->json, JSON_COMPACT);
        if (text) {
            len = strlen(text);
            text[len] = '\0';
        }
    }
    if (!text) {
        text = jp_xstrdup("{}");
        len = 2;
    }
    /* A trailing newline makes curl output readable at a shell. */
    char *body = jp_xrealloc(text, len + 2);
    body[len++] = '\n';
    body[len] = '\0';
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (resp->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)(resp->status ? resp->status : 200), r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_too_big(struct MHD_Connection *conn, jp_http *h)
{
    jp_resp resp = {0};
    jp_resp_error(&resp, JP_ETOOBIG, "request body is larger than %zu bytes", h->max_body);
    enum MHD_Result ret = send_resp(conn, &resp);
    json_decref(resp.json);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    jp_http *h = cls;
    reqctx *ctx = *con_cls;
    (void)version;

    if (!ctx) {
        ctx = jp_xcalloc(1, sizeof *ctx);
        jp_buf_init(&ctx->body, h->max_body);
        *con_cls = ctx;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (*end == '\0' && n > h->max_body) {
                /* Refuse before reading: a liar about the length gains nothing. */
                ctx->too_big = ctx->answered = true;
                return answer_too_big(conn, h);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!ctx->too_big && jp_buf_append(&ctx->body, upload_data, *upload_data_size) < 0) {
            ctx->too_big = true;
            jp_buf_done(&ctx->body);
        }
        /* Past the ceiling the rest is read and dropped: the 413 goes out
         * when the body ends (or the idle timeout cuts a sender that never
         * stops), and nothing more is kept in memory. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (ctx->answered)
        return MHD_YES;
    if (ctx->too_big)
        return answer_too_big(conn, h);

    jp_req req = {
        .conn = conn,
        .method = method,
        .path = url,
        .body = ctx->body.len ? ctx->body.data : "",
        .body_len = ctx->body.len,
    };
    jp_resp resp = {.status = 200};
    h->handler(h->arg, &req, &resp);
    enum MHD_Result ret = send_resp(conn, &resp);
    json_decref(resp.json);
    return ret;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes in place like libmicrohttpd's default, except that %00
 * stays as it is: a decoded NUL would cut the path short and make
 * "/jobs/<id>%00/cancel" look like "/jobs/<id>". */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *r = s, *w = s;
    (void)cls;
    (void)conn;
    while (*r) {
        int hi, lo;
        if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    reqctx *ctx = *con_cls;
    (void)cls;
    (void)conn;
    (void)toe;
    if (ctx) {
        jp_buf_done(&ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

/* Parses "host:port", "[v6]:port" or ":port" (all interfaces). */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        bool *v6, jp_err *err)
{
    char host[64] = "";
    const char *port_s;
    memset(ss, 0, sizeof *ss);
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof host)
            return jp_err_set(err, JP_EINVAL, "bad listen address \"%s\"", listen);
        memcpy(host, listen + 1, (size_t)(close - listen - 1));
        port_s = close + 2;
        *v6 = true;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof host)
            return jp_err_set(err, JP_EINVAL, "bad listen address \"%s\" (want host:port)",
                              listen);
        memcpy(host, listen, (size_t)(colon - listen));
        port_s = colon + 1;
        *v6 = false;
    }
    char *end;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535)
        return jp_err_set(err, JP_EINVAL, "bad port in listen address \"%s\"", listen);
    if (*v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return jp_err_set(err, JP_EINVAL, "bad IPv6 address in \"%s\"", listen);
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (!host[0])
            a->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (strcmp(host, "localhost") == 0)
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return jp_err_set(err, JP_EINVAL, "bad IPv4 address in \"%s\"", listen);
        *len = sizeof *a;
    }
    return 0;
}

int jp_http_start(const jp_http_config *cfg, jp_http_handler handler, void *arg,
                  jp_http **ret_http, jp_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    bool v6 = false;
    int rc = parse_listen(cfg->listen, &ss, &sslen, &v6, err);
    if (rc < 0)
        return rc;

    jp_http *h = jp_xcalloc(1, sizeof *h);
    h->handler = handler;
    h->arg = arg;
    h->max_body = cfg->max_body_bytes;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, h,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1024 * 1024),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_END);
    if (!h->daemon) {
        free(h);
        return jp_err_set(err, JP_EUNAVAIL, "cannot listen on %s (address in use?)",
                          cfg->listen);
    }
    /* With port 0 the kernel picked one: report what was bound. */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : 0;
    char host[64];
    if (v6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
    snprintf(h->address, sizeof h->address, v6 ? "[%s]:%u" : "%s:%u", host, port);
    *ret_http = h;
    return 0;
}

const char *jp_http_address(const jp_http *h)
{
    return h->address;
}

void jp_http_stop(jp_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
