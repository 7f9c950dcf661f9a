/* UUIDv7 generation (RFC 9562) with a monotonic counter, and UUID syntax checks. */
#include "core/uuid.h"

#include "core/jtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* The generator: one per process, behind a mutex. Ids need a shared clock
 * and counter to be strictly increasing anyway, so per-thread random state
 * would save nothing. */
static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t gen_once = PTHREAD_ONCE_INIT;
static bool gen_seeded;      /* false after fork: the child must not repeat its parent */
static uint64_t gen_rng[4];  /* xoshiro256** state */
static int64_t gen_last_ms;  /* timestamp of the last id */
static unsigned gen_counter; /* 12-bit rand_a of the last id */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&gen_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&gen_lock);
}

static void atfork_child(void)
{
    gen_seeded = false;
    pthread_mutex_unlock(&gen_lock);
}

static void gen_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed(void)
{
    uint8_t buf[sizeof gen_rng];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = getrandom(buf + got, sizeof buf - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    memcpy(gen_rng, buf, sizeof gen_rng);
    /* Without getrandom, fall back to what differs between processes and runs,
     * stirred in either way so an all-zero state cannot happen. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&ts;
    for (int i = 0; i < 4; i++)
        gen_rng[i] ^= splitmix(&x);
    gen_seeded = true;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(void)
{
    uint64_t *s = gen_rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* A fresh counter starts in the lower half of its 12 bits, leaving room for
 * at least 2048 ids in one millisecond before the timestamp has to move. */
static unsigned counter_seed(void)
{
    return (unsigned)(next_random() >> 53);
}

void jp_uuid7(char out[JP_UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    int64_t now = jp_now_ms();
    uint64_t ms;
    unsigned counter;
    uint64_t rand_b;

    pthread_once(&gen_once, gen_init);
    pthread_mutex_lock(&gen_lock);
    if (!gen_seeded)
        seed();
    if (now > gen_last_ms) {
        gen_last_ms = now;
        gen_counter = counter_seed();
    } else if (++gen_counter > 0xfff) {
        /* Same millisecond (or the clock went back): order wins over accuracy. */
        gen_last_ms++;
        gen_counter = counter_seed();
    }
    ms = (uint64_t)gen_last_ms;
    counter = gen_counter;
    rand_b = next_random();
    pthread_mutex_unlock(&gen_lock);

    uint8_t b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (counter >> 8));
    b[7] = (uint8_t)(counter & 0xff);
    for (int i = 0; i < 8; i++)
        b[8 + i] = (uint8_t)(rand_b >> (56 - 8 * i));
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));

    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 0xf];
    }
    *p = '\0';
}

bool jp_uuid_valid(const char *s)
{
    if (!s)
        return false;
    for (int i = 0; i < JP_UUID_STR_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                     (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[JP_UUID_STR_LEN] == '\0';
}
