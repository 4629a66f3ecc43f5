/* Outbox: FIFO order, bounded size, sequence numbers that survive restarts
 * and are never reused, and recovery from torn temp files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/inotify.h>
#include <unistd.h>

#include "testutil.h"

static int setup(void **state)
{
    char *dir = calloc(1, 256);
    if (dir == NULL || tu_mkdtemp(dir, 256) == NULL)
        return -1;
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    tu_rmdir(*state);
    free(*state);
    return 0;
}

static upk_err push(upk__outbox *ob, uint32_t progress)
{
    upk_event_msg ev;
    memset(&ev, 0, sizeof(ev));
    ev.ts = 1700000000;
    (void)snprintf(ev.campaign, sizeof(ev.campaign), "c1");
    ev.step = UPK_STATUS_DOWNLOADING;
    ev.progress = progress;
    return upk__outbox_push(ob, &ev);
}

/* Pops the oldest and checks its seq and progress. */
static void expect_pop(upk__outbox *ob, uint64_t seq, uint32_t progress)
{
    uint64_t s = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk__outbox_peek(ob, &s, &json, &len), UPK_OK);
    assert_int_equal(s, seq);
    upk_event_msg ev;
    assert_int_equal(upk_event_decode(json, len, &ev), UPK_OK);
    assert_int_equal(ev.seq, seq);
    assert_int_equal(ev.progress, progress);
    free(json);
    assert_int_equal(upk__outbox_pop(ob, s), UPK_OK);
}

static void outbox_keeps_order_and_numbers_from_one(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 10, true), UPK_OK);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(push(&ob, i * 10), UPK_OK);
    for (uint32_t i = 0; i < 5; i++)
        expect_pop(&ob, i + 1, i * 10);
    uint64_t s;
    char *json;
    size_t len;
    assert_int_equal(upk__outbox_peek(&ob, &s, &json, &len), UPK_E_NOT_FOUND);
    upk__outbox_cleanup(&ob);
}

static void outbox_survives_restart_without_reusing_seq(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 10, true), UPK_OK);
    assert_int_equal(push(&ob, 1), UPK_OK);
    assert_int_equal(push(&ob, 2), UPK_OK);
    assert_int_equal(push(&ob, 3), UPK_OK);
    expect_pop(&ob, 1, 1);
    upk__outbox_cleanup(&ob);
    /* Restart: 2 and 3 still queued, next is 4. */
    assert_int_equal(upk__outbox_open(&ob, dir, 10, true), UPK_OK);
    assert_int_equal(ob.count, 2);
    assert_int_equal(push(&ob, 4), UPK_OK);
    expect_pop(&ob, 2, 2);
    expect_pop(&ob, 3, 3);
    expect_pop(&ob, 4, 4);
    upk__outbox_cleanup(&ob);
    /* Restart with an empty queue: the persisted counter still says 5. */
    assert_int_equal(upk__outbox_open(&ob, dir, 10, false), UPK_OK);
    assert_int_equal(ob.count, 0);
    assert_int_equal(push(&ob, 5), UPK_OK);
    expect_pop(&ob, 5, 5);
    upk__outbox_cleanup(&ob);
}

static void outbox_is_bounded_dropping_oldest(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 3, true), UPK_OK);
    for (uint32_t i = 1; i <= 5; i++)
        assert_int_equal(push(&ob, i), UPK_OK);
    assert_int_equal(ob.count, 3);
    assert_int_equal(ob.dropped, 2);
    expect_pop(&ob, 3, 3);
    expect_pop(&ob, 4, 4);
    expect_pop(&ob, 5, 5);
    upk__outbox_cleanup(&ob);
}

static void outbox_pop_refuses_other_than_oldest(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 3, true), UPK_OK);
    assert_int_equal(upk__outbox_pop(&ob, 1), UPK_E_NOT_FOUND);
    assert_int_equal(push(&ob, 1), UPK_OK);
    assert_int_equal(push(&ob, 2), UPK_OK);
    assert_int_equal(upk__outbox_pop(&ob, 2), UPK_E_NOT_FOUND);
    assert_int_equal(ob.count, 2);
    upk__outbox_cleanup(&ob);
}

static void outbox_recovers_from_torn_files(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 10, true), UPK_OK);
    assert_int_equal(push(&ob, 1), UPK_OK);
    upk__outbox_cleanup(&ob);
    /* A torn temp file, junk, a corrupt seq file and a later queued event. */
    assert_int_equal(tu_write(dir, "00000000000000000009.ev.tmp", "{", 1), 0);
    assert_int_equal(tu_write(dir, "junk", "x", 1), 0);
    assert_int_equal(tu_write(dir, "seq", "zz", 2), 0);
    assert_int_equal(upk__outbox_open(&ob, dir, 10, true), UPK_OK);
    assert_int_equal(ob.count, 1);
    assert_int_equal(ob.next_seq, 2); /* from the highest queued file */
    assert_null(tu_read(dir, "00000000000000000009.ev.tmp", NULL));
    upk__outbox_cleanup(&ob);
}

/* Without fsync (simulators) an event file still appears whole: written
 * to a temp name and renamed, never created under its final name. */
static void outbox_without_fsync_still_renames_into_place(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 10, false), UPK_OK);
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) >= 0);
    assert_int_equal(push(&ob, 10), UPK_OK);
    char buf[4096] __attribute__((aligned(8)));
    ssize_t n = read(fd, buf, sizeof(buf));
    assert_true(n > 0);
    bool moved_ev = false, created_ev = false;
    for (char *p = buf; p < buf + n;) {
        struct inotify_event *ie = (struct inotify_event *)p;
        bool is_ev = ie->len > 0 && strstr(ie->name, ".ev") != NULL &&
                     strstr(ie->name, ".tmp") == NULL && strstr(ie->name, "00000001") != NULL;
        if (is_ev && (ie->mask & IN_MOVED_TO) != 0)
            moved_ev = true;
        if (is_ev && (ie->mask & IN_CREATE) != 0)
            created_ev = true;
        p += sizeof(*ie) + ie->len;
    }
    close(fd);
    assert_true(moved_ev);
    assert_false(created_ev);
    expect_pop(&ob, 1, 10);
    upk__outbox_cleanup(&ob);
}

static void outbox_open_rejects_zero_capacity(void **state)
{
    char dir[512];
    assert_int_equal(upk__path(dir, sizeof(dir), *state, "ob"), UPK_OK);
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 0, true), UPK_E_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(outbox_keeps_order_and_numbers_from_one, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_survives_restart_without_reusing_seq, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(outbox_is_bounded_dropping_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_pop_refuses_other_than_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_recovers_from_torn_files, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_without_fsync_still_renames_into_place, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(outbox_open_rejects_zero_capacity, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
