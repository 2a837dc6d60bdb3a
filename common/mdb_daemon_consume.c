/* mdb_daemon_consume.c: the consume loop of the consuming daemons, each
 * message retried with backoff until done, given up or stopped (mdb_daemon.h). */
#include "mdb_daemon.h"

#include <time.h>

#include "mdb_error.h"
#include "mdb_log.h"
#include "mdb_signal.h"

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
