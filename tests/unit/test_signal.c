/* Unit tests of mdb_signal and mdb_error: the first SIGTERM/SIGINT only sets
 * the stop flag (the process keeps running to drain and commit), a second
 * one exits at once with status 130, SIGPIPE is ignored; error messages are
 * prefixed and truncated safely. Signal cases run in forked children. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_error.h"
#include "mdb_signal.h"

static int run_child(int (*fn)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int child_first_signal(void)
{
    mdb_signal_install();
    if (mdb_signal_stop_requested())
        return 10;
    raise(SIGTERM);
    if (!mdb_signal_stop_requested())
        return 11;
    raise(SIGPIPE); /* ignored: must not kill us */
    return 0;       /* still alive after one SIGTERM: the loop could drain */
}

static int child_second_signal(void)
{
    mdb_signal_install();
    raise(SIGINT);
    raise(SIGINT); /* _exit(130) */
    return 12;
}

static int child_request_stop(void)
{
    mdb_signal_install();
    mdb_signal_request_stop();
    return mdb_signal_stop_requested() ? 0 : 13;
}

static void test_signals(void **state)
{
    (void)state;
    assert_int_equal(run_child(child_first_signal), 0);
    assert_int_equal(run_child(child_second_signal), 130);
    assert_int_equal(run_child(child_request_stop), 0);
}

static void test_error(void **state)
{
    (void)state;
    mdb_error_t err;
    mdb_error_set(&err, MDB_ERR_KAFKA, 42, "broker %s down", "b1");
    assert_int_equal(err.domain, MDB_ERR_KAFKA);
    assert_int_equal(err.code, 42);
    assert_string_equal(err.message, "broker b1 down");
    mdb_error_prefix(&err, "job %d", 7);
    assert_string_equal(err.message, "job 7: broker b1 down");
    assert_string_equal(mdb_error_domain_name(err.domain), "kafka");
    assert_string_equal(mdb_error_domain_name(12345), "unknown");

    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mdb_error_set(&err, MDB_ERR_IO, 0, "%s", big);
    assert_int_equal(strlen(err.message), MDB_ERROR_MSG_MAX - 1);
    mdb_error_prefix(&err, "ctx");
    assert_int_equal(strlen(err.message), MDB_ERROR_MSG_MAX - 1);
    assert_memory_equal(err.message, "ctx: xxx", 8);
    mdb_error_prefix(&err, "%s", big); /* prefix longer than the buffer */
    assert_int_equal(strlen(err.message), MDB_ERROR_MSG_MAX - 1);

    mdb_error_clear(&err);
    assert_int_equal(err.domain, MDB_ERR_NONE);
    assert_string_equal(err.message, "");
    mdb_error_clear(NULL);
    mdb_error_set(NULL, MDB_ERR_IO, 0, "ignored");
    mdb_error_prefix(NULL, "ignored");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
