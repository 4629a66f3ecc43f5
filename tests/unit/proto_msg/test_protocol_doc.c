/* Checks the examples in docs/protocol.md against the codecs: every JSON
 * example decodes with the decoder of its section, and the desired example's
 * signature verifies with the public key printed beside it, so the document
 * cannot show a message that upkeep would refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

enum section {
    SEC_NONE,
    SEC_STATE,
    SEC_DESIRED,
    SEC_EVENT,
    SEC_CHUNK_REQ,
    SEC_CTL,
    SEC_STATS,
    SEC_ACK,
    SEC_MANIFEST,
    SEC__COUNT
};

static const struct {
    const char *heading; /* line prefix that starts the section */
    enum section sec;
} headings[] = {
    {"### 5.1 ", SEC_STATE},  {"### 5.2 ", SEC_NONE},      {"### 5.3 ", SEC_DESIRED},
    {"### 5.4 ", SEC_EVENT},  {"### 5.5 ", SEC_CHUNK_REQ}, {"### 5.6 ", SEC_NONE},
    {"### 5.7 ", SEC_CTL},    {"### 5.8 ", SEC_STATS},     {"### 5.9 ", SEC_ACK},
    {"## 6. ", SEC_MANIFEST}, {"## 7. ", SEC_NONE},
};

static char *read_doc(void)
{
    FILE *f = fopen(UPK_DOCS_PROTOCOL, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", UPK_DOCS_PROTOCOL);
    size_t cap = 1 << 20;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, cap, f);
    assert_int_equal(ferror(f), 0);
    assert_true(feof(f));
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Verifies the desired example with the PEM key that follows it. */
static void verify_desired(const upk_desired_msg *d, const char *pem)
{
    upk_key *key = NULL;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_key_load_pem(pem, strlen(pem), &key), UPK_OK);
    assert_string_equal(upk_key_id(key), d->key_id);
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    assert_int_equal(upk_keyring_add(ring, key), UPK_OK);
    upk_manifest m;
    assert_int_equal(
        upk_manifest_verify(ring, d->key_id, d->manifest, d->manifest_len, d->sig, d->sig_len, &m),
        UPK_OK);
    assert_string_equal(m.name, "fw-2.1.0");
    upk_keyring_free(ring);
    upk_key_free(key);
}

static void check_example(enum section sec, const char *json, size_t len, const char *next_block)
{
    upk_err err = UPK_E_INTERNAL;
    switch (sec) {
    case SEC_STATE: {
        upk_state_msg m;
        err = upk_state_decode(json, len, &m);
        break;
    }
    case SEC_DESIRED: {
        upk_desired_msg m;
        memset(&m, 0, sizeof(m));
        err = upk_desired_decode(json, len, &m);
        if (err == UPK_OK) {
            if (next_block == NULL)
                fail_msg("desired example is not followed by its public key");
            verify_desired(&m, next_block);
        }
        upk_desired_cleanup(&m);
        break;
    }
    case SEC_EVENT: {
        upk_event_msg m;
        err = upk_event_decode(json, len, &m);
        break;
    }
    case SEC_CHUNK_REQ: {
        upk_chunk_req m;
        err = upk_chunk_req_decode(json, len, &m);
        break;
    }
    case SEC_CTL: {
        upk_ctl_req q;
        memset(&q, 0, sizeof(q));
        err = upk_ctl_req_decode(json, len, &q);
        upk_ctl_req_cleanup(&q);
        if (err != UPK_OK) {
            upk_ctl_resp r;
            memset(&r, 0, sizeof(r));
            err = upk_ctl_resp_decode(json, len, &r);
            upk_ctl_resp_cleanup(&r);
        }
        break;
    }
    case SEC_STATS: {
        cJSON *o = cJSON_ParseWithLength(json, len);
        err = cJSON_IsObject(o) ? UPK_OK : UPK_E_JSON_INVALID;
        cJSON_Delete(o);
        break;
    }
    case SEC_ACK: {
        uint64_t seq = 0;
        err = upk_ack_decode(json, len, &seq);
        break;
    }
    case SEC_MANIFEST: {
        upk_manifest m;
        err = upk_manifest_decode(json, len, &m);
        break;
    }
    default:
        fail_msg("JSON example outside a message section: %.80s", json);
    }
    if (err != UPK_OK)
        fail_msg("example refused with %s: %.200s", upk_err_str(err), json);
}

static void protocol_doc_examples_decode(void **state)
{
    (void)state;
    char *doc = read_doc();
    enum section sec = SEC_NONE;
    int seen[SEC__COUNT] = {0};
    char *p = doc;
    while (*p != '\0') {
        char *eol = strchr(p, '\n');
        size_t linelen = eol != NULL ? (size_t)(eol - p) : strlen(p);
        for (size_t i = 0; i < sizeof(headings) / sizeof(headings[0]); i++) {
            if (strncmp(p, headings[i].heading, strlen(headings[i].heading)) == 0)
                sec = headings[i].sec;
        }
        if (linelen == 7 && strncmp(p, "```json", 7) == 0 && eol != NULL) {
            char *body = eol + 1;
            char *end = strstr(body, "\n```");
            assert_non_null(end);
            size_t len = (size_t)(end - body) + 1;
            /* The next fenced block, if it is a PEM key, belongs to this example. */
            char *after = end + 4;
            char *pem = NULL;
            char *fence = strstr(after, "\n```\n-----BEGIN PUBLIC KEY-----");
            char *next_json = strstr(after, "```json");
            if (fence != NULL && (next_json == NULL || fence < next_json)) {
                char *start = fence + 5;
                char *stop = strstr(start, "\n```");
                assert_non_null(stop);
                pem = strndup(start, (size_t)(stop - start) + 1);
                assert_non_null(pem);
            }
            check_example(sec, body, len, pem);
            free(pem);
            seen[sec]++;
            p = end + 4;
            continue;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    assert_int_equal(seen[SEC_STATE], 1);
    assert_int_equal(seen[SEC_DESIRED], 1);
    assert_int_equal(seen[SEC_EVENT], 3);
    assert_int_equal(seen[SEC_CHUNK_REQ], 1);
    assert_int_equal(seen[SEC_CTL], 3);
    assert_int_equal(seen[SEC_STATS], 1);
    assert_int_equal(seen[SEC_ACK], 1);
    assert_int_equal(seen[SEC_MANIFEST], 1);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(protocol_doc_examples_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
