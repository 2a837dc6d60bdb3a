/* mdb_kafka: the producer, consumer and admin wrappers every daemon uses.
 *
 * Producer: idempotent (no duplicates or reordering on internal retries),
 * delivery reports counted and handed to the owner with the per-message
 * opaque, queue-full handled by polling and retrying, flush that reports how
 * many messages stayed undelivered. Consumer: a group member that never
 * stores offsets on its own (enable.auto.offset.store=false): the owner stores
 * an offset once the work is durable, auto-commit then commits only stored
 * offsets. The rebalance callback lets the owner flush before a revoke and
 * commits synchronously before the partitions go; a lost assignment is not
 * committed. librdkafka's logs and errors are routed into mdb_log. */
#include "mdb_kafka.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "mdb_log.h"
#include "mdb_signal.h"

#define QUEUE_FULL_RETRY_MS 30000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- shared conf ---- */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int l = level <= LOG_ERR ? MDB_LOG_ERROR : level == LOG_WARNING ? MDB_LOG_WARN
                                           : level <= LOG_INFO      ? MDB_LOG_INFO
                                                                    : MDB_LOG_DEBUG;
    if (l <= mdb_log_current_level)
        mdb_log_write(l, NULL, NULL, "rdkafka %s [%s]: %s", rk ? rd_kafka_name(rk) : "?", fac, buf);
}

/* Transient errors are retried by librdkafka itself: warn. Fatal ones: error. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || fatal)
        MDB_LOG(MDB_LOG_ERROR, "rdkafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
    else
        MDB_LOG(MDB_LOG_WARN, "rdkafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

typedef struct {
    rd_kafka_conf_t *conf;
    mdb_error_t *err;
} apply_ctx_t;

static bool apply_one(const char *name, const char *value, void *ud)
{
    apply_ctx_t *ctx = ud;
    char errstr[512];
    if (rd_kafka_conf_set(ctx->conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        mdb_error_set(ctx->err, MDB_ERR_CONFIG, 0, "config key 'kafka.%s': %s", name, errstr);
        return false;
    }
    return true;
}

static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, mdb_error_t *err)
{
    apply_ctx_t ctx = {conf, err};
    return apply_one(name, value, &ctx);
}

bool mdb_kafka_conf_apply(rd_kafka_conf_t *conf, const mdb_config_t *cfg, mdb_error_t *err)
{
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    if (!conf_set(conf, "bootstrap.servers", mdb_config_get(cfg, "kafka.brokers"), err))
        return false;
    if (!conf_set(conf, "client.id", "metadb", err))
        return false;
    apply_ctx_t ctx = {conf, err};
    return mdb_config_foreach_passthrough(cfg, apply_one, &ctx);
}

/* ---- producer ---- */

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

mdb_kafka_producer_t *mdb_kafka_producer_new(const mdb_config_t *cfg, mdb_kafka_dr_fn dr, void *ud,
                                             mdb_error_t *err)
{
    char errstr[512];
    mdb_kafka_producer_t *p = calloc(1, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!p || !conf) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto fail;
    }
    p->dr = dr;
    p->ud = ud;
    if (!conf_set(conf, "enable.idempotence", "true", err) || !conf_set(conf, "linger.ms", "5", err) ||
        !mdb_kafka_conf_apply(conf, cfg, err))
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka producer: %s", errstr);
        goto fail;
    }
    return p; /* conf is owned by rk now */
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(p);
    return NULL;
}

bool mdb_kafka_produce(mdb_kafka_producer_t *p, const char *topic, const void *key, size_t keylen,
                       const void *value, size_t len, void *msg_opaque, mdb_error_t *err)
{
    int64_t deadline = now_ms() + QUEUE_FULL_RETRY_MS;
    for (;;) {
        /* Counted before the call: the delivery report may run on another
         * thread's poll before producev even returns. */
        atomic_fetch_add(&p->outstanding, 1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, keylen),
            RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return true;
        atomic_fetch_sub(&p->outstanding, 1);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && now_ms() < deadline) {
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
    int64_t deadline = now_ms() + timeout_ms;
    rd_kafka_flush(p->rk, timeout_ms);
    /* rd_kafka_flush may return before our callbacks ran on this thread. */
    while (atomic_load(&p->outstanding) > 0 && now_ms() < deadline)
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

/* ---- consumer ---- */

struct mdb_kafka_consumer {
    rd_kafka_t *rk;
    mdb_kafka_rebalance_fn rebalance;
    void *ud;
};

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    mdb_kafka_consumer_t *c = opaque;
    bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    rd_kafka_error_t *aerr = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        MDB_LOG(MDB_LOG_INFO, "kafka: assigned %d partition(s) (%s)", parts->cnt, cooperative ? "cooperative" : "eager");
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

mdb_kafka_consumer_t *mdb_kafka_consumer_new(const mdb_config_t *cfg, const char *group,
                                             const char *const *topics, size_t ntopics,
                                             mdb_kafka_rebalance_fn rebalance, void *ud, mdb_error_t *err)
{
    char errstr[512];
    char num[32];
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
    snprintf(num, sizeof num, "%lld", (long long)mdb_config_get_int(cfg, "kafka.session_timeout_ms"));
    if (!conf_set(conf, "group.id", group, err) || !conf_set(conf, "auto.offset.reset", "earliest", err) ||
        !conf_set(conf, "enable.auto.commit", "true", err) || !conf_set(conf, "auto.commit.interval.ms", "1000", err) ||
        !conf_set(conf, "enable.auto.offset.store", "false", err) || !conf_set(conf, "session.timeout.ms", num, err) ||
        !conf_set(conf, "enable.partition.eof", "false", err) || !mdb_kafka_conf_apply(conf, cfg, err))
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!c->rk) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka consumer: %s", errstr);
        goto fail;
    }
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
        mdb_error_set(err, MDB_ERR_KAFKA, fe ? fe : e, "fatal consumer error: %s", fe ? fatalstr : rd_kafka_message_errstr(m));
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

rd_kafka_t *mdb_kafka_consumer_handle(mdb_kafka_consumer_t *c)
{
    return c->rk;
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

/* ---- admin ---- */

/* Have the brokers' metadata show every topic with a leader for each partition? */
static bool topics_visible(rd_kafka_t *rk, const char *const *topics, size_t n)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    size_t found = 0;
    for (size_t i = 0; i < n; i++)
        for (int t = 0; t < md->topic_cnt; t++) {
            const struct rd_kafka_metadata_topic *mt = &md->topics[t];
            if (strcmp(mt->topic, topics[i]) || mt->err || mt->partition_cnt == 0)
                continue;
            bool leaders = true;
            for (int p = 0; p < mt->partition_cnt; p++)
                if (mt->partitions[p].leader < 0)
                    leaders = false;
            if (leaders)
                found++;
            break;
        }
    rd_kafka_metadata_destroy(md);
    return found == n;
}

bool mdb_kafka_ensure_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, int partitions,
                             mdb_error_t *err)
{
    char errstr[512];
    bool ok = false;
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_NewTopic_t **nt = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (partitions < 1) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "topic partitions must be >= 1, got %d", partitions);
        goto done;
    }
    if (ntopics == 0) {
        ok = true;
        goto done;
    }
    if (!mdb_kafka_conf_apply(conf, cfg, err))
        goto done;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka admin client: %s", errstr);
        goto done;
    }
    conf = NULL;
    nt = calloc(ntopics ? ntopics : 1, sizeof *nt);
    if (!nt) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ntopics; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, -1, errstr, sizeof errstr);
        if (!nt[i]) {
            mdb_error_set(err, MDB_ERR_KAFKA, 0, "topic '%s': %s", topics[i], errstr);
            goto done;
        }
    }
    q = rd_kafka_queue_new(rk);
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, 30000, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, nt, ntopics, opts, q);
    ev = rd_kafka_queue_poll(q, 45000);
    if (!ev) {
        mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT,
                      "creating topics timed out (is Kafka reachable at %s?)", mdb_config_get(cfg, "kafka.brokers"));
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        mdb_error_set(err, MDB_ERR_KAFKA, rd_kafka_event_error(ev), "creating topics failed: %s",
                      rd_kafka_event_error_string(ev));
        goto done;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t nres = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            MDB_LOG(MDB_LOG_INFO, "kafka: created topic %s (%d partitions)", rd_kafka_topic_result_name(tr[i]),
                    partitions);
        } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot create topic '%s': %s", rd_kafka_topic_result_name(tr[i]),
                          rd_kafka_topic_result_error_string(tr[i]) ? rd_kafka_topic_result_error_string(tr[i])
                                                                    : rd_kafka_err2str(e));
            goto done;
        }
    }
    /* Creation is asynchronous in the cluster: wait until clients can use them. */
    int64_t deadline = now_ms() + 30000;
    while (!topics_visible(rk, topics, ntopics)) {
        if (now_ms() > deadline) {
            mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT,
                          "topics created but not visible with leaders after 30 s");
            goto done;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ok = true;
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (nt) {
        for (size_t i = 0; i < ntopics; i++)
            if (nt[i])
                rd_kafka_NewTopic_destroy(nt[i]);
        free(nt);
    }
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return ok;
}

bool mdb_kafka_delete_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, mdb_error_t *err)
{
    char errstr[512];
    bool ok = false;
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_DeleteTopic_t **dt = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (ntopics == 0) {
        rd_kafka_conf_destroy(conf);
        return true;
    }
    if (!mdb_kafka_conf_apply(conf, cfg, err))
        goto done;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka admin client: %s", errstr);
        goto done;
    }
    conf = NULL;
    dt = calloc(ntopics, sizeof *dt);
    if (!dt) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ntopics; i++)
        dt[i] = rd_kafka_DeleteTopic_new(topics[i]);
    q = rd_kafka_queue_new(rk);
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, 30000, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, errstr, sizeof errstr);
    rd_kafka_DeleteTopics(rk, dt, ntopics, opts, q);
    ev = rd_kafka_queue_poll(q, 45000);
    if (!ev) {
        mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT, "deleting topics timed out");
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        mdb_error_set(err, MDB_ERR_KAFKA, rd_kafka_event_error(ev), "deleting topics failed: %s",
                      rd_kafka_event_error_string(ev));
        goto done;
    }
    size_t nres = 0;
    const rd_kafka_topic_result_t **tr =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e && e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot delete topic '%s': %s", rd_kafka_topic_result_name(tr[i]),
                          rd_kafka_err2str(e));
            goto done;
        }
    }
    ok = true;
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (dt) {
        for (size_t i = 0; i < ntopics; i++)
            if (dt[i])
                rd_kafka_DeleteTopic_destroy(dt[i]);
        free(dt);
    }
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return ok;
}
