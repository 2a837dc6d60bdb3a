/* mdb_kafka_private: what the Kafka wrappers' files share and nobody else
 * uses (mdb_kafka.c defines them; the producer, consumer and admin files
 * build on them). */
#ifndef MDB_KAFKA_PRIVATE_H
#define MDB_KAFKA_PRIVATE_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdb_error.h"

/* Monotonic clock in milliseconds (deadlines, not dates). */
int64_t mdb_kafka_now_ms(void);

/* rd_kafka_conf_set name=value; false with err (MDB_ERR_CONFIG naming
 * "kafka.<name>") when librdkafka refuses it. */
bool mdb_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, mdb_error_t *err);

/* rd_kafka_new of type from conf with opaque set. conf belongs to the client
 * on success and stays the caller's on failure (NULL, err says "cannot
 * create Kafka <what>: ..."). */
rd_kafka_t *mdb_kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, void *opaque, const char *what,
                                 mdb_error_t *err);

#endif
