/* Integration: consumer lag against the live broker. A topic gets a known
 * number of messages per partition, a group member commits a known prefix of
 * them, and then
 *  - mdb_lag_collect reports exactly those committed offsets, watermarks, lags
 *    and totals, the member as owner of every partition, state Stable;
 *  - mdb_lag_gauge exports metadb_consumer_lag{group,topic,partition} with the
 *    same numbers and metadb_consumer_assigned_partitions, and follows new
 *    messages;
 *  - unreachable brokers and bad group names fail with a clear error. */
#include <jansson.h>
#include <stdint.h>

#include "core_itest.h"
#include "mdb_lag.h"
#include "mdb_metrics.h"

static void produce_to(mdb_kafka_producer_t *p, const char *topic, int32_t partition, int n)
{
    rd_kafka_t *rk = mdb_kafka_producer_handle(p);
    for (int i = 0; i < n; i++) {
        char v[64];
        int len = snprintf(v, sizeof v, "{\"v\":1,\"n\":%d}", i);
        rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                                  RD_KAFKA_V_VALUE(v, (size_t)len),
                                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        CHECK(e == RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
    }
    CHECK(rd_kafka_flush(rk, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR, "flush");
}

/* Value of metadb_consumer_lag for one partition in the exposition text, -1 if absent. */
static double gauge_value(const char *text, const char *name, const char *labels)
{
    char needle[512];
    int n = snprintf(needle, sizeof needle, "%s{%s} ", name, labels);
    if (n < 0 || (size_t)n >= sizeof needle)
        return -1;
    const char *at = strstr(text, needle);
    return at ? strtod(at + strlen(needle), NULL) : -1;
}

static json_t *entry_of(json_t *doc, const char *group, const char *topic)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "groups"), i, e)
    {
        const char *t = json_string_value(json_object_get(e, "topic"));
        if (!strcmp(json_string_value(json_object_get(e, "group")), group) && t && !strcmp(t, topic))
            return e;
    }
    return NULL;
}

int main(void)
{
    mdb_error_t err = {0};
    mdb_config_t *cfg = itest_setup("lag_gauge");
    const char *topic = itest_topic("files", 3);
    const char *group = itest_group("workers");
    static const int produced[3] = {10, 7, 4};

    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    CHECK(p, "producer: %s", err.message);
    for (int32_t i = 0; i < 3; i++)
        produce_to(p, topic, i, produced[i]);

    /* Consume everything; store offsets of partition 0 up to offset 5 and all
     * of partition 1; nothing of partition 2. */
    const char *topics[] = {topic};
    mdb_kafka_consumer_t *c = mdb_kafka_consumer_new(cfg, group, topics, 1, NULL, NULL, &err);
    CHECK(c, "consumer: %s", err.message);
    int got = 0;
    int64_t deadline = itest_now_ms() + 30000;
    while (got < 21 && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(c, 200, &fatal, &err);
        CHECK(!fatal, "poll: %s", err.message);
        if (!m)
            continue;
        got++;
        if ((m->partition == 0 && m->offset <= 5) || m->partition == 1)
            CHECK(mdb_kafka_consumer_store(c, topic, m->partition, m->offset, &err), "store: %s", err.message);
        rd_kafka_message_destroy(m);
    }
    CHECK(got == 21, "consumed %d of 21 messages", got);
    CHECK(mdb_kafka_consumer_commit(c, true, &err), "commit: %s", err.message);

    /* ---- outside view ---- */
    const char *groups[] = {group};
    json_t *doc = mdb_lag_collect(cfg, groups, 1, &err);
    CHECK(doc, "collect: %s", err.message);
    json_t *e = entry_of(doc, group, topic);
    CHECK(e, "no entry for %s/%s", group, topic);
    CHECK(!strcmp(json_string_value(json_object_get(e, "state")), "Stable"), "state %s",
          json_string_value(json_object_get(e, "state")));
    CHECK(json_integer_value(json_object_get(e, "members")) == 1, "members");
    static const int64_t committed[3] = {6, 7, -1}, lag[3] = {4, 0, 4};
    json_t *parts = json_object_get(e, "partitions");
    CHECK(json_array_size(parts) == 3, "partitions %zu", json_array_size(parts));
    for (size_t i = 0; i < 3; i++) {
        json_t *row = json_array_get(parts, i);
        json_t *cm = json_object_get(row, "committed");
        CHECK(json_integer_value(json_object_get(row, "partition")) == (json_int_t)i, "order");
        CHECK(committed[i] < 0 ? json_is_null(cm) : json_integer_value(cm) == committed[i], "p%zu committed", i);
        CHECK(json_integer_value(json_object_get(row, "high_watermark")) == produced[i], "p%zu high", i);
        CHECK(json_integer_value(json_object_get(row, "low_watermark")) == 0, "p%zu low", i);
        CHECK(json_integer_value(json_object_get(row, "lag")) == lag[i], "p%zu lag %lld want %lld", i,
              (long long)json_integer_value(json_object_get(row, "lag")), (long long)lag[i]);
        CHECK(json_string_value(json_object_get(row, "client_id")), "p%zu has no owner", i);
    }
    CHECK(json_integer_value(json_object_get(e, "total_lag")) == 8, "total 8");
    CHECK(json_integer_value(json_object_get(doc, "total_lag")) == 8, "grand total 8");
    json_decref(doc);

    /* ---- inside view: the gauge ---- */
    mdb_metrics_t *m = mdb_metrics_new("test");
    CHECK(m, "metrics");
    mdb_lag_gauge_t *g = mdb_lag_gauge_start(m, mdb_kafka_consumer_handle(c), group, 200, &err);
    CHECK(g, "gauge: %s", err.message);
    char labels[3][512], glabel[256];
    for (int i = 0; i < 3; i++)
        snprintf(labels[i], sizeof labels[i], "group=\"%s\",topic=\"%s\",partition=\"%d\"", group, topic, i);
    snprintf(glabel, sizeof glabel, "group=\"%s\"", group);
    bool seen = false;
    deadline = itest_now_ms() + 15000;
    while (!seen && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(c, 200, &fatal, &err);
        if (msg)
            rd_kafka_message_destroy(msg);
        char *text = mdb_metrics_render(m);
        CHECK(text, "render");
        seen = gauge_value(text, "metadb_consumer_lag", labels[0]) == 4 &&
               gauge_value(text, "metadb_consumer_lag", labels[1]) == 0 &&
               gauge_value(text, "metadb_consumer_lag", labels[2]) == 4 &&
               gauge_value(text, "metadb_consumer_assigned_partitions", glabel) == 3;
        if (!seen && itest_now_ms() >= deadline)
            fprintf(stderr, "metrics:\n%s\n", text);
        free(text);
    }
    CHECK(seen, "gauge never showed lag 4/0/4 and 3 assigned partitions");

    /* new messages on partition 1 show up as its lag */
    produce_to(p, topic, 1, 5);
    seen = false;
    deadline = itest_now_ms() + 15000;
    while (!seen && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(c, 200, &fatal, &err);
        if (msg)
            rd_kafka_message_destroy(msg); /* consumed but not stored: still lag */
        char *text = mdb_metrics_render(m);
        seen = gauge_value(text, "metadb_consumer_lag", labels[1]) == 5;
        free(text);
    }
    CHECK(seen, "gauge did not follow 5 new messages on partition 1");
    mdb_lag_gauge_refresh(g); /* manual refresh is safe next to the thread */
    mdb_lag_gauge_stop(g);
    mdb_lag_gauge_stop(NULL);
    mdb_metrics_destroy(m);
    mdb_kafka_consumer_destroy(c);
    mdb_kafka_producer_destroy(p);

    /* ---- errors ---- */
    const char *empty[] = {""};
    CHECK(!mdb_lag_collect(cfg, empty, 1, &err) && strstr(err.message, "empty"), "empty group: %s", err.message);
    mdb_config_t *bad = mdb_config_new();
    CHECK(mdb_config_set(bad, "kafka.brokers", "127.0.0.1:1", MDB_CONFIG_SRC_FLAG, &err), "%s", err.message);
    int64_t t0 = itest_now_ms();
    CHECK(!mdb_lag_collect(bad, groups, 1, &err), "unreachable broker must fail");
    CHECK(strstr(err.message, "cannot reach Kafka at 127.0.0.1:1"), "message: %s", err.message);
    CHECK(itest_now_ms() - t0 < 8000, "unreachable broker took %lld ms", (long long)(itest_now_ms() - t0));
    mdb_config_destroy(bad);

    printf("test_lag_gauge: 1 passed, 0 failed\n");
    return 0;
}
