/* mdb_error: the one error struct every fallible metadb function fills.
 * Library code never prints or exits; it returns false/NULL and fills an
 * mdb_error_t (domain, code, message) that main decides what to do with. */
#ifndef MDB_ERROR_H
#define MDB_ERROR_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MDB_ERR_NONE = 0,
    MDB_ERR_CONFIG,   /* bad/unknown configuration key or value */
    MDB_ERR_KAFKA,    /* librdkafka error (errstr copied) */
    MDB_ERR_MONGO,    /* libmongoc error (bson_error_t copied) */
    MDB_ERR_MSG,      /* message failed validation */
    MDB_ERR_DICOM,    /* DICOM read/parse error */
    MDB_ERR_IO,       /* file system error */
    MDB_ERR_SYSTEM,   /* OOM, libc failures */
    MDB_ERR_SECURITY, /* path outside archive root, auth */
    MDB_ERR_QUERY,    /* invalid query/filter */
    MDB_ERR_NOTFOUND
} mdb_error_domain_t;

#define MDB_ERROR_MSG_MAX 512

typedef struct {
    int domain; /* mdb_error_domain_t */
    int code;   /* domain-specific (rd_kafka_resp_err_t, bson code, errno, ...) */
    char message[MDB_ERROR_MSG_MAX];
} mdb_error_t;

/* Fill err (if non-NULL) with a printf-formatted message; truncates safely. */
void mdb_error_set(mdb_error_t *err, int domain, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Prefix an existing message with context: "ctx: old message". */
void mdb_error_prefix(mdb_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset to "no error". Accepts NULL. */
void mdb_error_clear(mdb_error_t *err);

/* Stable short name of a domain, e.g. "kafka"; never NULL. */
const char *mdb_error_domain_name(int domain);

#ifdef __cplusplus
}
#endif
#endif
