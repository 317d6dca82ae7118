/* tests/unit/test_pool.c - how a warm pool's target follows demand (worker/pool.c):
 * the most starts seen in one second of the last minute, between the pool's size and
 * its max; back to its size once that second has left the window; and the max the
 * worker's configuration gives each kind of pool. Then the count of sessions that fit
 * in memory (worker/capacity.c). The refill is tested live
 * (tests/e2e/test_forked_kernels.py), the placement by memory in the fleet
 * (tests/fleet/test_capacity.py). */
#define _GNU_SOURCE
#include "worker/session.h"
#include "unit.h"

#include <stdlib.h>

/* An arbitrary moment well past the epoch, on a second's boundary. */
#define T0 (1000000ULL * 1000)

static struct cq_pool *pool_of(unsigned size, unsigned max)
{
    struct cq_pool *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->size = size;
    p->max = max;
    return p;
}

START_TEST(target_follows_the_busiest_second_up_to_the_max)
{
    struct cq_pool *p = pool_of(2, 40);
    ck_assert_uint_eq(cq_pool_target(p, T0), 2);
    /* 30 starts within one second, 5 in the next. */
    for (int i = 0; i < 30; i++)
        cq_pool_note_start(p, T0 + 10 * (uint64_t)i);
    for (int i = 0; i < 5; i++)
        cq_pool_note_start(p, T0 + 1000 + (uint64_t)i);
    ck_assert_uint_eq(cq_pool_target(p, T0 + 1500), 30);
    /* A busier second raises it, to the max at most. */
    for (int i = 0; i < 100; i++)
        cq_pool_note_start(p, T0 + 5000 + (uint64_t)i);
    ck_assert_uint_eq(cq_pool_target(p, T0 + 5500), 40);
    free(p);
}
END_TEST

START_TEST(target_falls_back_once_the_second_leaves_the_window)
{
    struct cq_pool *p = pool_of(1, 128);
    for (int i = 0; i < 50; i++)
        cq_pool_note_start(p, T0 + (uint64_t)i);
    for (int i = 0; i < 7; i++)
        cq_pool_note_start(p, T0 + 20000 + (uint64_t)i);
    uint64_t window = CQ_POOL_DEMAND_WINDOW_S * 1000ULL;
    ck_assert_uint_eq(cq_pool_target(p, T0 + window - 1), 50);
    /* The burst's second is out; the later one of 7 is still in. */
    ck_assert_uint_eq(cq_pool_target(p, T0 + window), 7);
    ck_assert_uint_eq(cq_pool_target(p, T0 + 20000 + window), 1);
    /* A slot is reused for a later second, counting from zero. */
    cq_pool_note_start(p, T0 + 2 * window);
    ck_assert_uint_eq(cq_pool_target(p, T0 + 2 * window), 1);
    free(p);
}
END_TEST

START_TEST(a_fixed_pool_does_not_grow)
{
    struct cq_pool *p = pool_of(3, 3);
    for (int i = 0; i < 200; i++)
        cq_pool_note_start(p, T0 + (uint64_t)i);
    ck_assert_uint_eq(cq_pool_target(p, T0 + 500), 3);
    free(p);
}
END_TEST

START_TEST(max_by_configuration)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.max_sessions = 1000;
    /* Forked kernels grow by default; exec'd ones do not; off stays off. */
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 1, true), 128);
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 1, false), 1);
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 0, true), 0);
    /* The operator's max, for either kind, within the cap and the worker's sessions. */
    cfg.warm_pool_max = 20;
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 2, false), 20);
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 30, false), 30); /* never below the size */
    cfg.warm_pool_max = 100000;
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 2, true), CQ_WORKER_POOL_CAP);
    cfg.max_sessions = 10;
    ck_assert_uint_eq(cq_pool_max_for(&cfg, 2, true), 10);
}
END_TEST

START_TEST(room_by_memory)
{
    const uint64_t mib = 1ULL << 20;
    ck_assert_uint_eq(cq_room_by_memory(1000 * mib, 200 * mib, 100 * mib), 8);
    ck_assert_uint_eq(cq_room_by_memory(1099 * mib, 200 * mib, 100 * mib), 8);
    /* At or under the reserve, nothing fits; a zero estimate counts nothing either. */
    ck_assert_uint_eq(cq_room_by_memory(200 * mib, 200 * mib, 100 * mib), 0);
    ck_assert_uint_eq(cq_room_by_memory(100 * mib, 200 * mib, 100 * mib), 0);
    ck_assert_uint_eq(cq_room_by_memory(1000 * mib, 0, 0), 0);

    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    ck_assert_uint_ge(cq_worker_memory_reserve(&cfg), 256 * mib);
    cfg.memory_reserve_bytes = 3 * mib;
    ck_assert_uint_eq(cq_worker_memory_reserve(&cfg), 3 * mib);
    /* This host says what it has. */
    ck_assert_uint_gt(cq_host_memory_available(), 0);
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("target");
    tcase_add_test(tc, target_follows_the_busiest_second_up_to_the_max);
    tcase_add_test(tc, target_falls_back_once_the_second_leaves_the_window);
    tcase_add_test(tc, a_fixed_pool_does_not_grow);
    tcase_add_test(tc, max_by_configuration);
    suite_add_tcase(s, tc);
    tc = tcase_create("memory");
    tcase_add_test(tc, room_by_memory);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(pool_suite(), false);
}
