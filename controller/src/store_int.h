/* Internal interface between the files of the controller store: store.c
 * owns the connection, the statement cache and transactions; store_health.c
 * holds the health-gate data (issue 17). Not for other modules: they call
 * store.h. Loop thread only, like the store. */
#ifndef UPKEEP_CONTROLLER_STORE_INT_H
#define UPKEEP_CONTROLLER_STORE_INT_H

#include "health_gate.h"
#include "store.h"

struct sqlite3_stmt;

/* A statement from the cache (or a new one); give it back with unprep. */
UPK_MUST_CHECK upk_err upk__store_prep(upk_store *s, const char *sql, struct sqlite3_stmt **st);
void upk__store_unprep(upk_store *s, struct sqlite3_stmt *st);
UPK_MUST_CHECK upk_err upk__store_begin(upk_store *s);
UPK_MUST_CHECK upk_err upk__store_commit(upk_store *s);
void upk__store_rollback(upk_store *s);
/* Logs what failed with SQLite's message; returns UPK_E_DB. */
upk_err upk__store_db_err(upk_store *s, const char *what);

/* The gate metrics of campaign id (store_health.c): save inside the caller's
 * transaction; load into gate (metric_count 0 when none were named). */
UPK_MUST_CHECK upk_err upk__store_gate_save(upk_store *s, const char *id, const upk_gate_cfg *gate);
UPK_MUST_CHECK upk_err upk__store_gate_load(upk_store *s, const char *id, upk_gate_cfg *gate);

#endif
