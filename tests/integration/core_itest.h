/* Helpers for the foundation's integration tests against the live local
 * stack: a CHECK macro that fails the test (never skips), per-test isolated
 * names (topics, groups, databases carry the test name and pid) and
 * clean-up of topics and the database at exit, also after a failed CHECK. */
#ifndef CORE_ITEST_H
#define CORE_ITEST_H

#include <mongoc/mongoc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdb_config.h"
#include "mdb_kafka.h"
#include "mdb_log.h"

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static char itest_prefix[128];
static mdb_config_t *itest_cfg;
static char *itest_topics[16];
static size_t itest_ntopics;
static char itest_db[128];

static inline int64_t itest_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void itest_cleanup(void)
{
    mdb_error_t err = {0};
    if (itest_cfg && itest_ntopics &&
        !mdb_kafka_delete_topics(itest_cfg, (const char *const *)itest_topics, itest_ntopics, &err))
        fprintf(stderr, "cleanup: %s\n", err.message);
    for (size_t i = 0; i < itest_ntopics; i++)
        free(itest_topics[i]);
    itest_ntopics = 0;
    if (itest_cfg && itest_db[0]) {
        /* Bounded: a stuck database must not turn a failed test into a hang. */
        mongoc_uri_t *uri = mongoc_uri_new(mdb_config_get(itest_cfg, "mongo.uri"));
        mongoc_client_t *c = NULL;
        if (uri) {
            mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 10000);
            mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 10000);
            c = mongoc_client_new_from_uri(uri);
            mongoc_uri_destroy(uri);
        }
        if (c) {
            mongoc_database_t *db = mongoc_client_get_database(c, itest_db);
            bson_error_t be;
            if (!mongoc_database_drop(db, &be))
                fprintf(stderr, "cleanup: drop database %s: %s\n", itest_db, be.message);
            mongoc_database_destroy(db);
            mongoc_client_destroy(c);
        }
    }
    mdb_config_destroy(itest_cfg);
    itest_cfg = NULL;
    mongoc_cleanup();
}

/* A config from the environment (METADB_KAFKA_BROKERS / METADB_MONGO_URI
 * point at other clusters) with isolated topic, group and database names. */
static inline mdb_config_t *itest_setup(const char *name)
{
    mdb_error_t err = {0};
    char v[256];
    snprintf(itest_prefix, sizeof itest_prefix, "t_%s_%d", name, (int)getpid());
    mdb_log_init(name, getenv("MDB_TEST_LOG_LEVEL") ? getenv("MDB_TEST_LOG_LEVEL") : "warn", "plain");
    mongoc_init();
    mdb_log_route_mongoc();
    itest_cfg = mdb_config_new();
    CHECK(itest_cfg, "oom");
    CHECK(mdb_config_load_env(itest_cfg, &err), "%s", err.message);
    static const char *const keys[] = {"topic.jobs", "topic.files", "topic.instances", "topic.dlq"};
    static const char *const sfx[] = {"jobs", "files", "instances", "dlq"};
    for (int i = 0; i < 4; i++) {
        snprintf(v, sizeof v, "%s.%s", itest_prefix, sfx[i]);
        CHECK(mdb_config_set(itest_cfg, keys[i], v, MDB_CONFIG_SRC_FLAG, &err), "%s", err.message);
    }
    snprintf(itest_db, sizeof itest_db, "%s", itest_prefix);
    CHECK(mdb_config_set(itest_cfg, "mongo.db", itest_db, MDB_CONFIG_SRC_FLAG, &err), "%s", err.message);
    atexit(itest_cleanup);
    return itest_cfg;
}

/* Create topic <prefix>.<suffix> with n partitions; remembered for clean-up. */
static inline const char *itest_topic(const char *suffix, int partitions)
{
    mdb_error_t err = {0};
    char name[256];
    snprintf(name, sizeof name, "%s.%s", itest_prefix, suffix);
    CHECK(itest_ntopics < 16, "too many topics");
    itest_topics[itest_ntopics] = strdup(name);
    const char *t = itest_topics[itest_ntopics++];
    CHECK(mdb_kafka_ensure_topics(itest_cfg, &t, 1, partitions, &err), "ensure topic %s: %s", t, err.message);
    return t;
}

/* A group name unique to this test run. */
static inline const char *itest_group(const char *suffix)
{
    static char g[8][192];
    static int n = 0;
    char *out = g[n++ % 8];
    snprintf(out, 192, "%s.%s", itest_prefix, suffix);
    return out;
}

#endif
