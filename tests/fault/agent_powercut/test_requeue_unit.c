/* Unit regression for the power-cut fix in the agent core: the journal keeps
 * the seq reserved for a step's event (and reads old journals without it),
 * and the outbox writes an event's file before persisting the next seq, so
 * "seq file above N or file N present" means event N was made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "testutil.h"

static int setup(void **state)
{
    char *dir = calloc(1, 256);
    if (dir == NULL || tu_mkdtemp(dir, 256) == NULL) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    tu_rmdir(*state);
    free(*state);
    return 0;
}

static void journal_keeps_event_seq(void **state)
{
    const char *dir = *state;
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), dir, "journal.json"), UPK_OK);
    upk__journal j;
    memset(&j, 0, sizeof(j));
    upk__journal_cleanup(&j);
    j.status = UPK_STATUS_COMMITTED;
    (void)snprintf(j.campaign, sizeof(j.campaign), "c1");
    j.event_seq = 4242;
    assert_int_equal(upk__journal_save(path, &j), UPK_OK);
    upk__journal back;
    memset(&back, 0, sizeof(back));
    assert_int_equal(upk__journal_load(path, &back), UPK_OK);
    assert_int_equal(back.event_seq, 4242);
    assert_int_equal(back.status, UPK_STATUS_COMMITTED);
    upk__journal_cleanup(&back);
    upk__journal_cleanup(&j);
}

static void journal_without_event_seq_reads_as_unknown(void **state)
{
    const char *dir = *state;
    static const char old[] =
        "{\"v\":1,\"status\":\"committed\",\"rolling_back\":false,\"error\":\"OK\","
        "\"message\":\"\",\"campaign\":\"c1\",\"desired_id\":\"\",\"key_id\":\"\","
        "\"manifest\":\"\",\"sig\":\"\",\"slot\":\"\",\"restarts\":0}";
    static const char bad[] =
        "{\"v\":1,\"status\":\"committed\",\"rolling_back\":false,\"error\":\"OK\","
        "\"message\":\"\",\"campaign\":\"c1\",\"desired_id\":\"\",\"key_id\":\"\","
        "\"manifest\":\"\",\"sig\":\"\",\"slot\":\"\",\"restarts\":0,\"event_seq\":\"x\"}";
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), dir, "journal.json"), UPK_OK);
    upk__journal j;
    memset(&j, 0, sizeof(j));
    assert_int_equal(tu_write(dir, "journal.json", old, strlen(old)), 0);
    assert_int_equal(upk__journal_load(path, &j), UPK_OK);
    assert_int_equal(j.event_seq, 0);
    assert_int_equal(j.status, UPK_STATUS_COMMITTED);
    upk__journal_cleanup(&j);
    /* A present but malformed event_seq is a corrupt journal. */
    assert_int_equal(tu_write(dir, "journal.json", bad, strlen(bad)), 0);
    assert_int_equal(upk__journal_load(path, &j), UPK_E_STATE_CORRUPT);
    upk__journal_cleanup(&j);
}

static upk_err push(upk__outbox *ob)
{
    upk_event_msg ev;
    memset(&ev, 0, sizeof(ev));
    ev.ts = 1700000000;
    (void)snprintf(ev.campaign, sizeof(ev.campaign), "c1");
    ev.step = UPK_STATUS_INSTALLING;
    return upk__outbox_push(ob, &ev);
}

/* A crash after event 3's file and before the seq file moved on: the next
 * open skips past it; the event is queued, its number never reused. */
static void outbox_event_file_before_seq_file(void **state)
{
    const char *dir = *state;
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 16, true), UPK_OK);
    assert_int_equal(push(&ob), UPK_OK);
    assert_int_equal(push(&ob), UPK_OK);
    upk__outbox_cleanup(&ob);
    /* Event 3 made, seq file still says 3. */
    char *e2 = tu_read(dir, "00000000000000000002.ev", NULL);
    assert_non_null(e2);
    assert_int_equal(tu_write(dir, "00000000000000000003.ev", e2, strlen(e2)), 0);
    free(e2);
    assert_int_equal(tu_write(dir, "seq", "3\n", 2), 0);
    assert_int_equal(upk__outbox_open(&ob, dir, 16, true), UPK_OK);
    assert_int_equal(ob.next_seq, 4);
    assert_int_equal(ob.count, 3);
    upk__outbox_cleanup(&ob);
}

/* The soak found this one: a crash between event 3's file and the seq file,
 * a restart that sends and removes event 3, then a crash before anything
 * else moved the seq file on: the next open must not hand 3 out again. */
static void outbox_seq_file_brought_up_at_open(void **state)
{
    const char *dir = *state;
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 16, true), UPK_OK);
    assert_int_equal(push(&ob), UPK_OK);
    assert_int_equal(push(&ob), UPK_OK);
    upk__outbox_cleanup(&ob);
    char *e2 = tu_read(dir, "00000000000000000002.ev", NULL);
    assert_non_null(e2);
    assert_int_equal(tu_write(dir, "00000000000000000003.ev", e2, strlen(e2)), 0);
    free(e2);
    assert_int_equal(tu_write(dir, "seq", "3\n", 2), 0);
    assert_int_equal(upk__outbox_open(&ob, dir, 16, true), UPK_OK);
    char *seq = tu_read(dir, "seq", NULL);
    assert_non_null(seq);
    assert_string_equal(seq, "4\n");
    free(seq);
    /* All three sent and removed; a restart continues at 4. */
    assert_int_equal(upk__outbox_pop(&ob, 1), UPK_OK);
    assert_int_equal(upk__outbox_pop(&ob, 2), UPK_OK);
    assert_int_equal(upk__outbox_pop(&ob, 3), UPK_OK);
    upk__outbox_cleanup(&ob);
    assert_int_equal(upk__outbox_open(&ob, dir, 16, true), UPK_OK);
    assert_int_equal(ob.next_seq, 4);
    upk__outbox_cleanup(&ob);
}

/* When the seq file cannot be written the event is not made: no file is
 * left behind and the number is handed out again. */
static void outbox_seq_write_failure_makes_no_event(void **state)
{
    const char *dir = *state;
    upk__outbox ob;
    assert_int_equal(upk__outbox_open(&ob, dir, 16, false), UPK_OK);
    assert_int_equal(push(&ob), UPK_OK);
    /* A directory where the seq file goes: it cannot be replaced. */
    char seqp[512];
    assert_int_equal(upk__path(seqp, sizeof(seqp), dir, "seq"), UPK_OK);
    assert_int_equal(unlink(seqp), 0);
    assert_int_equal(mkdir(seqp, 0700), 0);
    assert_int_not_equal(push(&ob), UPK_OK);
    assert_int_equal(ob.count, 1);
    assert_int_equal(ob.next_seq, 2);
    assert_null(tu_read(dir, "00000000000000000002.ev", NULL));
    assert_int_equal(rmdir(seqp), 0);
    assert_int_equal(push(&ob), UPK_OK);
    assert_int_equal(ob.next_seq, 3);
    upk__outbox_cleanup(&ob);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(journal_keeps_event_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_without_event_seq_reads_as_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(outbox_event_file_before_seq_file, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_seq_file_brought_up_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_seq_write_failure_makes_no_event, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
