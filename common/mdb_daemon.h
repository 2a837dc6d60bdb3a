/* mdb_daemon: how every metadb daemon starts, and what the consuming
 * daemons (producer, fetcher) hold and do in common.
 *
 * mdb_daemon_start loads the configuration (file, environment, flags:
 * mdb_config_load_all), answers --help / -h (usage, then every key with its
 * default), refuses an unknown argument with the usage on stderr, and sets
 * up logging from log.level and log.format. Its messages go to stderr
 * prefixed with the program's name, since logging may not exist yet.
 *
 * A consuming daemon then opens, in this order and with its own steps in
 * between, the runtime (mongoc, signals), its archive, the database and
 * catalogue, the topics with a producer and a consumer, and its metrics;
 * runs mdb_daemon_consume (a message's offset is stored only once its work
 * is done; transient failures are retried on the same message with
 * back-off); and closes everything with mdb_daemon_close. The open steps
 * log their own failure (one line, the same for every daemon) and return
 * false: main then exits 1. */
#ifndef MDB_DAEMON_H
#define MDB_DAEMON_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mdb_archive.h"
#include "mdb_catalog.h"
#include "mdb_config.h"
#include "mdb_kafka.h"
#include "mdb_lag.h"
#include "mdb_metrics.h"
#include "mdb_mongo.h"

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

/* ---- what a consuming daemon holds ---- */

/* Owning pointers start NULL ({0}); mdb_daemon_close frees what was opened,
 * children before parents. */
typedef struct {
    mdb_config_t *cfg;
    mdb_archive_t *archive; /* opened by main: how a bad archive.roots is told differs */
    mdb_mongo_t *mongo;
    mdb_catalog_t *catalog;
    mdb_kafka_producer_t *kp;
    mdb_kafka_consumer_t *consumer;
    mdb_metrics_t *metrics;
    mdb_lag_gauge_t *lag;
    const char *group; /* the consumer group (a value of cfg) */
    bool driver_ready; /* mongoc_init ran: close runs mongoc_cleanup */
} mdb_daemon_t;

/* mongoc_init, libmongoc's logs routed into mdb_log, the SIGINT/SIGTERM
 * handlers (mdb_signal); d->driver_ready records it (d may be NULL for a
 * daemon that calls mongoc_cleanup itself). */
void mdb_daemon_init_runtime(mdb_daemon_t *d);

/* The database of mongo.uri (ready within 30 s), the catalogue of
 * d->archive, the catalogue's and the jobs' indexes. false after logging
 * "database: ..." or "catalog/jobs set-up: ...". */
bool mdb_daemon_open_database(mdb_daemon_t *d);

/* Create the ntopics topics (topic.partitions each) unless they exist, a
 * producer reporting deliveries to dr, and a consumer of topics[0] in the
 * group of config key group_key (d->group). topics are values of d->cfg.
 * false after logging "topics: ..." or, for a client, "<label>: ..." (label
 * NULL: "kafka producer" or "kafka consumer"; the fetcher's is "kafka"). */
bool mdb_daemon_open_kafka(mdb_daemon_t *d, const char *const *topics, size_t ntopics, const char *group_key,
                           mdb_kafka_dr_fn dr, const char *label);

/* The metrics registry of daemon name; false after logging "metrics: out of memory". */
bool mdb_daemon_open_metrics(mdb_daemon_t *d, const char *name);

/* Serve d->metrics at metrics.bind on the port of config key port_key (not
 * served when it is 0), then start the consumer lag gauge of d->group (a
 * warning when it cannot). false after logging "metrics on port N: ...". */
bool mdb_daemon_serve_metrics(mdb_daemon_t *d, const char *port_key);

/* Stop the lag gauge, close the consumer (it commits), flush the producer
 * (30 s), then destroy producer, metrics, catalogue, database, archive,
 * mongoc (when d->driver_ready) and the config; d is zeroed. false when
 * messages stayed undelivered (logged "undelivered messages at shutdown:
 * ..."): main exits 1. Anything in d may be NULL. */
bool mdb_daemon_close(mdb_daemon_t *d);

/* ---- the consume loop ---- */

/* What one attempt at a message came to. */
typedef enum {
    MDB_DAEMON_DONE = 0, /* handled: store its offset */
    MDB_DAEMON_RETRY,    /* a transient failure (err filled): try the same message again */
    MDB_DAEMON_STOP      /* a stop was requested mid-way: do not store */
} mdb_daemon_result_t;

typedef mdb_daemon_result_t (*mdb_daemon_handle_fn)(void *ud, const rd_kafka_message_t *msg, mdb_error_t *err);

typedef struct {
    const char *what; /* names the messages in log lines: "job request" */
    int budget_s;     /* retry one message for at most this long */
    mdb_daemon_handle_fn handle;
    void *ud; /* handle's */
} mdb_daemon_handler_t;

/* Handle msg until DONE. A RETRY is logged ("<what> topic[p]@offset:
 * attempt N failed: ...") and tried again after a back-off (500 ms,
 * doubling up to 16 s) that serves kp's delivery reports. false when the
 * handler said STOP, a stop was requested, or budget_s ran out. */
bool mdb_daemon_handle_with_retry(mdb_kafka_producer_t *kp, const mdb_daemon_handler_t *h,
                                  const rd_kafka_message_t *msg);

/* Until a stop is requested: poll d->consumer (500 ms), serve d->kp's
 * delivery reports each turn, handle each message with retry and store its
 * offset once done. Returns the exit code: 0 on a stop; 1 on a fatal
 * consumer error or a message given up on (its offset not stored, so a
 * restart gets it again). */
int mdb_daemon_consume(mdb_daemon_t *d, const mdb_daemon_handler_t *h);

/* ---- delivery bookkeeping ---- */

/* One publishing round: pass its address as every message's msg_opaque and
 * mdb_daemon_delivery_report as the producer's report callback; wait until
 * ok + failed reaches the number produced. */
typedef struct {
    uint64_t ok;
    uint64_t failed;
    char last_error[256]; /* of the last failure */
} mdb_daemon_delivery_t;

/* An mdb_kafka_dr_fn counting into msg_opaque (an mdb_daemon_delivery_t;
 * NULL: nothing counted). ud is unused. */
void mdb_daemon_delivery_report(void *msg_opaque, bool ok, const char *errstr, void *ud);

/* Serve kp's reports until round d has all n. Returns false with err when
 * one failed, or when timeout_ms passed first: then it still waits (flush,
 * then polls) until every report of the round has arrived, so d may live
 * on the caller's stack whatever the outcome. */
bool mdb_daemon_delivery_wait(mdb_kafka_producer_t *kp, mdb_daemon_delivery_t *d, uint64_t n, int timeout_ms,
                              mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
