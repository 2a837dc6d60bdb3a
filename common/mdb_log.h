/* mdb_log: one line per event, plain or JSON, tagged with the daemon name and,
 * where known, the job id and path. The macros check the level before any
 * formatting so disabled levels cost one comparison. libmongoc's log handler
 * is routed here by mdb_log_route_mongoc(); librdkafka's log_cb/error_cb by
 * mdb_kafka_conf_apply() (every handle made by mdb_kafka gets them).
 * Plain: "2026-11-25T08:52:12.123Z info  worker[123]: job=J path=P message"
 * (control bytes other than tab escaped as \xNN, newlines as spaces).
 * JSON:  {"ts":"...","level":"info","daemon":"worker","job":"J","path":"P","msg":"..."} */
#ifndef MDB_LOG_H
#define MDB_LOG_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MDB_LOG_ERROR = 0, MDB_LOG_WARN, MDB_LOG_INFO, MDB_LOG_DEBUG } mdb_log_level_t;

/* Process-wide logger settings, set once from main before threads start.
 * level_name: "error|warn|info|debug"; format: "plain|json". Returns false on
 * an unknown level/format (settings unchanged). Output goes to stderr. */
bool mdb_log_init(const char *daemon, const char *level_name, const char *format);

extern int mdb_log_current_level;

/* Emit one line. job/path may be NULL. Thread-safe (one write(2) per line). */
void mdb_log_write(int level, const char *job, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define MDB_LOG(level, ...)                                                                                            \
    do {                                                                                                               \
        if ((level) <= mdb_log_current_level)                                                                          \
            mdb_log_write((level), NULL, NULL, __VA_ARGS__);                                                           \
    } while (0)

#define MDB_LOGX(level, job, path, ...)                                                                                \
    do {                                                                                                               \
        if ((level) <= mdb_log_current_level)                                                                          \
            mdb_log_write((level), (job), (path), __VA_ARGS__);                                                        \
    } while (0)

/* Rate-limit warnings and errors: at most burst lines per call site (format
 * string) per window_ms; the rest are dropped and counted, and the count is
 * reported before the next line of that kind once its window has ended. A
 * daemon that logs per request (metadb-api) turns this on so that a flood of
 * malformed requests cannot flood the log. burst 0 = off (the default). */
void mdb_log_set_rate_limit(int burst, int window_ms);

/* Route libmongoc's log handler into MDB_LOG (call after mongoc_init). */
void mdb_log_route_mongoc(void);

/* Copy of uri with any "user:password@" replaced by "***:***@". Caller frees. */
char *mdb_log_mask_uri(const char *uri);

#ifdef __cplusplus
}
#endif
#endif
