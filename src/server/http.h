/* The HTTP front: libmicrohttpd with a thread per connection, bodies
 * collected under a size ceiling, JSON responses. Routing is the caller's:
 * one handler sees every complete request. */
#ifndef JP_SERVER_HTTP_H
#define JP_SERVER_HTTP_H

#include "core/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jp_http jp_http;

typedef struct jp_req {
    void *conn;              /* the MHD connection, for query and header lookups */
    const char *method;
    const char *path;        /* percent-decoded, without the query */
    const char *body;        /* NUL-terminated; "" when none */
    size_t body_len;
} jp_req;

typedef struct jp_resp {
    int status;              /* HTTP status; 200 unless set */
    json_t *json;            /* owned; the body */
    const char *allow;       /* Allow header for 405, static string */
} jp_resp;

typedef void (*jp_http_handler)(void *arg, const jp_req *req, jp_resp *resp);

typedef struct jp_http_config {
    const char *listen;      /* "host:port", "[v6]:port" or ":port" */
    size_t max_body_bytes;
    unsigned max_connections;
    unsigned idle_timeout_s;
} jp_http_config;

/* Starts serving. JP_EINVAL for a bad listen address, JP_EUNAVAIL when it
 * cannot bind. *ret_bound is the address actually bound (static storage
 * inside the jp_http). */
int jp_http_start(const jp_http_config *cfg, jp_http_handler handler, void *arg,
                  jp_http **ret_http, jp_err *err);
/* The bound address ("127.0.0.1:8080"). */
const char *jp_http_address(const jp_http *h);
/* Stops accepting, closes connections, frees. NULL is fine. */
void jp_http_stop(jp_http *h);

/* A query argument, or NULL. */
const char *jp_req_query(const jp_req *req, const char *name);
/* A request header, or NULL. */
const char *jp_req_header(const jp_req *req, const char *name);

/* Sets an error response: status from the code, body {"error":{code,message}}. */
void jp_resp_error(jp_resp *resp, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same from a jp_err. */
void jp_resp_err(jp_resp *resp, const jp_err *err);
/* Sets a JSON response with `status`, taking the reference to `json`. */
void jp_resp_json(jp_resp *resp, int status, json_t *json);

#endif
