/* Authentication decisions: accounts from the password file (with a role
 * each), and devices whose password is derived from the fleet secret and
 * their id, so no per-device entry is needed. Also the lockout bookkeeping
 * around each decision. */
#include "core.h"

#include <string.h>

#include "upkeep/devkey.h"
#include "upkeep/hash.h"

static const char *const role_names[UPK_BP_ROLE__COUNT] = {
    [UPK_BP_ROLE_DEVICE] = "device",
    [UPK_BP_ROLE_CONTROLLER] = "controller",
    [UPK_BP_ROLE_OPERATOR] = "operator",
    [UPK_BP_ROLE_ADMIN] = "admin",
};

const char *upk__bp_role_str(upk_bp_role role)
{
    if ((unsigned)role >= (unsigned)UPK_BP_ROLE__COUNT)
        return "unknown";
    return role_names[role];
}

bool upk__bp_role_parse(const char *s, upk_bp_role *out)
{
    if (s == NULL || out == NULL)
        return false;
    for (unsigned i = 0; i < (unsigned)UPK_BP_ROLE__COUNT; i++) {
        if (strcmp(s, role_names[i]) == 0) {
            *out = (upk_bp_role)i;
            return true;
        }
    }
    return false;
}

bool upk__bp_name_safe(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '+' || c == '#' || c == '/' || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

bool upk__bp_identity_of(const upk_bp_config *cfg, const char *username, upk_bp_identity *who)
{
    if (cfg == NULL || who == NULL || !upk__bp_name_safe(username) ||
        strlen(username) > UPK_BP_USERNAME_MAX)
        return false;
    const upk_bp_account *a = upk__bp_map_get(&cfg->accounts, username);
    if (a != NULL) {
        who->role = a->role;
    } else if (cfg->fleet_secret_len > 0 && upk_id_valid(username)) {
        who->role = UPK_BP_ROLE_DEVICE;
    } else {
        return false;
    }
    size_t n = strlen(username);
    memcpy(who->name, username, n + 1);
    who->derived = false;
    who->epoch = 0;
    return true;
}

bool upk__bp_cert_identity_of(const upk_bp_config *cfg, const char *cn, upk_bp_identity *who)
{
    if (cfg == NULL || who == NULL || !upk__bp_name_safe(cn) || strlen(cn) > UPK_BP_USERNAME_MAX)
        return false;
    const upk_bp_role *r = upk__bp_map_get(&cfg->cert_accounts, cn);
    if (r != NULL) {
        who->role = *r;
    } else if (cfg->cert_devices && upk_id_valid(cn) &&
               upk__bp_map_get(&cfg->accounts, cn) == NULL) {
        /* A device certificate whose CN is a password account's name does
         * not become that account. */
        who->role = UPK_BP_ROLE_DEVICE;
    } else {
        return false;
    }
    size_t n = strlen(cn);
    memcpy(who->name, cn, n + 1);
    who->derived = false;
    who->epoch = 0;
    return true;
}

/* Checks the password of an identity found by upk__bp_identity_of: NULL
 * when it is good (a derived device password then marks who with its epoch),
 * else the reason (static). A device's derived password must also be of an
 * epoch at or above the device's minimum (epochs.c). */
static const char *password_bad(const upk_bp_config *cfg, upk_bp_identity *who,
                                const char *password, size_t password_len)
{
    const upk_bp_account *a = upk__bp_map_get(&cfg->accounts, who->name);
    if (a != NULL)
        return upk__bp_passwd_verify(&a->pw, password, password_len) ? NULL : "wrong password";
    uint32_t epoch = 0;
    if (upk_devkey_verify(cfg->fleet_secret, cfg->fleet_secret_len, who->name, password,
                          password_len, &epoch) != UPK_OK)
        return "wrong password";
    who->derived = true;
    who->epoch = epoch;
    if (epoch < upk__bp_epochs_min(cfg, who->name))
        return "device password of a revoked epoch (below the device's minimum in "
               "device_epochs_file)";
    return NULL;
}

upk_err upk__bp_auth_check(const upk_bp_config *cfg, upk_bp_lockout *lo, const char *username,
                           const char *password, size_t password_len, const char *client_id,
                           const char *address, double now, upk_bp_identity *who, const char **why)
{
    static const char *dummy;
    upk_bp_identity id;
    bool lock_started = false;
    if (why == NULL)
        why = &dummy;
    if (cfg == NULL || lo == NULL || who == NULL) {
        *why = "internal: missing argument";
        return UPK_E_INVALID_ARG;
    }
    if (address != NULL && upk__bp_lockout_is_locked(lo, UPK_BP_LOCK_ADDRESS, address, now)) {
        *why = "address locked out after repeated failed logins";
        return UPK_E_LOCKED_OUT;
    }
    if (username == NULL) {
        *why = "anonymous login refused";
        goto fail;
    }
    /* Lookups are bounded by the username length cap before anything else. */
    if (strnlen(username, UPK_BP_USERNAME_MAX + 1) > UPK_BP_USERNAME_MAX) {
        *why = "username too long";
        goto fail;
    }
    if (upk__bp_lockout_is_locked(lo, UPK_BP_LOCK_USERNAME, username, now)) {
        *why = "username locked out after repeated failed logins";
        return UPK_E_LOCKED_OUT;
    }
    if (upk__bp_lockout_is_locked(lo, UPK_BP_LOCK_HOLDOFF, username, now)) {
        *why = "client held off after flooding";
        return UPK_E_LOCKED_OUT;
    }
    if (!upk__bp_name_safe(username) || (client_id != NULL && !upk__bp_name_safe(client_id))) {
        *why = "username or client id contains '+', '#', '/' or control characters";
        goto fail;
    }
    if (!cfg->password_logins) {
        *why = "password logins are disabled (certificate logins only)";
        goto fail;
    }
    if (!upk__bp_identity_of(cfg, username, &id)) {
        *why = "unknown user";
        goto fail;
    }
    if (password == NULL) {
        *why = "no password";
        goto fail;
    }
    const char *bad = password_bad(cfg, &id, password, password_len);
    if (bad != NULL) {
        *why = bad;
        goto fail;
    }
    if (id.role == UPK_BP_ROLE_DEVICE && (client_id == NULL || strcmp(client_id, username) != 0)) {
        *why = "device client id differs from its username";
        goto fail;
    }
    upk__bp_lockout_forget(lo, UPK_BP_LOCK_USERNAME, username);
    *who = id;
    *why = "ok";
    return UPK_OK;
fail:
    if (username != NULL && upk__bp_name_safe(username) && strlen(username) <= UPK_BP_USERNAME_MAX)
        lock_started |= upk__bp_lockout_fail(lo, UPK_BP_LOCK_USERNAME, username, now);
    if (address != NULL)
        lock_started |= upk__bp_lockout_fail(lo, UPK_BP_LOCK_ADDRESS, address, now);
    /* The caller logs why; a lockout that starts now is visible through the
     * next call's UPK_E_LOCKED_OUT and the lockout table. */
    (void)lock_started;
    return UPK_E_AUTH_FAILED;
}
