/* libFuzzer target: device credential epochs. The first byte selects what
 * the rest is: an epochs table (device_epochs_file text, parsed with one
 * password account that it may not list), or a device password checked by
 * upk_devkey_verify. Parsing must never crash, leak or read past the input;
 * a table that parses lists only valid ids and epochs in range; a password
 * that verifies must be the derived one of the epoch it reports. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "upkeep/devkey.h"

#define SECRET "fuzz-fleet-secret-0123456789"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] % 2 == 0) {
        upk_bp_map accounts;
        upk_bp_config cfg;
        static int dummy;
        char err[UPK_BP_ERRMSG_MAX];
        if (upk__bp_map_init(&accounts, 4) != UPK_OK)
            return 0;
        if (upk__bp_map_put(&accounts, "op1", &dummy) != UPK_OK ||
            upk__bp_config_init(&cfg) != UPK_OK) {
            upk__bp_map_cleanup(&accounts, NULL);
            return 0;
        }
        /* An exactly sized copy, so that a read past len trips ASan. */
        char *copy = malloc(len > 0 ? len : 1);
        if (copy != NULL) {
            memcpy(copy, text, len);
            upk_bp_map *table = &cfg.device_min_epoch;
            if (upk__bp_epochs_parse(table, &accounts, copy, len, err, sizeof(err)) == UPK_OK) {
                for (size_t i = 0; i < table->nbuckets; i++)
                    for (upk_bp_map_entry *en = table->buckets[i]; en != NULL; en = en->next)
                        if (!upk_id_valid(en->key) || strcmp(en->key, "op1") == 0 ||
                            upk__bp_epochs_min(&cfg, en->key) > UPK_DEVKEY_EPOCH_MAX)
                            abort();
            }
            free(copy);
        }
        upk__bp_config_cleanup(&cfg);
        upk__bp_map_cleanup(&accounts, NULL);
        return 0;
    }
    char *pw = malloc(len > 0 ? len : 1);
    if (pw == NULL)
        return 0;
    memcpy(pw, text, len);
    uint32_t epoch = 0;
    if (upk_devkey_verify(SECRET, strlen(SECRET), "dev-1", pw, len, &epoch) == UPK_OK) {
        char want[UPK_DEVKEY_MAX + 1];
        if (upk_devkey_derive_epoch(SECRET, strlen(SECRET), "dev-1", epoch, want, sizeof(want)) !=
                UPK_OK ||
            strlen(want) != len || memcmp(want, pw, len) != 0)
            abort();
    }
    free(pw);
    return 0;
}
