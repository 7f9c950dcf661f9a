/* Unit tests of group commit: results reach the right submitter, many
 * threads' changes land, a conflict fails only its own request. */
#include "core/jtime.h"
#include "core/mem.h"
#include "store/group.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct fixture {
    char dir[64];
    jp_store *store;
    jp_group *group;
} fixture;

static int setup(void **state)
{
    fixture *f = jp_xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/jp-group-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char *url = jp_xasprintf("sqlite://%s/test.db", f->dir);
    jp_err err;
    assert_int_equal(jp_store_open(url, &f->store, &err), 0);
    free(url);
    assert_int_equal(jp_group_new(f->store, &f->group, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    jp_group_free(f->group);
    jp_store_close(f->store);
    char *cmd = jp_xasprintf("rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(f);
    return 0;
}

static jp_job *make_job(const char *idem, const char *hash)
{
    jp_job *j = jp_job_new();
    jp_uuid7(j->id);
    j->queue = jp_xstrdup("default");
    j->strategy = jp_xstrdup("noop");
    j->priority = JP_PRIO_NORMAL;
    j->max_attempts = 3;
    j->timeout_seconds = 30;
    j->status = JP_ST_QUEUED;
    j->created_at_ms = j->updated_at_ms = jp_now_ms();
    if (idem) {
        j->idempotency_key = jp_xstrdup(idem);
        snprintf(j->request_hash, sizeof j->request_hash, "%s", hash);
    }
    return j;
}

typedef struct worker_arg {
    jp_group *group;
    int index;
    int created;
    int completed;
} worker_arg;

/* Each thread creates jobs one at a time, then runs each through
 * start and complete, so creates and applies interleave across threads. */
static void *worker(void *arg)
{
    worker_arg *w = arg;
    for (int i = 0; i < 50; i++) {
        jp_job *j = make_job(NULL, NULL);
        if (jp_group_create(w->group, &j, 1, NULL, NULL) == 0)
            w->created++;
        jp_store_op ops[2];
        memset(ops, 0, sizeof ops);
        for (int k = 0; k < 2; k++) {
            memcpy(ops[k].job_id, j->id, sizeof ops[k].job_id);
            ops[k].ev.attempt = 1;
            ops[k].ev.now_ms = jp_now_ms();
        }
        ops[0].ev.kind = JP_EV_START;
        ops[1].ev.kind = JP_EV_COMPLETE;
        ops[1].want_job = true;
        if (jp_group_apply(w->group, ops, 2, NULL) == 0 && ops[0].rc == 0 && ops[1].rc == 0 &&
            ops[1].after == JP_ST_COMPLETED && ops[1].job &&
            strcmp(ops[1].job->id, j->id) == 0)
            w->completed++;
        jp_job_free(ops[1].job);
        jp_job_free(j);
    }
    return NULL;
}

static void test_many_threads_each_get_their_own_results(void **state)
{
    fixture *f = *state;
    enum { N = 8 };
    pthread_t t[N];
    worker_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (worker_arg){.group = f->group, .index = i};
        pthread_create(&t[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].created, 50);
        assert_int_equal(args[i].completed, 50);
    }
    int64_t counts[JP_ST__COUNT];
    assert_int_equal(jp_store_counts(f->store, counts, NULL), 0);
    assert_int_equal(counts[JP_ST_COMPLETED], N * 50);
    assert_int_equal(counts[JP_ST_QUEUED], 0);
}

static void test_stale_report_is_refused_and_changes_nothing(void **state)
{
    fixture *f = *state;
    jp_job *j = make_job(NULL, NULL);
    assert_int_equal(jp_group_create(f->group, &j, 1, NULL, NULL), 0);
    jp_store_op op;
    memset(&op, 0, sizeof op);
    memcpy(op.job_id, j->id, sizeof op.job_id);
    op.ev.kind = JP_EV_COMPLETE;
    op.ev.attempt = 1;
    op.ev.now_ms = jp_now_ms();
    assert_int_equal(jp_group_apply(f->group, &op, 1, NULL), 0);
    assert_int_equal(op.rc, JP_ECONFLICT);
    jp_job *after = NULL;
    assert_int_equal(jp_store_get(f->store, j->id, &after, NULL), 0);
    assert_int_equal(after->status, JP_ST_QUEUED);
    assert_int_equal(after->attempts, 0);
    jp_job_free(after);
    jp_job_free(j);
}

typedef struct creator_arg {
    jp_group *group;
    const char *hash;
    int rc;
    char id[JP_UUID_STR_LEN + 1];
    bool existed;
} creator_arg;

static void *creator(void *arg)
{
    creator_arg *c = arg;
    jp_job *j = make_job("shared-key", c->hash);
    c->rc = jp_group_create(c->group, &j, 1, &c->existed, NULL);
    memcpy(c->id, j->id, sizeof c->id);
    jp_job_free(j);
    return NULL;
}

static void test_conflict_fails_only_its_own_request(void **state)
{
    fixture *f = *state;
    /* Two requests with the same key and body, one with another body, and
     * unrelated ones, submitted at once: the odd one alone gets a conflict. */
    enum { N = 6 };
    const char *hashes[N] = {"aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb",
                             "aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa"};
    creator_arg c[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        c[i] = (creator_arg){.group = f->group, .hash = hashes[i]};
        pthread_create(&t[i], NULL, creator, &c[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    int conflicts = 0, ok = 0;
    const char *winner = NULL;
    for (int i = 0; i < N; i++) {
        if (c[i].rc == JP_ECONFLICT) {
            conflicts++;
            continue;
        }
        assert_int_equal(c[i].rc, 0);
        ok++;
        if (!winner)
            winner = c[i].id;
        assert_string_equal(c[i].id, winner);  /* every "a" request names the same job */
    }
    /* Whichever body came first owns the key: either the lone "b" or the "a"s conflict. */
    assert_true((conflicts == 1 && ok == 5) || (conflicts == 5 && ok == 1));
    int64_t counts[JP_ST__COUNT];
    assert_int_equal(jp_store_counts(f->store, counts, NULL), 0);
    assert_int_equal(counts[JP_ST_QUEUED], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_threads_each_get_their_own_results, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_report_is_refused_and_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conflict_fails_only_its_own_request, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
