/* The exec strategy: runs a program directly (no shell) in its own process
 * group with a minimal environment, feeds its stdin, captures its output up to
 * a cap, and kills the whole group on timeout or cancellation.
 *
 * When the program exits, whatever it left behind in its process group is
 * killed too: a job does not outlive itself on the worker. */
#include "engine/strategies/strategies.h"

#include "core/jtime.h"
#include "core/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARG_BYTES_MAX (64 * 1024) /* per argument and per environment value */
#define ARGS_MAX 1024
#define ENV_MAX 1024
#define READ_CHUNK (64 * 1024)
/* How long output may keep arriving after the program exits, from what it left running. */
#define EXIT_GRACE_MS 100

static const char *const known_fields[] = {
    "command", "env", "cwd", "stdin", "max_output_bytes", NULL,
};

/* What to run, validated. */
typedef struct spec {
    char **argv;            /* NULL-terminated, owned */
    char **envp;            /* NULL-terminated, owned */
    char *cwd;              /* absolute, owned; NULL = inherit */
    const char *stdin_data; /* borrowed from the payload */
    size_t stdin_len;
    size_t cap; /* bytes kept per stream */
} spec;

/* One captured output stream. */
typedef struct stream {
    int fd; /* read end, -1 once at EOF */
    jp_buf buf;
    bool truncated;
} stream;

static void free_strv(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

static void spec_done(spec *sp)
{
    free_strv(sp->argv);
    free_strv(sp->envp);
    free(sp->cwd);
}

/* A payload string usable as a C string: no NUL bytes, shorter than `max`. */
static int c_string(const json_t *v, size_t max, const char *what, jp_outcome *out)
{
    if (!json_is_string(v))
        return jp_engine_bad_payload(out, "%s must be a string", what);
    size_t len = json_string_length(v);
    if (len >= max)
        return jp_engine_bad_payload(out, "%s is too long (%zu bytes, at most %zu)", what, len,
                                     max - 1);
    if (strlen(json_string_value(v)) != len)
        return jp_engine_bad_payload(out, "%s contains a NUL byte", what);
    return 0;
}

static bool env_has(char **envp, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=')
            return true;
    return false;
}

static int parse_env(const json_t *env, const jp_exec_conf *conf, spec *sp, jp_outcome *out)
{
    size_t n = 0, count = env ? json_object_size(env) : 0;
    const char *key;
    json_t *value;
    char what[96];

    if (env && !json_is_object(env))
        return jp_engine_bad_payload(out, "env must be an object of strings");
    if (count > ENV_MAX)
        return jp_engine_bad_payload(out, "env has %zu variables (at most %d)", count, ENV_MAX);
    sp->envp = jp_xcalloc(count + 4, sizeof *sp->envp);
    if (env) {
        json_object_foreach((json_t *)env, key, value) {
            if (!key[0] || strchr(key, '=') || strlen(key) > 1024)
                return jp_engine_bad_payload(out, "env name \"%.64s\" is not a valid variable name",
                                             key);
            snprintf(what, sizeof what, "env.%.64s", key);
            if (c_string(value, ARG_BYTES_MAX, what, out) < 0)
                return -1;
            sp->envp[n++] = jp_xasprintf("%s=%s", key, json_string_value(value));
        }
    }
    /* Only these reach the program from us: the server's environment holds
     * configuration and credentials. */
    if (!env_has(sp->envp, n, "PATH"))
        sp->envp[n++] = jp_xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
    if (!env_has(sp->envp, n, "HOME"))
        sp->envp[n++] = jp_xasprintf("HOME=%s", conf->home);
    if (!env_has(sp->envp, n, "LANG"))
        sp->envp[n++] = jp_xstrdup("LANG=C.UTF-8");
    return 0;
}

static int parse(const jp_exec_conf *conf, const json_t *payload, spec *sp, jp_outcome *out)
{
    char what[32];

    if (!json_is_object(payload))
        return jp_engine_bad_payload(out, "payload must be an object with a \"command\" array, "
                                          "like {\"command\": [\"/bin/echo\", \"hi\"]}");
    if (jp_engine_check_fields(payload, known_fields, out) < 0)
        return -1;

    const json_t *cmd = json_object_get(payload, "command");
    if (!cmd)
        return jp_engine_bad_payload(out,
                                     "command is required: an array like [\"/bin/echo\", \"hi\"]");
    if (!json_is_array(cmd))
        return jp_engine_bad_payload(out, "command must be an array of strings");
    size_t argc = json_array_size(cmd);
    if (argc == 0)
        return jp_engine_bad_payload(out, "command must not be empty");
    if (argc > ARGS_MAX)
        return jp_engine_bad_payload(out, "command has %zu arguments (at most %d)", argc, ARGS_MAX);
    for (size_t i = 0; i < argc; i++) {
        snprintf(what, sizeof what, "command[%zu]", i);
        if (c_string(json_array_get(cmd, i), ARG_BYTES_MAX, what, out) < 0)
            return -1;
    }
    if (json_string_length(json_array_get(cmd, 0)) == 0)
        return jp_engine_bad_payload(out, "command[0] must name a program");
    sp->argv = jp_xcalloc(argc + 1, sizeof *sp->argv);
    for (size_t i = 0; i < argc; i++)
        sp->argv[i] = jp_xstrdup(json_string_value(json_array_get(cmd, i)));

    if (parse_env(json_object_get(payload, "env"), conf, sp, out) < 0)
        return -1;

    const json_t *cwd = json_object_get(payload, "cwd");
    if (cwd && !json_is_null(cwd)) {
        if (c_string(cwd, PATH_MAX, "cwd", out) < 0)
            return -1;
        if (json_string_value(cwd)[0] != '/')
            return jp_engine_bad_payload(out, "cwd must be an absolute path");
        sp->cwd = jp_xstrdup(json_string_value(cwd));
    }

    const json_t *in = json_object_get(payload, "stdin");
    if (in && !json_is_null(in)) {
        if (!json_is_string(in))
            return jp_engine_bad_payload(out, "stdin must be a string");
        sp->stdin_data = json_string_value(in);
        sp->stdin_len = json_string_length(in);
    }

    sp->cap = conf->max_output;
    const json_t *max = json_object_get(payload, "max_output_bytes");
    if (max && !json_is_null(max)) {
        if (!json_is_integer(max) || json_integer_value(max) < 0)
            return jp_engine_bad_payload(out, "max_output_bytes must be a non-negative integer");
        if ((unsigned long long)json_integer_value(max) < sp->cap)
            sp->cap = (size_t)json_integer_value(max);
    }
    return 0;
}

static bool executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* The file the child will execute: a bare name is looked up in the child's
 * PATH (not ours), a relative path is taken from the child's cwd. NULL if a
 * bare name is found nowhere. */
static char *resolve(const spec *sp)
{
    const char *prog = sp->argv[0];
    const char *path = NULL;

    if (strchr(prog, '/')) {
        if (prog[0] != '/' && sp->cwd)
            return jp_xasprintf("%s/%s", sp->cwd, prog);
        return jp_xstrdup(prog);
    }
    for (size_t i = 0; sp->envp[i]; i++)
        if (strncmp(sp->envp[i], "PATH=", 5) == 0)
            path = sp->envp[i] + 5;
    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        /* Relative entries would depend on where the server was started. */
        if (len > 0 && path[0] == '/') {
            char *cand = jp_xasprintf("%.*s/%s", (int)len, path, prog);
            if (executable_file(cand))
                return cand;
            free(cand);
        }
        path += len;
        if (*path == ':')
            path++;
    }
    return NULL;
}

static bool allowed(const jp_exec_conf *conf, const char *prog, const char *resolved)
{
    char *real = NULL;
    bool ok = false;

    for (size_t i = 0; conf->allow[i] && !ok; i++)
        ok = strcmp(conf->allow[i], prog) == 0 ||
             (resolved && strcmp(conf->allow[i], resolved) == 0);
    if (!ok && resolved)
        real = realpath(resolved, NULL);
    for (size_t i = 0; real && conf->allow[i] && !ok; i++) {
        char *entry = realpath(conf->allow[i], NULL);
        ok = entry && strcmp(entry, real) == 0;
        free(entry);
    }
    free(real);
    return ok;
}

/* Moves fd above the standard descriptors (keeping it close-on-exec), so that
 * setting up the child's 0, 1 and 2 cannot clobber it. */
static int lift_fd(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int saved = errno;
    close(fd);
    errno = saved;
    return nfd;
}

static int make_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    fds[0] = lift_fd(fds[0]);
    fds[1] = lift_fd(fds[1]);
    if (fds[0] < 0 || fds[1] < 0) {
        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        fds[0] = fds[1] = -1;
        return -1;
    }
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The guardian is the process between this process and the program: the
 * leader of the program's process group. If the thread that started it dies
 * (its process killed with SIGKILL, say), the kernel sends it SIGHUP
 * (PR_SET_PDEATHSIG) and it kills the whole group, so no job's processes run
 * on beside the attempt that replaces them. It runs in a child forked from a
 * threaded process: only async-signal-safe calls from here on. */
static void guardian_on_parent_death(int sig)
{
    (void)sig;
    kill(0, SIGKILL);
}

static void report_errno_and_exit(int status_w, int e)
{
    ssize_t w = write(status_w, &e, sizeof e);
    (void)w;
    _exit(127);
}

/* The program's side: standard streams, signals as if fresh, no other fd. */
static void become_program(const spec *sp, const char *path, int in_r, int out_w, int err_w,
                           int status_w)
{
    struct sigaction dfl;
    sigset_t none;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for KILL, STOP, internal ones */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        report_errno_and_exit(status_w, errno);
    if (sp->cwd && chdir(sp->cwd) < 0)
        report_errno_and_exit(status_w, errno);
    /* Every fd is close-on-exec already; this also covers fds that another
     * thread's library opened without the flag. status_w is one of them. */
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) < 0)
        for (int fd = 3; fd < 65536; fd++)
            if (fd != status_w)
                close(fd);
    execve(path, sp->argv, sp->envp);
    report_errno_and_exit(status_w, errno);
}

/* Closes every fd from 3 up except those in keep[0..n) (sorted here). */
static void close_all_but(int *keep, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned lo = 3;
    for (int i = 0; i <= n; i++) {
        unsigned hi = i < n ? (unsigned)keep[i] : ~0U;
        if (i < n && keep[i] < 3)
            continue;
        if (hi > lo && syscall(SYS_close_range, lo, hi - 1, 0U) < 0)
            for (unsigned fd = lo; fd < hi && fd < 65536; fd++)
                close((int)fd);
        if (i < n)
            lo = (unsigned)keep[i] + 1;
    }
}

static void guardian(const spec *sp, const char *path, int in_r, int out_w, int err_w,
                     int status_w, pid_t parent)
{
    struct sigaction sa;
    sigset_t mask;
    int st;
    int keep[4] = {in_r, out_w, err_w, status_w};

    /* Our copies of this process's ends of the pipes would keep the program
     * from ever seeing the end of its input. */
    close_all_but(keep, 4);
    setpgid(0, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = guardian_on_parent_death;
    sigaction(SIGHUP, &sa, NULL);
    sigfillset(&mask);
    sigdelset(&mask, SIGHUP);
    sigprocmask(SIG_SETMASK, &mask, NULL);
    prctl(PR_SET_PDEATHSIG, SIGHUP);
    if (getppid() != parent) /* it died before the request took hold */
        kill(0, SIGKILL);

    pid_t pid = fork();
    if (pid < 0)
        report_errno_and_exit(status_w, errno);
    if (pid == 0)
        become_program(sp, path, in_r, out_w, err_w, status_w);
    close(in_r);
    close(out_w);
    close(err_w);
    close(status_w);
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            _exit(127);
    if (WIFEXITED(st))
        _exit(WEXITSTATUS(st));
    /* Die the same way, so the worker sees the program's signal. */
    int sig = WTERMSIG(st);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigemptyset(&mask);
    sigprocmask(SIG_SETMASK, &mask, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
}

/* Starts the program under its guardian, in a process group of their own,
 * with the pipes as 0, 1, 2 and nothing else open. *ret_pid is the
 * guardian's pid, which is also the group's id; it exits as the program
 * does. Returns 0 or an errno value (the program could not be started). */
static int spawn(const spec *sp, const char *path, int in_r, int out_w, int err_w, pid_t *ret_pid)
{
    int status[2];
    if (pipe2(status, O_CLOEXEC) < 0)
        return errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(status[0]);
        close(status[1]);
        return e;
    }
    if (pid == 0) {
        close(status[0]);
        guardian(sp, path, in_r, out_w, err_w, status[1], parent);
    }
    close(status[1]);
    /* End of file: the program was exec'd. An errno: it could not be. */
    int e = 0;
    ssize_t n;
    while ((n = read(status[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(status[0]);
    if (n == (ssize_t)sizeof e && e != 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return e;
    }
    *ret_pid = pid;
    return 0;
}

/* write() that cannot raise SIGPIPE in this process when the child has
 * closed its stdin: the signal is blocked in this thread and, if the write
 * raised it, consumed. */
static ssize_t write_nosigpipe(int fd, const void *p, size_t n)
{
    sigset_t pipe_set, old, pending;
    struct timespec zero = {0, 0};
    bool was_pending;
    ssize_t w;
    int saved;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    w = write(fd, p, n);
    saved = errno;
    if (w < 0 && saved == EPIPE && !was_pending)
        sigtimedwait(&pipe_set, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return w;
}

/* Reads what is available (bounded, to stay responsive), keeping up to `cap`
 * bytes and discarding the rest so the child never blocks on a full pipe. */
static void drain(stream *s, size_t cap, char *chunk)
{
    for (int i = 0; i < 16 && s->fd >= 0; i++) {
        ssize_t n = read(s->fd, chunk, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close_fd(&s->fd);
            return;
        }
        size_t room = cap > s->buf.len ? cap - s->buf.len : 0;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        if (keep)
            jp_buf_append(&s->buf, chunk, keep);
        if ((size_t)n > keep)
            s->truncated = true;
    }
}

/* True once the leader has exited; it stays unreaped (a zombie holding its pid
 * and process group id) so that killing the group cannot hit a stranger. */
static bool leader_exited(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return errno == ECHILD;
    return si.si_pid == pid;
}

static json_t *signal_name(int sig)
{
    const char *abbrev = sigabbrev_np(sig);
    char name[32];

    if (abbrev)
        snprintf(name, sizeof name, "SIG%s", abbrev);
    else
        snprintf(name, sizeof name, "SIG%d", sig);
    return json_string(name);
}

static int exec_run(void *ctx, const json_t *payload, jp_task *task, jp_outcome *out)
{
    const jp_exec_conf *conf = ctx;
    spec sp = {0};
    stream so = {.fd = -1}, se = {.fd = -1};
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    int pidfd = -1, status = 0, poll_errno = 0;
    size_t in_off = 0;
    char *path = NULL, *chunk = NULL;
    const char *why = NULL; /* "timeout", "cancelled" or "internal" */
    bool exited = false, reaped = false;
    pid_t pid = -1;
    int64_t start = 0, duration;
    int rc = -1, err;

    jp_buf_init(&so.buf, 0);
    jp_buf_init(&se.buf, 0);
    if (parse(conf, payload, &sp, out) < 0)
        goto out;

    path = resolve(&sp);
    if (conf->allow && !allowed(conf, sp.argv[0], path)) {
        jp_engine_fail(out, "not_allowed", false,
                       "program \"%.200s\" is not in the exec allow-list", sp.argv[0]);
        goto out;
    }
    if (!path) {
        jp_engine_fail(out, "spawn_failed", false, "program \"%.200s\" not found in PATH",
                       sp.argv[0]);
        goto out;
    }
    if (sp.cwd) {
        struct stat st;
        int bad = stat(sp.cwd, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
        if (bad) {
            jp_engine_fail(out, "spawn_failed", false, "cwd \"%.200s\": %s", sp.cwd,
                           strerrordesc_np(bad));
            goto out;
        }
    }
    if (make_pipe(in_p) < 0 || make_pipe(out_p) < 0 || make_pipe(err_p) < 0) {
        jp_engine_fail(out, "spawn_failed", true, "cannot make pipes: %s", strerrordesc_np(errno));
        goto out;
    }

    start = jp_mono_ms();
    err = spawn(&sp, path, in_p[0], out_p[1], err_p[1], &pid);
    close_fd(&in_p[0]);
    close_fd(&out_p[1]);
    close_fd(&err_p[1]);
    if (err) {
        pid = -1;
        jp_engine_fail(out, "spawn_failed", err == EAGAIN || err == ENOMEM || err == EMFILE,
                       "cannot run \"%.200s\": %s", path, strerrordesc_np(err));
        goto out;
    }

    so.fd = out_p[0];
    se.fd = err_p[0];
    out_p[0] = err_p[0] = -1;
    set_nonblock(so.fd);
    set_nonblock(se.fd);
    set_nonblock(in_p[1]);
    if (sp.stdin_len == 0)
        close_fd(&in_p[1]);
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    chunk = jp_xmalloc(READ_CHUNK);

    /* Until the program exits (or time runs out): move stdin, output and
     * watch for cancellation. */
    while (!exited) {
        if (jp_task_cancelled(task)) {
            why = "cancelled";
            break;
        }
        if (jp_task_remaining_ms(task) == 0) {
            why = "timeout";
            break;
        }
        struct pollfd pf[5] = {
            {.fd = so.fd, .events = POLLIN},
            {.fd = se.fd, .events = POLLIN},
            {.fd = in_p[1], .events = POLLOUT},
            {.fd = jp_task_cancel_fd(task), .events = POLLIN},
            {.fd = pidfd, .events = POLLIN},
        };
        /* Without a pidfd the exit is only seen by asking now and then. */
        int timeout = jp_engine_poll_timeout(task, pidfd < 0 ? 20 : -1);
        if (poll(pf, 5, timeout) < 0 && errno != EINTR) {
            why = "internal";
            poll_errno = errno;
            break;
        }
        if (pf[0].revents)
            drain(&so, sp.cap, chunk);
        if (pf[1].revents)
            drain(&se, sp.cap, chunk);
        if (pf[2].revents) {
            ssize_t w = write_nosigpipe(in_p[1], sp.stdin_data + in_off, sp.stdin_len - in_off);
            if (w > 0)
                in_off += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == sp.stdin_len)
                close_fd(&in_p[1]);
        }
        if (pidfd < 0 || pf[4].revents)
            exited = leader_exited(pid);
    }
    close_fd(&in_p[1]);

    /* The program is done: collect output still in flight, bounded, since
     * something it left behind may hold the pipes open. */
    if (exited) {
        int64_t grace_end = jp_mono_ms() + EXIT_GRACE_MS;
        while (so.fd >= 0 || se.fd >= 0) {
            int64_t left = grace_end - jp_mono_ms();
            if (left <= 0 || jp_task_cancelled(task) || jp_task_remaining_ms(task) == 0)
                break;
            struct pollfd pf[2] = {{.fd = so.fd, .events = POLLIN},
                                   {.fd = se.fd, .events = POLLIN}};
            if (poll(pf, 2, jp_engine_poll_timeout(task, left)) < 0 && errno != EINTR)
                break;
            if (pf[0].revents)
                drain(&so, sp.cap, chunk);
            if (pf[1].revents)
                drain(&se, sp.cap, chunk);
        }
    }

    /* The leader is not reaped yet, so its process group id is still ours. */
    kill(-pid, SIGKILL);
    if (so.fd >= 0)
        drain(&so, sp.cap, chunk);
    if (se.fd >= 0)
        drain(&se, sp.cap, chunk);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    reaped = true;
    duration = jp_mono_ms() - start;

    json_t *result = json_object();
    if (status >= 0 && WIFEXITED(status))
        json_object_set_new(result, "exit_code", json_integer(WEXITSTATUS(status)));
    else
        json_object_set_new(result, "exit_code", json_null());
    if (status >= 0 && WIFSIGNALED(status))
        json_object_set_new(result, "signal", signal_name(WTERMSIG(status)));
    else
        json_object_set_new(result, "signal", json_null());
    json_object_set_new(result, "stdout", jp_engine_utf8_string(so.buf.data, so.buf.len));
    json_object_set_new(result, "stderr", jp_engine_utf8_string(se.buf.data, se.buf.len));
    json_object_set_new(result, "truncated", json_boolean(so.truncated || se.truncated));
    json_object_set_new(result, "duration_ms", json_integer(duration));
    out->result = result;

    if (why && strcmp(why, "cancelled") == 0) {
        jp_engine_fail(out, "cancelled", false,
                       "cancelled after %lld ms; its process group was killed",
                       (long long)duration);
    } else if (why && strcmp(why, "timeout") == 0) {
        jp_engine_fail(out, "timeout", true,
                       "timed out after %lld ms; its process group was killed",
                       (long long)duration);
    } else if (why) {
        jp_engine_fail(out, "internal", true, "waiting for the program failed: %s",
                       strerrordesc_np(poll_errno));
    } else if (status < 0) {
        jp_engine_fail(out, "internal", true, "lost track of the program's exit status");
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        jp_engine_fail(out, "exit_status", true, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        jp_engine_fail(out, "signaled", true, "killed by signal SIG%s",
                       abbrev ? abbrev : "UNKNOWN");
    } else {
        rc = 0;
    }

out:
    if (pid > 0 && !reaped) {
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    close_fd(&pidfd);
    close_fd(&in_p[0]);
    close_fd(&in_p[1]);
    close_fd(&out_p[0]);
    close_fd(&out_p[1]);
    close_fd(&err_p[0]);
    close_fd(&err_p[1]);
    close_fd(&so.fd);
    close_fd(&se.fd);
    jp_buf_done(&so.buf);
    jp_buf_done(&se.buf);
    free(chunk);
    free(path);
    spec_done(&sp);
    return rc;
}

jp_strategy jp_strategy_exec(jp_exec_conf *ctx)
{
    return (jp_strategy){.abi = JP_STRATEGY_ABI, .name = "exec", .ctx = ctx, .run = exec_run};
}
