/* The linker's flow control: when a batch goes to the writer (writer.c:
 * linker.batch_size records, or linker.batch_ms after its first record,
 * once the previous write is done), what happens when a write fails (its
 * records go back in front of the batch; pause every partition, retry with
 * backoff, resume once a write succeeds or a rebalance dropped the batch),
 * and the rebalance callback (the write in flight first, then flush before
 * a revoke, drop uncommitted when the assignment was lost). */
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
    for (size_t i = 0; i < L->batch.nitems; i++) {
        const linker_item_t *it = &L->batch.items[i];
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
    if (assigned)
        return;
    /* the write in flight first (its records are older than the batch's):
     * stored when it succeeded and the partitions are still ours, else its
     * records go back in front of the batch */
    mdb_error_t err = {0};
    if (linker_write_collect(L, true, lost, &err) < 0 && !lost)
        MDB_LOG(MDB_LOG_WARN, "a write failed before the revoke, written again with the batch: %s", err.message);
    if (L->batch.nitems == 0)
        return;
    if (lost) {
        MDB_LOG(MDB_LOG_WARN, "assignment lost: dropping a batch of %zu record(s) uncommitted", L->batch.nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
        return;
    }
    if (!linker_batch_flush(L, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "flush before revoke failed (%s): the batch of %zu record(s) stays uncommitted",
                err.message, L->batch.nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
    }
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

/* Only asked while no write runs. A write overlaps the consumption of the
 * next batch, so a batch waits no longer than batch_ms for the writer to be
 * free: the records that come during a write fill the next batch, whose size
 * thereby follows the database's pace (up to batch_size). */
static bool batch_due(const linker_t *L, int64_t now)
{
    if (L->batch.nitems == 0)
        return false;
    return (int64_t)L->batch.nitems >= L->batch_size || now - L->batch.started_ms >= L->batch_ms;
}

static void resume(linker_t *L)
{
    linker_pause(L, false);
    L->paused = false;
    L->backoff_ms = LINKER_BACKOFF_MIN_MS;
}

int linker_poll_timeout(linker_t *L, int64_t now)
{
    if (L->paused && linker_batch_count(L) == 0)
        resume(L); /* the failing batch was dropped by a rebalance: consume again */
    if (L->writing)
        return 10; /* the write's result is collected at the next turn */
    if (L->batch.nitems == 0 || L->paused)
        return 100;
    int64_t left = L->batch.started_ms + L->batch_ms - now;
    return left < 0 ? 0 : left < 100 ? (int)left : 100;
}

/* A write failed (its records are back in L->batch): pause every partition
 * and retry with backoff (0.5 s doubling to 30 s). */
static void write_failed(linker_t *L, int64_t now, const mdb_error_t *err)
{
    MDB_LOG(MDB_LOG_ERROR, "flush of %zu record(s) failed, retrying in %lld ms: %s", L->batch.nitems,
            (long long)L->backoff_ms, err->message);
    if (!L->paused) {
        linker_pause(L, true);
        L->paused = true;
    }
    L->retry_at_ms = now + L->backoff_ms;
    L->backoff_ms = L->backoff_ms < 16000 ? L->backoff_ms * 2 : 30000;
}

void linker_flush_when_due(linker_t *L, int64_t now)
{
    mdb_error_t err = {0};
    /* a full batch waits for the writer (consumption holds meanwhile) */
    bool block = L->writing && (int64_t)L->batch.nitems >= L->batch_size;
    int r = linker_write_collect(L, block, false, &err);
    if (block)
        now = linker_now_ms();
    if (r < 0) {
        write_failed(L, now, &err);
        return;
    }
    if (r > 0 && L->paused) {
        MDB_LOG(MDB_LOG_INFO, "database writes succeed again: resuming consumption");
        resume(L);
    }
    if (L->writing || L->broken || !batch_due(L, now) || (L->paused && now < L->retry_at_ms))
        return;
    if (!linker_batch_ready(L, &L->batch, &err)) {
        write_failed(L, now, &err);
        return;
    }
    linker_write_start(L);
}
