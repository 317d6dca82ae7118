/* tests/unit/unit.h - the little that every unit test executable shares.
 *
 * Each tests/unit/test_<module>.c builds one check Suite and hands it to
 * cq_unit_run() from its main(). Header-only, because codeq_unit_test() compiles
 * exactly one source file per test.
 */
#ifndef CQ_TESTS_UNIT_H
#define CQ_TESTS_UNIT_H

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>

/* Runs the suite and returns main()'s exit status. need_fork forces one process per
 * test regardless of CK_FORK: tests that install seccomp filters, cache per-process
 * state (cgroup detection) or start sandboxes must not share a process. */
static inline int cq_unit_run(Suite *s, bool need_fork)
{
    SRunner *sr = srunner_create(s);
    if (need_fork)
        srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
