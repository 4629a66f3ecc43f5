/* Operator-facing logging: one line per event, with a level, to stderr (or a
 * sink set once at start). Lines read "LEVEL message"; callers put the ids
 * involved (device=, campaign=, release=) and error codes in the message.
 * Thread-safe: each line is written with one write(2). */
#ifndef UPKEEP_LOG_H
#define UPKEEP_LOG_H

typedef enum upk_log_level {
    UPK_LOG_DEBUG,
    UPK_LOG_INFO,
    UPK_LOG_WARN,
    UPK_LOG_ERROR
} upk_log_level;

/* Lines below level are dropped. Call from main() before threads start. */
void upk_log_set_level(upk_log_level level);

/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int upk_log_level_parse(const char *s);

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
void upk_log(upk_log_level level, const char *fmt, ...);

#define upk_debug(...) upk_log(UPK_LOG_DEBUG, __VA_ARGS__)
#define upk_info(...)  upk_log(UPK_LOG_INFO, __VA_ARGS__)
#define upk_warn(...)  upk_log(UPK_LOG_WARN, __VA_ARGS__)
#define upk_error(...) upk_log(UPK_LOG_ERROR, __VA_ARGS__)

#endif
