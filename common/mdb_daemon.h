/* mdb_daemon: how every metadb daemon starts. One call loads the
 * configuration (file, environment, flags: mdb_config_load_all), answers
 * --help / -h (usage, then every key with its default), refuses an unknown
 * argument with the usage on stderr, and sets up logging from log.level and
 * log.format. Messages go to stderr prefixed with the program's name, since
 * logging may not exist yet. */
#ifndef MDB_DAEMON_H
#define MDB_DAEMON_H

#include <stdio.h>

#include "mdb_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mdb_daemon_start's answer when the daemon should go on running. */
#define MDB_DAEMON_RUN (-1)

/* prog: "metadb-worker" (messages), log_name: the logger's component name,
 * usage: prints the daemon's usage lines (may be NULL). Returns
 * MDB_DAEMON_RUN, or the exit code: 0 after --help, 2 on a bad argument, a
 * configuration that does not load, or a bad log.level / log.format. */
int mdb_daemon_start(mdb_config_t *cfg, const char *prog, const char *log_name, void (*usage)(FILE *out), int argc,
                     char **argv);

#ifdef __cplusplus
}
#endif
#endif
