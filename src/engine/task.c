/* A run's deadline and cancellation, shared between the runner and whoever cancels. */
#include "engine/engine.h"

#include "core/jtime.h"
#include "core/mem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct jp_task {
    int64_t deadline_ms; /* on the jp_mono_ms clock */
    atomic_bool cancelled;
    /* eventfd, readable once cancelled; FD_UNMADE until a strategy asks for
     * it (most runs never wait in poll, and an fd per job costs two system
     * calls); -1 if none could be made. */
    atomic_int cancel_fd;
};

#define FD_UNMADE (-2)

/* A week is the longest job timeout; anything far beyond it only risks overflow. */
#define TASK_TIMEOUT_MAX_MS ((int64_t)366 * 86400 * 1000)

jp_task *jp_task_new(int64_t timeout_ms)
{
    jp_task *t = jp_xcalloc(1, sizeof *t);

    if (timeout_ms < 0)
        timeout_ms = 0;
    if (timeout_ms > TASK_TIMEOUT_MAX_MS)
        timeout_ms = TASK_TIMEOUT_MAX_MS;
    t->deadline_ms = jp_mono_ms() + timeout_ms;
    atomic_init(&t->cancelled, false);
    atomic_init(&t->cancel_fd, FD_UNMADE);
    return t;
}

void jp_task_free(jp_task *t)
{
    if (!t)
        return;
    int fd = atomic_load(&t->cancel_fd);
    if (fd >= 0)
        close(fd);
    free(t);
}

static void signal_fd(int fd)
{
    if (fd >= 0) {
        uint64_t one = 1;
        /* Nobody ever reads the counter, so the fd stays readable for good. */
        ssize_t n = write(fd, &one, sizeof one);
        (void)n;
    }
}

void jp_task_cancel(jp_task *t)
{
    if (!t)
        return;
    if (atomic_exchange(&t->cancelled, true))
        return;
    signal_fd(atomic_load(&t->cancel_fd));
}

bool jp_task_cancelled(const jp_task *t)
{
    return t && atomic_load(&((jp_task *)t)->cancelled);
}

int64_t jp_task_remaining_ms(const jp_task *t)
{
    int64_t left = t->deadline_ms - jp_mono_ms();
    return left > 0 ? left : 0;
}

int jp_task_cancel_fd(const jp_task *t)
{
    /* Made on first use; the task is const to its callers, the fd a cache. */
    jp_task *m = (jp_task *)t;
    int fd = atomic_load(&m->cancel_fd);
    if (fd != FD_UNMADE)
        return fd;
    /* Without an eventfd (fd exhaustion) strategies fall back to polling the
     * flag in short slices, so a task is still always usable. */
    int made = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!atomic_compare_exchange_strong(&m->cancel_fd, &fd, made)) {
        if (made >= 0)
            close(made);
        return fd;  /* another thread made it first */
    }
    /* A cancel that saw no fd yet: this one must be readable. Either the
     * cancel sees the fd stored above or this sees its flag (both seq_cst). */
    if (atomic_load(&m->cancelled))
        signal_fd(made);
    return made;
}
