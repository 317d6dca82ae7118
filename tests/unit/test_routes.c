/* tests/unit/test_routes.c - dispatcher/routes.c: the dispatcher's memory of session
 * owners (session -> owner worker and fencing token), a hint that Redis overrides.
 *
 * The table has one route per slot, indexed by a 64-bit FNV-1a hash of the session id
 * modulo 4096: the colliding ids below were found with that hash, and the collision
 * test checks that they really evict each other, so that a change of the hash fails
 * loudly rather than making the test pass vacuously. */
#define _GNU_SOURCE
#include "dispatcher/routes.h"
#include "api/api.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* "sess-9" and "sess-92" share slot 3091; "sess-8" is alone in slot 2656. */
#define SHARED_A "sess-9"
#define SHARED_B "sess-92"
#define ALONE    "sess-8"

static struct cq_routes *routes;

static void setup(void)
{
    routes = cq_routes_new();
    ck_assert_ptr_nonnull(routes);
}

static void teardown(void)
{
    cq_routes_free(routes);
    routes = NULL;
}

/* Expects a route for session with exactly owner and fence. */
static void expect_route(const char *session, const char *owner, uint64_t fence)
{
    char got[64];
    uint64_t got_fence = 0xdeadbeef;
    memset(got, 'x', sizeof(got));
    ck_assert_msg(cq_routes_get(routes, session, got, sizeof(got), &got_fence), "no route for '%s'",
                  session);
    ck_assert_str_eq(got, owner);
    ck_assert_uint_eq(got_fence, fence);
}

/* Expects no route, and owner and fence left alone. */
static void expect_none(const char *session)
{
    char got[64] = "untouched";
    uint64_t got_fence = 77;
    ck_assert_msg(!cq_routes_get(routes, session, got, sizeof(got), &got_fence),
                  "a route for '%s' (owner '%s')", session, got);
    ck_assert_str_eq(got, "untouched");
    ck_assert_uint_eq(got_fence, 77);
}

START_TEST(empty_table_knows_nothing)
{
    expect_none("s1");
    expect_none(SHARED_A);
    expect_none("");
    /* Forgetting what is not there is harmless. */
    cq_routes_forget(routes, "s1");
    cq_routes_forget(routes, "");
    expect_none("s1");
    cq_routes_free(NULL); /* like free(NULL) */
}
END_TEST

START_TEST(put_then_get)
{
    cq_routes_put(routes, "s1", "worker-a", 3);
    expect_route("s1", "worker-a", 3);
    /* Only that session: a neighbour id or a prefix is not a match. */
    expect_none("s2");
    expect_none("s");
    expect_none("s1x");
    cq_routes_put(routes, ALONE, "worker-b", 0);
    expect_route(ALONE, "worker-b", 0);
    expect_route("s1", "worker-a", 3);
}
END_TEST

START_TEST(put_overwrites_the_same_session)
{
    cq_routes_put(routes, "s1", "worker-a", 3);
    cq_routes_put(routes, "s1", "worker-b", 4);
    expect_route("s1", "worker-b", 4);
    /* The table keeps what Redis said last, even an older token: Redis is the
     * authority, and a worker refuses a forward its claim does not match. */
    cq_routes_put(routes, "s1", "worker-c", 2);
    expect_route("s1", "worker-c", 2);
}
END_TEST

START_TEST(fences_are_kept_exactly)
{
    static const uint64_t fences[] = {0, 1, 4294967295ULL, 4294967296ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(fences) / sizeof(fences[0]); i++) {
        cq_routes_put(routes, "s1", "w", fences[i]);
        expect_route("s1", "w", fences[i]);
    }
}
END_TEST

START_TEST(forget_removes_only_that_session)
{
    cq_routes_put(routes, "s1", "worker-a", 1);
    cq_routes_put(routes, ALONE, "worker-b", 2);
    cq_routes_forget(routes, "s1");
    expect_none("s1");
    expect_route(ALONE, "worker-b", 2);
    cq_routes_forget(routes, "s1"); /* twice is harmless */
    expect_none("s1");
    /* Learnt again after a forget. */
    cq_routes_put(routes, "s1", "worker-c", 5);
    expect_route("s1", "worker-c", 5);
}
END_TEST

START_TEST(sessions_sharing_a_slot_evict_each_other)
{
    /* Proof that the two ids share a slot: the second put evicts the first. */
    cq_routes_put(routes, SHARED_A, "worker-a", 1);
    cq_routes_put(routes, ALONE, "worker-c", 9);
    cq_routes_put(routes, SHARED_B, "worker-b", 2);
    expect_none(SHARED_A);
    expect_route(SHARED_B, "worker-b", 2);
    /* A session elsewhere is not touched. */
    expect_route(ALONE, "worker-c", 9);
    /* Forgetting the evicted session leaves the slot's current one alone. */
    cq_routes_forget(routes, SHARED_A);
    expect_route(SHARED_B, "worker-b", 2);
    /* And the first takes the slot back. */
    cq_routes_put(routes, SHARED_A, "worker-a", 3);
    expect_route(SHARED_A, "worker-a", 3);
    expect_none(SHARED_B);
    cq_routes_forget(routes, SHARED_A);
    expect_none(SHARED_A);
    expect_none(SHARED_B);
}
END_TEST

START_TEST(many_sessions_never_get_anothers_route)
{
    /* 10000 sessions in 4096 slots: many collide. A get answers the session's own
     * route or nothing, and the last one put is always there. */
    char id[32], owner[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "many-%d", i);
        snprintf(owner, sizeof(owner), "w-%d", i);
        cq_routes_put(routes, id, owner, (uint64_t)i);
        expect_route(id, owner, (uint64_t)i);
    }
    int kept = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "many-%d", i);
        char got[64];
        uint64_t fence;
        if (!cq_routes_get(routes, id, got, sizeof(got), &fence))
            continue;
        kept++;
        snprintf(owner, sizeof(owner), "w-%d", i);
        ck_assert_str_eq(got, owner);
        ck_assert_uint_eq(fence, (uint64_t)i);
    }
    ck_assert_int_gt(kept, 0);
    ck_assert_int_le(kept, 4096);
}
END_TEST

START_TEST(session_ids_at_the_limit)
{
    char at_limit[CQ_SESSION_ID_MAX + 1], over[CQ_SESSION_ID_MAX + 2];
    memset(at_limit, 'a', CQ_SESSION_ID_MAX);
    at_limit[CQ_SESSION_ID_MAX] = '\0';
    memset(over, 'a', CQ_SESSION_ID_MAX + 1);
    over[CQ_SESSION_ID_MAX + 1] = '\0';
    ck_assert_int_eq(CQ_SESSION_ID_MAX, 40);

    cq_routes_put(routes, at_limit, "worker-a", 7);
    expect_route(at_limit, "worker-a", 7);
    /* One more character is not kept (never truncated into another session's id). */
    cq_routes_put(routes, over, "worker-b", 8);
    expect_none(over);
    expect_route(at_limit, "worker-a", 7);
}
END_TEST

START_TEST(owners_too_long_or_empty_forget_the_route)
{
    char owner63[64], owner64[65];
    memset(owner63, 'w', 63);
    owner63[63] = '\0';
    memset(owner64, 'w', 64);
    owner64[64] = '\0';
    cq_routes_put(routes, "s1", owner63, 1);
    expect_route("s1", owner63, 1);
    /* An owner that cannot be kept whole drops the route rather than keep a stale one. */
    cq_routes_put(routes, "s1", owner64, 2);
    expect_none("s1");
    cq_routes_put(routes, "s1", "worker-a", 3);
    cq_routes_put(routes, "s1", "", 4); /* no owner (a drained worker released it) */
    expect_none("s1");
}
END_TEST

START_TEST(empty_session_id_is_never_a_route)
{
    cq_routes_put(routes, "", "worker-a", 1);
    expect_none("");
}
END_TEST

START_TEST(owner_is_truncated_to_the_callers_buffer)
{
    cq_routes_put(routes, "s1", "worker-1234", 5);
    char small[7];
    uint64_t fence = 0;
    ck_assert(cq_routes_get(routes, "s1", small, sizeof(small), &fence));
    ck_assert_str_eq(small, "worker");
    ck_assert_uint_eq(fence, 5);
    /* The stored owner itself is whole. */
    expect_route("s1", "worker-1234", 5);
}
END_TEST

static Suite *routes_suite(void)
{
    Suite *s = suite_create("routes");
    TCase *tc = tcase_create("routes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, empty_table_knows_nothing);
    tcase_add_test(tc, put_then_get);
    tcase_add_test(tc, put_overwrites_the_same_session);
    tcase_add_test(tc, fences_are_kept_exactly);
    tcase_add_test(tc, forget_removes_only_that_session);
    tcase_add_test(tc, sessions_sharing_a_slot_evict_each_other);
    tcase_add_test(tc, many_sessions_never_get_anothers_route);
    tcase_add_test(tc, session_ids_at_the_limit);
    tcase_add_test(tc, owners_too_long_or_empty_forget_the_route);
    tcase_add_test(tc, empty_session_id_is_never_a_route);
    tcase_add_test(tc, owner_is_truncated_to_the_callers_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(routes_suite(), false);
}
