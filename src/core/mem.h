/* Allocation helpers that abort on out-of-memory.
 *
 * Every size a client controls is bounded before it reaches an allocator, so
 * running out of memory is a machine failure, not an input error: dying loudly
 * is better than threading ENOMEM through every caller. */
#ifndef JP_CORE_MEM_H
#define JP_CORE_MEM_H

#include <stddef.h>

void *jp_xmalloc(size_t n);
void *jp_xcalloc(size_t n, size_t size);
void *jp_xrealloc(void *p, size_t n);
/* NULL in, NULL out. The copy belongs to the caller (free()). */
char *jp_xstrdup(const char *s);
/* At most n bytes of s (fewer when s ends sooner), NUL-terminated. */
char *jp_xstrndup(const char *s, size_t n);
/* printf into a new string the caller frees. */
char *jp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer with a ceiling. Embedded by value: jp_buf_init/jp_buf_done. */
typedef struct jp_buf {
    char *data;  /* NUL-terminated when len > 0 or after jp_buf_cstr */
    size_t len;  /* bytes used, excluding the terminator */
    size_t cap;  /* bytes allocated */
    size_t max;  /* ceiling on len; 0 = unlimited */
} jp_buf;

void jp_buf_init(jp_buf *b, size_t max);
void jp_buf_done(jp_buf *b);
/* Appends n bytes. Returns 0, or JP_ETOOBIG (nothing appended) past the ceiling. */
int jp_buf_append(jp_buf *b, const void *p, size_t n);
/* Hands the data to the caller (free()) and empties the buffer; never NULL. */
char *jp_buf_steal(jp_buf *b);
const char *jp_buf_cstr(jp_buf *b);

#endif
