/* Unit tests of mdb_log: credentials are masked in mongodb:// URIs (also
 * inside longer text), JSON lines are valid JSON with the expected fields
 * even for hostile message text, plain lines stay one line, and disabled
 * levels are not formatted at all. stderr is redirected to a pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mdb_log.h"

static void check_mask(const char *in, const char *expect)
{
    char *m = mdb_log_mask_uri(in);
    assert_non_null(m);
    assert_string_equal(m, expect);
    free(m);
}

static void test_mask_uri(void **state)
{
    (void)state;
    check_mask("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017");
    check_mask("mongodb://user:pa%40ss@db1:27017,db2:27017/metadb?authSource=admin",
               "mongodb://***:***@db1:27017,db2:27017/metadb?authSource=admin");
    check_mask("mongodb+srv://alice:s3cret@cluster.example.net/x", "mongodb+srv://***:***@cluster.example.net/x");
    check_mask("mongodb://onlyuser@host", "mongodb://***@host");
    check_mask("connect to mongodb://u:p@h:1 failed; retry mongodb://v:q@h2",
               "connect to mongodb://***:***@h:1 failed; retry mongodb://***:***@h2");
    check_mask("MONGODB://U:P@H", "MONGODB://***:***@H");
    /* unescaped ',', ';', '/', '?', '#' and quotes in a password (libmongoc accepts most) */
    check_mask("mongodb://u:a,b;c@h:1/?x=1", "mongodb://***:***@h:1/?x=1");
    check_mask("invalid mongo.uri 'mongodb://u:a/b?c#d\"e@h/db': bad",
               "invalid mongo.uri 'mongodb://***:***@h/db': bad");
    check_mask("mongodb://h1,h2/db?appname=x", "mongodb://h1,h2/db?appname=x");
    check_mask("no uri here: user:pass@host", "no uri here: user:pass@host");
    check_mask("", "");
    assert_null(mdb_log_mask_uri(NULL));
}

/* Capture what the logger writes to stderr while fn runs. */
static char *capture(void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *buf = calloc(1, 65536);
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, 65535 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    return buf;
}

static int formatted = 0;

static const char *count_format(void)
{
    formatted++;
    return "x";
}

static void emit_json_lines(void)
{
    MDB_LOGX(MDB_LOG_WARN, "job-1", "/a \"b\"\n\\c.dcm", "tab\there, quote \" newline\n ctrl \x01 done %d", 42);
    MDB_LOG(MDB_LOG_ERROR, "plain error ü");
    MDB_LOG(MDB_LOG_DEBUG, "debug %s", count_format()); /* below level: not formatted */
}

static void test_json_lines(void **state)
{
    (void)state;
    assert_true(mdb_log_init("testd", "info", "json"));
    formatted = 0;
    char *out = capture(emit_json_lines);
    assert_int_equal(formatted, 0);
    char *save = NULL;
    char *line1 = strtok_r(out, "\n", &save);
    char *line2 = strtok_r(NULL, "\n", &save);
    assert_non_null(line1);
    assert_non_null(line2);
    assert_null(strtok_r(NULL, "\n", &save)); /* exactly two lines, debug suppressed */

    json_error_t jerr;
    json_t *j = json_loads(line1, 0, &jerr);
    if (!j)
        fail_msg("not JSON: %s (%s)", line1, jerr.text);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "daemon")), "testd");
    assert_string_equal(json_string_value(json_object_get(j, "job")), "job-1");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/a \"b\"\n\\c.dcm");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "tab\there, quote \" newline\n ctrl \x01 done 42");
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[23], 'Z');
    json_decref(j);

    j = json_loads(line2, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "plain error ü");
    assert_null(json_object_get(j, "job"));
    json_decref(j);
    free(out);
}

static void emit_plain(void)
{
    MDB_LOGX(MDB_LOG_INFO, "job-9", NULL, "two\nlines become one");
    MDB_LOG(MDB_LOG_DEBUG, "debug shown");
}

static void emit_long(void)
{
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    MDB_LOG(MDB_LOG_INFO, "%s|end", big);
}

static void test_plain_lines(void **state)
{
    (void)state;
    assert_true(mdb_log_init("plaind", "debug", "plain"));
    char *out = capture(emit_plain);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_non_null(strstr(out, " info "));
    assert_non_null(strstr(out, "plaind["));
    assert_non_null(strstr(out, "job=job-9 two lines become one"));
    assert_non_null(strstr(nl + 1, "debug shown"));
    free(out);

    out = capture(emit_long); /* longer than the stack buffers: not truncated */
    assert_non_null(strstr(out, "aaaa|end\n"));
    free(out);
}

static void test_init_rejects(void **state)
{
    (void)state;
    assert_true(mdb_log_init("x", "warn", "plain"));
    assert_int_equal(mdb_log_current_level, MDB_LOG_WARN);
    assert_false(mdb_log_init("x", "verbose", "plain"));
    assert_false(mdb_log_init("x", "info", "xml"));
    assert_int_equal(mdb_log_current_level, MDB_LOG_WARN); /* unchanged */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_uri),
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_plain_lines),
        cmocka_unit_test(test_init_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
