/* Writes the update-capability HTML card of a fixed device (signed support
 * statement, rollback, ending-soon date relative to now) to argv[1], for the
 * headless Chromium screenshot test (card_screenshot.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "label.h"
#include "upkeep/manifest.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: card_render OUT.html\n");
        return 2;
    }
    int64_t now = (int64_t)time(NULL);
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    memcpy(m.name, "sensor-fw", sizeof("sensor-fw"));
    memcpy(m.version, "2.1.0", sizeof("2.1.0"));
    m.security_version = 42;
    m.hw_count = 1;
    memcpy(m.hw[0], "rev-b", sizeof("rev-b"));
    m.type = UPK_RELEASE_FULL;
    memcpy(m.module, "ab-dir", sizeof("ab-dir"));
    m.size = m.target_size = 1024;
    memset(m.sha256, 7, sizeof(m.sha256));
    memset(m.target_sha256, 7, sizeof(m.target_sha256));
    m.created = now - 86400;
    m.expires = now + 180 * 86400;
    m.support.present = true;
    m.support.security_until = now + 400 * 86400;
    memcpy(m.support.delivery, "automatic", sizeof("automatic"));
    int r = snprintf(m.support.notice, sizeof(m.support.notice), "%s",
                     "Release notes on the product page; e-mail to registered owners");
    r |= snprintf(m.support.contact, sizeof(m.support.contact), "%s", "security@example.com");
    (void)r;
    char *mj = NULL;
    size_t mlen = 0;
    cJSON *row = cJSON_CreateObject();
    int rc = 1;
    upk_label l;
    if (row == NULL || upk_manifest_encode(&m, &mj, &mlen) != UPK_OK)
        goto out;
    cJSON_AddStringToObject(row, "id", "thermo-0042");
    cJSON_AddStringToObject(row, "hw", "rev-b");
    cJSON_AddStringToObject(row, "release", "sensor-fw");
    cJSON_AddStringToObject(row, "version", "2.1.0");
    cJSON_AddNumberToObject(row, "state_ts", (double)now);
    cJSON_AddNumberToObject(row, "cap_automatic", 1);
    cJSON_AddNumberToObject(row, "cap_signed", 1);
    cJSON_AddNumberToObject(row, "cap_rollback", 1);
    cJSON_AddNumberToObject(row, "support_until", (double)m.support.security_until);
    cJSON_AddNumberToObject(row, "support_signed", 1);
    cJSON_AddNumberToObject(row, "last_patched", (double)(now - 3600));
    cJSON_AddStringToObject(row, "manifest", mj);
    if (upk_label_build(row, now, &l) != UPK_OK)
        goto out;
    FILE *f = fopen(argv[1], "w");
    if (f == NULL)
        goto out;
    upk_err err = upk_label_html(&l, f);
    if (fclose(f) == 0 && err == UPK_OK)
        rc = 0;
out:
    cJSON_Delete(row);
    free(mj);
    if (rc != 0)
        fprintf(stderr, "card_render: failed\n");
    return rc;
}
