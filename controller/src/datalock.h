/* One `upkeep serve` per data directory: a lock file, DATA_DIR/serve.lock,
 * held (an open file description lock, released by the kernel when the
 * process ends, even on kill -9) for as long as the daemon runs, with the
 * holder's pid written in it so that a second daemon can say who holds it.
 * Two controllers on one store would each apply the other's half of every
 * decision, and on one broker account they knock each other off. */
#ifndef UPKEEP_CONTROLLER_DATALOCK_H
#define UPKEEP_CONTROLLER_DATALOCK_H

#include <stddef.h>

#include "upkeep/err.h"

#define UPK_DATALOCK_NAME "serve.lock"

typedef struct upk_datalock upk_datalock;

/* Takes the lock of data_dir (creating the directory, one level, and the
 * file as needed). On UPK_OK *out holds it until upk_datalock_release. On
 * UPK_E_BUSY another process holds it: *holder_pid is the pid written in
 * the file (0 when unreadable). why (may be NULL) gets a one-line reason
 * naming the lock file on any failure. */
UPK_MUST_CHECK upk_err upk_datalock_acquire(const char *data_dir, upk_datalock **out,
                                            long *holder_pid, char *why, size_t whycap);

/* Releases and frees l (the file stays, empty of meaning). NULL is a no-op. */
void upk_datalock_release(upk_datalock *l);

#endif
