/* Fuzzes the agent config parser: any bytes either parse or are refused with
 * a message naming a field; never a crash, leak or unbounded read. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upk_agent_config cfg;
    char eb[256];
    upk_err err = upk_agent_config_parse((const char *)data, size, &cfg, eb, sizeof(eb));
    if (err == UPK_OK) {
        /* A parsed config is complete. */
        if (cfg.broker == NULL || cfg.device_id == NULL || cfg.hardware == NULL ||
            cfg.data_dir == NULL || cfg.keyring == NULL || cfg.module == NULL)
            abort();
        upk_agent_config_cleanup(&cfg);
    } else if (err == UPK_E_CONFIG_INVALID && eb[0] == '\0') {
        abort(); /* every refusal says why */
    }
    return 0;
}
