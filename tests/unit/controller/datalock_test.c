/* The data directory lock of `upkeep serve`: a second holder is refused
 * with the first one's pid, a released lock can be taken again, and a
 * lock left behind by a process that died is no lock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "datalock.h"

static void second_holder_is_refused_with_the_pid(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-lock-XXXXXX", data[64], path[96];
    assert_non_null(mkdtemp(dir));
    (void)snprintf(data, sizeof(data), "%s/data", dir); /* created by the lock */
    upk_datalock *a = NULL, *b = NULL;
    long pid = -1;
    char why[256];
    assert_int_equal(upk_datalock_acquire(data, &a, &pid, why, sizeof(why)), UPK_OK);
    assert_int_equal(pid, 0);
    assert_int_equal(upk_datalock_acquire(data, &b, &pid, why, sizeof(why)), UPK_E_BUSY);
    assert_null(b);
    assert_int_equal(pid, (long)getpid());
    assert_non_null(strstr(why, "serve.lock is held by pid"));
    upk_datalock_release(a);
    assert_int_equal(upk_datalock_acquire(data, &b, &pid, why, sizeof(why)), UPK_OK);
    upk_datalock_release(b);

    /* A holder that dies (here: exits without releasing) leaves no lock. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        upk_datalock *c = NULL;
        long p = 0;
        _exit(upk_datalock_acquire(data, &c, &p, NULL, 0) == UPK_OK ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(upk_datalock_acquire(data, &a, &pid, why, sizeof(why)), UPK_OK);
    upk_datalock_release(a);

    (void)snprintf(path, sizeof(path), "%s/serve.lock", data);
    unlink(path);
    rmdir(data);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(second_holder_is_refused_with_the_pid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
