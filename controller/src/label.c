/* Update-capability label of one device (label.h): built from a device row and
 * the signed support object of its installed release; rendered as text, JSON
 * or a self-contained HTML card. */
#include "label.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "clifmt.h"
#include "upkeep/timefmt.h"

static upk_err get_str(const cJSON *row, const char *key, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
    out[0] = '\0';
    if (v == NULL || cJSON_IsNull(v))
        return UPK_OK;
    if (!cJSON_IsString(v))
        return UPK_E_FIELD_TYPE;
    int r = snprintf(out, cap, "%s", v->valuestring);
    return r >= 0 && (size_t)r < cap ? UPK_OK : UPK_E_FIELD_TOO_LONG;
}

static upk_err get_num(const cJSON *row, const char *key, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
    *out = 0;
    if (v == NULL || cJSON_IsNull(v))
        return UPK_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble < -9.2e18 || v->valuedouble > 9.2e18)
        return UPK_E_FIELD_TYPE;
    *out = (int64_t)v->valuedouble;
    return UPK_OK;
}

static upk_err get_flag(const cJSON *row, const char *key, bool *out)
{
    int64_t n;
    upk_err err = get_num(row, key, &n);
    *out = n != 0;
    return err;
}

const char *upk_label_support_str(upk_label_support s)
{
    switch (s) {
    case UPK_LABEL_SUPPORTED:
        return "yes";
    case UPK_LABEL_ENDING:
        return "ending";
    case UPK_LABEL_ENDED:
        return "no";
    case UPK_LABEL_UNSTATED:
    default:
        return "unknown";
    }
}

upk_err upk_label_build(const cJSON *row, int64_t now_s, upk_label *out)
{
    upk_label l;
    memset(&l, 0, sizeof(l));
    int64_t state_ts = 0;
    upk_err err;
    if (!cJSON_IsObject(row))
        return UPK_E_FIELD_TYPE;
    if ((err = get_str(row, "id", l.device, sizeof(l.device))) != UPK_OK)
        return err;
    if (l.device[0] == '\0')
        return UPK_E_FIELD_MISSING;
    if ((err = get_str(row, "hw", l.hw, sizeof(l.hw))) != UPK_OK ||
        (err = get_str(row, "release", l.release, sizeof(l.release))) != UPK_OK ||
        (err = get_str(row, "version", l.version, sizeof(l.version))) != UPK_OK ||
        (err = get_num(row, "state_ts", &state_ts)) != UPK_OK ||
        (err = get_flag(row, "cap_automatic", &l.automatic)) != UPK_OK ||
        (err = get_flag(row, "cap_signed", &l.signed_only)) != UPK_OK ||
        (err = get_flag(row, "cap_rollback", &l.rollback)) != UPK_OK ||
        (err = get_flag(row, "cap_delta", &l.delta)) != UPK_OK ||
        (err = get_num(row, "support_until", &l.support_until)) != UPK_OK ||
        (err = get_flag(row, "support_signed", &l.support_signed)) != UPK_OK ||
        (err = get_num(row, "last_patched", &l.last_patched)) != UPK_OK)
        return err;
    l.reported = state_ts > 0;
    /* The signed support object of the installed release (how updates arrive,
     * how owners are told, whom to contact). The controller verified the
     * manifest's signature when it imported the release. */
    const cJSON *mj = cJSON_GetObjectItemCaseSensitive(row, "manifest");
    bool verified = false;
    if (mj != NULL && !cJSON_IsNull(mj)) {
        if (!cJSON_IsString(mj))
            return UPK_E_FIELD_TYPE;
        upk_manifest *m = calloc(1, sizeof(*m));
        if (m == NULL)
            return UPK_E_NOMEM;
        err = upk_manifest_decode(mj->valuestring, strlen(mj->valuestring), m);
        if (err == UPK_OK && m->support.present) {
            int r = snprintf(l.delivery, sizeof(l.delivery), "%s", m->support.delivery);
            r |= snprintf(l.notice, sizeof(l.notice), "%s", m->support.notice);
            r |= snprintf(l.contact, sizeof(l.contact), "%s", m->support.contact);
            (void)r; /* same bounds as the manifest's */
            bool hw_ok = false;
            for (size_t i = 0; i < m->hw_count && !hw_ok; i++)
                hw_ok = strcmp(m->hw[i], l.hw) == 0;
            verified = hw_ok && strcmp(m->name, l.release) == 0 &&
                       strcmp(m->version, l.version) == 0 &&
                       m->support.security_until == l.support_until && l.support_until > 0;
        }
        free(m);
        if (err != UPK_OK)
            return err;
    }
    /* "Signed" is the device's claim until the manifest the controller holds
     * says the same (docs/security.md: a device cannot sign for itself). */
    l.support_claimed = l.support_signed && !verified;
    l.support_signed = l.support_signed && verified;
    l.now = now_s;
    if (l.support_until <= 0)
        l.support = UPK_LABEL_UNSTATED;
    else if (l.support_until < now_s)
        l.support = UPK_LABEL_ENDED;
    else if (l.support_until - now_s <= (int64_t)UPK_LABEL_NEAR_DAYS * 86400)
        l.support = UPK_LABEL_ENDING;
    else
        l.support = UPK_LABEL_SUPPORTED;
    *out = l;
    return UPK_OK;
}

/* "2027-05-27" or "-" for 0. */
static void date_fmt(int64_t t, char *buf, size_t cap)
{
    char full[40];
    if (t <= 0 || upk_time_format(t, full, sizeof(full)) != UPK_OK) {
        int r = snprintf(buf, cap, "-");
        (void)r;
        return;
    }
    int r = snprintf(buf, cap, "%.10s", full);
    (void)r;
}

/* The how-updates-arrive line: the signed delivery statement when there is
 * one, else what the device reports of itself. */
static const char *delivery_str(const upk_label *l)
{
    if (l->delivery[0] != '\0')
        return l->delivery;
    if (!l->reported)
        return "unknown";
    return l->automatic ? "automatic" : "user-approved";
}

static const char *yes_no(const upk_label *l, bool v)
{
    return !l->reported ? "unknown" : v ? "yes" : "no";
}

cJSON *upk_label_json(const upk_label *l)
{
    cJSON *o = cJSON_CreateObject();
    char until[16], patched[16];
    date_fmt(l->support_until, until, sizeof(until));
    date_fmt(l->last_patched, patched, sizeof(patched));
    bool ok =
        o != NULL && cJSON_AddStringToObject(o, "device", l->device) != NULL &&
        cJSON_AddStringToObject(o, "hw", l->hw) != NULL &&
        cJSON_AddStringToObject(o, "release", l->release) != NULL &&
        cJSON_AddStringToObject(o, "version", l->version) != NULL &&
        cJSON_AddStringToObject(o, "security_updates", upk_label_support_str(l->support)) != NULL &&
        cJSON_AddNumberToObject(o, "support_until", (double)l->support_until) != NULL &&
        cJSON_AddStringToObject(o, "support_until_date", until) != NULL &&
        cJSON_AddStringToObject(o, "support_source",
                                l->support_until <= 0 ? "none"
                                : l->support_signed   ? "signed-manifest"
                                : l->support_claimed  ? "claimed-by-device"
                                                      : "device-config") != NULL &&
        cJSON_AddStringToObject(o, "delivery", delivery_str(l)) != NULL &&
        cJSON_AddBoolToObject(o, "delivery_signed", l->delivery[0] != '\0') != NULL &&
        cJSON_AddStringToObject(o, "notice", l->notice) != NULL &&
        cJSON_AddStringToObject(o, "contact", l->contact) != NULL &&
        cJSON_AddBoolToObject(o, "reported", l->reported) != NULL &&
        cJSON_AddBoolToObject(o, "signed_updates_only", l->reported && l->signed_only) != NULL &&
        cJSON_AddBoolToObject(o, "rollback", l->reported && l->rollback) != NULL &&
        cJSON_AddBoolToObject(o, "delta", l->reported && l->delta) != NULL &&
        cJSON_AddNumberToObject(o, "last_patched", (double)l->last_patched) != NULL &&
        cJSON_AddStringToObject(o, "last_patched_date", patched) != NULL &&
        cJSON_AddNumberToObject(o, "generated", (double)l->now) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static const char *support_sentence(const upk_label *l, char *buf, size_t cap)
{
    char until[16];
    date_fmt(l->support_until, until, sizeof(until));
    int r;
    switch (l->support) {
    case UPK_LABEL_SUPPORTED:
        r = snprintf(buf, cap, "yes, until %s", until);
        break;
    case UPK_LABEL_ENDING:
        r = snprintf(buf, cap, "yes, but support ends %s (in %lld days)", until,
                     (long long)((l->support_until - l->now) / 86400));
        break;
    case UPK_LABEL_ENDED:
        r = snprintf(buf, cap, "no, support ended %s", until);
        break;
    default:
        r = snprintf(buf, cap, "unknown: no end of support stated");
        break;
    }
    (void)r;
    return buf;
}

static const char *source_str(const upk_label *l)
{
    if (l->support_until <= 0)
        return "not stated";
    if (l->support_signed)
        return "signed by the manufacturer (release manifest)";
    return l->support_claimed ? "claimed by the device (no matching signed manifest)"
                              : "device configuration (not signed)";
}

upk_err upk_label_text(const upk_label *l, FILE *out)
{
    char sup[128], patched[16];
    /* Every string is escaped for the terminal (clifmt.h): the release,
     * version and hardware are what the device reports. */
    char dev[4 * UPK_ID_MAX + 8], hw[4 * UPK_ID_MAX + 8], rel[4 * UPK_ID_MAX + 8],
        ver[4 * UPK_VERSION_STR_MAX + 8], notice[4 * UPK_TEXT_MAX + 8],
        contact[4 * UPK_TEXT_MAX + 8], deliv[4 * UPK_ID_MAX + 8];
    bool whole = upk_term_escape(l->device, dev, sizeof(dev));
    whole &= upk_term_escape(l->hw[0] ? l->hw : "hw unknown", hw, sizeof(hw));
    whole &= upk_term_escape(l->release[0] ? l->release : "no release", rel, sizeof(rel));
    whole &= upk_term_escape(l->version, ver, sizeof(ver));
    whole &= upk_term_escape(l->notice[0] ? l->notice : "-", notice, sizeof(notice));
    whole &= upk_term_escape(l->contact[0] ? l->contact : "-", contact, sizeof(contact));
    whole &= upk_term_escape(delivery_str(l), deliv, sizeof(deliv));
    (void)whole; /* 4x each field's limit always fits */
    date_fmt(l->last_patched, patched, sizeof(patched));
    int r =
        fprintf(out,
                "Update capability of %s (%s, %s%s%s)\n"
                "  security updates: %s\n"
                "  support end from: %s\n"
                "  updates arrive:   %s%s\n"
                "  signed updates:   %s\n"
                "  rollback:         %s\n"
                "  last patched:     %s\n"
                "  owners are told:  %s\n"
                "  contact:          %s\n",
                dev, hw, rel, l->version[0] ? " " : "", ver, support_sentence(l, sup, sizeof(sup)),
                source_str(l), deliv, l->delivery[0] != '\0' ? " (signed statement)" : "",
                !l->reported     ? "unknown"
                : l->signed_only ? "yes, installs signed releases only"
                                 : "no",
                yes_no(l, l->rollback), patched, notice, contact);
    return r < 0 || ferror(out) ? UPK_E_IO : UPK_OK;
}

static void html_esc(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        default:
            fputc(*s, out);
        }
    }
}

static void html_row(FILE *out, const char *name, const char *value, const char *cls)
{
    fprintf(out, "<tr><th>%s</th><td class=\"%s\">", name, cls);
    html_esc(out, value);
    fputs("</td></tr>\n", out);
}

upk_err upk_label_html(const upk_label *l, FILE *out)
{
    static const char *const badge_cls[] = {"ok", "warn", "bad", "warn"};
    char sup[128], patched[16], gen[40];
    date_fmt(l->last_patched, patched, sizeof(patched));
    date_fmt(l->now, gen, sizeof(gen));
    const char *cls = badge_cls[l->support <= UPK_LABEL_UNSTATED ? l->support : 3];
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Update "
          "capability: ",
          out);
    html_esc(out, l->device);
    fputs("</title>\n<style>\n"
          "body{margin:0;padding:16px;background:#eef1f4;font:14px/1.4 sans-serif;color:#1b1f23}\n"
          ".card{max-width:520px;background:#fff;border:2px solid #1b1f23;border-radius:8px;"
          "padding:14px 18px}\n"
          "h1{font-size:18px;margin:0 0 2px}.sub{color:#555;margin:0 0 10px}\n"
          ".badge{display:inline-block;padding:6px 10px;border-radius:4px;font-weight:bold;"
          "color:#fff;margin-bottom:10px}\n"
          ".badge.ok{background:#1a7f37}.badge.warn{background:#b35900}"
          ".badge.bad{background:#c62828}\n"
          "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 6px;"
          "border-top:1px solid #d0d7de;vertical-align:top}th{width:40%;font-weight:600}\n"
          "td.ok{color:#1a7f37}td.bad{color:#c62828}td.warn{color:#b35900}\n"
          ".foot{color:#666;font-size:12px;margin-top:8px}\n"
          "</style></head><body>\n<div class=\"card\">\n<h1>Update capability</h1>\n"
          "<p class=\"sub\">",
          out);
    html_esc(out, l->device);
    fputs(" &middot; ", out);
    html_esc(out, l->hw[0] ? l->hw : "hw unknown");
    fputs(" &middot; ", out);
    html_esc(out, l->release[0] ? l->release : "no release");
    if (l->version[0] != '\0')
        fputs(" ", out);
    html_esc(out, l->version);
    fprintf(out, "</p>\n<div class=\"badge %s\">Security updates: ", cls);
    html_esc(out, support_sentence(l, sup, sizeof(sup)));
    fputs("</div>\n<table>\n", out);
    html_row(out, "End of support stated by", source_str(l), l->support_signed ? "ok" : "warn");
    html_row(out, "Updates arrive", delivery_str(l), "");
    html_row(out, "Signed updates only", yes_no(l, l->signed_only),
             l->reported && l->signed_only ? "ok" : "bad");
    html_row(out, "Rollback", yes_no(l, l->rollback), l->reported && l->rollback ? "ok" : "warn");
    html_row(out, "Last patched", patched, "");
    html_row(out, "Owners are told", l->notice[0] ? l->notice : "-", "");
    html_row(out, "Contact", l->contact[0] ? l->contact : "-", "");
    fprintf(out,
            "</table>\n<p class=\"foot\">Generated %s by upkeep.</p>\n</div>\n</body></html>\n",
            gen);
    return ferror(out) ? UPK_E_IO : UPK_OK;
}
