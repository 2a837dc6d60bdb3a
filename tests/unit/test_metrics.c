/* Unit tests of mdb_metrics: the exposition text (HELP/TYPE lines, labels,
 * counters and gauges, cumulative histogram buckets with +Inf, _sum and
 * _count), registration rules, and the HTTP endpoint on an ephemeral port. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_metrics.h"

#define assert_contains(hay, needle)                                                                                   \
    do {                                                                                                               \
        if (!strstr((hay), (needle)))                                                                                  \
            fail_msg("expected '%s' in:\n%s", (needle), (hay));                                                        \
    } while (0)

static void test_render(void **state)
{
    (void)state;
    mdb_metrics_t *m = mdb_metrics_new("worker");
    assert_non_null(m);
    mdb_metric_t *ok = mdb_metrics_counter(m, "metadb_files_total", "Files processed", "result=\"ok\"");
    mdb_metric_t *bad = mdb_metrics_counter(m, "metadb_files_total", "Files processed", "result=\"failed\"");
    mdb_metric_t *g = mdb_metrics_gauge(m, "metadb_inflight", "In-flight\\tasks\nnow", "");
    double bounds[] = {0.01, 0.1, 1};
    mdb_metric_t *h = mdb_metrics_histogram(m, "metadb_extract_seconds", "Extraction time", "", bounds, 3);
    assert_non_null(ok);
    assert_non_null(bad);
    assert_non_null(g);
    assert_non_null(h);
    assert_ptr_equal(mdb_metrics_counter(m, "metadb_files_total", "Files processed", "result=\"ok\""), ok);
    assert_null(mdb_metrics_gauge(m, "metadb_files_total", "x", "")); /* type clash */
    double desc[] = {1, 0.5};
    assert_null(mdb_metrics_histogram(m, "metadb_h2", "x", "", desc, 2));

    mdb_metric_inc(ok, 3);
    mdb_metric_inc(ok, 1);
    mdb_metric_inc(bad, 1);
    mdb_metric_set(g, 7);
    mdb_metric_inc(g, -2);
    mdb_metric_observe(h, 0.005);
    mdb_metric_observe(h, 0.01); /* le is inclusive */
    mdb_metric_observe(h, 0.5);
    mdb_metric_observe(h, 5);

    char *text = mdb_metrics_render(m);
    assert_non_null(text);
    assert_contains(
        text, "# HELP metadb_up 1 while the daemon runs\n# TYPE metadb_up gauge\nmetadb_up{daemon=\"worker\"} 1\n");
    assert_contains(text, "# TYPE metadb_files_total counter\n");
    assert_contains(text, "metadb_files_total{result=\"ok\"} 4\n");
    assert_contains(text, "metadb_files_total{result=\"failed\"} 1\n");
    assert_contains(text, "# HELP metadb_inflight In-flight\\\\tasks\\nnow\n");
    assert_contains(text, "metadb_inflight 5\n");
    assert_contains(text, "# TYPE metadb_extract_seconds histogram\n");
    assert_contains(text, "metadb_extract_seconds_bucket{le=\"0.01\"} 2\n"
                          "metadb_extract_seconds_bucket{le=\"0.1\"} 2\n"
                          "metadb_extract_seconds_bucket{le=\"1\"} 3\n"
                          "metadb_extract_seconds_bucket{le=\"+Inf\"} 4\n");
    assert_contains(text, "metadb_extract_seconds_sum 5.515\n");
    assert_contains(text, "metadb_extract_seconds_count 4\n");
    assert_contains(text, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ");
    /* One HELP per family even with several series. */
    char *first = strstr(text, "# HELP metadb_files_total");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# HELP metadb_files_total"));
    /* resident memory is a plausible positive number */
    double rss = atof(strstr(text, "\nprocess_resident_memory_bytes ") + strlen("\nprocess_resident_memory_bytes "));
    assert_true(rss > 1024 * 1024);
    free(text);

    /* Labeled histogram: le joins the existing labels. */
    mdb_metric_t *lh = mdb_metrics_histogram(m, "metadb_batch_size", "Batch sizes", "topic=\"files\"", bounds, 1);
    mdb_metric_observe(lh, 0.001);
    text = mdb_metrics_render(m);
    assert_contains(text, "metadb_batch_size_bucket{topic=\"files\",le=\"0.01\"} 1\n");
    assert_contains(text, "metadb_batch_size_bucket{topic=\"files\",le=\"+Inf\"} 1\n");
    assert_contains(text, "metadb_batch_size_count{topic=\"files\"} 1\n");
    free(text);
    mdb_metrics_destroy(m);
    mdb_metrics_destroy(NULL);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static char *http_get(int port, const char *path)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    assert_int_equal(write(s, req, (size_t)n), n);
    char *buf = calloc(1, 65536);
    size_t len = 0;
    ssize_t r;
    while ((r = read(s, buf + len, 65535 - len)) > 0)
        len += (size_t)r;
    close(s);
    return buf;
}

static void test_serve(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_metrics_t *m = mdb_metrics_new("linker");
    mdb_metric_inc(mdb_metrics_counter(m, "metadb_events_total", "events", ""), 12);
    assert_true(mdb_metrics_serve(m, NULL, 0, &err)); /* 0 = off */
    int port = free_port();
    assert_true(mdb_metrics_serve(m, "127.0.0.1", port, &err));
    char *resp = http_get(port, "/metrics");
    assert_contains(resp, " 200 OK");
    assert_contains(resp, "text/plain; version=0.0.4");
    assert_contains(resp, "metadb_events_total 12\n");
    assert_contains(resp, "metadb_up{daemon=\"linker\"} 1\n");
    free(resp);
    resp = http_get(port, "/nope");
    assert_contains(resp, " 404 ");
    free(resp);
    /* A second server on a busy port reports the failure. */
    mdb_metrics_t *m2 = mdb_metrics_new("other");
    assert_false(mdb_metrics_serve(m2, NULL, port, &err));
    assert_non_null(strstr(err.message, "cannot serve metrics"));
    assert_false(mdb_metrics_serve(m2, "not-an-ip", port + 1, &err));
    mdb_metrics_destroy(m2);
    mdb_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_serve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
