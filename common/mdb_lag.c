/* mdb_lag: consumer lag per group, topic and partition (see mdb_lag.h).
 *
 * mdb_lag_collect builds a short-lived admin client from the same
 * configuration every component uses (kafka.brokers plus the kafka.*
 * pass-through keys, so SASL/TLS work unchanged), lists each group's committed
 * offsets with ListConsumerGroupOffsets (no group join, no rebalance), asks
 * DescribeConsumerGroups who owns which partition, and reads the watermarks of
 * every partition involved. mdb_lag_gauge does the same for one daemon's own
 * assignment on a background thread and feeds a Prometheus gauge.
 */
#include "mdb_lag.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_kafka.h"

#define LAG_ADMIN_TIMEOUT_MS 10000
#define LAG_CONNECT_TIMEOUT_MS 10000
#define LAG_ALL_DOWN_GRACE_MS 3000
#define LAG_WATERMARK_TIMEOUT_MS 5000
#define GAUGE_DEFAULT_INTERVAL_MS 5000
#define GAUGE_COMMITTED_TIMEOUT_MS 5000
#define GAUGE_WATERMARK_TIMEOUT_MS 2000

/* ------------------------------------------------------------------ */
/* client                                                              */

/* Last error the client reported through error_cb: authentication and
 * transport failures surface here long before a request times out. */
typedef struct {
    rd_kafka_resp_err_t code;
    bool all_down; /* every bootstrap server refused at least once */
    char reason[384];
} lag_client_state_t;

static void lag_error_cb(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)rk;
    lag_client_state_t *st = opaque;
    if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        st->all_down = true;
        return;
    }
    /* Keep the first authentication error: later "all brokers down" noise
     * would hide the actual cause. */
    if (st->code == RD_KAFKA_RESP_ERR__AUTHENTICATION)
        return;
    st->code = (rd_kafka_resp_err_t)code;
    snprintf(st->reason, sizeof st->reason, "%s", reason ? reason : rd_kafka_err2str(code));
}

/* librdkafka logs through its own printer by default; the admin client is a
 * short-lived helper whose problems are reported through err, so its log
 * lines are dropped (they would otherwise interleave with the CLI table). */
static void lag_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

static rd_kafka_t *lag_client_new(const mdb_config_t *cfg, lag_client_state_t *st, mdb_error_t *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;

    if (!conf) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory creating Kafka configuration");
        return NULL;
    }
    if (!mdb_kafka_conf_apply(conf, cfg, err))
        goto fail;
    if (rd_kafka_conf_set(conf, "client.id", "metadb-lag", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "client.id: %s", errstr);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_conf_set_error_cb(conf, lag_error_cb);
    rd_kafka_conf_set_log_cb(conf, lag_log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka client: %s", errstr);
        goto fail;
    }
    return rk;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Metadata of all topics, retried in short steps so that an authentication
 * failure (seen through error_cb) is reported at once instead of after the
 * whole timeout. */
static const rd_kafka_metadata_t *lag_metadata(rd_kafka_t *rk, const mdb_config_t *cfg, lag_client_state_t *st,
                                               mdb_error_t *err)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    struct timespec t0, now;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        e = rd_kafka_metadata(rk, 1, NULL, &md, 1000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return md;
        rd_kafka_poll(rk, 0); /* serve error_cb */
        if (st->code == RD_KAFKA_RESP_ERR__AUTHENTICATION)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L;
        if (ms >= LAG_CONNECT_TIMEOUT_MS)
            break;
        /* every bootstrap server refuses: give a restarting broker a few
         * seconds, not the whole timeout */
        if (st->all_down && ms >= LAG_ALL_DOWN_GRACE_MS)
            break;
    }
    if (st->code == RD_KAFKA_RESP_ERR__AUTHENTICATION)
        mdb_error_set(err, MDB_ERR_SECURITY, st->code, "Kafka authentication failed at %s: %s",
                      mdb_config_get(cfg, "kafka.brokers"), st->reason);
    else if (st->code != RD_KAFKA_RESP_ERR_NO_ERROR)
        mdb_error_set(err, MDB_ERR_KAFKA, st->code, "cannot reach Kafka at %s: %s (%s)",
                      mdb_config_get(cfg, "kafka.brokers"), rd_kafka_err2str(e), st->reason);
    else
        mdb_error_set(err, MDB_ERR_KAFKA, e, "cannot reach Kafka at %s: %s", mdb_config_get(cfg, "kafka.brokers"),
                      rd_kafka_err2str(e));
    return NULL;
}

static const rd_kafka_metadata_topic_t *md_topic(const rd_kafka_metadata_t *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic))
            return &md->topics[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* admin requests                                                      */

/* Wait for the one admin result on q; NULL with err filled on timeout or a
 * request-level error. Caller destroys the event. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, const char *what, mdb_error_t *err)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, LAG_ADMIN_TIMEOUT_MS + 5000);
    if (!ev) {
        mdb_error_set(err, MDB_ERR_KAFKA, RD_KAFKA_RESP_ERR__TIMED_OUT, "%s: timed out", what);
        return NULL;
    }
    if (rd_kafka_event_error(ev)) {
        mdb_error_set(err, MDB_ERR_KAFKA, rd_kafka_event_error(ev), "%s: %s", what, rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

/* Committed offsets of every partition the group has committed on.
 * Returns a new list (caller destroys) or NULL with err filled. */
static rd_kafka_topic_partition_list_t *list_group_offsets(rd_kafka_t *rk, rd_kafka_queue_t *q, const char *group,
                                                           mdb_error_t *err)
{
    char errstr[256];
    rd_kafka_topic_partition_list_t *out = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(group, NULL);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);

    if (!req || !opts) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    rd_kafka_AdminOptions_set_request_timeout(opts, LAG_ADMIN_TIMEOUT_MS, errstr, sizeof errstr);
    rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, opts, q);
    ev = admin_wait(q, "listing committed offsets", err);
    if (!ev) {
        mdb_error_prefix(err, "group %s", group);
        goto done;
    }
    const rd_kafka_ListConsumerGroupOffsets_result_t *res = rd_kafka_event_ListConsumerGroupOffsets_result(ev);
    size_t n = 0;
    const rd_kafka_group_result_t **gr = res ? rd_kafka_ListConsumerGroupOffsets_result_groups(res, &n) : NULL;
    if (n < 1) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "group %s: empty ListConsumerGroupOffsets result", group);
        goto done;
    }
    const rd_kafka_error_t *gerr = rd_kafka_group_result_error(gr[0]);
    if (gerr) {
        mdb_error_set(err, MDB_ERR_KAFKA, rd_kafka_error_code(gerr), "group %s: %s", group,
                      rd_kafka_error_string(gerr));
        goto done;
    }
    const rd_kafka_topic_partition_list_t *parts = rd_kafka_group_result_partitions(gr[0]);
    out = parts ? rd_kafka_topic_partition_list_copy(parts) : rd_kafka_topic_partition_list_new(0);
done:
    if (req)
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
    rd_kafka_AdminOptions_destroy(opts);
    if (ev)
        rd_kafka_event_destroy(ev);
    return out;
}

/* Group descriptions: {group: {"state": s, "members": n, "owners": {"topic/p": {client_id, host}}}}.
 * Failure to describe is not fatal (lag does not depend on it): groups
 * missing from the result are shown with state "Unknown". */
static json_t *describe_groups(rd_kafka_t *rk, rd_kafka_queue_t *q, const char *const *groups, size_t ngroups)
{
    char errstr[256];
    json_t *out = json_object();
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    rd_kafka_event_t *ev = NULL;
    mdb_error_t ignored = {0};

    if (!out || !opts)
        goto done;
    rd_kafka_AdminOptions_set_request_timeout(opts, LAG_ADMIN_TIMEOUT_MS, errstr, sizeof errstr);
    rd_kafka_DescribeConsumerGroups(rk, (const char **)groups, ngroups, opts, q);
    ev = admin_wait(q, "describing groups", &ignored);
    if (!ev)
        goto done;
    const rd_kafka_DescribeConsumerGroups_result_t *res = rd_kafka_event_DescribeConsumerGroups_result(ev);
    size_t n = 0;
    const rd_kafka_ConsumerGroupDescription_t **descs =
        res ? rd_kafka_DescribeConsumerGroups_result_groups(res, &n) : NULL;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_ConsumerGroupDescription_t *d = descs[i];
        if (rd_kafka_ConsumerGroupDescription_error(d))
            continue;
        json_t *owners = json_object();
        size_t members = rd_kafka_ConsumerGroupDescription_member_count(d);
        for (size_t m = 0; m < members; m++) {
            const rd_kafka_MemberDescription_t *md = rd_kafka_ConsumerGroupDescription_member(d, m);
            const rd_kafka_MemberAssignment_t *ma = rd_kafka_MemberDescription_assignment(md);
            const rd_kafka_topic_partition_list_t *pl = ma ? rd_kafka_MemberAssignment_partitions(ma) : NULL;
            for (int k = 0; pl && k < pl->cnt; k++) {
                char key[512];
                snprintf(key, sizeof key, "%s/%" PRId32, pl->elems[k].topic, pl->elems[k].partition);
                json_object_set_new(owners, key,
                                    json_pack("{s:s?, s:s?}", "client_id", rd_kafka_MemberDescription_client_id(md),
                                              "host", rd_kafka_MemberDescription_host(md)));
            }
        }
        json_object_set_new(out, rd_kafka_ConsumerGroupDescription_group_id(d),
                            json_pack("{s:s, s:I, s:o}", "state",
                                      rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(d)),
                                      "members", (json_int_t)members, "owners", owners));
    }
done:
    rd_kafka_AdminOptions_destroy(opts);
    if (ev)
        rd_kafka_event_destroy(ev);
    return out;
}

/* ------------------------------------------------------------------ */
/* assembling the report                                               */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Topics to show for a group: committed ones plus the known metadb topic. */
static json_t *group_topics(const mdb_config_t *cfg, const char *group,
                            const rd_kafka_topic_partition_list_t *committed)
{
    json_t *set = json_object();
    static const struct {
        const char *group_key, *topic_key;
    } known[] = {{"producer.group", "topic.jobs"},
                 {"worker.group", "topic.files"},
                 {"linker.group", "topic.instances"},
                 {"linker.group", "topic.dlq"},
                 {"fetcher.group", "topic.retrieve"}};

    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(group, mdb_config_get(cfg, known[i].group_key)))
            json_object_set_new(set, mdb_config_get(cfg, known[i].topic_key), json_true());
    for (int i = 0; committed && i < committed->cnt; i++)
        json_object_set_new(set, committed->elems[i].topic, json_true());
    return set;
}

static int64_t committed_offset(const rd_kafka_topic_partition_list_t *committed, const char *topic, int32_t p)
{
    for (int i = 0; committed && i < committed->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &committed->elems[i];
        if (e->partition == p && !strcmp(e->topic, topic))
            return e->err ? RD_KAFKA_OFFSET_INVALID : e->offset;
    }
    return RD_KAFKA_OFFSET_INVALID;
}

/* One partition row; adds its lag to *total. */
static json_t *partition_row(rd_kafka_t *rk, const char *topic, int32_t p, int64_t committed, json_t *owners,
                             int64_t *total)
{
    int64_t lo = -1, hi = -1;
    char key[512];
    json_t *row = json_pack("{s:i}", "partition", (int)p);

    json_object_set_new(row, "committed", committed >= 0 ? json_integer(committed) : json_null());
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, LAG_WATERMARK_TIMEOUT_MS);
    if (e) {
        json_object_set_new(row, "low_watermark", json_null());
        json_object_set_new(row, "high_watermark", json_null());
        json_object_set_new(row, "lag", json_null());
        json_object_set_new(row, "error", json_string(rd_kafka_err2str(e)));
    } else {
        int64_t lag = committed >= 0 ? hi - committed : hi - lo;
        if (lag < 0)
            lag = 0;
        *total += lag;
        json_object_set_new(row, "low_watermark", json_integer(lo));
        json_object_set_new(row, "high_watermark", json_integer(hi));
        json_object_set_new(row, "lag", json_integer(lag));
    }
    snprintf(key, sizeof key, "%s/%" PRId32, topic, p);
    json_t *owner = owners ? json_object_get(owners, key) : NULL;
    json_object_set_new(row, "client_id", json_incref(owner ? json_object_get(owner, "client_id") : json_null()));
    json_object_set_new(row, "host", json_incref(owner ? json_object_get(owner, "host") : json_null()));
    return row;
}

/* Entry for one (group, topic). Partitions come from metadata; partitions of
 * a deleted topic that still carry commits are listed from the commits. */
static json_t *topic_entry(rd_kafka_t *rk, const rd_kafka_metadata_t *md, const char *group, json_t *desc,
                           const char *topic, const rd_kafka_topic_partition_list_t *committed, int64_t *grand)
{
    json_t *owners = desc ? json_object_get(desc, "owners") : NULL;
    json_t *parts = json_array();
    int64_t total = 0;
    const rd_kafka_metadata_topic_t *mt = md_topic(md, topic);
    json_t *entry = json_pack("{s:s, s:o, s:o, s:s}", "group", group, "state",
                              desc ? json_incref(json_object_get(desc, "state")) : json_string("Unknown"), "members",
                              desc ? json_incref(json_object_get(desc, "members")) : json_integer(0), "topic", topic);

    if (mt && !mt->err) {
        /* metadata lists partitions in arbitrary order */
        int32_t maxp = -1;
        for (int i = 0; i < mt->partition_cnt; i++)
            if (mt->partitions[i].id > maxp)
                maxp = mt->partitions[i].id;
        for (int32_t p = 0; p <= maxp; p++)
            for (int i = 0; i < mt->partition_cnt; i++)
                if (mt->partitions[i].id == p)
                    json_array_append_new(
                        parts, partition_row(rk, topic, p, committed_offset(committed, topic, p), owners, &total));
    } else {
        json_object_set_new(entry, "error", json_string(mt ? rd_kafka_err2str(mt->err) : "topic does not exist"));
        for (int i = 0; committed && i < committed->cnt; i++)
            if (!strcmp(committed->elems[i].topic, topic))
                json_array_append_new(parts, partition_row(rk, topic, committed->elems[i].partition,
                                                           committed->elems[i].offset, owners, &total));
    }
    json_object_set_new(entry, "partitions", parts);
    json_object_set_new(entry, "total_lag", json_integer(total));
    *grand += total;
    return entry;
}

static void iso_now(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *mdb_lag_collect(const mdb_config_t *cfg, const char *const *groups, size_t ngroups, mdb_error_t *err)
{
    lag_client_state_t st = {0};
    const char *defaults[4];
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_queue_t *q = NULL;
    json_t *out = NULL, *entries = NULL, *descs = NULL;
    rd_kafka_topic_partition_list_t *committed = NULL;
    int64_t grand = 0;
    char now[32];

    if (!groups || ngroups == 0) {
        defaults[0] = mdb_config_get(cfg, "worker.group");
        defaults[1] = mdb_config_get(cfg, "linker.group");
        defaults[2] = mdb_config_get(cfg, "producer.group");
        defaults[3] = mdb_config_get(cfg, "fetcher.group");
        groups = defaults;
        ngroups = 4;
    }
    for (size_t i = 0; i < ngroups; i++)
        if (!groups[i] || !*groups[i]) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "empty consumer group name");
            return NULL;
        }
    rd_kafka_t *rk = lag_client_new(cfg, &st, err);
    if (!rk)
        return NULL;
    md = lag_metadata(rk, cfg, &st, err);
    if (!md)
        goto done;
    q = rd_kafka_queue_new(rk);
    entries = json_array();
    descs = describe_groups(rk, q, groups, ngroups);
    if (!q || !entries || !descs) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    for (size_t g = 0; g < ngroups; g++) {
        committed = list_group_offsets(rk, q, groups[g], err);
        if (!committed) {
            if (st.code == RD_KAFKA_RESP_ERR__AUTHENTICATION)
                mdb_error_prefix(err, "authentication failed (%s)", st.reason);
            goto done;
        }
        json_t *set = group_topics(cfg, groups[g], committed);
        size_t nt = json_object_size(set), k = 0;
        const char **names = calloc(nt ? nt : 1, sizeof *names);
        const char *name;
        json_t *v;
        if (!names) {
            json_decref(set);
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            goto done;
        }
        json_object_foreach(set, name, v) names[k++] = name;
        qsort(names, nt, sizeof *names, cmp_str);
        json_t *desc = json_object_get(descs, groups[g]);
        for (size_t t = 0; t < nt; t++)
            json_array_append_new(entries, topic_entry(rk, md, groups[g], desc, names[t], committed, &grand));
        if (nt == 0)
            json_array_append_new(
                entries, json_pack("{s:s, s:o, s:o, s:n, s:[], s:i}", "group", groups[g], "state",
                                   desc ? json_incref(json_object_get(desc, "state")) : json_string("Unknown"),
                                   "members", desc ? json_incref(json_object_get(desc, "members")) : json_integer(0),
                                   "topic", "partitions", "total_lag", 0));
        free(names);
        json_decref(set);
        rd_kafka_topic_partition_list_destroy(committed);
        committed = NULL;
    }
    iso_now(now, sizeof now);
    out = json_pack("{s:s, s:s, s:I, s:O}", "brokers", mdb_config_get(cfg, "kafka.brokers"), "time", now, "total_lag",
                    (json_int_t)grand, "groups", entries);
    if (!out)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
done:
    if (committed)
        rd_kafka_topic_partition_list_destroy(committed);
    json_decref(entries);
    json_decref(descs);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (q)
        rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return out;
}

/* ------------------------------------------------------------------ */
/* per-daemon gauge                                                    */

typedef struct {
    char *topic;
    int32_t partition;
    mdb_metric_t *metric;
    unsigned generation;
} gauge_series_t;

struct mdb_lag_gauge {
    mdb_metrics_t *m;
    rd_kafka_t *rk;
    char *group;
    char *group_label; /* escaped for the exposition format */
    int interval_ms;
    mdb_metric_t *assigned;

    pthread_mutex_t refresh_mu; /* one refresh at a time; guards series */
    gauge_series_t *series;
    size_t nseries, capseries;
    unsigned generation;

    pthread_mutex_t mu; /* guards stop */
    pthread_cond_t cv;
    bool stop;
    bool started;
    pthread_t thread;
};

/* Label value escaped per the exposition format (\\, \", \n). */
static char *label_escape(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(2 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            *o++ = '\\';
            *o++ = *s;
        } else if (*s == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

static gauge_series_t *gauge_series(mdb_lag_gauge_t *g, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < g->nseries; i++)
        if (g->series[i].partition == partition && !strcmp(g->series[i].topic, topic))
            return &g->series[i];
    if (g->nseries == g->capseries) {
        size_t cap = g->capseries ? 2 * g->capseries : 16;
        gauge_series_t *s = realloc(g->series, cap * sizeof *s);
        if (!s)
            return NULL;
        g->series = s;
        g->capseries = cap;
    }
    char *etopic = label_escape(topic);
    char *copy = strdup(topic);
    if (!etopic || !copy) {
        free(etopic);
        free(copy);
        return NULL;
    }
    size_t llen = strlen(g->group_label) + strlen(etopic) + 64;
    char *labels = malloc(llen);
    if (!labels) {
        free(etopic);
        free(copy);
        return NULL;
    }
    snprintf(labels, llen, "group=\"%s\",topic=\"%s\",partition=\"%" PRId32 "\"", g->group_label, etopic, partition);
    mdb_metric_t *metric = mdb_metrics_gauge(
        g->m, "metadb_consumer_lag",
        "messages between this consumer's committed offset and the partition's high watermark", labels);
    free(labels);
    free(etopic);
    if (!metric) {
        free(copy);
        return NULL;
    }
    gauge_series_t *s = &g->series[g->nseries++];
    s->topic = copy;
    s->partition = partition;
    s->metric = metric;
    s->generation = 0;
    return s;
}

void mdb_lag_gauge_refresh(mdb_lag_gauge_t *g)
{
    rd_kafka_topic_partition_list_t *asg = NULL;

    if (!g)
        return;
    pthread_mutex_lock(&g->refresh_mu);
    if (rd_kafka_assignment(g->rk, &asg) != RD_KAFKA_RESP_ERR_NO_ERROR || !asg)
        goto done;
    g->generation++;
    if (asg->cnt > 0 && rd_kafka_committed(g->rk, asg, GAUGE_COMMITTED_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        goto done; /* mid-rebalance or coordinator away: keep last values */
    if (g->assigned)
        mdb_metric_set(g->assigned, asg->cnt);
    for (int i = 0; i < asg->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &asg->elems[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_query_watermark_offsets(g->rk, e->topic, e->partition, &lo, &hi, GAUGE_WATERMARK_TIMEOUT_MS))
            continue;
        int64_t lag = (!e->err && e->offset >= 0) ? hi - e->offset : hi - lo;
        gauge_series_t *s = gauge_series(g, e->topic, e->partition);
        if (!s)
            continue;
        mdb_metric_set(s->metric, (double)(lag < 0 ? 0 : lag));
        s->generation = g->generation;
    }
    for (size_t i = 0; i < g->nseries; i++)
        if (g->series[i].generation != g->generation)
            mdb_metric_set(g->series[i].metric, 0);
done:
    if (asg)
        rd_kafka_topic_partition_list_destroy(asg);
    pthread_mutex_unlock(&g->refresh_mu);
}

static void *gauge_main(void *arg)
{
    mdb_lag_gauge_t *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        pthread_mutex_unlock(&g->mu);
        mdb_lag_gauge_refresh(g);
        pthread_mutex_lock(&g->mu);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += g->interval_ms / 1000;
        until.tv_nsec += (long)(g->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

mdb_lag_gauge_t *mdb_lag_gauge_start(mdb_metrics_t *m, rd_kafka_t *consumer, const char *group, int interval_ms,
                                     mdb_error_t *err)
{
    mdb_lag_gauge_t *g = NULL;
    pthread_condattr_t ca;
    bool ca_init = false;

    if (!m || !consumer || !group) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "mdb_lag_gauge_start: metrics, consumer and group are required");
        return NULL;
    }
    g = calloc(1, sizeof *g);
    if (!g)
        goto oom;
    g->m = m;
    g->rk = consumer;
    g->interval_ms = interval_ms > 0 ? interval_ms : GAUGE_DEFAULT_INTERVAL_MS;
    g->group = strdup(group);
    g->group_label = label_escape(group);
    if (!g->group || !g->group_label)
        goto oom;
    pthread_mutex_init(&g->refresh_mu, NULL);
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_init(&ca);
    ca_init = true;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);

    size_t llen = strlen(g->group_label) + 16;
    char *labels = malloc(llen);
    if (!labels)
        goto oom;
    snprintf(labels, llen, "group=\"%s\"", g->group_label);
    g->assigned = mdb_metrics_gauge(m, "metadb_consumer_assigned_partitions",
                                    "partitions currently assigned to this consumer", labels);
    free(labels);

    int rc = pthread_create(&g->thread, NULL, gauge_main, g);
    if (rc != 0) {
        mdb_error_set(err, MDB_ERR_SYSTEM, rc, "cannot start lag gauge thread: %s", strerror(rc));
        mdb_lag_gauge_stop(g);
        return NULL;
    }
    g->started = true;
    return g;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    if (g && !ca_init) {
        free(g->group);
        free(g->group_label);
        free(g);
        return NULL;
    }
    mdb_lag_gauge_stop(g);
    return NULL;
}

void mdb_lag_gauge_stop(mdb_lag_gauge_t *g)
{
    if (!g)
        return;
    if (g->started) {
        pthread_mutex_lock(&g->mu);
        g->stop = true;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->thread, NULL);
    }
    for (size_t i = 0; i < g->nseries; i++)
        free(g->series[i].topic);
    free(g->series);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->refresh_mu);
    free(g->group);
    free(g->group_label);
    free(g);
}
