/* Fuzzes the journal and installed-facts loaders with arbitrary file
 * contents (a torn or tampered file): they load or report STATE_CORRUPT,
 * and what loads saves and loads back the same. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_int.h"
#include "upkeep/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];

static void remove_dir(void)
{
    if (upk__rm_rf(dir) != UPK_OK)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static void init_dir(void)
{
    if (dir[0] != '\0')
        return;
    const char *base = getenv("TMPDIR");
    (void)snprintf(dir, sizeof(dir), "%s/upk-fuzz-journal-XXXXXX",
                   base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(dir) == NULL)
        abort();
    (void)atexit(remove_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_dir();
    char path[512], path2[512];
    (void)snprintf(path, sizeof(path), "%s/j.json", dir);
    (void)snprintf(path2, sizeof(path2), "%s/j2.json", dir);
    if (upk_fs_write_atomic(path, data, size) != UPK_OK)
        abort();
    upk__journal j, k;
    memset(&j, 0, sizeof(j));
    memset(&k, 0, sizeof(k));
    upk_err err = upk__journal_load(path, &j);
    if (err != UPK_OK && err != UPK_E_STATE_CORRUPT && err != UPK_E_NOMEM)
        abort();
    if (err == UPK_OK) {
        if (upk__journal_save(path2, &j) != UPK_OK || upk__journal_load(path2, &k) != UPK_OK)
            abort();
        if (k.status != j.status || k.error != j.error || k.sig_len != j.sig_len ||
            strcmp(k.campaign, j.campaign) != 0 || (j.manifest == NULL) != (k.manifest == NULL))
            abort();
    }
    upk__journal_cleanup(&j);
    upk__journal_cleanup(&k);
    upk__installed f;
    err = upk__installed_load(path, &f);
    if (err != UPK_OK && err != UPK_E_STATE_CORRUPT)
        abort();
    return 0;
}
