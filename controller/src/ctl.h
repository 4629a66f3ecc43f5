/* Operator command dispatch for `upkeep serve`: one handler per command of
 * ctl/req/{o}, authorization on the broker plugin's upkeep-sender stamp, the
 * audit log, and release uploads. Commands and their arguments are listed in
 * docs/operator-guide.md ("Commands on the wire").
 *
 * Authorization: the stamp must be "operator:<o>" or "admin:<o>" where <o> is
 * the id in the request topic; operators listed as read-only in the config
 * may run only reading commands. Anything else is refused with DENIED and
 * changes nothing. Every changing command and every refusal is audited.
 * Loop thread only. */
#ifndef UPKEEP_CONTROLLER_CTL_H
#define UPKEEP_CONTROLLER_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"
#include "upkeep/err.h"

/* Decoded bytes per release.upload.chunk: 47 KiB is 64172 bytes of base64,
 * so a whole chunk request stays within the broker plugin's default
 * max_payload_bytes for operators (65536). */
#define UPK_UPLOAD_CHUNK_MAX (47u * 1024u)
#define UPK_UPLOADS_MAX      8                /* concurrent uploads */
#define UPK_UPLOAD_IDLE_MS   (10 * 60 * 1000) /* an upload without a chunk this long expires */

typedef struct upk_ctl upk_ctl;
/* Called after a commit for every device whose desired changed. */
typedef void (*upk_ctl_changed_fn)(const char *device, void *ud);

/* store and cfg are borrowed and must outlive the ctl. Free with upk_ctl_free. */
UPK_MUST_CHECK upk_err upk_ctl_new(upk_store *store, const upk_serve_config *cfg,
                                   upk_ctl_changed_fn changed, void *ud, upk_ctl **out);
void upk_ctl_free(upk_ctl *ctl);

/* Handles one request payload received on ctl/req/{op} with the sender stamp
 * (the empty string when absent). Always produces a response to publish on
 * ctl/resp/{op} in *out (caller frees with free()), including for malformed
 * or refused requests; returns UPK_E_NOMEM only when even that failed. */
UPK_MUST_CHECK upk_err upk_ctl_handle(upk_ctl *ctl, const char *op, const char *sender,
                                      const uint8_t *payload, size_t len, int64_t now_ms,
                                      char **out, size_t *outlen);

/* Drops uploads idle for longer than UPK_UPLOAD_IDLE_MS. */
void upk_ctl_expire(upk_ctl *ctl, int64_t now_ms);

/* Builds the SQL condition of a target expression ("all", or comma-separated
 * key=value terms with keys hw, version, release, id (a glob), group, status,
 * online) into where (cap bytes) with up to 8 bound values in binds (pointers
 * into copy, cap copycap). UPK_E_FIELD_RANGE names nothing; why explains. */
UPK_MUST_CHECK upk_err upk_ctl_target_sql(const char *expr, char *where, size_t cap, char *copy,
                                          size_t copycap, const char *binds[8], size_t *nbinds,
                                          char *why, size_t whycap);

#endif
