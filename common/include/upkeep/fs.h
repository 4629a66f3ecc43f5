/* File helpers used by the agent and the controller: whole-file reads with a
 * size cap, and atomic replacement (write temp, fsync, rename, fsync dir) so
 * a power cut leaves either the old or the new content, never a mix.
 * Any thread; no shared state. */
#ifndef UPKEEP_FS_H
#define UPKEEP_FS_H

#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"

/* Reads the whole file at path into a new NUL-terminated buffer (*out, *len
 * without the NUL); caller frees with free(). UPK_E_NOT_FOUND when missing,
 * UPK_E_MSG_TOO_LARGE above max bytes, UPK_E_IO otherwise. */
UPK_MUST_CHECK upk_err upk_fs_read(const char *path, size_t max, char **out, size_t *len);

/* Atomically replaces path with len bytes of data (mode 0600 for new files):
 * writes "<path>.tmp", fsyncs it, renames over path, fsyncs the directory. */
UPK_MUST_CHECK upk_err upk_fs_write_atomic(const char *path, const void *data, size_t len);

/* fsync of the directory holding path (after a rename or unlink in it). */
UPK_MUST_CHECK upk_err upk_fs_sync_dir_of(const char *path);

/* mkdir -p with mode 0700 for missing parts; UPK_OK if it already exists. */
UPK_MUST_CHECK upk_err upk_fs_mkdirs(const char *path);

/* Streams the file through SHA-256; *size receives its length. */
UPK_MUST_CHECK upk_err upk_fs_sha256(const char *path, uint8_t out[32], uint64_t *size);

#endif
