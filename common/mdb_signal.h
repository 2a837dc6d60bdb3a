/* mdb_signal: SIGINT/SIGTERM handlers that only set a flag; the daemon loop
 * polls mdb_signal_stop_requested(), drains, commits and exits 0. A second
 * signal exits at once (_exit(130)). SIGPIPE is ignored. */
#ifndef MDB_SIGNAL_H
#define MDB_SIGNAL_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

void mdb_signal_install(void);
bool mdb_signal_stop_requested(void);
/* Ask the loop to stop from code (tests, fatal errors). */
void mdb_signal_request_stop(void);

#ifdef __cplusplus
}
#endif
#endif
