/* mdb_daemon_delivery.c: counting a publishing round's delivery reports and
 * waiting for all of them (mdb_daemon.h). */
#include "mdb_daemon.h"

#include <stdio.h>
#include <time.h>

#include "mdb_error.h"

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
