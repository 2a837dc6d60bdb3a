/* Helpers shared by the linker's integration tests (test_linker.c,
 * test_linker_stop.c), on top of core_itest.h: the stack's addresses, a
 * database client, the job document the linker updates, starting the real
 * metadb-linker binary on the test's topics and stopping it with SIGTERM
 * (it must exit 0 after its exit report), and a directory for its logs.
 * Header-only like core_itest.h: each test is its own executable. */
#ifndef LINKER_ITEST_H
#define LINKER_ITEST_H

#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "core_itest.h"

extern char **environ;

static char litest_mongo_uri[512], litest_brokers[512];

/* A linker log directory (removed by litest_logs_remove) and three log paths in it. */
typedef struct {
    char dir[64];
    char log[3][256];
} litest_logs_t;

/* itest_setup(name), remembering the database URI and the brokers for the helpers below. */
static inline mdb_config_t *litest_setup(const char *name)
{
    mdb_config_t *cfg = itest_setup(name);
    snprintf(litest_mongo_uri, sizeof litest_mongo_uri, "%s", mdb_config_get(cfg, "mongo.uri"));
    snprintf(litest_brokers, sizeof litest_brokers, "%s", mdb_config_get(cfg, "kafka.brokers"));
    return cfg;
}

static inline void litest_logs_new(litest_logs_t *l, const char *prefix)
{
    snprintf(l->dir, sizeof l->dir, "/tmp/%s_XXXXXX", prefix);
    CHECK(mkdtemp(l->dir), "mkdtemp");
    for (int i = 0; i < 3; i++)
        snprintf(l->log[i], sizeof l->log[i], "%s/linker%d.log", l->dir, i + 1);
}

static inline void litest_logs_remove(const litest_logs_t *l)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", l->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", l->dir);
}

static inline mongoc_client_t *litest_client(void)
{
    mongoc_client_t *c = mongoc_client_new(litest_mongo_uri);
    CHECK(c, "bad uri");
    mongoc_client_set_error_api(c, 2);
    return c;
}

/* Documents in db.coll_name. */
static inline int64_t litest_count(const char *db, const char *coll_name)
{
    mongoc_client_t *c = litest_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, coll_name);
    bson_t filter = BSON_INITIALIZER;
    bson_error_t be;
    int64_t n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL, &be);
    CHECK(n >= 0, "count %s: %s", coll_name, be.message);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return n;
}

/* The running job's document, as the producer would have written it. */
static inline void litest_create_job(const char *db, const char *job, const char *collection, int64_t files_total)
{
    mongoc_client_t *c = litest_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, "jobs");
    bson_t *doc = BCON_NEW("_id", job, "state", "running", "researcher_id", "r1", "collection", collection,
                           "feature_set", "default", "files_total", BCON_INT64(files_total), "files_done",
                           BCON_INT64(0), "files_failed", BCON_INT64(0), "instances_linked", BCON_INT64(0),
                           "producer_errors", BCON_INT64(0), "errors", "[", "]");
    bson_error_t be;
    CHECK(mongoc_collection_insert_one(coll, doc, NULL, NULL, &be), "%s", be.message);
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
}

static inline json_int_t litest_num(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

/* Lines of log containing what (grep -c). */
static inline int litest_lines_with(const char *log, const char *what)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "grep -c '%s' %s", what, log);
    FILE *f = popen(cmd, "r");
    int n = 0;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = 0;
        pclose(f);
    }
    return n;
}

/* A consumer of cfg's cluster in group, not committing by itself (it only
 * reads committed offsets, or reads records assigned by hand). */
static inline rd_kafka_t *litest_consumer(mdb_config_t *cfg, const char *group)
{
    mdb_error_t err = {0};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char es[256];
    CHECK(mdb_kafka_conf_apply(conf, cfg, &err), "%s", err.message);
    rd_kafka_conf_set(conf, "group.id", group, es, sizeof es);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", es, sizeof es);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es);
    CHECK(rk, "%s", es);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* metadb-linker of MDB_BUILD_DIR on database db, topics ti/td, in group;
 * extra: up to 4 more --key=value flags (NULL-terminated); stderr to log. */
static inline pid_t litest_start_linker(const char *db, const char *ti, const char *td, const char *group,
                                        const char *const *extra, const char *log)
{
    char bin[1024], a[6][600];
    const char *bd = getenv("MDB_BUILD_DIR");
    snprintf(bin, sizeof bin, "%s/linker/metadb-linker", bd ? bd : ".");
    snprintf(a[0], sizeof a[0], "--mongo.uri=%s", litest_mongo_uri);
    snprintf(a[1], sizeof a[1], "--mongo.db=%s", db);
    snprintf(a[2], sizeof a[2], "--kafka.brokers=%s", litest_brokers);
    snprintf(a[3], sizeof a[3], "--topic.instances=%s", ti);
    snprintf(a[4], sizeof a[4], "--topic.dlq=%s", td);
    snprintf(a[5], sizeof a[5], "--linker.group=%s", group);
    char *argv[13] = {bin, a[0], a[1], a[2], a[3], a[4], a[5], "--linker.metrics_port=0"};
    int n = 8;
    for (; extra && *extra; extra++) {
        CHECK(n < 12, "too many linker flags");
        argv[n++] = (char *)*extra;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    CHECK(rc == 0, "spawn %s: %s", bin, strerror(rc));
    return pid;
}

/* SIGTERM, then within 60 s: one exit report in log and exit status 0. */
static inline void litest_stop_linker(pid_t pid, const char *log)
{
    kill(pid, SIGTERM);
    int st = 0;
    int64_t t0 = itest_now_ms();
    while (waitpid(pid, &st, WNOHANG) == 0) {
        CHECK(itest_now_ms() - t0 < 60000, "linker did not stop within 60 s");
        usleep(20000);
    }
    CHECK(litest_lines_with(log, "linker done") == 1, "no exit report in %s", log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "linker exit status %d (log %s)", st, log);
}

#endif
