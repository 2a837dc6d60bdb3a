/* mdb_kafka_private: what the Kafka wrappers' files share and nobody else
 * uses (mdb_kafka.c defines them; the producer, consumer and admin files
 * build on them). */
#ifndef MDB_KAFKA_PRIVATE_H
#define MDB_KAFKA_PRIVATE_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdb_config.h"
#include "mdb_error.h"

/* Monotonic clock in milliseconds (deadlines, not dates). */
int64_t mdb_kafka_now_ms(void);

/* The producer's settings (enable.idempotence=true, linger.ms=5), then
 * mdb_kafka_conf_apply. false with err (MDB_ERR_CONFIG naming the key) when
 * librdkafka refuses one. */
bool mdb_kafka_conf_producer(rd_kafka_conf_t *conf, const mdb_config_t *cfg, mdb_error_t *err);

/* The consumer's settings: group.id, auto.offset.reset=earliest,
 * auto-commit (1 s) of stored offsets only (enable.auto.offset.store=false),
 * session.timeout.ms from kafka.session_timeout_ms, no partition EOF
 * events; then mdb_kafka_conf_apply. false with err as above. */
bool mdb_kafka_conf_consumer(rd_kafka_conf_t *conf, const mdb_config_t *cfg, const char *group, mdb_error_t *err);

/* rd_kafka_new of type from conf with opaque set. conf belongs to the client
 * on success and stays the caller's on failure (NULL, err says "cannot
 * create Kafka <what>: ..."). */
rd_kafka_t *mdb_kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, void *opaque, const char *what,
                                 mdb_error_t *err);

#endif
