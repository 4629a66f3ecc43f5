/* libFuzzer target: feeds one input to the broker core's parsers and checks.
 * The first byte selects what the rest is: a config JSON text, a
 * mosquitto_passwd line, or a topic/filter judged for every role and access. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    uint8_t sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char *s = malloc(len + 1);
    if (s == NULL)
        return 0;
    memcpy(s, text, len);
    s[len] = '\0';
    upk_bp_config cfg;
    if (upk__bp_config_init(&cfg) != UPK_OK) {
        free(s);
        return 0;
    }
    switch (sel % 3) {
    case 0: {
        char err[UPK_BP_ERRMSG_MAX];
        /* Files named by the input resolve under a directory that does not exist. */
        (void)upk__bp_config_parse(&cfg, s, len, "/nonexistent-upk-fuzz", err, sizeof(err));
        break;
    }
    case 1: {
        char user[UPK_BP_USERNAME_MAX + 1];
        upk_bp_pwhash h;
        if (upk__bp_passwd_parse_line(s, len, user, sizeof(user), &h) == UPK_OK &&
            h.iterations < 200)
            (void)upk__bp_passwd_verify(&h, "x", 1);
        break;
    }
    default:
        for (int r = 0; r < UPK_BP_ROLE__COUNT; r++) {
            upk_bp_identity who = {.role = (upk_bp_role)r};
            memcpy(who.name, "dev-1", 6);
            for (int a = 0; a <= UPK_BP_ACCESS_SUBSCRIBE; a++)
                (void)upk__bp_acl_allows(&cfg, &who, (upk_bp_access)a, s);
        }
        break;
    }
    upk__bp_config_cleanup(&cfg);
    free(s);
    return 0;
}
