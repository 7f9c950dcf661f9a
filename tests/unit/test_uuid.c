/* Unit tests of UUIDv7 generation and UUID syntax checks. */
#include "core/jtime.h"
#include "core/uuid.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void test_uuid_has_canonical_lowercase_form(void **state)
{
    char id[JP_UUID_STR_LEN + 1];
    jp_uuid7(id);
    assert_int_equal(strlen(id), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(id[i], '-');
        else
            assert_true(hexval(id[i]) >= 0);
    }
    assert_true(jp_uuid_valid(id));
}

static void test_uuid_sets_version_and_variant(void **state)
{
    char id[JP_UUID_STR_LEN + 1];
    for (int i = 0; i < 1000; i++) {
        jp_uuid7(id);
        assert_int_equal(id[14], '7');
        int v = hexval(id[19]);
        assert_int_equal(v & 0xc, 0x8);
    }
}

static void test_uuid_embeds_current_time(void **state)
{
    char id[JP_UUID_STR_LEN + 1];
    int64_t before = jp_now_ms();
    jp_uuid7(id);
    int64_t after = jp_now_ms();
    uint64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        if (i == 8)
            continue;
        ms = ms * 16 + (uint64_t)hexval(id[i]);
    }
    /* A burst in the same millisecond may run a few ms ahead of the clock. */
    assert_true((int64_t)ms >= before);
    assert_true((int64_t)ms <= after + 1000);
}

static void test_uuid_strictly_increasing(void **state)
{
    enum { N = 100000 };
    char prev[JP_UUID_STR_LEN + 1], cur[JP_UUID_STR_LEN + 1];
    jp_uuid7(prev);
    for (int i = 0; i < N; i++) {
        jp_uuid7(cur);
        if (strcmp(prev, cur) >= 0)
            fail_msg("id %d not increasing: %s then %s", i, prev, cur);
        memcpy(prev, cur, sizeof cur);
    }
}

enum { THREADS = 4, PER_THREAD = 20000 };

static char (*thread_ids)[JP_UUID_STR_LEN + 1];

static void *make_ids(void *arg)
{
    intptr_t t = (intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        jp_uuid7(thread_ids[t * PER_THREAD + i]);
        /* Each thread's own ids are in order too. */
        if (i > 0 && strcmp(thread_ids[t * PER_THREAD + i - 1], thread_ids[t * PER_THREAD + i]) >= 0)
            return (void *)1;
    }
    return NULL;
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_uuid_unique_across_threads(void **state)
{
    pthread_t th[THREADS];
    size_t total = (size_t)THREADS * PER_THREAD;
    thread_ids = calloc(total, sizeof *thread_ids);
    assert_non_null(thread_ids);
    for (intptr_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_ids, (void *)t), 0);
    for (int t = 0; t < THREADS; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        assert_null(ret);
    }
    qsort(thread_ids, total, sizeof *thread_ids, cmp_ids);
    for (size_t i = 1; i < total; i++)
        assert_true(strcmp(thread_ids[i - 1], thread_ids[i]) < 0);
    free(thread_ids);
}

static void test_uuid_differs_after_fork(void **state)
{
    int fds[2];
    char parent[JP_UUID_STR_LEN + 1], child[JP_UUID_STR_LEN + 1];
    jp_uuid7(parent);  /* the generator is seeded before the fork */
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[JP_UUID_STR_LEN + 1];
        jp_uuid7(id);
        ssize_t w = write(fds[1], id, sizeof id);
        _exit(w == (ssize_t)sizeof id ? 0 : 1);
    }
    jp_uuid7(parent);
    assert_int_equal(read(fds[0], child, sizeof child), (ssize_t)sizeof child);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    /* Same millisecond and counter are possible; the random tail must differ. */
    assert_string_not_equal(parent + 19, child + 19);
}

static void test_uuid_valid_accepts_canonical(void **state)
{
    assert_true(jp_uuid_valid("01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f"));
    assert_true(jp_uuid_valid("00000000-0000-0000-0000-000000000000"));
    assert_true(jp_uuid_valid("550e8400-e29b-41d4-a716-446655440000")); /* v4 */
    assert_true(jp_uuid_valid("01939A5E-7D1C-7F3A-9C2E-5B1D2A3C4E5F"));
}

static void test_uuid_valid_rejects_malformed(void **state)
{
    assert_false(jp_uuid_valid(NULL));
    assert_false(jp_uuid_valid(""));
    assert_false(jp_uuid_valid("01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5"));   /* short */
    assert_false(jp_uuid_valid("01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f0")); /* long */
    assert_false(jp_uuid_valid("01939a5e7d1c-7f3a-9c2e-5b1d2a3c4e5f-"));  /* dash moved */
    assert_false(jp_uuid_valid("01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5g"));  /* not hex */
    assert_false(jp_uuid_valid("01939a5e_7d1c_7f3a_9c2e_5b1d2a3c4e5f"));
    assert_false(jp_uuid_valid("{1939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f}"));
    assert_false(jp_uuid_valid("../../etc/passwd"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_has_canonical_lowercase_form),
        cmocka_unit_test(test_uuid_sets_version_and_variant),
        cmocka_unit_test(test_uuid_embeds_current_time),
        cmocka_unit_test(test_uuid_strictly_increasing),
        cmocka_unit_test(test_uuid_unique_across_threads),
        cmocka_unit_test(test_uuid_differs_after_fork),
        cmocka_unit_test(test_uuid_valid_accepts_canonical),
        cmocka_unit_test(test_uuid_valid_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
