/* mosquitto_passwd files: parsing of "$7$" lines (PBKDF2-HMAC-SHA512, as
 * written by `mosquitto_passwd`) and constant-time verification, so that the
 * plugin's accounts are managed with Mosquitto's own tool. */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>

#include "upkeep/hash.h"

#define B64_FIELD_MAX 256

/* Decodes the base64 field [s, s+len) into out (cap bytes). */
static upk_err b64_field(const char *s, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    if (len == 0 || len > B64_FIELD_MAX)
        return UPK_E_FIELD_RANGE;
    return upk_base64_decode(s, len, out, cap, outlen);
}

upk_err upk__bp_passwd_parse_line(const char *line, size_t len, char *user, size_t cap,
                                  upk_bp_pwhash *out)
{
    if (line == NULL || user == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line)
        return UPK_E_FIELD_RANGE;
    size_t ulen = (size_t)(colon - line);
    if (ulen >= cap || ulen > UPK_BP_USERNAME_MAX)
        return UPK_E_FIELD_TOO_LONG;
    const char *h = colon + 1;
    size_t hlen = len - ulen - 1;
    if (hlen < 3 || memcmp(h, "$7$", 3) != 0)
        return UPK_E_FIELD_RANGE;
    const char *p = h + 3;
    const char *end = h + hlen;

    /* iterations */
    uint64_t iter = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9' && iter <= UPK_BP_PBKDF2_ITER_MAX) {
        iter = iter * 10 + (uint64_t)(*q - '0');
        q++;
    }
    if (q == p || q >= end || *q != '$' || iter == 0 || iter > UPK_BP_PBKDF2_ITER_MAX)
        return UPK_E_FIELD_RANGE;
    p = q + 1;
    const char *d = memchr(p, '$', (size_t)(end - p));
    if (d == NULL)
        return UPK_E_FIELD_RANGE;

    upk_bp_pwhash tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.iterations = (uint32_t)iter;
    upk_err err = b64_field(p, (size_t)(d - p), tmp.salt, sizeof(tmp.salt), &tmp.salt_len);
    if (err != UPK_OK)
        return UPK_E_FIELD_RANGE;
    size_t hash_len = 0;
    uint8_t hash[128];
    err = b64_field(d + 1, (size_t)(end - d - 1), hash, sizeof(hash), &hash_len);
    if (err != UPK_OK || hash_len != sizeof(tmp.hash) || tmp.salt_len == 0)
        return UPK_E_FIELD_RANGE;
    memcpy(tmp.hash, hash, sizeof(tmp.hash));
    memcpy(user, line, ulen);
    user[ulen] = '\0';
    *out = tmp;
    return UPK_OK;
}

bool upk__bp_passwd_verify(const upk_bp_pwhash *h, const char *password, size_t password_len)
{
    bool ok = false;
    uint8_t derived[sizeof(h->hash)];
    mbedtls_md_context_t md;
    if (h == NULL || password == NULL || password_len > UPK_BP_PASSWORD_MAX)
        return false;
    mbedtls_md_init(&md);
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA512);
    if (info == NULL || mbedtls_md_setup(&md, info, 1) != 0)
        goto out_md;
    if (mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)password, password_len, h->salt,
                                  h->salt_len, h->iterations, (uint32_t)sizeof(derived),
                                  derived) != 0)
        goto out_md;
    ok = upk_mem_equal_ct(derived, h->hash, sizeof(derived));
out_md:
    mbedtls_md_free(&md);
    memset(derived, 0, sizeof(derived));
    return ok;
}

upk_err upk__bp_passwd_load(upk_bp_map *accounts, const char *text, size_t len, char *err,
                            size_t errcap)
{
    size_t lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl != NULL ? (size_t)(nl - line) : len - pos;
        pos += llen + (nl != NULL ? 1 : 0);
        lineno++;
        while (llen > 0 && (line[llen - 1] == '\r' || line[llen - 1] == ' '))
            llen--;
        if (llen == 0 || line[0] == '#')
            continue;
        char user[UPK_BP_USERNAME_MAX + 1];
        upk_bp_account *acct = calloc(1, sizeof(*acct));
        if (acct == NULL)
            return UPK_E_NOMEM;
        acct->role = UPK_BP_ROLE__COUNT; /* set from "accounts" later */
        upk_err e = upk__bp_passwd_parse_line(line, llen, user, sizeof(user), &acct->pw);
        if (e != UPK_OK) {
            free(acct);
            snprintf(err, errcap,
                     "password_file line %zu: not a mosquitto_passwd \"user:$7$...\" entry "
                     "(%s)",
                     lineno, upk_err_str(e));
            return UPK_E_CONFIG_INVALID;
        }
        if (!upk__bp_name_safe(user)) {
            free(acct);
            snprintf(err, errcap, "password_file line %zu: user name has '+', '#' or '/'", lineno);
            return UPK_E_CONFIG_INVALID;
        }
        e = upk__bp_map_put(accounts, user, acct);
        if (e != UPK_OK) {
            free(acct);
            if (e == UPK_E_EXISTS) {
                snprintf(err, errcap, "password_file line %zu: user '%s' appears twice", lineno,
                         user);
                return UPK_E_CONFIG_INVALID;
            }
            return e;
        }
    }
    return UPK_OK;
}
