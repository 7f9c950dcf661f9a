/* Logging for the binaries (library code returns errors instead of logging).
 * One line per event on stderr: timestamp, level, message. */
#ifndef JP_CORE_LOG_H
#define JP_CORE_LOG_H

typedef enum { JP_LOG_DEBUG, JP_LOG_INFO, JP_LOG_WARN, JP_LOG_ERROR } jp_log_level;

void jp_log_set_level(jp_log_level min);
/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int jp_log_level_parse(const char *s);
void jp_log(jp_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define jp_debug(...) jp_log(JP_LOG_DEBUG, __VA_ARGS__)
#define jp_info(...) jp_log(JP_LOG_INFO, __VA_ARGS__)
#define jp_warn(...) jp_log(JP_LOG_WARN, __VA_ARGS__)
#define jp_error(...) jp_log(JP_LOG_ERROR, __VA_ARGS__)

#endif
