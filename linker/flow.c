/* The linker's flow control: when a batch is due (linker.batch_size
 * records, or linker.batch_ms, stretched up to 10 x while records are
 * already waiting in the assigned partitions), what happens when its flush
 * fails (pause every partition, retry with backoff, resume once a write
 * succeeds or a rebalance dropped the batch), and the rebalance callback
 * (flush before a revoke, drop uncommitted when the assignment was lost). */
#include <stdlib.h>

#include "linker.h"
#include "mdb_log.h"
#include "mdb_signal.h"

/* Partitions of the batch that stay assigned after `revoked` go: seek them
 * back to their first record in the batch, so dropping the batch loses
 * nothing (the records are consumed again). */
static void rewind_kept(linker_t *L, const rd_kafka_topic_partition_list_t *revoked)
{
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < L->nitems; i++) {
        const linker_item_t *it = &L->items[i];
        if (revoked && rd_kafka_topic_partition_list_find(revoked, it->topic, it->partition))
            continue;
        if (rd_kafka_topic_partition_list_find(seek, it->topic, it->partition))
            continue; /* the first record per partition is the smallest offset */
        rd_kafka_topic_partition_list_add(seek, it->topic, it->partition)->offset = it->offset;
    }
    if (seek->cnt > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(mdb_kafka_consumer_handle(L->consumer), seek, 5000);
        if (e) {
            MDB_LOG(MDB_LOG_ERROR, "seeking back %d partition(s) after dropping a batch failed: %s", seek->cnt,
                    rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            mdb_signal_request_stop(); /* never store past records we dropped */
        }
    }
    rd_kafka_topic_partition_list_destroy(seek);
}

void linker_on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    linker_t *L = ud;
    if (assigned || L->nitems == 0)
        return;
    if (lost) {
        MDB_LOG(MDB_LOG_WARN, "assignment lost: dropping a batch of %zu record(s) uncommitted", L->nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
        return;
    }
    mdb_error_t err = {0};
    if (!linker_batch_flush(L, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "flush before revoke failed (%s): the batch of %zu record(s) stays uncommitted",
                err.message, L->nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
    }
}

int64_t linker_local_backlog(linker_t *L)
{
    rd_kafka_t *rk = mdb_kafka_consumer_handle(L->consumer);
    rd_kafka_topic_partition_list_t *a = NULL;
    int64_t lag = 0;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return 0;
    if (a->cnt > 0 && rd_kafka_position(rk, a) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < a->cnt; i++) {
            int64_t lo = 0, hi = 0;
            if (a->elems[i].offset < 0 ||
                rd_kafka_get_watermark_offsets(rk, a->elems[i].topic, a->elems[i].partition, &lo, &hi) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR)
                continue;
            if (hi > a->elems[i].offset)
                lag += hi - a->elems[i].offset;
        }
    rd_kafka_topic_partition_list_destroy(a);
    return lag;
}

void linker_pause(linker_t *L, bool pause)
{
    rd_kafka_t *rk = mdb_kafka_consumer_handle(L->consumer);
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return;
    if (a->cnt > 0)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(rk, a);
    rd_kafka_topic_partition_list_destroy(a);
}

static bool batch_due(linker_t *L, int64_t now)
{
    if (L->nitems == 0)
        return false;
    if ((int64_t)L->nitems >= L->batch_size)
        return true;
    int64_t age = now - L->batch_started_ms;
    if (age < L->batch_ms)
        return false;
    /* batch_ms bounds the wait for records that are not there yet; while a
     * backlog is waiting, filling the batch costs no latency and saves round
     * trips (bounded at 10 x batch_ms all the same). */
    return L->paused || age >= 10 * L->batch_ms || linker_local_backlog(L) == 0;
}

static void resume(linker_t *L)
{
    linker_pause(L, false);
    L->paused = false;
    L->backoff_ms = LINKER_BACKOFF_MIN_MS;
}

int linker_poll_timeout(linker_t *L, int64_t now)
{
    if (L->paused && L->nitems == 0)
        resume(L); /* the failing batch was dropped by a rebalance: consume again */
    if (L->nitems == 0 || L->paused)
        return 100;
    int64_t left = L->batch_started_ms + L->batch_ms - now;
    return left < 0 ? 0 : left < 100 ? (int)left : 100;
}

void linker_flush_when_due(linker_t *L, int64_t now)
{
    mdb_error_t err = {0};
    if (!batch_due(L, now) || (L->paused && now < L->retry_at_ms))
        return;
    if (linker_batch_flush(L, &err)) {
        if (L->paused) {
            MDB_LOG(MDB_LOG_INFO, "database writes succeed again: resuming consumption");
            resume(L);
        }
        return;
    }
    MDB_LOG(MDB_LOG_ERROR, "flush of %zu record(s) failed, retrying in %lld ms: %s", L->nitems,
            (long long)L->backoff_ms, err.message);
    if (!L->paused) {
        linker_pause(L, true);
        L->paused = true;
    }
    L->retry_at_ms = now + L->backoff_ms;
    L->backoff_ms = L->backoff_ms < 16000 ? L->backoff_ms * 2 : 30000;
}
