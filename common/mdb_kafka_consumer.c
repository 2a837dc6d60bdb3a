/* mdb_kafka_consumer: a group member that never stores offsets on its own
 * (enable.auto.offset.store=false): the owner stores an offset once the work
 * is durable, auto-commit then commits only stored offsets. The rebalance
 * callback lets the owner flush before a revoke and commits synchronously
 * before the partitions go; a lost assignment is not committed. */
#include "mdb_kafka.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_kafka_private.h"
#include "mdb_log.h"

struct mdb_kafka_consumer {
    rd_kafka_t *rk;
    mdb_kafka_rebalance_fn rebalance;
    void *ud;
};

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    mdb_kafka_consumer_t *c = opaque;
    bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    rd_kafka_error_t *aerr = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        MDB_LOG(MDB_LOG_INFO, "kafka: assigned %d partition(s) (%s)", parts->cnt,
                cooperative ? "cooperative" : "eager");
        if (cooperative)
            aerr = rd_kafka_incremental_assign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, parts);
        if (c->rebalance)
            c->rebalance(c->ud, true, false, parts);
    } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(rk);
        MDB_LOG(lost ? MDB_LOG_WARN : MDB_LOG_INFO, "kafka: %s %d partition(s)", lost ? "lost" : "revoking",
                parts->cnt);
        if (c->rebalance)
            c->rebalance(c->ud, false, lost, parts);
        if (!lost) {
            rd_kafka_resp_err_t ce = rd_kafka_commit(rk, NULL, 0);
            if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET)
                MDB_LOG(MDB_LOG_WARN, "kafka: commit before revoke failed: %s", rd_kafka_err2str(ce));
        }
        if (cooperative)
            aerr = rd_kafka_incremental_unassign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, NULL);
    } else {
        MDB_LOG(MDB_LOG_ERROR, "kafka: rebalance failed: %s", rd_kafka_err2str(e));
        rerr = rd_kafka_assign(rk, NULL);
    }
    if (aerr) {
        MDB_LOG(MDB_LOG_ERROR, "kafka: incremental (un)assign failed: %s", rd_kafka_error_string(aerr));
        rd_kafka_error_destroy(aerr);
    }
    if (rerr)
        MDB_LOG(MDB_LOG_ERROR, "kafka: (un)assign failed: %s", rd_kafka_err2str(rerr));
}

mdb_kafka_consumer_t *mdb_kafka_consumer_new(const mdb_config_t *cfg, const char *group, const char *const *topics,
                                             size_t ntopics, mdb_kafka_rebalance_fn rebalance, void *ud,
                                             mdb_error_t *err)
{
    rd_kafka_topic_partition_list_t *subs = NULL;
    mdb_kafka_consumer_t *c = calloc(1, sizeof *c);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!c || !conf) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto fail;
    }
    if (!group || !*group) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "kafka consumer: empty group id");
        goto fail;
    }
    c->rebalance = rebalance;
    c->ud = ud;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    if (!mdb_kafka_conf_consumer(conf, cfg, group, err))
        goto fail;
    c->rk = mdb_kafka_client_new(RD_KAFKA_CONSUMER, conf, c, "consumer", err);
    if (!c->rk)
        goto fail;
    conf = NULL; /* owned by rk */
    rd_kafka_poll_set_consumer(c->rk);
    subs = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot subscribe group '%s': %s", group, rd_kafka_err2str(e));
        goto fail;
    }
    return c;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (c && c->rk)
        rd_kafka_destroy(c->rk);
    free(c);
    return NULL;
}

rd_kafka_t *mdb_kafka_consumer_handle(mdb_kafka_consumer_t *c)
{
    return c->rk;
}

rd_kafka_message_t *mdb_kafka_consumer_poll(mdb_kafka_consumer_t *c, int timeout_ms, bool *fatal, mdb_error_t *err)
{
    if (fatal)
        *fatal = false;
    mdb_error_clear(err);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m)
        return NULL;
    if (!m->err)
        return m;
    rd_kafka_resp_err_t e = m->err;
    if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(m);
        return NULL;
    }
    char fatalstr[256] = "";
    rd_kafka_resp_err_t fe = rd_kafka_fatal_error(c->rk, fatalstr, sizeof fatalstr);
    if (fe || e == RD_KAFKA_RESP_ERR__FATAL) {
        if (fatal)
            *fatal = true;
        mdb_error_set(err, MDB_ERR_KAFKA, fe ? fe : e, "fatal consumer error: %s",
                      fe ? fatalstr : rd_kafka_message_errstr(m));
    } else {
        mdb_error_set(err, MDB_ERR_KAFKA, e, "consumer error%s%s: %s", m->rkt ? " on " : "",
                      m->rkt ? rd_kafka_topic_name(m->rkt) : "", rd_kafka_message_errstr(m));
        MDB_LOG(MDB_LOG_WARN, "kafka: %s", err ? err->message : rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
    return NULL;
}

bool mdb_kafka_consumer_store(mdb_kafka_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
                              mdb_error_t *err)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset + 1;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot store offset %lld of %s[%d]: %s%s", (long long)offset, topic,
                      partition, rd_kafka_err2str(e),
                      e == RD_KAFKA_RESP_ERR__STATE ? " (partition no longer assigned)" : "");
        return false;
    }
    return true;
}

bool mdb_kafka_consumer_commit(mdb_kafka_consumer_t *c, bool sync, mdb_error_t *err)
{
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, sync ? 0 : 1);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        mdb_error_set(err, MDB_ERR_KAFKA, e, "offset commit failed: %s", rd_kafka_err2str(e));
        return false;
    }
    return true;
}

void mdb_kafka_consumer_destroy(mdb_kafka_consumer_t *c)
{
    if (!c)
        return;
    mdb_error_t err = {0};
    if (!mdb_kafka_consumer_commit(c, true, &err))
        MDB_LOG(MDB_LOG_WARN, "kafka consumer closing: %s", err.message);
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(c->rk);
    if (e)
        MDB_LOG(MDB_LOG_WARN, "kafka consumer close: %s", rd_kafka_err2str(e));
    rd_kafka_destroy(c->rk);
    free(c);
}
