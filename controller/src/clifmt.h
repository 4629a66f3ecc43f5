/* Terminal output helpers of the `upkeep` CLI: aligned tables from JSON rows,
 * times, durations, progress bars. Print to the given FILE; one thread.
 *
 * Every string that came from a device or an operator (ids are safe, but
 * messages, reasons, versions, target expressions and the like are not) goes
 * through upk_term_escape before it reaches a terminal: control characters,
 * DEL, C1 controls and bytes that are not UTF-8 are shown as \xNN, so a
 * device cannot move the cursor, clear the screen, retitle the window or
 * forge a line (docs/security.md). Table cells and key-value lines do this
 * themselves. */
#ifndef UPKEEP_CONTROLLER_CLIFMT_H
#define UPKEEP_CONTROLLER_CLIFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cJSON;

typedef enum upk_col_kind {
    UPK_COL_STR,
    UPK_COL_NUM,
    UPK_COL_TIME_MS, /* epoch ms as RFC 3339, "-" for 0 */
    UPK_COL_TIME_S,  /* epoch s */
    UPK_COL_BOOL,    /* 1/0 as yes/no */
    UPK_COL_BP,      /* basis points as percent */
} upk_col_kind;

typedef struct upk_col {
    const char *key;
    const char *header;
    upk_col_kind kind;
} upk_col;

/* Escapes s for a terminal into buf (always NUL-terminated when cap > 0):
 * bytes 0x00-0x1f, 0x7f, the UTF-8 encodings of U+0080-U+009F (C1 controls,
 * e.g. the one-byte CSI) and bytes that are not part of valid UTF-8 become
 * "\xNN"; everything else is copied. Returns false when the result did not
 * fit: then buf ends in "..." so that a cut is visible. */
bool upk_term_escape(const char *s, char *buf, size_t cap);
/* Writes s escaped as upk_term_escape does, without a length limit. */
void upk_term_puts(FILE *out, const char *s);
/* True when s holds a byte upk_term_escape would escape (a control
 * character, DEL, a C1 control or invalid UTF-8): the controller refuses
 * such operator text by name. */
bool upk_text_unsafe(const char *s);

/* Prints rows (a JSON array of objects) as an aligned table with a header.
 * Cells are escaped; a cell longer than the column limit ends in "...",
 * except in the last column, which is printed whole. */
void upk_table_print(FILE *out, const struct cJSON *rows, const upk_col *cols, size_t ncols);
/* As upk_table_print, but an empty (or missing) rows array prints
 * "<indent>none" instead of a bare header. */
void upk_table_print_or_none(FILE *out, const struct cJSON *rows, const upk_col *cols, size_t ncols,
                             const char *indent);
/* Prints one object as "key: value" lines in the order of cols. */
void upk_kv_print(FILE *out, const struct cJSON *obj, const upk_col *cols, size_t ncols);
/* Formats one cell into buf. */
void upk_cell_format(const struct cJSON *v, upk_col_kind kind, char *buf, size_t cap);
/* "1h02m", "45s", "-" for negative. */
void upk_duration_format(double seconds, char *buf, size_t cap);
/* A bar like "[#####.....]" of width cells for done/total. */
void upk_bar_format(double done, double total, int width, char *buf, size_t cap);
/* Prints JSON (pretty) and a newline. */
void upk_json_print(FILE *out, const struct cJSON *v);

#endif
