/* Install modules against temp dirs: file (atomic replace, rollback before
 * and after activation, idempotent steps), ab-dir (slot fill, link switch,
 * switch back) and an external module script (steps, arguments, exit codes,
 * timeouts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

typedef struct fixture {
    char dir[256];
    uv_loop_t loop;
    upk_agent_config cfg;
    upk_manifest m;
    upk_install_job job;
    char artifact[512];
    char work[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || tu_mkdtemp(f->dir, sizeof(f->dir)) == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    upk_agent_config_defaults(&f->cfg);
    f->cfg.device_id = strdup("dev-1");
    f->cfg.modules_dir = strdup(f->dir);
    f->cfg.health_timeout_s = 3; /* generous: the machine may be loaded */
    f->cfg.limits.step_timeout_s = 20;
    (void)snprintf(f->m.name, sizeof(f->m.name), "fw");
    (void)snprintf(f->m.version, sizeof(f->m.version), "2.0");
    (void)snprintf(f->artifact, sizeof(f->artifact), "%s/artifact", f->dir);
    (void)snprintf(f->work, sizeof(f->work), "%s/work", f->dir);
    if (mkdir(f->work, 0700) != 0)
        return -1;
    f->job.manifest = &f->m;
    f->job.campaign = "camp-1";
    f->job.device = "dev-1";
    f->job.artifact_path = f->artifact;
    f->job.work_dir = f->work;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    (void)uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    upk_agent_config_cleanup(&f->cfg);
    tu_rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct result {
    bool done;
    upk_err err;
    char msg[256];
} result;

static void step_cb(upk_err err, const char *msg, void *cb_data)
{
    result *r = cb_data;
    r->done = true;
    r->err = err;
    (void)snprintf(r->msg, sizeof(r->msg), "%s", msg != NULL ? msg : "");
}

/* Runs one step to completion on the loop; returns its result. */
static upk_err run(fixture *f, upk_installer_step step, void *self, upk_status reached)
{
    if (step == NULL)
        return UPK_OK;
    result r = {0};
    f->job.reached = reached;
    upk_err err = step(self, &f->job, step_cb, &r);
    if (err != UPK_OK)
        return err;
    while (!r.done)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    return r.err;
}

static char *target_content(fixture *f, const char *name)
{
    return tu_read(f->dir, name, NULL);
}

static void new_module(fixture *f, const char *module, const char *settings,
                       const upk_installer **ops, void **self)
{
    free(f->cfg.module);
    free(f->cfg.module_settings);
    f->cfg.module = strdup(module);
    f->cfg.module_settings = strdup(settings);
    char eb[256];
    upk_err err = upk_installer_new(&f->loop, &f->cfg, ops, self, eb, sizeof(eb));
    if (err != UPK_OK)
        fail_msg("installer %s: %s %s", module, upk_err_str(err), eb);
}

static void file_module_replaces_and_rolls_back(void **state)
{
    fixture *f = *state;
    char settings[600];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s/app.bin\"}", f->dir);
    assert_int_equal(tu_write(f->dir, "app.bin", "old", 3), 0);
    assert_int_equal(tu_write(f->dir, "artifact", "new", 3), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "file", settings, &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    char *c = target_content(f, "app.bin");
    assert_string_equal(c, "old"); /* install stages only */
    free(c);
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK);
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK); /* again */
    c = target_content(f, "app.bin");
    assert_string_equal(c, "new");
    free(c);
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    c = target_content(f, "app.bin");
    assert_string_equal(c, "old");
    free(c);
    /* Rolling back twice (a crash mid-rollback) keeps the old file. */
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    c = target_content(f, "app.bin");
    assert_string_equal(c, "old");
    free(c);
    char img[1024];
    assert_int_equal(ops->image_path(self, img, sizeof(img)), UPK_OK);
    assert_non_null(strstr(img, "app.bin"));
    ops->destroy(self);
}

static void file_module_rollback_before_activation_keeps_target(void **state)
{
    fixture *f = *state;
    char settings[600];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s/app.bin\"}", f->dir);
    assert_int_equal(tu_write(f->dir, "app.bin", "old", 3), 0);
    assert_int_equal(tu_write(f->dir, "artifact", "new", 3), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "file", settings, &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_INSTALLING), UPK_OK);
    char *c = target_content(f, "app.bin");
    assert_string_equal(c, "old");
    free(c);
    assert_null(target_content(f, "app.bin.upknew"));
    /* A crash after staging, before the switch, rolled back from activating. */
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_ACTIVATING), UPK_OK);
    c = target_content(f, "app.bin");
    assert_string_equal(c, "old");
    free(c);
    ops->destroy(self);
}

static void file_module_first_install_rollback_removes_target(void **state)
{
    fixture *f = *state;
    char settings[600];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s/fresh.bin\"}", f->dir);
    assert_int_equal(tu_write(f->dir, "artifact", "new", 3), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "file", settings, &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK);
    char *c = target_content(f, "fresh.bin");
    assert_string_equal(c, "new");
    free(c);
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    assert_null(target_content(f, "fresh.bin"));
    ops->destroy(self);
}

static void file_module_reports_install_failure(void **state)
{
    fixture *f = *state;
    char settings[600];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s/nodir/app.bin\"}", f->dir);
    assert_int_equal(tu_write(f->dir, "artifact", "new", 3), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "file", settings, &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_E_INSTALL_FAILED);
    ops->destroy(self);
}

static void modules_reject_bad_settings(void **state)
{
    fixture *f = *state;
    static const char *cases[][2] = {
        {"file", "{}"},           {"file", "{\"path\":\"relative\"}"},
        {"file", "{\"path\":7}"}, {"ab-dir", "{}"},
        {"no-such-module", "{}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        free(f->cfg.module);
        free(f->cfg.module_settings);
        f->cfg.module = strdup(cases[i][0]);
        f->cfg.module_settings = strdup(cases[i][1]);
        const upk_installer *ops;
        void *self;
        char eb[256];
        assert_int_equal(upk_installer_new(&f->loop, &f->cfg, &ops, &self, eb, sizeof(eb)),
                         UPK_E_CONFIG_INVALID);
        assert_true(strlen(eb) > 0);
    }
}

/* Filesystem needs (docs/agent.md): vfat/exfat have no links and no
 * crash-atomic rename-over, and syncfs before Linux 5.8 hides write-back
 * errors; each is refused with the reason named, and a normal filesystem
 * (the test's own temp dir) passes the real probe. */
static void filesystem_needs_are_checked(void **state)
{
    fixture *f = *state;
    char why[256];
    why[0] = '\0';
    assert_int_equal(upk__fs_verdict(0x4d44u, UPK__FS_LINK, 6, 1, "/boot", why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "vfat"));
    assert_non_null(strstr(why, "hard links"));
    assert_int_equal(upk__fs_verdict(0x2011bab0u, UPK__FS_SYMLINK, 6, 1, "/boot", why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "symbolic links"));
    assert_int_equal(
        upk__fs_verdict(0x4d44u, UPK__FS_ATOMIC_RENAME, 6, 1, "/data", why, sizeof(why)),
        UPK_E_CONFIG_INVALID);
    assert_int_equal(upk__fs_verdict(0xef53u, UPK__FS_SYNCFS, 5, 4, "/opt", why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "5.8"));
    assert_int_equal(upk__fs_verdict(0xef53u, UPK__FS_SYNCFS, 5, 8, "/opt", why, sizeof(why)),
                     UPK_OK);
    assert_int_equal(upk__fs_verdict(0x4d44u, 0, 6, 1, "/boot", why, sizeof(why)), UPK_OK);
    assert_int_equal(upk__fs_check(f->dir, UPK__FS_LINK | UPK__FS_SYMLINK | UPK__FS_ATOMIC_RENAME,
                                   why, sizeof(why)),
                     UPK_OK);
    /* The probe leaves nothing behind. */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        assert_null(strstr(de->d_name, ".upk-probe"));
    closedir(d);
}

static void abdir_module_switches_and_back(void **state)
{
    fixture *f = *state;
    char cmd[2048], settings[600], root[512];
    (void)snprintf(root, sizeof(root), "%s/ab", f->dir);
    (void)snprintf(settings, sizeof(settings), "{\"root\":\"%s\"}", root);
    (void)snprintf(cmd, sizeof(cmd),
                   "mkdir -p %s/src && echo v2 > %s/src/version && tar -C %s/src -cf %s .", f->dir,
                   f->dir, f->dir, f->artifact);
    assert_int_equal(system(cmd), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "ab-dir", settings, &ops, &self);
    /* First install: no current yet, fills slot a. */
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_string_equal(f->job.slot, "a");
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK);
    char slot[16];
    ops->active_slot(self, slot, sizeof(slot));
    assert_string_equal(slot, "a");
    char *c = tu_read(root, "current/version", NULL);
    assert_string_equal(c, "v2\n");
    free(c);
    /* Second update goes to b; a failed health check switches back to a. */
    f->job.slot[0] = '\0';
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_string_equal(f->job.slot, "b");
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK);
    ops->active_slot(self, slot, sizeof(slot));
    assert_string_equal(slot, "b");
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    ops->active_slot(self, slot, sizeof(slot));
    assert_string_equal(slot, "a");
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK); /* again */
    ops->active_slot(self, slot, sizeof(slot));
    assert_string_equal(slot, "a");
    assert_null(ops->image_path);
    ops->destroy(self);
}

static void abdir_module_fails_on_bad_archive(void **state)
{
    fixture *f = *state;
    char settings[600];
    (void)snprintf(settings, sizeof(settings), "{\"root\":\"%s/ab\"}", f->dir);
    assert_int_equal(tu_write(f->dir, "artifact", "not a tar archive at all", 24), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "ab-dir", settings, &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_E_INSTALL_FAILED);
    char slot[16];
    ops->active_slot(self, slot, sizeof(slot));
    assert_string_equal(slot, ""); /* nothing switched */
    ops->destroy(self);
}

/* A module script that logs "step arg1 arg2 UPK_RELEASE" and fails per env. */
static const char script[] = "#!/bin/sh\n"
                             "echo \"$1 $(basename \"$2\") $(basename \"$3\") $UPK_RELEASE\" >> "
                             "\"$(dirname \"$2\")/calls.log\"\n"
                             "case \"$1\" in\n"
                             "  health) [ -f \"$2/sick\" ] && exit 1; [ -f \"$2/slow\" ] && "
                             "sleep 30; exit 0;;\n"
                             "  activate) exit 2;;\n"
                             "esac\n"
                             "exit 0\n";

static void external_module_gets_steps_args_and_exit_codes(void **state)
{
    fixture *f = *state;
    assert_int_equal(tu_write(f->dir, "mymod", script, strlen(script)), 0);
    char p[512];
    (void)snprintf(p, sizeof(p), "%s/mymod", f->dir);
    assert_int_equal(chmod(p, 0755), 0);
    assert_int_equal(tu_write(f->dir, "artifact", "x", 1), 0);
    const upk_installer *ops;
    void *self;
    new_module(f, "mymod", "{}", &ops, &self);
    assert_int_equal(run(f, ops->install, self, UPK_STATUS_INSTALLING), UPK_OK);
    assert_int_equal(run(f, ops->activate, self, UPK_STATUS_ACTIVATING), UPK_OK); /* exit 2 */
    assert_int_equal(run(f, ops->health, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    assert_int_equal(run(f, ops->commit, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    char *log = tu_read(f->dir, "calls.log", NULL);
    assert_non_null(log);
    assert_string_equal(log, "download work artifact fw\ninstall work artifact fw\n"
                             "activate work artifact fw\nhealth work artifact fw\n"
                             "commit work artifact fw\n");
    free(log);
    assert_int_equal(tu_write(f->work, "sick", "", 0), 0);
    assert_int_equal(run(f, ops->health, self, UPK_STATUS_HEALTH_CHECK), UPK_E_HEALTH_FAILED);
    assert_int_equal(upk__path(p, sizeof(p), f->work, "sick"), UPK_OK);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(tu_write(f->work, "slow", "", 0), 0);
    assert_int_equal(run(f, ops->health, self, UPK_STATUS_HEALTH_CHECK), UPK_E_HEALTH_TIMEOUT);
    assert_int_equal(run(f, ops->rollback, self, UPK_STATUS_HEALTH_CHECK), UPK_OK);
    ops->destroy(self);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(file_module_replaces_and_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(file_module_rollback_before_activation_keeps_target, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(file_module_first_install_rollback_removes_target, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(file_module_reports_install_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(modules_reject_bad_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(filesystem_needs_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(abdir_module_switches_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(abdir_module_fails_on_bad_archive, setup, teardown),
        cmocka_unit_test_setup_teardown(external_module_gets_steps_args_and_exit_codes, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
