/* The linker's second stage: a writer thread writes one batch (documents,
 * job files, job counters: linker_batch_write) while the main thread goes
 * on consuming and decoding the next one, so the database's time overlaps
 * the decoding instead of following it.
 *
 * The offset rule is unchanged: a batch's offsets are stored (by the main
 * thread, which owns the consumer) only after its write was acknowledged.
 * Writes stay in consumption order: one writer at a time, the next batch
 * is handed over only after the previous one's result was collected, and a
 * write that failed goes back in front of the records consumed since, to
 * be written again (with them) before anything newer. The origin tags'
 * offsets (docs/linker.md) therefore only grow per partition, as with a
 * single thread.
 *
 * Sharing: while a write runs, the writer thread alone touches L->wbatch,
 * L->wres, L->mongo and L->store; the main thread reads them only after
 * pthread_join (which orders the writer's memory before it). `written` is
 * the writer's last store, an atomic the main thread polls to join without
 * blocking.
 *
 * linker_batch_flush is the synchronous path (a revoke, the shutdown, a
 * full batch behind a failed write): collect the writer, then write what is
 * left on the main thread. */
#include <string.h>

#include "linker.h"
#include "mdb_log.h"
#include "mdb_signal.h"

static void *writer_main(void *arg)
{
    linker_t *L = arg;
    linker_batch_write(L, &L->wbatch, &L->wres);
    atomic_store(&L->written, true);
    return NULL;
}

void linker_write_start(linker_t *L)
{
    /* swap: the filled batch becomes the written one, and the next batch
     * reuses the array of the last one written (empty by now) */
    linker_batch_t t = L->wbatch;
    L->wbatch = L->batch;
    L->batch = t;
    atomic_store(&L->written, false);
    L->writing = true;
    int rc = pthread_create(&L->writer, NULL, writer_main, L);
    L->joinable = rc == 0;
    if (rc != 0) {
        MDB_LOG(MDB_LOG_WARN, "writer thread not started (%s): writing this batch on the main thread", strerror(rc));
        writer_main(L);
    }
}

int linker_write_collect(linker_t *L, bool block, bool lost, mdb_error_t *err)
{
    if (!L->writing || (!block && !atomic_load(&L->written)))
        return 0;
    if (L->joinable)
        pthread_join(L->writer, NULL);
    L->writing = L->joinable = false;
    bool ok = L->wres.ok;
    if (!ok)
        *err = L->wres.err;
    else if (lost)
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "assignment lost before the batch's offsets were stored");
    else if (linker_batch_done(L, &L->wbatch, &L->wres, err))
        return 1;
    if (!lost || !L->wres.ok)
        mdb_metric_inc(L->mx.flush_failures, 1);
    /* not stored: the records go back in front of what came since */
    if (!linker_batch_prepend(&L->batch, &L->wbatch)) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory keeping an unwritten batch: stopping without storing its offsets");
        L->broken = true;
        mdb_signal_request_stop();
    }
    return -1;
}

bool linker_batch_flush(linker_t *L, mdb_error_t *err)
{
    mdb_error_t werr = {0};
    if (linker_write_collect(L, true, false, &werr) < 0)
        MDB_LOG(MDB_LOG_WARN, "write of a batch failed, written again with the next: %s", werr.message);
    if (L->batch.nitems == 0)
        return true;
    linker_write_result_t res;
    if (!linker_batch_ready(L, &L->batch, err))
        return false;
    linker_batch_write(L, &L->batch, &res);
    if (!res.ok) {
        *err = res.err;
        mdb_metric_inc(L->mx.flush_failures, 1);
        return false;
    }
    if (!linker_batch_done(L, &L->batch, &res, err)) {
        mdb_metric_inc(L->mx.flush_failures, 1);
        return false;
    }
    return true;
}
