/* Unit tests of the campaign view of `upkeep campaign show|watch`
 * (controller/cli_campaign_view.c), issue 16 item 7: the frame fits an
 * 80-column terminal, a skipped stage is drawn as skipped, a soak counts
 * down and moves the ETA, pausing says the soak starts again, and watch
 * ends with the right exit code on completion, halt, abort and rollback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "cli_campaign_view.h"

/* A campaign.show reply: 3 stages of 1, 5 and 14 devices; stage 2 done at
 * done_ms (0 = not done), soak 10 minutes. */
static cJSON *campaign(const char *state, bool halted, double now, double done_ms)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", "c-1733000000000");
    cJSON_AddStringToObject(c, "release", "firmware-with-a-long-name-2.1.0");
    cJSON_AddStringToObject(c, "state", state);
    cJSON_AddBoolToObject(c, "halted", halted);
    cJSON_AddStringToObject(
        c, "reason",
        halted ? "stage 2: 3 of 5 devices failed (HASH_MISMATCH on sensor-0000000042-building-7, "
                 "HASH_MISMATCH on sensor-0000000043-building-7, timed out on "
                 "sensor-0000000044-building-7); 60.00% is above the threshold 5.00%"
               : "");
    cJSON_AddNumberToObject(c, "stage", 2);
    cJSON_AddNumberToObject(c, "stage_count", 3);
    cJSON_AddNumberToObject(c, "soak_s", 600);
    cJSON_AddNumberToObject(c, "bake_s", 0);
    cJSON_AddNumberToObject(c, "max_fail_bp", 500);
    cJSON_AddNumberToObject(c, "created_ms", 1000000);
    cJSON_AddNumberToObject(c, "now_ms", now);
    cJSON_AddNumberToObject(c, "stage_done_ms", done_ms);
    cJSON_AddNumberToObject(c, "devices", 20);
    cJSON_AddNumberToObject(c, "offline_waiting", 0);
    cJSON *stages = cJSON_AddArrayToObject(c, "stages");
    double totals[3] = {1, 5, 14}, ok[3] = {1, 5, 0}, skipped[3] = {0, 0, 14};
    for (int i = 0; i < 3; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddNumberToObject(s, "stage", i + 1);
        cJSON_AddNumberToObject(s, "share_bp", i == 0 ? 500 : i == 1 ? 3000 : 10000);
        cJSON_AddNumberToObject(s, "total", totals[i]);
        cJSON_AddNumberToObject(s, "succeeded", ok[i]);
        cJSON_AddNumberToObject(s, "skipped", strcmp(state, "aborted") == 0 ? skipped[i] : 0);
        cJSON_AddNumberToObject(s, "pending",
                                strcmp(state, "aborted") == 0 ? 0 : totals[i] - ok[i]);
        cJSON_AddItemToArray(stages, s);
    }
    cJSON *counts = cJSON_AddObjectToObject(c, "counts");
    cJSON_AddNumberToObject(counts, "succeeded", 6);
    cJSON_AddNumberToObject(counts, "pending", 14);
    return c;
}

/* Renders c at width into a string; checks the line count and widths. */
static char *render(const cJSON *c, int width)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    int lines = upk_campaign_render(f, c, width);
    fclose(f);
    int nl = 0;
    const char *p = buf;
    for (;;) {
        const char *e = strchr(p, '\n');
        if (e == NULL)
            break;
        nl++;
        if (width > 0 && e - p > width - 1)
            fail_msg("line longer than %d: '%.*s'", width - 1, (int)(e - p), p);
        p = e + 1;
    }
    assert_int_equal(nl, lines);
    return buf;
}

static void frame_fits_80_columns(void **state)
{
    (void)state;
    cJSON *c = campaign("paused", true, 2000000, 0);
    char *out = render(c, 80);
    if (getenv("SHOW_VIEW") != NULL)
        fputs(out, stderr);
    assert_non_null(strstr(out, "state paused\n  (halted)  stage 2/3\n"));
    assert_non_null(strstr(out, "reason: stage 2: 3 of 5 devices failed"));
    free(out);
    out = render(c, 120);
    assert_non_null(strstr(out, "state paused (halted)  stage 2/3\n"));
    free(out);
    out = render(c, 40);
    free(out);
    out = render(c, 0); /* `show`: unbounded */
    free(out);
    cJSON_Delete(c);
}

static void skipped_stage_is_drawn_skipped(void **state)
{
    (void)state;
    cJSON *c = campaign("aborted", false, 2000000, 0);
    char *out = render(c, 80);
    const char *s3 = strstr(out, "  stage 3");
    assert_non_null(s3);
    assert_non_null(strstr(s3, "[skipped"));
    assert_null(strstr(s3, "##"));
    assert_non_null(strstr(s3, "failed 0    skipped 14\n"));
    free(out);
    cJSON_Delete(c);
}

static void soak_counts_down_and_eta_moves(void **state)
{
    (void)state;
    /* Stage 2 done at 1,300,000 ms; 60 s and 120 s into its 10 min soak. */
    cJSON *a = campaign("running", false, 1360000, 1300000);
    cJSON *b = campaign("running", false, 1420000, 1300000);
    char *out = render(a, 80);
    assert_non_null(strstr(out, "soak: 9m00s of 10m00s left, then the next stage starts"));
    free(out);
    double ea = upk_campaign_eta(a), eb = upk_campaign_eta(b);
    assert_true(ea > 0 && eb > 0);
    assert_true(eb < ea - 59 && eb > ea - 61); /* a minute of soak passed */
    cJSON_Delete(a);
    cJSON_Delete(b);
    /* Paused: the soak starts again on resume, and it says so. */
    cJSON *p = campaign("paused", false, 1420000, 0);
    out = render(p, 80);
    assert_non_null(strstr(out, "paused: on resume the stage's soak of 10m00s starts again"));
    assert_non_null(strstr(out, "ETA -"));
    free(out);
    cJSON_Delete(p);
}

/* A continuous campaign done with its last stage is open, not ending. */
static void continuous_campaign_is_open(void **state)
{
    (void)state;
    cJSON *c = campaign("running", false, 2000000, 1900000);
    cJSON_ReplaceItemInObject(c, "stage", cJSON_CreateNumber(3));
    cJSON_ReplaceItemInObject(c, "soak_s", cJSON_CreateNumber(0));
    cJSON_ReplaceItemInObject(c, "devices", cJSON_CreateNumber(6));
    cJSON_AddBoolToObject(c, "continuous", true);
    char *out = render(c, 80);
    assert_non_null(strstr(out, "stage 3/3  continuous\n"));
    assert_non_null(strstr(out, "open (continuous): devices that come back or join"));
    assert_null(strstr(out, "soak:"));
    assert_non_null(strstr(out, "ETA -\n"));
    free(out);
    cJSON_Delete(c);
}

static void watch_exit_codes(void **state)
{
    (void)state;
    struct {
        const char *state;
        bool halted, final;
        int rc;
    } cases[] = {
        {"running", false, false, 0},    {"paused", false, false, 0},
        {"paused", true, true, 1},       {"completed", false, true, 0},
        {"aborted", false, true, 1},     {"rolling_back", false, false, 1},
        {"rolled_back", false, true, 1}, {"rollback_incomplete", false, true, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *c = campaign(cases[i].state, cases[i].halted, 2000000, 0);
        bool final = !cases[i].final;
        int rc = upk_campaign_watch_exit(c, &final);
        if (rc != cases[i].rc || final != cases[i].final)
            fail_msg("state %s halted %d: rc %d final %d", cases[i].state, cases[i].halted, rc,
                     final);
        cJSON_Delete(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_fits_80_columns),
        cmocka_unit_test(skipped_stage_is_drawn_skipped),
        cmocka_unit_test(soak_counts_down_and_eta_moves),
        cmocka_unit_test(continuous_campaign_is_open),
        cmocka_unit_test(watch_exit_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
