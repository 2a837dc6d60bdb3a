/* mdb_metrics: a small Prometheus registry (counters, gauges, histograms, each
 * with an optional fixed label string) and an HTTP endpoint (libmicrohttpd)
 * that serves the text exposition format on /metrics. Thread-safe: updates
 * are lock-free atomics on pre-registered series; registration takes a lock. */
#ifndef MDB_METRICS_H
#define MDB_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_metrics mdb_metrics_t;
typedef struct mdb_metric mdb_metric_t;

/* Registry; always exports process_resident_memory_bytes and
 * metadb_up{daemon="..."}. */
mdb_metrics_t *mdb_metrics_new(const char *daemon);
void mdb_metrics_destroy(mdb_metrics_t *m); /* stops the server; accepts NULL */

/* Register (or find) a series. labels is "" or e.g. "reason=\"not_dicom\"".
 * Returned pointer is owned by the registry and valid until destroy. */
mdb_metric_t *mdb_metrics_counter(mdb_metrics_t *m, const char *name, const char *help, const char *labels);
mdb_metric_t *mdb_metrics_gauge(mdb_metrics_t *m, const char *name, const char *help, const char *labels);
/* Histogram with given upper bounds (ascending; +Inf implied). */
mdb_metric_t *mdb_metrics_histogram(mdb_metrics_t *m, const char *name, const char *help, const char *labels,
                                    const double *bounds, size_t nbounds);

void mdb_metric_inc(mdb_metric_t *c, double v);     /* counter/gauge add */
void mdb_metric_set(mdb_metric_t *g, double v);     /* gauge set */
void mdb_metric_observe(mdb_metric_t *h, double v); /* histogram */

/* Render the exposition text; caller frees. */
char *mdb_metrics_render(mdb_metrics_t *m);

/* Serve /metrics on 127.0.0.1:port (bind_addr NULL) or bind_addr:port.
 * port 0 = do not serve. */
bool mdb_metrics_serve(mdb_metrics_t *m, const char *bind_addr, int port, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
