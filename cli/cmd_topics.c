/* metadb topics: create the four metadb topics (jobs, files, instances, dlq)
 * with the configured partition count. Idempotent: topics that already
 * exist are left as they are, so it is safe in start-up scripts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_cli.h"
#include "mdb_kafka.h"
#include "mdb_log.h"

static void topics_usage(FILE *out)
{
    fprintf(out, "usage: metadb topics [--partitions N]\n"
                 "  creates topic.jobs, topic.files, topic.instances, topic.dlq and topic.retrieve if missing\n"
                 "  (N defaults to topic.partitions; existing topics are not changed)\n");
}

int mdb_cmd_topics(mdb_config_t *cfg, int argc, char **argv)
{
    mdb_error_t err = {0};
    long partitions = (long)mdb_config_get_int(cfg, "topic.partitions");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            topics_usage(stdout);
            return 0;
        }
        if (!strncmp(a, "--partitions=", 13))
            val = a + 13;
        else if (!strcmp(a, "--partitions") && i + 1 < argc)
            val = argv[++i];
        if (!val) {
            fprintf(stderr, "metadb topics: unknown argument '%s'\n", a);
            topics_usage(stderr);
            return 2;
        }
        char *end = NULL;
        partitions = strtol(val, &end, 10);
        if (!*val || *end || partitions < 1 || partitions > 10000) {
            fprintf(stderr, "metadb topics: --partitions must be an integer 1..10000, got '%s'\n", val);
            return 2;
        }
    }
    if (partitions < 1) {
        fprintf(stderr, "metadb topics: topic.partitions must be >= 1\n");
        return 2;
    }
    const char *topics[] = {mdb_config_get(cfg, "topic.jobs"), mdb_config_get(cfg, "topic.files"),
                            mdb_config_get(cfg, "topic.instances"), mdb_config_get(cfg, "topic.dlq"),
                            mdb_config_get(cfg, "topic.retrieve")};
    if (!mdb_kafka_ensure_topics(cfg, topics, 5, (int)partitions, &err)) {
        fprintf(stderr, "metadb topics: %s\n", err.message);
        return 1;
    }
    for (size_t i = 0; i < 5; i++)
        printf("%s\n", topics[i]);
    return 0;
}
