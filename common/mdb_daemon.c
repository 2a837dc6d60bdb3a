/* mdb_daemon.c: the common start of every daemon (configuration, --help,
 * logging). Alone in its file on purpose: the worker uses only this, and an
 * object that also referred to mongoc would link libmongoc into the worker,
 * whose load-time initialisation creates /dev/shm/mongoc-PID (a write the
 * worker must never make; test_least_privilege). What the consuming daemons
 * open and close is in mdb_daemon_open.c, their loop in
 * mdb_daemon_consume.c, delivery bookkeeping in mdb_daemon_delivery.c. */
#include "mdb_daemon.h"

#include <string.h>

#include "mdb_error.h"
#include "mdb_log.h"

int mdb_daemon_start(mdb_config_t *cfg, const char *prog, const char *log_name, void (*usage)(FILE *out), int argc,
                     char **argv)
{
    mdb_error_t err = {0};
    int rest = argc;
    if (!cfg) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    if (!mdb_config_load_all(cfg, argc, argv, &rest, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.message);
        return 2;
    }
    if (rest < argc) {
        bool help = !strcmp(argv[rest], "--help") || !strcmp(argv[rest], "-h");
        FILE *out = help ? stdout : stderr;
        if (!help)
            fprintf(stderr, "%s: unknown argument '%s'\n", prog, argv[rest]);
        if (usage)
            usage(out);
        else
            fprintf(out, "usage: %s [--config FILE] [--key=value ...]\n\n", prog);
        mdb_config_print_help(cfg, out);
        return help ? 0 : 2;
    }
    if (!mdb_log_init(log_name, mdb_config_get(cfg, "log.level"), mdb_config_get(cfg, "log.format"))) {
        fprintf(stderr, "%s: bad log.level or log.format\n", prog);
        return 2;
    }
    return MDB_DAEMON_RUN;
}
