/* Aborting allocators and the bounded growable buffer. */
#include "core/mem.h"

#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "jobplane: out of memory allocating %zu bytes\n", n);
    abort();
}

void *jp_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *jp_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *jp_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *jp_xstrdup(const char *s)
{
    return s ? jp_xstrndup(s, strlen(s)) : NULL;
}

char *jp_xstrndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    n = strnlen(s, n); /* like strndup: stop at a shorter string's end */
    char *p = jp_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *jp_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = jp_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void jp_buf_init(jp_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void jp_buf_done(jp_buf *b)
{
    free(b->data);
    jp_buf_init(b, b->max);
}

int jp_buf_append(jp_buf *b, const void *p, size_t n)
{
    if (b->max && (n > b->max || b->len > b->max - n))
        return JP_ETOOBIG;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = jp_xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

const char *jp_buf_cstr(jp_buf *b)
{
    if (!b->data)
        jp_buf_append(b, "", 0);
    return b->data;
}

char *jp_buf_steal(jp_buf *b)
{
    jp_buf_cstr(b);
    char *p = b->data;
    jp_buf_init(b, b->max);
    return p;
}
