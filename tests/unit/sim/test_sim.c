/* Unit tests of upkeep-sim's library: per-class spec parsing, the class
 * assignment of devices, and the fake installer's steps on a real libuv loop
 * (durations, failure draws, version-limited health failures, image store,
 * rollback, persisted state). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "upkeep/hash.h"
#include "upkeep/sim.h"

static void hw_spec_parses_percentages_and_weights(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = 0;
    char eb[256];
    assert_int_equal(upk_sim_parse_hw("rev-a:50%,rev-b:50%", c, &n, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(n, 2);
    assert_string_equal(c[0].name, "rev-a");
    assert_true(c[0].share > 0.499 && c[0].share < 0.501);
    assert_int_equal(c[1].install_ms, 200);
    assert_int_equal(upk_sim_parse_hw("a:1,b:3", c, &n, eb, sizeof(eb)), UPK_OK);
    assert_true(c[1].share > 0.749 && c[1].share < 0.751);
}

static void hw_spec_rejects_bad_input(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = 0;
    char eb[256];
    const char *bad[] = {"",         "rev-a",   "rev-a:0%", "rev-a:-1", "rev-a:x",
                         "bad/id:1", "a:1,a:1", "a:1,,b:1", "a:1e3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(upk_sim_parse_hw(bad[i], c, &n, eb, sizeof(eb)), UPK_E_INVALID_ARG);
        assert_true(eb[0] != '\0');
    }
    char many[UPK_SIM_SPEC_MAX];
    size_t off = 0;
    for (int i = 0; i <= UPK_SIM_CLASS_MAX; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "%sc%d:1", i ? "," : "", i);
    assert_int_equal(upk_sim_parse_hw(many, c, &n, eb, sizeof(eb)), UPK_E_INVALID_ARG);
}

static void specs_set_fields_per_class_or_all(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = 0;
    char eb[256];
    assert_int_equal(upk_sim_parse_hw("rev-a:1,rev-b:1", c, &n, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(
        upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_MS, "rev-a:300,rev-b:700", eb, sizeof(eb)),
        UPK_OK);
    assert_int_equal(c[0].install_ms, 300);
    assert_int_equal(c[1].install_ms, 700);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_HEALTH_MS, "25", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(c[0].health_ms, 25);
    assert_int_equal(c[1].health_ms, 25);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_FAIL, "rev-b:0.3", eb, sizeof(eb)),
                     UPK_OK);
    assert_true(c[1].install_fail > 0.29 && c[1].install_fail < 0.31);
    assert_true(c[0].install_fail == 0);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_HEALTH_FAIL, "rev-b:1@1.1.0", eb, sizeof(eb)),
                     UPK_OK);
    assert_string_equal(c[1].health_fail_version, "1.1.0");
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_ACTIVATE_MS, "rev-a:0", eb, sizeof(eb)),
                     UPK_OK);
    assert_int_equal(c[0].activate_ms, 0);
}

static void specs_reject_bad_values(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = 0;
    char eb[256];
    assert_int_equal(upk_sim_parse_hw("rev-a:1", c, &n, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_FAIL, "rev-z:0.1", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_non_null(strstr(eb, "rev-z"));
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_FAIL, "1.5", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_MS, "-1", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_INSTALL_MS, "99999999999", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_HEALTH_FAIL, "rev-a:1@", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_apply_spec(c, n, UPK_SIM_HEALTH_MS, "", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_apply_spec(c, 0, UPK_SIM_HEALTH_MS, "1", eb, sizeof(eb)),
                     UPK_E_INVALID_ARG);
}

static void classes_are_mixed_in_proportion(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = 0;
    char eb[256];
    assert_int_equal(upk_sim_parse_hw("a:50%,b:30%,c:20%", c, &n, eb, sizeof(eb)), UPK_OK);
    size_t count[3] = {0, 0, 0};
    for (size_t i = 0; i < 1000; i++) {
        size_t k = upk_sim_class_of(c, n, i);
        assert_true(k < 3);
        count[k]++;
        if (i + 1 == 10) { /* every prefix is in proportion (within one) */
            assert_int_equal(count[0], 5);
            assert_int_equal(count[1], 3);
            assert_int_equal(count[2], 2);
        }
    }
    assert_int_equal(count[0], 500);
    assert_int_equal(count[1], 300);
    assert_int_equal(count[2], 200);
    assert_int_equal(upk_sim_class_of(c, 1, 17), 0);
}

/* ---- fake installer on a real loop */

typedef struct step_result {
    int calls;
    upk_err err;
    char msg[160];
} step_result;

static void step_cb(upk_err err, const char *message, void *cb_data)
{
    step_result *r = cb_data;
    r->calls++;
    r->err = err;
    (void)snprintf(r->msg, sizeof(r->msg), "%s", message != NULL ? message : "");
}

typedef struct fixture {
    uv_loop_t loop;
    char dir[256];
    upk_sim_store store;
    upk_sim_class cls;
    upk_manifest m;
    upk_install_job job;
    char artifact[300];
    char image_hex[UPK_SHA256_HEX_LEN + 1];
} fixture;

static int fx_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    (void)snprintf(f->dir, sizeof(f->dir), "%s/upk-sim-unit-XXXXXX",
                   getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    (void)snprintf(f->store.images_dir, sizeof(f->store.images_dir), "%s", f->dir);
    f->store.seed = 7;
    (void)snprintf(f->cls.name, sizeof(f->cls.name), "rev-a");
    f->cls.install_ms = 5;
    f->cls.activate_ms = 1;
    f->cls.health_ms = 1;
    (void)snprintf(f->artifact, sizeof(f->artifact), "%s/artifact.bin", f->dir);
    FILE *fp = fopen(f->artifact, "wb");
    if (fp == NULL || fwrite("new image", 1, 9, fp) != 9 || fclose(fp) != 0)
        return -1;
    upk_sha256_buf("new image", 9, f->m.target_sha256);
    if (upk_hex_encode(f->m.target_sha256, UPK_SHA256_LEN, f->image_hex, sizeof(f->image_hex)) !=
        UPK_OK)
        return -1;
    (void)snprintf(f->m.version, sizeof(f->m.version), "1.1.0");
    f->job.manifest = &f->m;
    f->job.artifact_path = f->artifact;
    f->job.device = "dev-1";
    f->job.campaign = "";
    f->job.work_dir = f->dir;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fixture *f = *state;
    (void)uv_run(&f->loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&f->loop);
    char cmd[600];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

/* Runs one step and the loop until its callback fired. */
static step_result run_step(fixture *f, upk_installer_step step, upk_sim_inst *in)
{
    step_result r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(step(in, &f->job, step_cb, &r), UPK_OK);
    assert_true(upk_sim_inst_busy(in));
    while (r.calls == 0)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(r.calls, 1);
    assert_false(upk_sim_inst_busy(in));
    return r;
}

static void installer_full_cycle_switches_image_and_slot(void **state)
{
    fixture *f = *state;
    const upk_installer *ops = upk_sim_installer_ops();
    upk_sim_inst *in = NULL;
    char base[UPK_SHA256_HEX_LEN + 1];
    memset(base, 'a', UPK_SHA256_HEX_LEN);
    base[UPK_SHA256_HEX_LEN] = '\0';
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "dev-1", f->dir, base, &in),
                     UPK_OK);
    assert_string_equal(upk_sim_inst_image(in), base);
    assert_string_equal(upk_sim_inst_slot(in), "a");
    assert_int_equal(run_step(f, ops->install, in).err, UPK_OK);
    assert_string_equal(f->job.slot, "b");
    /* A second step while one runs is refused. */
    step_result r1, r2;
    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    assert_int_equal(ops->activate(in, &f->job, step_cb, &r1), UPK_OK);
    assert_int_equal(ops->health(in, &f->job, step_cb, &r2), UPK_E_BUSY);
    while (r1.calls == 0)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(r2.calls, 0);
    assert_string_equal(upk_sim_inst_image(in), f->image_hex);
    assert_string_equal(upk_sim_inst_slot(in), "b");
    assert_int_equal(run_step(f, ops->health, in).err, UPK_OK);
    assert_int_equal(run_step(f, ops->commit, in).err, UPK_OK);
    char path[600];
    assert_int_equal(ops->image_path(in, path, sizeof(path)), UPK_OK);
    assert_int_equal(access(path, R_OK), 0); /* kept in the store */
    char slot[4];
    ops->active_slot(in, slot, sizeof(slot));
    assert_string_equal(slot, "b");
    upk_sim_inst_free(in);

    /* State persisted: a new installer for the same dir picks it up. */
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "dev-1", f->dir, NULL, &in),
                     UPK_OK);
    assert_string_equal(upk_sim_inst_image(in), f->image_hex);
    assert_string_equal(upk_sim_inst_slot(in), "b");
    upk_sim_inst_free(in);
}

static void installer_failures_follow_probability_and_version(void **state)
{
    fixture *f = *state;
    const upk_installer *ops = upk_sim_installer_ops();
    upk_sim_inst *in = NULL;
    f->cls.install_fail = 1.0;
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "dev-2", NULL, NULL, &in),
                     UPK_OK);
    step_result r = run_step(f, ops->install, in);
    assert_int_equal(r.err, UPK_E_INSTALL_FAILED);
    assert_non_null(strstr(r.msg, "rev-a"));
    f->cls.install_fail = 0;
    f->cls.health_fail = 1.0;
    (void)snprintf(f->cls.health_fail_version, sizeof(f->cls.health_fail_version), "9.9.9");
    assert_int_equal(run_step(f, ops->health, in).err, UPK_OK); /* other version: healthy */
    (void)snprintf(f->cls.health_fail_version, sizeof(f->cls.health_fail_version), "1.1.0");
    assert_int_equal(run_step(f, ops->health, in).err, UPK_E_HEALTH_FAILED);
    f->cls.health_fail_version[0] = '\0';
    assert_int_equal(run_step(f, ops->health, in).err, UPK_E_HEALTH_FAILED);
    /* Probability 0.5 over many draws fails some and passes some. */
    f->cls.health_fail = 0.5;
    int fails = 0;
    for (int i = 0; i < 200; i++)
        fails += run_step(f, ops->health, in).err == UPK_E_HEALTH_FAILED;
    assert_true(fails > 50 && fails < 150);
    upk_sim_inst_free(in);
}

static void installer_rollback_restores_previous_image(void **state)
{
    fixture *f = *state;
    const upk_installer *ops = upk_sim_installer_ops();
    upk_sim_inst *in = NULL;
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "dev-3", NULL, NULL, &in),
                     UPK_OK);
    char path[600];
    assert_int_equal(ops->image_path(in, path, sizeof(path)), UPK_E_NOT_FOUND);
    assert_int_equal(run_step(f, ops->install, in).err, UPK_OK);
    assert_int_equal(run_step(f, ops->activate, in).err, UPK_OK);
    assert_string_equal(upk_sim_inst_image(in), f->image_hex);
    f->job.reached = UPK_STATUS_HEALTH_CHECK;
    assert_int_equal(run_step(f, ops->rollback, in).err, UPK_OK);
    assert_string_equal(upk_sim_inst_image(in), "");
    assert_string_equal(upk_sim_inst_slot(in), "a");
    upk_sim_inst_free(in);
}

static void installer_rejects_bad_arguments(void **state)
{
    fixture *f = *state;
    upk_sim_inst *in = NULL;
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "bad/id", NULL, NULL, &in),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_inst_new(&f->loop, &f->cls, &f->store, "dev", NULL, "xyz", &in),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_sim_inst_new(NULL, &f->cls, &f->store, "dev", NULL, NULL, &in),
                     UPK_E_INVALID_ARG);
    assert_null(in);
    upk_sim_inst_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hw_spec_parses_percentages_and_weights),
        cmocka_unit_test(hw_spec_rejects_bad_input),
        cmocka_unit_test(specs_set_fields_per_class_or_all),
        cmocka_unit_test(specs_reject_bad_values),
        cmocka_unit_test(classes_are_mixed_in_proportion),
        cmocka_unit_test_setup_teardown(installer_full_cycle_switches_image_and_slot, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(installer_failures_follow_probability_and_version, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(installer_rollback_restores_previous_image, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(installer_rejects_bad_arguments, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
