/* Unit tests of mdb_daemon_start, the common start of every daemon: --help
 * answers 0 with the usage and the keys on stdout, an unknown argument or a
 * configuration that does not load answers 2 (nothing on stdout), a bad
 * log.level answers 2 naming the key, and a good command line goes on (MDB_DAEMON_RUN) with
 * its flags applied. Output is captured through temporary files. */
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
#include "mdb_daemon.h"

static int usage_calls;

static void usage(FILE *out)
{
    usage_calls++;
    fprintf(out, "usage: metadb-test [--config FILE]\n");
}

/* Run mdb_daemon_start with stdout/stderr redirected; return its answer and
 * what each stream received (caller frees). */
static int start(char **args, int n, char **out, char **errs, mdb_config_t **cfg_out)
{
    fflush(stdout);
    fflush(stderr);
    FILE *o = tmpfile(), *e = tmpfile();
    assert_non_null(o);
    assert_non_null(e);
    int so = dup(1), se = dup(2);
    dup2(fileno(o), 1);
    dup2(fileno(e), 2);
    mdb_config_t *cfg = mdb_config_new();
    int rc = mdb_daemon_start(cfg, "metadb-test", "test", usage, n, args);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    FILE *f[2] = {o, e};
    char **dst[2] = {out, errs};
    for (int i = 0; i < 2; i++) {
        long len = ftell(f[i]);
        rewind(f[i]);
        *dst[i] = calloc(1, (size_t)len + 1);
        assert_non_null(*dst[i]);
        if (len > 0)
            assert_int_equal(fread(*dst[i], 1, (size_t)len, f[i]), (size_t)len);
        fclose(f[i]);
    }
    if (cfg_out)
        *cfg_out = cfg;
    else
        mdb_config_destroy(cfg);
    return rc;
}

static void test_help(void **state)
{
    (void)state;
    char *args[] = {"metadb-test", "--help"};
    char *out, *err;
    usage_calls = 0;
    assert_int_equal(start(args, 2, &out, &err, NULL), 0);
    assert_int_equal(usage_calls, 1);
    assert_non_null(strstr(out, "usage: metadb-test"));
    assert_non_null(strstr(out, "log.level")); /* the keys follow the usage */
    assert_string_equal(err, "");
    free(out);
    free(err);
}

static void test_unknown_argument(void **state)
{
    (void)state;
    char *args[] = {"metadb-test", "stray"};
    char *out, *err;
    assert_int_equal(start(args, 2, &out, &err, NULL), 2);
    assert_string_equal(out, "");
    assert_non_null(strstr(err, "metadb-test: unknown argument 'stray'"));
    assert_non_null(strstr(err, "usage: metadb-test"));
    free(out);
    free(err);
}

static void test_missing_config_file(void **state)
{
    (void)state;
    char *args[] = {"metadb-test", "--config", "/nonexistent/metadb.conf"};
    char *out, *err;
    assert_int_equal(start(args, 3, &out, &err, NULL), 2);
    assert_non_null(strstr(err, "metadb-test: "));
    assert_non_null(strstr(err, "/nonexistent/metadb.conf"));
    free(out);
    free(err);
}

static void test_bad_log_level(void **state)
{
    (void)state;
    char *args[] = {"metadb-test", "--log.level=chatty"};
    char *out, *err;
    assert_int_equal(start(args, 2, &out, &err, NULL), 2);
    assert_non_null(strstr(err, "metadb-test: "));
    assert_non_null(strstr(err, "log.level")); /* refused by the key's enum, before logging starts */
    free(out);
    free(err);
}

static void test_run(void **state)
{
    (void)state;
    char *args[] = {"metadb-test", "--log.level=error", "--worker.threads=3"};
    char *out, *err;
    mdb_config_t *cfg = NULL;
    assert_int_equal(start(args, 3, &out, &err, &cfg), MDB_DAEMON_RUN);
    assert_int_equal(mdb_config_get_int(cfg, "worker.threads"), 3);
    assert_string_equal(out, "");
    free(out);
    free(err);
    mdb_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),          cmocka_unit_test(test_unknown_argument),
        cmocka_unit_test(test_missing_config_file), cmocka_unit_test(test_bad_log_level),
        cmocka_unit_test(test_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
