/* Unit tests of mdb_daemon. mdb_daemon_start, the common start of every
 * daemon: --help answers 0 with the usage and the keys on stdout, an unknown
 * argument or a configuration that does not load answers 2 (nothing on
 * stdout), a bad log.level answers 2 naming the key, and a good command line
 * goes on (MDB_DAEMON_RUN) with its flags applied. Output is captured
 * through temporary files. The consuming daemons' parts that need no broker
 * and no database: closing what was half opened (or nothing), the retry of
 * one message (done, retried after a back-off, stopped, out of budget, a
 * stop request) with a producer that never connects, and the delivery
 * bookkeeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_config.h"
#include "mdb_daemon.h"
#include "mdb_error.h"
#include "mdb_kafka.h"
#include "mdb_signal.h"

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

/* ---- a consuming daemon's resources ---- */

static void test_close_nothing_opened(void **state)
{
    (void)state;
    mdb_daemon_t d = {.cfg = mdb_config_new()};
    mdb_daemon_init_runtime(&d);
    assert_true(d.driver_ready);
    assert_true(mdb_daemon_close(&d)); /* every resource NULL: nothing to flush; mongoc_cleanup */
    assert_null(d.cfg);
    assert_false(d.driver_ready);
    mdb_daemon_t none = {0};
    assert_true(mdb_daemon_close(&none));
}

static void test_close_half_opened(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_daemon_t d = {.cfg = mdb_config_new()};
    assert_true(mdb_config_set(d.cfg, "kafka.brokers", "127.0.0.1:1", MDB_CONFIG_SRC_FLAG, &err));
    assert_true(mdb_daemon_open_metrics(&d, "test"));
    d.kp =
        mdb_kafka_producer_new(d.cfg, mdb_daemon_delivery_report, NULL, &err); /* nothing produced: flushes at once */
    assert_non_null(d.kp);
    assert_true(mdb_daemon_close(&d));
    assert_null(d.kp);
    assert_null(d.metrics);
}

/* ---- the retry of one message ---- */

typedef struct {
    int calls;
    int retries; /* answer RETRY this many times, then last */
    mdb_daemon_result_t last;
} script_t;

static mdb_daemon_result_t scripted(void *ud, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    (void)msg;
    script_t *s = ud;
    if (s->calls++ < s->retries) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "transient");
        return MDB_DAEMON_RETRY;
    }
    return s->last;
}

typedef struct {
    mdb_config_t *cfg;
    mdb_kafka_producer_t *kp;
    rd_kafka_topic_t *rkt;
    rd_kafka_message_t msg;
} retry_fixture_t;

/* A producer that never connects (nothing is produced) and a message of topic "t". */
static int retry_setup(void **state)
{
    mdb_error_t err = {0};
    retry_fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->cfg = mdb_config_new();
    assert_true(mdb_config_set(f->cfg, "kafka.brokers", "127.0.0.1:1", MDB_CONFIG_SRC_FLAG, &err));
    f->kp = mdb_kafka_producer_new(f->cfg, NULL, NULL, &err);
    assert_non_null(f->kp);
    f->rkt = rd_kafka_topic_new(mdb_kafka_producer_handle(f->kp), "t", NULL);
    assert_non_null(f->rkt);
    f->msg.rkt = f->rkt;
    f->msg.partition = 2;
    f->msg.offset = 7;
    *state = f;
    return 0;
}

static int retry_teardown(void **state)
{
    retry_fixture_t *f = *state;
    rd_kafka_topic_destroy(f->rkt);
    mdb_kafka_producer_destroy(f->kp);
    mdb_config_destroy(f->cfg);
    free(f);
    return 0;
}

static bool retry(retry_fixture_t *f, script_t *s, int budget_s)
{
    mdb_daemon_handler_t h = {"test message", budget_s, scripted, s};
    return mdb_daemon_handle_with_retry(f->kp, &h, &f->msg);
}

static void test_retry_done_at_once(void **state)
{
    script_t s = {.last = MDB_DAEMON_DONE};
    assert_true(retry(*state, &s, 60));
    assert_int_equal(s.calls, 1);
}

static void test_retry_until_done(void **state)
{
    script_t s = {.retries = 1, .last = MDB_DAEMON_DONE};
    time_t t0 = time(NULL);
    assert_true(retry(*state, &s, 60)); /* after one 500 ms back-off */
    assert_int_equal(s.calls, 2);
    assert_true(time(NULL) - t0 <= 2);
}

static void test_retry_handler_stops(void **state)
{
    script_t s = {.last = MDB_DAEMON_STOP};
    assert_false(retry(*state, &s, 60));
    assert_int_equal(s.calls, 1);
}

static void test_retry_budget_runs_out(void **state)
{
    script_t s = {.retries = 1000};
    time_t t0 = time(NULL);
    assert_false(retry(*state, &s, 0)); /* back-offs of 500 then 1000 ms: given up once a second has passed */
    assert_true(s.calls >= 2 && s.calls <= 3);
    assert_true(time(NULL) - t0 <= 3);
}

/* Last: a stop request cannot be taken back. */
static void test_retry_stop_requested(void **state)
{
    script_t s = {.retries = 1000};
    mdb_signal_request_stop();
    assert_false(retry(*state, &s, 60)); /* the failure is logged, no back-off */
    assert_int_equal(s.calls, 1);
}

/* ---- delivery bookkeeping ---- */

static void test_delivery_report(void **state)
{
    (void)state;
    mdb_daemon_delivery_t d = {0};
    mdb_daemon_delivery_report(&d, true, NULL, NULL);
    mdb_daemon_delivery_report(&d, false, "Broker: Message size too large", NULL);
    mdb_daemon_delivery_report(&d, false, NULL, NULL);
    mdb_daemon_delivery_report(NULL, false, "ignored", NULL); /* a message produced without bookkeeping */
    assert_int_equal(d.ok, 1);
    assert_int_equal(d.failed, 2);
    assert_string_equal(d.last_error, "delivery failed");
}

/* A round still unreported at the timeout: false, and yet every report has
 * arrived before the call returns (d is on this stack frame). */
static void test_delivery_wait_drains(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_config_t *cfg = mdb_config_new();
    assert_true(mdb_config_set(cfg, "kafka.brokers", "127.0.0.1:1", MDB_CONFIG_SRC_FLAG, &err));
    assert_true(mdb_config_set(cfg, "kafka.message.timeout.ms", "1500", MDB_CONFIG_SRC_FLAG, &err));
    mdb_kafka_producer_t *kp = mdb_kafka_producer_new(cfg, mdb_daemon_delivery_report, NULL, &err);
    assert_non_null(kp);
    mdb_daemon_delivery_t d = {0};
    assert_true(mdb_kafka_produce(kp, "metadb.test", "k", 1, "v", 1, &d, &err));
    assert_true(mdb_kafka_produce(kp, "metadb.test", "k", 1, "w", 1, &d, &err));
    assert_false(mdb_daemon_delivery_wait(kp, &d, 2, 200, &err));
    assert_non_null(strstr(err.message, "2 of 2 deliveries still unreported after 200 ms"));
    assert_int_equal(d.ok + d.failed, 2);
    assert_int_equal(d.failed, 2);
    /* a round whose reports are all in already: its failures are the answer */
    mdb_error_t err2 = {0};
    assert_false(mdb_daemon_delivery_wait(kp, &d, 2, 200, &err2));
    assert_non_null(strstr(err2.message, "2 of 2 deliveries failed"));
    mdb_daemon_delivery_t none = {0};
    assert_true(mdb_daemon_delivery_wait(kp, &none, 0, 200, &err2));
    mdb_kafka_producer_destroy(kp);
    mdb_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_unknown_argument),
        cmocka_unit_test(test_missing_config_file),
        cmocka_unit_test(test_bad_log_level),
        cmocka_unit_test(test_run),
        cmocka_unit_test(test_close_nothing_opened),
        cmocka_unit_test(test_close_half_opened),
        cmocka_unit_test(test_delivery_report),
        cmocka_unit_test(test_delivery_wait_drains),
        cmocka_unit_test_setup_teardown(test_retry_done_at_once, retry_setup, retry_teardown),
        cmocka_unit_test_setup_teardown(test_retry_until_done, retry_setup, retry_teardown),
        cmocka_unit_test_setup_teardown(test_retry_handler_stops, retry_setup, retry_teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_runs_out, retry_setup, retry_teardown),
        cmocka_unit_test_setup_teardown(test_retry_stop_requested, retry_setup, retry_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
