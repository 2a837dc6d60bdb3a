/* mdb_kafka: what every Kafka client of metadb starts from, its
 * configuration. The broker list and every "kafka.*" pass-through key are
 * applied to a librdkafka conf, librdkafka's logs and errors are routed into
 * mdb_log, and the producer's and the consumer's own settings are made here:
 * every producer is idempotent (no duplicates or reordering on internal
 * retries, acks=all); a consumer never stores offsets on its own and
 * auto-commits only stored ones. The clients built on it have one file
 * each: mdb_kafka_producer.c, mdb_kafka_consumer.c and mdb_kafka_admin.c
 * (topics). */
#include "mdb_kafka.h"

#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include "mdb_kafka_private.h"
#include "mdb_log.h"

int64_t mdb_kafka_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int l = level <= LOG_ERR       ? MDB_LOG_ERROR
            : level == LOG_WARNING ? MDB_LOG_WARN
            : level <= LOG_INFO    ? MDB_LOG_INFO
                                   : MDB_LOG_DEBUG;
    if (l <= mdb_log_current_level)
        mdb_log_write(l, NULL, NULL, "rdkafka %s [%s]: %s", rk ? rd_kafka_name(rk) : "?", fac, buf);
}

/* Transient errors are retried by librdkafka itself: warn. Fatal ones: error. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || fatal)
        MDB_LOG(MDB_LOG_ERROR, "rdkafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
    else
        MDB_LOG(MDB_LOG_WARN, "rdkafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

typedef struct {
    rd_kafka_conf_t *conf;
    mdb_error_t *err;
} apply_ctx_t;

static bool apply_one(const char *name, const char *value, void *ud)
{
    apply_ctx_t *ctx = ud;
    char errstr[512];
    if (rd_kafka_conf_set(ctx->conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        mdb_error_set(ctx->err, MDB_ERR_CONFIG, 0, "config key 'kafka.%s': %s", name, errstr);
        return false;
    }
    return true;
}

static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, mdb_error_t *err)
{
    apply_ctx_t ctx = {conf, err};
    return apply_one(name, value, &ctx);
}

bool mdb_kafka_conf_apply(rd_kafka_conf_t *conf, const mdb_config_t *cfg, mdb_error_t *err)
{
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    if (!conf_set(conf, "bootstrap.servers", mdb_config_get(cfg, "kafka.brokers"), err))
        return false;
    if (!conf_set(conf, "client.id", "metadb", err))
        return false;
    apply_ctx_t ctx = {conf, err};
    return mdb_config_foreach_passthrough(cfg, apply_one, &ctx);
}

bool mdb_kafka_conf_producer(rd_kafka_conf_t *conf, const mdb_config_t *cfg, mdb_error_t *err)
{
    return conf_set(conf, "enable.idempotence", "true", err) && conf_set(conf, "linger.ms", "5", err) &&
           mdb_kafka_conf_apply(conf, cfg, err);
}

bool mdb_kafka_conf_consumer(rd_kafka_conf_t *conf, const mdb_config_t *cfg, const char *group, mdb_error_t *err)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)mdb_config_get_int(cfg, "kafka.session_timeout_ms"));
    return conf_set(conf, "group.id", group, err) && conf_set(conf, "auto.offset.reset", "earliest", err) &&
           conf_set(conf, "enable.auto.commit", "true", err) &&
           conf_set(conf, "auto.commit.interval.ms", "1000", err) &&
           conf_set(conf, "enable.auto.offset.store", "false", err) && conf_set(conf, "session.timeout.ms", num, err) &&
           conf_set(conf, "enable.partition.eof", "false", err) && mdb_kafka_conf_apply(conf, cfg, err);
}

rd_kafka_t *mdb_kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, void *opaque, const char *what,
                                 mdb_error_t *err)
{
    char errstr[512];
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk)
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "cannot create Kafka %s: %s", what, errstr);
    return rk;
}
