/* libFuzzer target: `upkeep serve`'s config parser (upk_serve_config_parse)
 * on arbitrary text. A config that parses must hold values within the limits
 * config.h states. Inputs naming absolute paths or escapes are skipped so the
 * parser only ever opens files relative to the working directory. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536 || memchr(data, '/', size) != NULL || memchr(data, '\\', size) != NULL)
        return 0;
    upk_serve_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    char why[256];
    upk_err err = upk_serve_config_parse((const char *)data, size, &cfg, why, sizeof(why));
    if (err == UPK_OK) {
        if (cfg.data_dir[0] == '\0' || cfg.broker[0] == '\0' || cfg.ring == NULL ||
            cfg.tick_ms < 50 || cfg.tick_ms > 60000 || cfg.readonly_count > UPK_READONLY_MAX ||
            cfg.desired_refresh_s < 60 || cfg.desired_refresh_s > 2592000 ||
            cfg.link_secret_len > UPK_LINK_SECRET_MAX ||
            (cfg.link_secret_len > 0 && cfg.link_secret_len < 16) ||
            (cfg.require_device_auth && cfg.link_secret_len == 0))
            abort();
        for (size_t i = 0; i < cfg.readonly_count; i++)
            if (!upk_id_valid(cfg.readonly[i]))
                abort();
        upk_serve_config_cleanup(&cfg);
    } else if (memchr(why, '\0', sizeof(why)) == NULL) {
        abort(); /* the reason must be a terminated string */
    }
    return 0;
}
