/* mdb_kafka: thin wrappers over librdkafka in the style of kcat and
 * librdkafka's examples. Producer: idempotent, delivery reports routed to a
 * callback with the per-message opaque, retry on queue-full after polling,
 * flush at shutdown that fails loudly if anything stays undelivered.
 * Consumer: a group member with enable.auto.offset.store=false (offsets are
 * stored explicitly once work is durable) and a rebalance callback that lets
 * the owner flush before partitions are revoked.
 * All "kafka.*" pass-through config keys are applied with rd_kafka_conf_set. */
#ifndef MDB_KAFKA_H
#define MDB_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_config.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- producer ---- */
typedef struct mdb_kafka_producer mdb_kafka_producer_t;

/* Delivery report: ok=false with errstr on permanent failure. msg_opaque is
 * what was passed to mdb_kafka_produce. Runs on the thread that polls. */
typedef void (*mdb_kafka_dr_fn)(void *msg_opaque, bool ok, const char *errstr, void *ud);

/* New idempotent producer from cfg (kafka.brokers + pass-through). dr may be NULL. */
mdb_kafka_producer_t *mdb_kafka_producer_new(const mdb_config_t *cfg, mdb_kafka_dr_fn dr, void *ud, mdb_error_t *err);

/* Enqueue a copy of key/value on topic (partition chosen by key hash).
 * Retries on queue-full after polling, up to ~30 s. Returns false on other errors. */
bool mdb_kafka_produce(mdb_kafka_producer_t *p, const char *topic, const void *key, size_t keylen, const void *value,
                       size_t len, void *msg_opaque, mdb_error_t *err);

/* Serve delivery reports; returns number of events served. */
int mdb_kafka_producer_poll(mdb_kafka_producer_t *p, int timeout_ms);
/* A retry's backoff: wait ms milliseconds, serving delivery reports the
 * while, and return early (false) when a stop was requested (mdb_signal). */
bool mdb_kafka_producer_wait(mdb_kafka_producer_t *p, long ms);

/* Messages enqueued but not yet reported. */
int mdb_kafka_producer_outq_len(mdb_kafka_producer_t *p);

/* Wait for all outstanding deliveries; false (err filled with count) if any remain. */
bool mdb_kafka_producer_flush(mdb_kafka_producer_t *p, int timeout_ms, mdb_error_t *err);

/* Count of delivery failures seen so far. */
uint64_t mdb_kafka_producer_failures(mdb_kafka_producer_t *p);

rd_kafka_t *mdb_kafka_producer_handle(mdb_kafka_producer_t *p);

/* Flushes (10 s) then destroys. Accepts NULL. */
void mdb_kafka_producer_destroy(mdb_kafka_producer_t *p);

/* ---- consumer ---- */
typedef struct mdb_kafka_consumer mdb_kafka_consumer_t;

/* Called before partitions are revoked (lost=false: flush pending work and
 * store its offsets; the wrapper then commits synchronously) or when the
 * assignment was lost (lost=true: drop in-flight work uncommitted).
 * Also called with the newly assigned partitions after assign (assigned=true). */
typedef void (*mdb_kafka_rebalance_fn)(void *ud, bool assigned, bool lost,
                                       const rd_kafka_topic_partition_list_t *parts);

/* Join `group` and subscribe to topics. auto.offset.reset=earliest,
 * enable.auto.commit=true (commits only *stored* offsets, every 1 s),
 * enable.auto.offset.store=false. rebalance may be NULL. */
mdb_kafka_consumer_t *mdb_kafka_consumer_new(const mdb_config_t *cfg, const char *group, const char *const *topics,
                                             size_t ntopics, mdb_kafka_rebalance_fn rebalance, void *ud,
                                             mdb_error_t *err);

/* Next message or NULL on timeout. Errors that are only informational
 * (partition EOF) are swallowed; a fatal error sets *fatal. Caller destroys
 * the message with rd_kafka_message_destroy. On NULL, err->domain is
 * MDB_ERR_NONE for a plain timeout and MDB_ERR_KAFKA (message filled, also
 * logged at warn) for a transient consumer error such as an unknown topic.
 * The rebalance callback runs inside this call, on the caller's thread. */
rd_kafka_message_t *mdb_kafka_consumer_poll(mdb_kafka_consumer_t *c, int timeout_ms, bool *fatal, mdb_error_t *err);

/* Mark offset (the message's own offset; the wrapper stores offset+1) as done.
 * Fails (code RD_KAFKA_RESP_ERR__STATE) if the partition is no longer assigned
 * to this member: that work will be redone by the new owner. */
bool mdb_kafka_consumer_store(mdb_kafka_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
                              mdb_error_t *err);

/* Commit stored offsets now (sync=true waits for the broker). */
bool mdb_kafka_consumer_commit(mdb_kafka_consumer_t *c, bool sync, mdb_error_t *err);

rd_kafka_t *mdb_kafka_consumer_handle(mdb_kafka_consumer_t *c);

/* Commit stored offsets, leave the group, destroy. Accepts NULL. Closing
 * revokes the assignment, so the rebalance callback runs one last time from
 * here: its ud must stay valid until this returns. */
void mdb_kafka_consumer_destroy(mdb_kafka_consumer_t *c);

/* ---- admin ---- */
/* Create topics that do not exist yet (existing ones are left alone). */
bool mdb_kafka_ensure_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, int partitions,
                             mdb_error_t *err);

/* Delete topics (tests clean up with it); topics that do not exist are fine. */
bool mdb_kafka_delete_topics(const mdb_config_t *cfg, const char *const *topics, size_t ntopics, mdb_error_t *err);

/* Apply kafka.brokers and every kafka.* pass-through key to conf. */
bool mdb_kafka_conf_apply(rd_kafka_conf_t *conf, const mdb_config_t *cfg, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
