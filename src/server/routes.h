/* The API routes: one jp_http_handler for every request. */
#ifndef JP_SERVER_ROUTES_H
#define JP_SERVER_ROUTES_H

#include "server/app.h"
#include "server/http.h"

/* `arg` is the jp_app. */
void jp_routes_handle(void *arg, const jp_req *req, jp_resp *resp);

#endif
