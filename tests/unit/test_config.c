/* Unit tests of mdb_config: precedence flag > env > file > default regardless
 * of loading order, errors that name the offending key, type validation,
 * kafka.* pass-through (flags, files and METADB_KAFKA_* environment) and
 * secrets read from "@/path" files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_config.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_config_%d_XXXXXX", (int)getpid());
    if (!mkdtemp(tmpdir))
        return -1;
    /* The tests own the METADB_* environment. */
    extern char **environ;
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "METADB_", 7)) {
                size_t n = strcspn(*e, "=");
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        if (!name[0])
            break;
        unsetenv(name);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static void test_defaults(void **state)
{
    (void)state;
    mdb_config_t *cfg = mdb_config_new();
    assert_non_null(cfg);
    assert_string_equal(mdb_config_get(cfg, "log.level"), "info");
    assert_string_equal(mdb_config_get(cfg, "log.format"), "plain");
    assert_string_equal(mdb_config_get(cfg, "kafka.brokers"), "127.0.0.1:9092");
    assert_int_equal(mdb_config_get_int(cfg, "topic.partitions"), 6);
    assert_int_equal(mdb_config_get_int(cfg, "worker.max_header_bytes"), 67108864);
    assert_int_equal(mdb_config_source(cfg, "mongo.db"), MDB_CONFIG_SRC_DEFAULT);
    assert_true(mdb_config_is_key("mongo.uri"));
    assert_true(mdb_config_is_key("kafka.sasl.username"));
    assert_false(mdb_config_is_key("mongo.nope"));
    assert_false(mdb_config_is_key("kafka."));
    mdb_config_destroy(cfg);
    mdb_config_destroy(NULL);
}

/* Sources given in the "wrong" order still respect precedence. */
static void test_precedence_set(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_config_t *cfg = mdb_config_new();
    assert_true(mdb_config_set(cfg, "mongo.db", "from_flag", MDB_CONFIG_SRC_FLAG, &err));
    assert_true(mdb_config_set(cfg, "mongo.db", "from_env", MDB_CONFIG_SRC_ENV, &err));
    assert_true(mdb_config_set(cfg, "mongo.db", "from_file", MDB_CONFIG_SRC_FILE, &err));
    assert_string_equal(mdb_config_get(cfg, "mongo.db"), "from_flag");
    assert_int_equal(mdb_config_source(cfg, "mongo.db"), MDB_CONFIG_SRC_FLAG);
    assert_true(mdb_config_set(cfg, "mongo.db", "flag_again", MDB_CONFIG_SRC_FLAG, &err));
    assert_string_equal(mdb_config_get(cfg, "mongo.db"), "flag_again");

    assert_true(mdb_config_set(cfg, "linker.group", "from_file", MDB_CONFIG_SRC_FILE, &err));
    assert_true(mdb_config_set(cfg, "linker.group", "from_env", MDB_CONFIG_SRC_ENV, &err));
    assert_string_equal(mdb_config_get(cfg, "linker.group"), "from_env");
    mdb_config_destroy(cfg);
}

/* The full sequence: file < env < flag, each key from its highest source. */
static void test_precedence_load_all(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *conf = write_file("prec.conf", "# comment\n\n"
                                               "mongo.db = file_db\n"
                                               "worker.group = file_group\n"
                                               "linker.group = file_linker\n"
                                               "topic.files = \"quoted.files\"\n"
                                               "worker.threads = 3\n");
    char conf_path[512];
    snprintf(conf_path, sizeof conf_path, "%s", conf);
    setenv("METADB_WORKER_GROUP", "env_group", 1);
    setenv("METADB_MONGO_DB", "env_db", 1);
    setenv("METADB_HOME", "/ignored/by/config", 1);
    char *argv[] = {"prog",
                    "--config",
                    conf_path,
                    "--mongo.db=flag_db",
                    "--worker.threads",
                    "5",
                    "submit",
                    "--mongo.db=not_a_global_flag",
                    NULL};
    int argc = 8, rest = -1;
    mdb_config_t *cfg = mdb_config_new();
    assert_true(mdb_config_load_all(cfg, argc, argv, &rest, &err));
    assert_int_equal(rest, 6);
    assert_string_equal(argv[rest], "submit");
    assert_string_equal(mdb_config_get(cfg, "mongo.db"), "flag_db");
    assert_int_equal(mdb_config_source(cfg, "mongo.db"), MDB_CONFIG_SRC_FLAG);
    assert_string_equal(mdb_config_get(cfg, "worker.group"), "env_group");
    assert_int_equal(mdb_config_source(cfg, "worker.group"), MDB_CONFIG_SRC_ENV);
    assert_string_equal(mdb_config_get(cfg, "linker.group"), "file_linker");
    assert_int_equal(mdb_config_source(cfg, "linker.group"), MDB_CONFIG_SRC_FILE);
    assert_string_equal(mdb_config_get(cfg, "topic.files"), "quoted.files");
    assert_int_equal(mdb_config_get_int(cfg, "worker.threads"), 5);
    assert_string_equal(mdb_config_get(cfg, "producer.group"), "metadb-producers");
    assert_int_equal(mdb_config_source(cfg, "producer.group"), MDB_CONFIG_SRC_DEFAULT);
    mdb_config_destroy(cfg);
    unsetenv("METADB_WORKER_GROUP");
    unsetenv("METADB_MONGO_DB");
    unsetenv("METADB_HOME");

    /* METADB_CONFIG names the file when no --config flag is given. */
    setenv("METADB_CONFIG", conf_path, 1);
    char *argv2[] = {"prog", NULL};
    cfg = mdb_config_new();
    assert_true(mdb_config_load_all(cfg, 1, argv2, &rest, &err));
    assert_int_equal(rest, 1);
    assert_string_equal(mdb_config_get(cfg, "mongo.db"), "file_db");
    mdb_config_destroy(cfg);
    unsetenv("METADB_CONFIG");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_config_t *cfg = mdb_config_new();

    assert_false(mdb_config_set(cfg, "mongo.nope", "x", MDB_CONFIG_SRC_FLAG, &err));
    assert_int_equal(err.domain, MDB_ERR_CONFIG);
    assert_non_null(strstr(err.message, "'mongo.nope'"));

    const char *path = write_file("unknown.conf", "mongo.db = ok\n\nworker.treads = 4\n");
    assert_false(mdb_config_load_file(cfg, path, &err));
    assert_non_null(strstr(err.message, "worker.treads"));
    assert_non_null(strstr(err.message, "unknown.conf:3"));

    path = write_file("noeq.conf", "mongo.db\n");
    assert_false(mdb_config_load_file(cfg, path, &err));
    assert_non_null(strstr(err.message, "noeq.conf:1"));

    assert_false(mdb_config_load_file(cfg, "/nonexistent/metadb.conf", &err));
    assert_non_null(strstr(err.message, "/nonexistent/metadb.conf"));

    setenv("METADB_WORKER_TREADS", "4", 1);
    assert_false(mdb_config_load_env(cfg, &err));
    assert_non_null(strstr(err.message, "METADB_WORKER_TREADS"));
    unsetenv("METADB_WORKER_TREADS");

    /* A dotted flag in one of our sections is a typo, not a sub-command flag. */
    char *argv[] = {"prog", "--linker.batch_sise=5", "dump", NULL};
    int rest = 0;
    mdb_config_t *cfg2 = mdb_config_new();
    assert_false(mdb_config_load_all(cfg2, 3, argv, &rest, &err));
    assert_non_null(strstr(err.message, "linker.batch_sise"));
    mdb_config_destroy(cfg2);

    /* A librdkafka property that does not exist. */
    assert_false(mdb_config_set(cfg, "kafka.no.such.property", "1", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "kafka.no.such.property"));
    mdb_config_destroy(cfg);
}

static void test_bad_values(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_config_t *cfg = mdb_config_new();

    assert_false(mdb_config_set(cfg, "worker.threads", "four", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "'worker.threads'"));
    assert_non_null(strstr(err.message, "integer"));
    assert_non_null(strstr(err.message, "four"));
    assert_false(mdb_config_set(cfg, "worker.threads", "12abc", MDB_CONFIG_SRC_FLAG, &err));
    assert_false(mdb_config_set(cfg, "worker.threads", "", MDB_CONFIG_SRC_FLAG, &err));
    assert_false(mdb_config_set(cfg, "worker.threads", "-1", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "negative"));
    assert_false(mdb_config_set(cfg, "worker.metrics_port", "70000", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "worker.metrics_port"));
    assert_int_equal(mdb_config_get_int(cfg, "worker.threads"), 2); /* unchanged */

    assert_false(mdb_config_set(cfg, "log.level", "verbose", MDB_CONFIG_SRC_ENV, &err));
    assert_non_null(strstr(err.message, "'log.level'"));
    assert_non_null(strstr(err.message, "verbose"));
    assert_non_null(strstr(err.message, "error|warn|info|debug"));
    assert_true(mdb_config_set(cfg, "log.level", "debug", MDB_CONFIG_SRC_ENV, &err));
    assert_string_equal(mdb_config_get(cfg, "log.level"), "debug");

    /* A bad value in the environment names the variable and the key. */
    setenv("METADB_LOG_FORMAT", "xml", 1);
    assert_false(mdb_config_load_env(cfg, &err));
    assert_non_null(strstr(err.message, "METADB_LOG_FORMAT"));
    assert_non_null(strstr(err.message, "log.format"));
    unsetenv("METADB_LOG_FORMAT");

    /* ...and a bad flag names the flag. */
    char *argv[] = {"prog", "--topic.partitions=many", NULL};
    mdb_config_t *cfg2 = mdb_config_new();
    assert_false(mdb_config_load_all(cfg2, 2, argv, NULL, &err));
    assert_non_null(strstr(err.message, "topic.partitions"));
    char *argv2[] = {"prog", "--mongo.db", NULL};
    assert_false(mdb_config_load_all(cfg2, 2, argv2, NULL, &err));
    assert_non_null(strstr(err.message, "needs a value"));
    mdb_config_destroy(cfg2);
    mdb_config_destroy(cfg);
}

typedef struct {
    char names[8][64];
    char values[8][64];
    int n;
} collected_t;

static bool collect(const char *name, const char *value, void *ud)
{
    collected_t *c = ud;
    if (c->n >= 8)
        return false;
    snprintf(c->names[c->n], 64, "%s", name);
    snprintf(c->values[c->n], 64, "%s", value);
    c->n++;
    return true;
}

static const char *find_collected(const collected_t *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], name))
            return c->values[i];
    return NULL;
}

static void test_kafka_passthrough(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *conf = write_file("kafka.conf", "kafka.socket.timeout.ms = 12345\nkafka.client.rack = file_rack\n");
    char conf_path[512];
    snprintf(conf_path, sizeof conf_path, "%s", conf);
    setenv("METADB_KAFKA_SASL_USERNAME", "bob", 1);
    setenv("METADB_KAFKA_CLIENT_RACK", "env_rack", 1);
    setenv("METADB_KAFKA_BROKERS", "envbroker:9092", 1);
    char *argv[] = {"prog", "--config=dummy", "--kafka.security.protocol=plaintext", "--kafka.client.rack", "flag_rack",
                    NULL};
    argv[1] = malloc(strlen(conf_path) + 10);
    sprintf(argv[1], "--config=%s", conf_path);
    mdb_config_t *cfg = mdb_config_new();
    int rest = 0;
    bool ok = mdb_config_load_all(cfg, 5, argv, &rest, &err);
    free(argv[1]);
    assert_true(ok);
    assert_int_equal(rest, 5);
    /* kafka.brokers is a schema key, not a pass-through property. */
    assert_string_equal(mdb_config_get(cfg, "kafka.brokers"), "envbroker:9092");

    collected_t c = {0};
    assert_true(mdb_config_foreach_passthrough(cfg, collect, &c));
    assert_int_equal(c.n, 4);
    assert_string_equal(find_collected(&c, "socket.timeout.ms"), "12345");
    assert_string_equal(find_collected(&c, "sasl.username"), "bob");
    assert_string_equal(find_collected(&c, "security.protocol"), "plaintext");
    assert_string_equal(find_collected(&c, "client.rack"), "flag_rack");
    assert_null(find_collected(&c, "brokers"));
    mdb_config_destroy(cfg);
    unsetenv("METADB_KAFKA_SASL_USERNAME");
    unsetenv("METADB_KAFKA_CLIENT_RACK");
    unsetenv("METADB_KAFKA_BROKERS");

    /* A value librdkafka rejects is reported with the key. */
    cfg = mdb_config_new();
    assert_false(mdb_config_set(cfg, "kafka.socket.timeout.ms", "soon", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "kafka.socket.timeout.ms"));
    mdb_config_destroy(cfg);
}

static void test_secret_files(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    char at[600];
    const char *path = write_file("tokens", "s3cret-token  \nsecond line is ignored\n");
    snprintf(at, sizeof at, "@%s", path);
    mdb_config_t *cfg = mdb_config_new();
    assert_true(mdb_config_set(cfg, "api.tokens", at, MDB_CONFIG_SRC_FILE, &err));
    assert_string_equal(mdb_config_get(cfg, "api.tokens"), "s3cret-token");

    path = write_file("sasl", "hunter2\n");
    char env[600];
    snprintf(env, sizeof env, "@%s", path);
    setenv("METADB_KAFKA_SASL_PASSWORD", env, 1);
    assert_true(mdb_config_load_env(cfg, &err));
    unsetenv("METADB_KAFKA_SASL_PASSWORD");
    collected_t c = {0};
    mdb_config_foreach_passthrough(cfg, collect, &c);
    assert_string_equal(find_collected(&c, "sasl.password"), "hunter2");

    assert_false(mdb_config_set(cfg, "api.read_tokens", "@/nonexistent/secret", MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "api.read_tokens"));
    assert_non_null(strstr(err.message, "/nonexistent/secret"));

    /* The value in a file is validated like any other. */
    path = write_file("threads", "seven\n");
    snprintf(at, sizeof at, "@%s", path);
    assert_false(mdb_config_set(cfg, "worker.threads", at, MDB_CONFIG_SRC_FLAG, &err));
    assert_non_null(strstr(err.message, "seven"));

    assert_true(mdb_config_set(cfg, "api.read_tokens", "@@literal", MDB_CONFIG_SRC_FLAG, &err));
    assert_string_equal(mdb_config_get(cfg, "api.read_tokens"), "@literal");
    mdb_config_destroy(cfg);
}

static void test_list(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    size_t n = 99;
    mdb_config_t *cfg = mdb_config_new();
    char **v = mdb_config_get_list(cfg, "archive.roots", &n);
    assert_non_null(v);
    assert_int_equal(n, 0);
    assert_null(v[0]);
    mdb_config_strv_free(v);
    assert_true(mdb_config_set(cfg, "archive.roots", " /a , ,/b/c,", MDB_CONFIG_SRC_FLAG, &err));
    v = mdb_config_get_list(cfg, "archive.roots", &n);
    assert_int_equal(n, 2);
    assert_string_equal(v[0], "/a");
    assert_string_equal(v[1], "/b/c");
    assert_null(v[2]);
    mdb_config_strv_free(v);
    mdb_config_destroy(cfg);
}

static void test_help(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mdb_config_t *cfg = mdb_config_new();
    mdb_config_print_help(cfg, f);
    fclose(f);
    assert_non_null(strstr(buf, "--mongo.uri"));
    assert_non_null(strstr(buf, "METADB_MONGO_URI"));
    assert_non_null(strstr(buf, "error|warn|info|debug"));
    free(buf);
    mdb_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence_set),
        cmocka_unit_test(test_precedence_load_all),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_kafka_passthrough),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
