/* mdb_daemon.c: the common start of the daemons, and what the consuming
 * daemons (producer, fetcher) open, loop over and close alike (see
 * mdb_daemon.h). */
#include "mdb_daemon.h"

#include <mongoc/mongoc.h>
#include <string.h>
#include <time.h>

#include "mdb_error.h"
#include "mdb_indexes.h"
#include "mdb_log.h"
#include "mdb_signal.h"

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

/* ---- what a consuming daemon holds ---- */

void mdb_daemon_init_runtime(mdb_daemon_t *d)
{
    mongoc_init();
    if (d)
        d->driver_ready = true;
    mdb_log_route_mongoc();
    mdb_signal_install();
}

bool mdb_daemon_open_database(mdb_daemon_t *d)
{
    mdb_error_t err = {0};
    d->mongo = mdb_mongo_new_from_config(d->cfg, &err);
    if (!d->mongo || !mdb_mongo_wait_ready(d->mongo, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "database: %s", err.message);
        return false;
    }
    d->catalog = mdb_catalog_new(d->mongo, d->archive, &err);
    if (!d->catalog || !mdb_catalog_ensure_indexes(d->catalog, &err) || !mdb_indexes_ensure_jobs(d->mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "catalog/jobs set-up: %s", err.message[0] ? err.message : "out of memory");
        return false;
    }
    return true;
}

bool mdb_daemon_open_kafka(mdb_daemon_t *d, const char *const *topics, size_t ntopics, const char *group_key,
                           mdb_kafka_dr_fn dr, const char *label)
{
    mdb_error_t err = {0};
    if (!mdb_kafka_ensure_topics(d->cfg, topics, ntopics, (int)mdb_config_get_int(d->cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        return false;
    }
    d->kp = mdb_kafka_producer_new(d->cfg, dr, NULL, &err);
    if (!d->kp) {
        MDB_LOG(MDB_LOG_ERROR, "%s: %s", label ? label : "kafka producer", err.message);
        return false;
    }
    d->group = mdb_config_get(d->cfg, group_key);
    d->consumer = mdb_kafka_consumer_new(d->cfg, d->group, topics, 1, NULL, NULL, &err);
    if (!d->consumer) {
        MDB_LOG(MDB_LOG_ERROR, "%s: %s", label ? label : "kafka consumer", err.message);
        return false;
    }
    return true;
}

bool mdb_daemon_open_metrics(mdb_daemon_t *d, const char *name)
{
    d->metrics = mdb_metrics_new(name);
    if (!d->metrics)
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
    return d->metrics != NULL;
}

bool mdb_daemon_serve_metrics(mdb_daemon_t *d, const char *port_key)
{
    mdb_error_t err = {0};
    int port = (int)mdb_config_get_int(d->cfg, port_key);
    const char *bind = mdb_config_get(d->cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(d->metrics, bind && *bind ? bind : NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        return false;
    }
    d->lag = mdb_lag_gauge_start(d->metrics, mdb_kafka_consumer_handle(d->consumer), d->group, 0, &err);
    if (!d->lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);
    return true;
}

bool mdb_daemon_close(mdb_daemon_t *d)
{
    mdb_error_t err = {0};
    mdb_lag_gauge_stop(d->lag);
    mdb_kafka_consumer_destroy(d->consumer);
    bool ok = !d->kp || mdb_kafka_producer_flush(d->kp, 30000, &err);
    if (!ok)
        MDB_LOG(MDB_LOG_ERROR, "undelivered messages at shutdown: %s", err.message);
    mdb_kafka_producer_destroy(d->kp);
    mdb_metrics_destroy(d->metrics);
    mdb_catalog_destroy(d->catalog);
    mdb_mongo_destroy(d->mongo);
    mdb_archive_destroy(d->archive);
    if (d->driver_ready)
        mongoc_cleanup();
    mdb_config_destroy(d->cfg);
    memset(d, 0, sizeof *d);
    return ok;
}

/* ---- the consume loop ---- */

bool mdb_daemon_handle_with_retry(mdb_kafka_producer_t *kp, const mdb_daemon_handler_t *h,
                                  const rd_kafka_message_t *msg)
{
    long backoff_ms = 500;
    time_t start = time(NULL);
    for (int attempt = 1;; attempt++) {
        mdb_error_t err = {0};
        mdb_daemon_result_t r = h->handle(h->ud, msg, &err);
        if (r != MDB_DAEMON_RETRY)
            return r == MDB_DAEMON_DONE;
        MDB_LOG(MDB_LOG_ERROR, "%s %s[%d]@%lld: attempt %d failed: %s", h->what, rd_kafka_topic_name(msg->rkt),
                (int)msg->partition, (long long)msg->offset, attempt, err.message);
        if (mdb_signal_stop_requested() || time(NULL) - start > h->budget_s)
            return false;
        mdb_kafka_producer_wait(kp, backoff_ms);
        if (backoff_ms < 16000)
            backoff_ms *= 2;
    }
}

int mdb_daemon_consume(mdb_daemon_t *d, const mdb_daemon_handler_t *h)
{
    mdb_error_t err = {0};
    while (!mdb_signal_stop_requested()) {
        bool fatal = false;
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(d->consumer, 500, &fatal, &err);
        mdb_kafka_producer_poll(d->kp, 0);
        if (fatal) {
            MDB_LOG(MDB_LOG_ERROR, "kafka consumer: fatal: %s", err.message);
            return 1;
        }
        if (!msg)
            continue;
        if (msg->err) {
            MDB_LOG(MDB_LOG_WARN, "kafka consumer: %s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            continue;
        }
        if (!mdb_daemon_handle_with_retry(d->kp, h, msg)) {
            int rc = 0;
            if (!mdb_signal_stop_requested()) {
                MDB_LOG(MDB_LOG_ERROR, "giving up on %s[%d]@%lld for now: exiting without storing its offset",
                        rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset);
                rc = 1;
            }
            rd_kafka_message_destroy(msg);
            return rc;
        }
        if (!mdb_kafka_consumer_store(d->consumer, rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset, &err))
            MDB_LOG(MDB_LOG_WARN, "store offset: %s", err.message);
        rd_kafka_message_destroy(msg);
    }
    return 0;
}

/* ---- delivery bookkeeping ---- */

void mdb_daemon_delivery_report(void *msg_opaque, bool ok, const char *errstr, void *ud)
{
    (void)ud;
    mdb_daemon_delivery_t *d = msg_opaque;
    if (!d)
        return;
    if (ok) {
        d->ok++;
    } else {
        d->failed++;
        snprintf(d->last_error, sizeof d->last_error, "%s", errstr ? errstr : "delivery failed");
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool mdb_daemon_delivery_wait(mdb_kafka_producer_t *kp, mdb_daemon_delivery_t *d, uint64_t n, int timeout_ms,
                              mdb_error_t *err)
{
    int64_t t0 = mono_ms();
    while (d->ok + d->failed < n) {
        mdb_kafka_producer_poll(kp, 100);
        if (mono_ms() - t0 > timeout_ms) {
            mdb_error_set(err, MDB_ERR_KAFKA, 0, "%llu of %llu deliveries still unreported after %d ms",
                          (unsigned long long)(n - d->ok - d->failed), (unsigned long long)n, timeout_ms);
            /* d is usually on the caller's stack: every report must have
             * arrived before it returns (librdkafka reports each message
             * by message.timeout.ms at the latest) */
            mdb_kafka_producer_flush(kp, 600000, NULL);
            while (d->ok + d->failed < n)
                mdb_kafka_producer_poll(kp, 100);
            return false;
        }
    }
    if (d->failed) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "%llu of %llu deliveries failed: %s", (unsigned long long)d->failed,
                      (unsigned long long)n, d->last_error);
        return false;
    }
    return true;
}
