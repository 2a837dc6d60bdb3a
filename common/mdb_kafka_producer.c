/* mdb_kafka_producer: the idempotent producer every daemon publishes with
 * (no duplicates or reordering on internal retries). Delivery reports are
 * counted and handed to the owner with the per-message opaque, queue-full is
 * handled by polling and retrying, and the flush reports how many messages
 * stayed undelivered. */
#include "mdb_kafka.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "mdb_kafka_private.h"
#include "mdb_log.h"
#include "mdb_signal.h"

#define QUEUE_FULL_RETRY_MS 30000

struct mdb_kafka_producer {
    rd_kafka_t *rk;
    mdb_kafka_dr_fn dr;
    void *ud;
    atomic_int_fast64_t outstanding;
    atomic_uint_fast64_t failures;
    atomic_uint_fast64_t delivered;
};

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    mdb_kafka_producer_t *p = opaque;
    bool ok = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR;
    atomic_fetch_sub(&p->outstanding, 1);
    if (ok)
        atomic_fetch_add(&p->delivered, 1);
    else
        atomic_fetch_add(&p->failures, 1);
    if (p->dr)
        p->dr(msg->_private, ok, ok ? NULL : rd_kafka_err2str(msg->err), p->ud);
}

mdb_kafka_producer_t *mdb_kafka_producer_new(const mdb_config_t *cfg, mdb_kafka_dr_fn dr, void *ud, mdb_error_t *err)
{
    mdb_kafka_producer_t *p = calloc(1, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!p || !conf) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto fail;
    }
    p->dr = dr;
    p->ud = ud;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    if (!mdb_kafka_conf_producer(conf, cfg, err))
        goto fail;
    p->rk = mdb_kafka_client_new(RD_KAFKA_PRODUCER, conf, p, "producer", err);
    if (!p->rk)
        goto fail;
    return p; /* conf is owned by rk now */
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(p);
    return NULL;
}

bool mdb_kafka_produce(mdb_kafka_producer_t *p, const char *topic, const void *key, size_t keylen, const void *value,
                       size_t len, void *msg_opaque, mdb_error_t *err)
{
    int64_t deadline = mdb_kafka_now_ms() + QUEUE_FULL_RETRY_MS;
    for (;;) {
        /* Counted before the call: the delivery report may run on another
         * thread's poll before producev even returns. */
        atomic_fetch_add(&p->outstanding, 1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, keylen), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return true;
        atomic_fetch_sub(&p->outstanding, 1);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && mdb_kafka_now_ms() < deadline) {
            rd_kafka_poll(p->rk, 100); /* serve delivery reports to make room */
            continue;
        }
        rd_kafka_resp_err_t fe = RD_KAFKA_RESP_ERR_NO_ERROR;
        char fatal[256] = "";
        if (e == RD_KAFKA_RESP_ERR__FATAL)
            fe = rd_kafka_fatal_error(p->rk, fatal, sizeof fatal);
        mdb_error_set(err, MDB_ERR_KAFKA, e, "produce to '%s' failed: %s%s%s", topic, rd_kafka_err2str(e),
                      fe ? ": " : "", fe ? fatal : "");
        return false;
    }
}

int mdb_kafka_producer_poll(mdb_kafka_producer_t *p, int timeout_ms)
{
    return rd_kafka_poll(p->rk, timeout_ms);
}

bool mdb_kafka_producer_wait(mdb_kafka_producer_t *p, long ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t end = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + ms;
    while (!mdb_signal_stop_requested()) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = end - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0)
            return true;
        rd_kafka_poll(p->rk, (int)(left < 100 ? left : 100));
    }
    return false;
}

int mdb_kafka_producer_outq_len(mdb_kafka_producer_t *p)
{
    int64_t n = atomic_load(&p->outstanding);
    return n < 0 ? 0 : (int)n;
}

bool mdb_kafka_producer_flush(mdb_kafka_producer_t *p, int timeout_ms, mdb_error_t *err)
{
    int64_t deadline = mdb_kafka_now_ms() + timeout_ms;
    rd_kafka_flush(p->rk, timeout_ms);
    /* rd_kafka_flush may return before our callbacks ran on this thread. */
    while (atomic_load(&p->outstanding) > 0 && mdb_kafka_now_ms() < deadline)
        rd_kafka_poll(p->rk, 50);
    rd_kafka_poll(p->rk, 0);
    int64_t left = atomic_load(&p->outstanding);
    if (left > 0) {
        mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT,
                      "%lld message(s) still undelivered after %d ms flush (broker unreachable?)", (long long)left,
                      timeout_ms);
        return false;
    }
    return true;
}

uint64_t mdb_kafka_producer_failures(mdb_kafka_producer_t *p)
{
    return atomic_load(&p->failures);
}

rd_kafka_t *mdb_kafka_producer_handle(mdb_kafka_producer_t *p)
{
    return p->rk;
}

void mdb_kafka_producer_destroy(mdb_kafka_producer_t *p)
{
    if (!p)
        return;
    mdb_error_t err = {0};
    if (!mdb_kafka_producer_flush(p, 10000, &err))
        MDB_LOG(MDB_LOG_ERROR, "kafka producer closing with undelivered messages: %s", err.message);
    rd_kafka_destroy(p->rk);
    free(p);
}
