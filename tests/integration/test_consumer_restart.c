/* Integration: offsets are exactly what the owner stored.
 * Phase 1 (restart): a consumer reads everything but stores and commits
 * offsets only for a prefix of each partition, then goes away; a new member
 * of the same group resumes exactly at the committed offset of each
 * partition: nothing lost, nothing re-delivered before the commit point.
 * Phase 2 (rebalance): a member that has pending (unstored) work is revoked
 * when a second member joins; its rebalance callback stores the pending
 * offsets and the wrapper commits them synchronously before the revoke
 * completes, so the new owner starts right after the flushed work. */
#include <stdint.h>

#include "core_itest.h"

#define PARTS 2
#define N 120

static const char *topic;

static void produce_all(mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    CHECK(p, "%s", err.message);
    for (int i = 0; i < N; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "%d", i);
        CHECK(mdb_kafka_produce(p, topic, key, strlen(key), val, strlen(val), NULL, &err), "%s", err.message);
    }
    CHECK(mdb_kafka_producer_flush(p, 30000, &err), "%s", err.message);
    CHECK(mdb_kafka_producer_failures(p) == 0, "delivery failures");
    mdb_kafka_producer_destroy(p);
}

/* End offset (high watermark) of each partition. */
static void high_watermarks(rd_kafka_t *rk, int64_t hw[PARTS])
{
    for (int p = 0; p < PARTS; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        CHECK(!e, "watermarks: %s", rd_kafka_err2str(e));
        hw[p] = hi;
    }
}

static void committed(rd_kafka_t *rk, int64_t out[PARTS])
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
    CHECK(!e, "committed: %s", rd_kafka_err2str(e));
    for (int p = 0; p < PARTS; p++)
        out[p] = l->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(l);
}

static void phase_restart(mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    const char *group = itest_group("restart");
    const char *topics[] = {topic};
    int64_t hw[PARTS], cut[PARTS], comm[PARTS];

    mdb_kafka_consumer_t *a = mdb_kafka_consumer_new(cfg, group, topics, 1, NULL, NULL, &err);
    CHECK(a, "%s", err.message);
    high_watermarks(mdb_kafka_consumer_handle(a), hw);
    CHECK(hw[0] + hw[1] == N, "watermarks %lld+%lld", (long long)hw[0], (long long)hw[1]);
    for (int p = 0; p < PARTS; p++)
        cut[p] = hw[p] / 2; /* commit offsets [0, cut) */
    int received = 0;
    int64_t deadline = itest_now_ms() + 60000;
    while (received < N && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(a, 500, &fatal, &err);
        CHECK(!fatal, "%s", err.message);
        if (!m)
            continue;
        received++;
        if (m->offset < cut[m->partition])
            CHECK(mdb_kafka_consumer_store(a, topic, m->partition, m->offset, &err), "%s", err.message);
        rd_kafka_message_destroy(m);
    }
    CHECK(received == N, "first consumer got %d of %d", received, N);
    CHECK(mdb_kafka_consumer_commit(a, true, &err), "%s", err.message);
    committed(mdb_kafka_consumer_handle(a), comm);
    for (int p = 0; p < PARTS; p++)
        CHECK(comm[p] == cut[p], "partition %d committed %lld, expected %lld", p, (long long)comm[p],
              (long long)cut[p]);
    mdb_kafka_consumer_destroy(a); /* must not commit anything beyond what was stored */

    mdb_kafka_consumer_t *b = mdb_kafka_consumer_new(cfg, group, topics, 1, NULL, NULL, &err);
    CHECK(b, "%s", err.message);
    committed(mdb_kafka_consumer_handle(b), comm);
    for (int p = 0; p < PARTS; p++)
        CHECK(comm[p] == cut[p], "after close partition %d committed %lld, expected %lld", p, (long long)comm[p],
              (long long)cut[p]);
    int expect = (int)(hw[0] - cut[0] + hw[1] - cut[1]);
    int64_t next[PARTS] = {cut[0], cut[1]};
    int got = 0;
    deadline = itest_now_ms() + 60000;
    while (got < expect && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(b, 500, &fatal, &err);
        CHECK(!fatal, "%s", err.message);
        if (!m)
            continue;
        /* In order, starting exactly at the committed offset, no gaps. */
        CHECK(m->offset == next[m->partition], "partition %d: got offset %lld, expected %lld", m->partition,
              (long long)m->offset, (long long)next[m->partition]);
        next[m->partition]++;
        got++;
        CHECK(mdb_kafka_consumer_store(b, topic, m->partition, m->offset, &err), "%s", err.message);
        rd_kafka_message_destroy(m);
    }
    CHECK(got == expect, "resumed consumer got %d of %d", got, expect);
    int64_t quiet = itest_now_ms() + 1500;
    while (itest_now_ms() < quiet) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(b, 200, &fatal, &err);
        CHECK(!m, "re-delivered offset %lld", m ? (long long)m->offset : -1LL);
    }
    mdb_kafka_consumer_destroy(b);
    printf("restart: committed %lld+%lld of %d, resumed exactly there, %d re-read, 0 lost, 0 duplicated\n",
           (long long)cut[0], (long long)cut[1], N, got);
}

typedef struct {
    int64_t pending[PARTS]; /* last processed-but-unstored offset, -1 none */
    mdb_kafka_consumer_t *self;
    int revokes, assigns;
    bool lost;
} owner_t;

static void on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    owner_t *o = ud;
    mdb_error_t err = {0};
    if (assigned) {
        o->assigns++;
        return;
    }
    o->revokes++;
    o->lost = o->lost || lost;
    if (lost)
        return;
    /* "Flush": the pending work becomes durable, store its offsets. */
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        if (o->pending[p] >= 0) {
            CHECK(mdb_kafka_consumer_store(o->self, topic, p, o->pending[p], &err), "%s", err.message);
            o->pending[p] = -1;
        }
    }
}

static void phase_rebalance(mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    const char *group = itest_group("rebalance");
    const char *topics[] = {topic};
    int64_t hw[PARTS], comm[PARTS];
    owner_t o1 = {{-1, -1}, NULL, 0, 0, false};
    owner_t o2 = {{-1, -1}, NULL, 0, 0, false};

    mdb_kafka_consumer_t *c1 = mdb_kafka_consumer_new(cfg, group, topics, 1, on_rebalance, &o1, &err);
    CHECK(c1, "%s", err.message);
    o1.self = c1;
    high_watermarks(mdb_kafka_consumer_handle(c1), hw);
    int received = 0;
    int64_t deadline = itest_now_ms() + 60000;
    while (received < N && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(c1, 500, &fatal, &err);
        CHECK(!fatal, "%s", err.message);
        if (!m)
            continue;
        received++;
        o1.pending[m->partition] = m->offset; /* processed, not yet flushed */
        rd_kafka_message_destroy(m);
    }
    CHECK(received == N, "c1 got %d", received);
    CHECK(o1.assigns == 1 && o1.revokes == 0, "c1 assigns=%d revokes=%d", o1.assigns, o1.revokes);

    /* Nothing stored yet, so nothing is committed (auto-commit included). */
    committed(mdb_kafka_consumer_handle(c1), comm);
    for (int p = 0; p < PARTS; p++)
        CHECK(comm[p] < 0, "partition %d committed %lld before any store", p, (long long)comm[p]);

    mdb_kafka_consumer_t *c2 = mdb_kafka_consumer_new(cfg, group, topics, 1, on_rebalance, &o2, &err);
    CHECK(c2, "%s", err.message);
    o2.self = c2;
    int extra = 0;
    deadline = itest_now_ms() + 60000;
    while ((o1.revokes == 0 || o2.assigns == 0) && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(c1, 100, &fatal, &err);
        if (m) {
            extra++;
            rd_kafka_message_destroy(m);
        }
        m = mdb_kafka_consumer_poll(c2, 100, &fatal, &err);
        if (m) {
            extra++;
            rd_kafka_message_destroy(m);
        }
    }
    CHECK(o1.revokes >= 1, "c1 was never revoked");
    CHECK(!o1.lost, "c1's assignment was lost instead of revoked");
    CHECK(o2.assigns >= 1, "c2 was never assigned");
    CHECK(extra == 0, "%d messages re-delivered after the flush-on-revoke", extra);
    committed(mdb_kafka_consumer_handle(c2), comm);
    for (int p = 0; p < PARTS; p++)
        CHECK(comm[p] == hw[p], "partition %d: committed %lld after revoke, expected %lld", p, (long long)comm[p],
              (long long)hw[p]);
    mdb_kafka_consumer_destroy(c2);
    mdb_kafka_consumer_destroy(c1);
    printf("rebalance: revoke flushed %d pending partitions, committed synchronously, 0 re-delivered\n", PARTS);
}

int main(void)
{
    mdb_config_t *cfg = itest_setup("crestart");
    topic = itest_topic("instances", PARTS);
    produce_all(cfg);
    phase_restart(cfg);
    phase_rebalance(cfg);
    return 0;
}
