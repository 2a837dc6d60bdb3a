/* mdb_kafka_admin: creating and deleting topics. Each call opens a short
 * admin session (a client, a result queue, options with 30 s timeouts),
 * sends one request, waits up to 45 s for its result event and closes the
 * session; the two calls differ only in the request and how they read the
 * per-topic results. */
#include "mdb_kafka.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_kafka_private.h"
#include "mdb_log.h"

/* One admin request's client, queue, options and result. Every pointer is
 * NULL until made; admin_close frees whatever was made. */
typedef struct {
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rd_kafka_AdminOptions_t *opts;
    rd_kafka_event_t *ev;
} admin_session_t;

/* The client from cfg and its result queue; false with err (the caller
 * closes s either way). */
static bool admin_open(admin_session_t *s, const mdb_config_t *cfg, mdb_error_t *err)
{
    memset(s, 0, sizeof *s);
    s->conf = rd_kafka_conf_new();
    if (!mdb_kafka_conf_apply(s->conf, cfg, err))
        return false;
    s->rk = mdb_kafka_client_new(RD_KAFKA_PRODUCER, s->conf, NULL, "admin client", err);
    if (!s->rk)
        return false;
    s->conf = NULL; /* owned by rk now */
    s->q = rd_kafka_queue_new(s->rk);
    return true;
}

/* calloc that says so in err when it fails. */
static void *admin_calloc(size_t n, size_t size, mdb_error_t *err)
{
    void *p = calloc(n, size);
    if (!p)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return p;
}

/* The options of request op (kept in s), to pass to the request call. */
static rd_kafka_AdminOptions_t *admin_options(admin_session_t *s, rd_kafka_admin_op_t op)
{
    char errstr[512];
    s->opts = rd_kafka_AdminOptions_new(s->rk, op);
    rd_kafka_AdminOptions_set_request_timeout(s->opts, 30000, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(s->opts, 30000, errstr, sizeof errstr);
    return s->opts;
}

/* Wait for the request's result event (kept in s->ev). false with err on a
 * timeout or a request-level error; verb ("creating") names the request in
 * the message, brokers (may be NULL) is named on a timeout. */
static bool admin_await(admin_session_t *s, const char *verb, const char *brokers, mdb_error_t *err)
{
    s->ev = rd_kafka_queue_poll(s->q, 45000);
    if (!s->ev) {
        mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT, "%s topics timed out%s%s%s", verb,
                      brokers ? " (is Kafka reachable at " : "", brokers ? brokers : "", brokers ? "?)" : "");
        return false;
    }
    if (rd_kafka_event_error(s->ev)) {
        mdb_error_set(err, MDB_ERR_KAFKA, rd_kafka_event_error(s->ev), "%s topics failed: %s", verb,
                      rd_kafka_event_error_string(s->ev));
        return false;
    }
    return true;
}

/* Children before parents: result, options, queue, client. */
static void admin_close(admin_session_t *s)
{
    if (s->ev)
        rd_kafka_event_destroy(s->ev);
    if (s->opts)
        rd_kafka_AdminOptions_destroy(s->opts);
    if (s->q)
        rd_kafka_queue_destroy(s->q);
    if (s->rk)
        rd_kafka_destroy(s->rk);
    if (s->conf)
        rd_kafka_conf_destroy(s->conf);
}

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

/* Every topic created (or there already): false with err naming the first
 * that could not be made. */
static bool check_created(rd_kafka_event_t *ev, int partitions, mdb_error_t *err)
{
    size_t nres = 0;
    const rd_kafka_topic_result_t **tr =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            MDB_LOG(MDB_LOG_INFO, "kafka: created topic %s (%d partitions)", rd_kafka_topic_result_name(tr[i]),
                    partitions);
        } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot create topic '%s': %s", rd_kafka_topic_result_name(tr[i]),
                          rd_kafka_topic_result_error_string(tr[i]) ? rd_kafka_topic_result_error_string(tr[i])
                                                                    : rd_kafka_err2str(e));
            return false;
        }
    }
    return true;
}

/* Creation is asynchronous in the cluster: wait (30 s at most) until
 * clients can use the topics. */
static bool wait_visible(rd_kafka_t *rk, const char *const *topics, size_t ntopics, mdb_error_t *err)
{
    int64_t deadline = mdb_kafka_now_ms() + 30000;
    while (!topics_visible(rk, topics, ntopics)) {
        if (mdb_kafka_now_ms() > deadline) {
            mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT,
                          "topics created but not visible with leaders after 30 s");
            return false;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return true;
}

bool mdb_kafka_ensure_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, int partitions,
                             mdb_error_t *err)
{
    char errstr[512];
    bool ok = false;
    admin_session_t s = {0};
    rd_kafka_NewTopic_t **nt = NULL;
    size_t made = 0; /* nt[0..made) exist */

    if (partitions < 1) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "topic partitions must be >= 1, got %d", partitions);
        return false;
    }
    if (ntopics == 0)
        return true;
    if (!admin_open(&s, cfg, err) || !(nt = admin_calloc(ntopics, sizeof *nt, err)))
        goto done;
    for (; made < ntopics; made++) {
        nt[made] = rd_kafka_NewTopic_new(topics[made], partitions, -1, errstr, sizeof errstr);
        if (!nt[made]) {
            mdb_error_set(err, MDB_ERR_KAFKA, 0, "topic '%s': %s", topics[made], errstr);
            goto done;
        }
    }
    rd_kafka_CreateTopics(s.rk, nt, ntopics, admin_options(&s, RD_KAFKA_ADMIN_OP_CREATETOPICS), s.q);
    ok = admin_await(&s, "creating", mdb_config_get(cfg, "kafka.brokers"), err) &&
         check_created(s.ev, partitions, err) && wait_visible(s.rk, topics, ntopics, err);
done:
    rd_kafka_NewTopic_destroy_array(nt, made);
    free(nt);
    admin_close(&s);
    return ok;
}

/* Every topic deleted (or never there): false with err naming the first
 * that could not be deleted. */
static bool check_deleted(rd_kafka_event_t *ev, mdb_error_t *err)
{
    size_t nres = 0;
    const rd_kafka_topic_result_t **tr =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e && e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot delete topic '%s': %s", rd_kafka_topic_result_name(tr[i]),
                          rd_kafka_err2str(e));
            return false;
        }
    }
    return true;
}

bool mdb_kafka_delete_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, mdb_error_t *err)
{
    bool ok = false;
    admin_session_t s = {0};
    rd_kafka_DeleteTopic_t **dt = NULL;

    if (ntopics == 0)
        return true;
    if (!admin_open(&s, cfg, err) || !(dt = admin_calloc(ntopics, sizeof *dt, err)))
        goto done;
    for (size_t i = 0; i < ntopics; i++)
        dt[i] = rd_kafka_DeleteTopic_new(topics[i]);
    rd_kafka_DeleteTopics(s.rk, dt, ntopics, admin_options(&s, RD_KAFKA_ADMIN_OP_DELETETOPICS), s.q);
    ok = admin_await(&s, "deleting", NULL, err) && check_deleted(s.ev, err);
done:
    rd_kafka_DeleteTopic_destroy_array(dt, dt ? ntopics : 0);
    free(dt);
    admin_close(&s);
    return ok;
}
