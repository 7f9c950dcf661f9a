/* A small HTTP client of the jobplane API: one connection kept alive across
 * requests, JSON bodies in and out, an optional bearer token. */
#ifndef JP_CLIENT_CLIENT_H
#define JP_CLIENT_CLIENT_H

#include "core/err.h"

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>

/* Ceiling on one response body (bytes): a list of 1000 jobs with large
 * results fits; a runaway server cannot exhaust memory. */
#define JP_CLIENT_MAX_RESPONSE ((size_t)256 << 20)

typedef struct jp_client jp_client;

/* Process-wide set-up and tear-down of the HTTP library: call once before the
 * first jp_client_new (while single-threaded) and once after the last free. */
int jp_client_global_init(jp_err *err);
void jp_client_global_cleanup(void);

/* A client of the server at `base_url` ("http://host:port", optionally with a
 * path prefix; a trailing slash is ignored). `token`, if not NULL, is sent as
 * "Authorization: Bearer <token>". Both strings are copied. Returns 0 and
 * *ret_client (free with jp_client_free), or JP_EINVAL when the URL is not
 * http(s) or the token contains control characters. */
int jp_client_new(const char *base_url, const char *token, jp_client **ret_client, jp_err *err);

/* Frees the client and closes its connection. NULL is fine. */
void jp_client_free(jp_client *c);

/* The base URL as used (without a trailing slash). */
const char *jp_client_url(const jp_client *c);

/* Limits each following request to `ms` milliseconds in all (0 = no limit,
 * the default). Connecting is always limited to 10 s. */
void jp_client_set_timeout(jp_client *c, long ms);

/* Makes each following request give up soon (within about a second) after
 * *flag becomes non-zero, typically set by a signal handler; NULL turns this
 * off. The flag is the caller's and must outlive the client's requests. */
void jp_client_set_interrupt(jp_client *c, const volatile sig_atomic_t *flag);

/* Sends `method` to base URL + `path` (which starts with "/" and is already
 * escaped; see jp_client_escape), with `body` as JSON if not NULL (not allowed
 * with GET). For any HTTP response, whatever its status, returns 0 with
 * *ret_status and *ret_body: a new reference, or NULL when the body was empty
 * or not JSON. Errors, with nothing written to the out-params:
 *   JP_EUNAVAIL  the server could not be reached or the exchange broke off
 *                ("cannot reach http://127.0.0.1:8080: Connection refused");
 *                no other code means that;
 *   JP_ETOOBIG   the response is larger than JP_CLIENT_MAX_RESPONSE;
 *   JP_ECANCELLED the interrupt flag was set (jp_client_set_interrupt);
 *   JP_EINVAL    a body with GET, or a body that cannot be encoded;
 *   JP_EINTERNAL libcurl could not make a handle (made at the first request,
 *                so that a client that never sends carries no TLS library). */
int jp_client_request(jp_client *c, const char *method, const char *path, const json_t *body,
                      long *ret_status, json_t **ret_body, jp_err *err);

/* `s` percent-encoded for use as one path segment or query value. Never
 * NULL; the caller frees it with free(). */
char *jp_client_escape(const char *s);

/* Describes a non-2xx response: sets `err` to "<message> (<code>)" from the
 * API's {"error":{"code","message"}} body (control characters replaced, so it
 * stays one line), or to "server answered HTTP <status>" when the body has no
 * such error. Returns the JP_E* code whose API name is <code>, else the one
 * whose HTTP status is `status`, else JP_EINTERNAL. */
int jp_client_api_error(long status, const json_t *body, jp_err *err);

#endif
