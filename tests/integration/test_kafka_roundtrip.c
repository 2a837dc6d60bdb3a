/* Integration: produce -> consume through our wrappers against the live
 * broker. Every message gets exactly one successful delivery report with its
 * own opaque, the consumer group receives each message exactly once (keys
 * hash to partitions, all partitions get assigned), topic creation is
 * idempotent, and a flush against an unreachable broker fails loudly. */
#include <stdint.h>

#include "core_itest.h"
#include "mdb_msg.h"

#define N 300

typedef struct {
    int ok, failed;
    int seen[N + 1];
    char last_err[256];
} dr_state_t;

static void on_dr(void *msg_opaque, bool ok, const char *errstr, void *ud)
{
    dr_state_t *s = ud;
    intptr_t i = (intptr_t)msg_opaque;
    if (ok)
        s->ok++;
    else {
        s->failed++;
        snprintf(s->last_err, sizeof s->last_err, "%s", errstr ? errstr : "");
    }
    if (i >= 1 && i <= N)
        s->seen[i]++;
}

typedef struct {
    int assigned_parts;
    int revoked_parts;
} reb_state_t;

static void on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    reb_state_t *r = ud;
    (void)lost;
    if (assigned)
        r->assigned_parts += parts->cnt;
    else
        r->revoked_parts += parts->cnt;
}

static void roundtrip(mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    const char *topic = itest_topic("files", 3);
    /* Idempotent: a second ensure of the same topic succeeds. */
    CHECK(mdb_kafka_ensure_topics(cfg, &topic, 1, 3, &err), "second ensure: %s", err.message);

    static dr_state_t dr;
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, on_dr, &dr, &err);
    CHECK(p, "producer: %s", err.message);
    for (intptr_t i = 1; i <= N; i++) {
        char key[64], path[128];
        snprintf(key, sizeof key, "/archive/p%03d.dcm", (int)i);
        snprintf(path, sizeof path, "/archive/p%03d.dcm", (int)i);
        mdb_file_msg_t m = {"job-roundtrip", path, "accession:A1", NULL};
        char *json = mdb_msg_file_encode(&m);
        CHECK(json, "encode");
        CHECK(mdb_kafka_produce(p, topic, key, strlen(key), json, strlen(json), (void *)i, &err), "produce: %s",
              err.message);
        free(json);
        mdb_kafka_producer_poll(p, 0);
    }
    CHECK(mdb_kafka_producer_flush(p, 30000, &err), "flush: %s", err.message);
    CHECK(dr.ok == N, "delivery reports ok=%d failed=%d (%s)", dr.ok, dr.failed, dr.last_err);
    CHECK(mdb_kafka_producer_failures(p) == 0, "failures");
    CHECK(mdb_kafka_producer_outq_len(p) == 0, "outq %d", mdb_kafka_producer_outq_len(p));
    for (int i = 1; i <= N; i++)
        CHECK(dr.seen[i] == 1, "opaque %d reported %d times", i, dr.seen[i]);
    mdb_kafka_producer_destroy(p);

    reb_state_t reb = {0};
    const char *topics[] = {topic};
    mdb_kafka_consumer_t *c = mdb_kafka_consumer_new(cfg, itest_group("g"), topics, 1, on_rebalance, &reb, &err);
    CHECK(c, "consumer: %s", err.message);
    static int got[N + 1];
    int received = 0;
    int partitions_seen[3] = {0};
    int64_t deadline = itest_now_ms() + 60000;
    while (received < N && itest_now_ms() < deadline) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(c, 500, &fatal, &err);
        CHECK(!fatal, "fatal: %s", err.message);
        if (!m)
            continue;
        mdb_file_msg_t fm;
        CHECK(mdb_msg_file_decode(m->payload, m->len, 1 << 20, &fm, &err), "decode: %s", err.message);
        int idx = atoi(fm.path + strlen("/archive/p"));
        CHECK(idx >= 1 && idx <= N, "bad idx from %s", fm.path);
        CHECK(m->key_len == strlen(fm.path) && !memcmp(m->key, fm.path, m->key_len), "key mismatch");
        CHECK(!strcmp(fm.job_id, "job-roundtrip"), "job id");
        got[idx]++;
        received++;
        partitions_seen[m->partition]++;
        CHECK(mdb_kafka_consumer_store(c, rd_kafka_topic_name(m->rkt), m->partition, m->offset, &err), "store: %s",
              err.message);
        mdb_msg_file_clear(&fm);
        rd_kafka_message_destroy(m);
    }
    CHECK(received == N, "received %d of %d", received, N);
    for (int i = 1; i <= N; i++)
        CHECK(got[i] == 1, "message %d received %d times", i, got[i]);
    for (int i = 0; i < 3; i++)
        CHECK(partitions_seen[i] > 0, "partition %d got no messages (key hashing)", i);
    /* One member: every rebalance hands it all 3 partitions. */
    CHECK(reb.assigned_parts >= 3 && reb.assigned_parts % 3 == 0, "rebalance callback saw %d assigned partitions",
          reb.assigned_parts);
    CHECK(mdb_kafka_consumer_commit(c, true, &err), "commit: %s", err.message);

    /* Nothing more arrives (no duplicates after the last message). */
    int64_t quiet = itest_now_ms() + 1500;
    while (itest_now_ms() < quiet) {
        bool fatal = false;
        rd_kafka_message_t *m = mdb_kafka_consumer_poll(c, 200, &fatal, &err);
        CHECK(!m, "unexpected extra message at offset %lld", m ? (long long)m->offset : -1LL);
    }
    mdb_kafka_consumer_destroy(c);
    CHECK(reb.revoked_parts == reb.assigned_parts, "revoke on close saw %d of %d partitions", reb.revoked_parts,
          reb.assigned_parts);
    printf("roundtrip: %d produced, %d delivery reports, %d consumed once each\n", N, dr.ok, received);
}

/* Against a closed port: flush times out with a count, then the message
 * times out and the delivery report says so. */
static void unreachable(void)
{
    mdb_error_t err = {0};
    static dr_state_t dr;
    mdb_config_t *cfg = mdb_config_new();
    CHECK(mdb_config_set(cfg, "kafka.brokers", "127.0.0.1:1", MDB_CONFIG_SRC_FLAG, &err), "%s", err.message);
    CHECK(mdb_config_set(cfg, "kafka.message.timeout.ms", "1500", MDB_CONFIG_SRC_FLAG, &err), "%s", err.message);
    mdb_log_current_level = -1; /* the expected connection errors are noise here */
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, on_dr, &dr, &err);
    CHECK(p, "producer: %s", err.message);
    CHECK(mdb_kafka_produce(p, "t_unreachable", "k", 1, "v", 1, (void *)(intptr_t)1, &err), "%s", err.message);
    CHECK(!mdb_kafka_producer_flush(p, 200, &err), "flush should fail with the broker down");
    CHECK(strstr(err.message, "1 message(s) still undelivered"), "flush error: %s", err.message);
    CHECK(mdb_kafka_producer_outq_len(p) == 1, "outq");
    CHECK(mdb_kafka_producer_flush(p, 10000, &err), "after message timeout the report arrives: %s", err.message);
    CHECK(dr.failed == 1 && dr.ok == 0, "dr ok=%d failed=%d", dr.ok, dr.failed);
    CHECK(mdb_kafka_producer_failures(p) == 1, "failures counter");
    CHECK(strstr(dr.last_err, "timed out") || strstr(dr.last_err, "Timed out"), "dr error: %s", dr.last_err);
    mdb_kafka_producer_destroy(p);
    mdb_config_destroy(cfg);
    mdb_log_current_level = MDB_LOG_WARN;
    printf("unreachable broker: flush failed loudly, delivery report: %s\n", dr.last_err);
}

int main(void)
{
    mdb_config_t *cfg = itest_setup("kroundtrip");
    roundtrip(cfg);
    unreachable();
    return 0;
}
