/* Integration: `metadb topics` creates the four configured topics with the
 * requested partition count, is idempotent (second run succeeds and changes
 * nothing), and rejects bad arguments with exit code 2. Runs the real CLI
 * binary from MDB_BUILD_DIR against the live broker. */
#include <sys/wait.h>

#include "core_itest.h"

static int run(const char *args)
{
    const char *build = getenv("MDB_BUILD_DIR");
    CHECK(build && *build, "MDB_BUILD_DIR not set (run through ctest)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s/cli/metadb' --kafka.brokers='%s' --topic.jobs='%s.jobs' --topic.files='%s.files' "
             "--topic.instances='%s.instances' --topic.dlq='%s.dlq' topics %s >/dev/null",
             build, mdb_config_get(itest_cfg, "kafka.brokers"), itest_prefix, itest_prefix, itest_prefix, itest_prefix,
             args);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc), "metadb killed");
    return WEXITSTATUS(rc);
}

static void expect_partitions(int want)
{
    mdb_error_t err = {0};
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(itest_cfg, NULL, NULL, &err);
    CHECK(p, "%s", err.message);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(mdb_kafka_producer_handle(p), 1, NULL, &md, 10000);
    CHECK(!e, "metadata: %s", rd_kafka_err2str(e));
    for (size_t i = 0; i < itest_ntopics; i++) {
        int found = -1;
        for (int t = 0; t < md->topic_cnt; t++)
            if (!strcmp(md->topics[t].topic, itest_topics[i]))
                found = md->topics[t].partition_cnt;
        CHECK(found == want, "topic %s has %d partitions, expected %d", itest_topics[i], found, want);
    }
    rd_kafka_metadata_destroy(md);
    mdb_kafka_producer_destroy(p);
}

int main(void)
{
    itest_setup("topicscli");
    static const char *const sfx[] = {"jobs", "files", "instances", "dlq"};
    for (int i = 0; i < 4; i++) { /* for clean-up */
        char name[256];
        snprintf(name, sizeof name, "%s.%s", itest_prefix, sfx[i]);
        itest_topics[itest_ntopics++] = strdup(name);
    }
    CHECK(run("--partitions 3") == 0, "metadb topics failed");
    expect_partitions(3);
    CHECK(run("--partitions=5") == 0, "second run must succeed");
    expect_partitions(3); /* existing topics are left alone */
    CHECK(run("--partitions 0") == 2, "--partitions 0 accepted");
    CHECK(run("--partitions x") == 2, "--partitions x accepted");
    CHECK(run("--bogus") == 2, "unknown argument accepted");
    printf("metadb topics: 4 topics x 3 partitions, idempotent, bad arguments rejected\n");
    return 0;
}
