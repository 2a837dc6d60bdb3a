/* mdb_lag: consumer lag, the number an operator watches to decide whether to
 * add workers. Lag of a partition is how far a consumer group's committed
 * offset is behind the partition's high watermark, the same definition
 * Kafka's kafka-consumer-groups tool and Burrow use.
 *
 * Two users:
 *  - mdb_lag_collect: an outside view of whole groups (`metadb lag`,
 *    GET /api/lag). It uses the admin API (ListConsumerGroupOffsets,
 *    DescribeConsumerGroups) and watermark queries on a short-lived client
 *    that never joins the groups, so asking never triggers a rebalance.
 *  - mdb_lag_gauge: a daemon's view of its own assignment, exported as the
 *    Prometheus gauge metadb_consumer_lag{group,topic,partition} by a small
 *    background thread so the daemon's poll loop never blocks on the
 *    network for it.
 */
#ifndef MDB_LAG_H
#define MDB_LAG_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "mdb_config.h"
#include "mdb_error.h"
#include "mdb_metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collect lag for the given consumer groups (groups NULL or ngroups 0: the
 * configured worker.group, linker.group and producer.group).
 *
 * Topics shown for a group are every topic it has committed offsets on, plus
 * the topic a known metadb group consumes (producer.group -> topic.jobs,
 * worker.group -> topic.files, linker.group -> topic.instances and
 * topic.dlq) even before its first commit. Returns a new JSON object
 * (caller json_decref's):
 *
 *   {"brokers": "...", "time": "2025-...Z", "total_lag": N,
 *    "groups": [ {"group": G, "state": "Stable"|"Empty"|..., "members": n,
 *                 "topic": T, "total_lag": n,
 *                 "partitions": [ {"partition": p, "committed": c|null,
 *                                  "low_watermark": l, "high_watermark": h,
 *                                  "lag": n, "client_id": s|null, "host": s|null}, ...]},
 *               ... one entry per (group, topic), groups in the order asked,
 *               topics sorted by name ] }
 *
 * committed is null when the group has no commit on that partition; its lag
 * then counts every retained message (high - low), which is what a consumer
 * starting with auto.offset.reset=earliest has to read. Otherwise lag is
 * max(0, high - committed). A group with no commits and no known topic yields
 * one entry with "topic": null and no partitions. A partition whose
 * watermarks cannot be read carries "error" and lag null (not counted).
 *
 * Returns NULL with err filled when Kafka cannot be reached or a group's
 * offsets cannot be listed (e.g. authentication failure). */
json_t *mdb_lag_collect(const mdb_config_t *cfg, const char *const *groups, size_t ngroups, mdb_error_t *err);

/* ---- per-daemon gauge ---- */
typedef struct mdb_lag_gauge mdb_lag_gauge_t;

/* Start a thread that every interval_ms (<= 0: 5000) reads the consumer's
 * current assignment, its committed offsets and the partitions' high
 * watermarks, and sets metadb_consumer_lag{group,topic,partition} in m.
 * Partitions that leave the assignment are set to 0 so a sum over all
 * processes of a group stays right after a rebalance. `consumer` must be the
 * daemon's own group member (mdb_kafka_consumer_handle) and must outlive the
 * gauge: call mdb_lag_gauge_stop before destroying the consumer. Returns
 * NULL with err filled if the thread cannot start. */
mdb_lag_gauge_t *mdb_lag_gauge_start(mdb_metrics_t *m, rd_kafka_t *consumer, const char *group, int interval_ms,
                                     mdb_error_t *err);

/* Refresh the gauge once now, on the caller's thread (tests; also what the
 * thread does each interval). Blocks for at most a few seconds. */
void mdb_lag_gauge_refresh(mdb_lag_gauge_t *g);

/* Stop the thread and free the gauge (series stay registered in m).
 * Accepts NULL. */
void mdb_lag_gauge_stop(mdb_lag_gauge_t *g);

#ifdef __cplusplus
}
#endif
#endif
