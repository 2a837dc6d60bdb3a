/* Integration: interoperability with a foreign Kafka client. A job request
 * produced by kcat (Debian's, with its own librdkafka settings) is consumed
 * and decoded by our consumer, and a message produced by our idempotent
 * producer is read back byte-for-byte by kcat. This is how operators inject
 * and inspect messages by hand, so it must keep working. */
#include <stdint.h>
#include <sys/wait.h>

#include "core_itest.h"
#include "mdb_msg.h"

static const char *kcat_bin(void)
{
    const char *k = getenv("KCAT");
    if (k && *k)
        return k;
    CHECK(access("/usr/bin/kcat", X_OK) == 0, "kcat is not installed (apt-get install kcat)");
    return "/usr/bin/kcat";
}

/* kcat -P: one message "key<TAB>value" on stdin. */
static void kcat_produce(const char *brokers, const char *topic, const char *key, const char *value)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -P -b '%s' -t '%s' -K '\t' -c 1", kcat_bin(), brokers, topic);
    FILE *p = popen(cmd, "w");
    CHECK(p, "popen kcat");
    fprintf(p, "%s\t%s\n", key, value);
    int rc = pclose(p);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "kcat -P exited with %d", rc);
}

static void from_kcat(mdb_config_t *cfg, const char *topic)
{
    mdb_error_t err = {0};
    const char *brokers = mdb_config_get(cfg, "kafka.brokers");
    const char *json = "{\"v\":1,\"job_id\":\"kcat-job-1\",\"researcher_id\":\"r1\",\"collection\":\"LIDC-IDRI\","
                       "\"accession_numbers\":[\"ACC-\xc3\xa9\"],\"from\":\"kcat\"}";
    kcat_produce(brokers, topic, "kcat-job-1", json);

    const char *topics[] = {topic};
    mdb_kafka_consumer_t *c = mdb_kafka_consumer_new(cfg, itest_group("fromkcat"), topics, 1, NULL, NULL, &err);
    CHECK(c, "%s", err.message);
    rd_kafka_message_t *m = NULL;
    int64_t deadline = itest_now_ms() + 60000;
    while (!m && itest_now_ms() < deadline) {
        bool fatal = false;
        m = mdb_kafka_consumer_poll(c, 500, &fatal, &err);
        CHECK(!fatal, "%s", err.message);
    }
    CHECK(m, "message from kcat never arrived");
    CHECK(m->key_len == strlen("kcat-job-1") && !memcmp(m->key, "kcat-job-1", m->key_len), "key");
    mdb_job_msg_t job;
    CHECK(mdb_msg_job_decode(m->payload, m->len, 1 << 20, &job, &err), "decode: %s", err.message);
    CHECK(!strcmp(job.job_id, "kcat-job-1"), "job_id");
    CHECK(job.accession_numbers.n == 1 && !strcmp(job.accession_numbers.v[0], "ACC-\xc3\xa9"), "accession");
    CHECK(!strcmp(job.collection, "LIDC-IDRI"), "collection");
    CHECK(mdb_kafka_consumer_store(c, topic, m->partition, m->offset, &err), "%s", err.message);
    mdb_msg_job_clear(&job);
    rd_kafka_message_destroy(m);
    mdb_kafka_consumer_destroy(c);
    printf("kcat -> metadb consumer: job decoded\n");
}

static void to_kcat(mdb_config_t *cfg, const char *topic)
{
    mdb_error_t err = {0};
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    CHECK(p, "%s", err.message);
    mdb_dlq_msg_t d = {"job-to-kcat", "/archive/x y.dcm", "worker", "not_dicom", "missing DICM prefix"};
    char *json = mdb_msg_dlq_encode(&d);
    CHECK(json, "encode");
    CHECK(mdb_kafka_produce(p, topic, "job-to-kcat", 11, json, strlen(json), NULL, &err), "%s", err.message);
    CHECK(mdb_kafka_producer_flush(p, 30000, &err), "%s", err.message);
    CHECK(mdb_kafka_producer_failures(p) == 0, "delivery failed");
    mdb_kafka_producer_destroy(p);

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -C -b '%s' -t '%s' -o beginning -e -q -f '%%k\\t%%s\\n'", kcat_bin(),
             mdb_config_get(cfg, "kafka.brokers"), topic);
    FILE *k = popen(cmd, "r");
    CHECK(k, "popen kcat");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    ssize_t n;
    while ((n = getline(&line, &cap, k)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        char expect[1024];
        snprintf(expect, sizeof expect, "job-to-kcat\t%s", json);
        if (!strcmp(line, expect))
            found = true;
    }
    free(line);
    int rc = pclose(k);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "kcat -C exited with %d", rc);
    CHECK(found, "kcat did not read back our message %s", json);
    free(json);
    printf("metadb producer -> kcat: message read back byte-for-byte\n");
}

int main(void)
{
    mdb_config_t *cfg = itest_setup("kcat");
    from_kcat(cfg, itest_topic("jobs", 2));
    to_kcat(cfg, itest_topic("dlq", 2));
    return 0;
}
