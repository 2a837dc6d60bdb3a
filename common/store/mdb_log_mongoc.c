/* mdb_log_mongoc: libmongoc's log handler routed into mdb_log. Kept apart
 * from mdb_log.c so a binary that never talks to MongoDB (metadb-worker)
 * does not reference libmongoc through its logger: linked with --as-needed
 * it then does not load libmongoc at all, whose load-time initialisation
 * creates a counters file /dev/shm/mongoc-<pid> (left behind on kill -9). */
#include <mongoc/mongoc.h>
#include <stdlib.h>

#include "mdb_log.h"

static void mongoc_handler(mongoc_log_level_t lvl, const char *domain, const char *message, void *ud)
{
    (void)ud;
    int level;
    switch (lvl) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL: level = MDB_LOG_ERROR; break;
    case MONGOC_LOG_LEVEL_WARNING: level = MDB_LOG_WARN; break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO: level = MDB_LOG_INFO; break;
    default: level = MDB_LOG_DEBUG; break;
    }
    if (lvl == MONGOC_LOG_LEVEL_TRACE)
        return; /* tracing is a driver-debugging aid, far too chatty */
    if (level > mdb_log_current_level)
        return;
    char *masked = mdb_log_mask_uri(message ? message : "");
    mdb_log_write(level, NULL, NULL, "mongoc[%s]: %s", domain ? domain : "?", masked ? masked : "(oom)");
    free(masked);
}

void mdb_log_route_mongoc(void)
{
    mongoc_log_trace_disable();
    mongoc_log_set_handler(mongoc_handler, NULL);
}
