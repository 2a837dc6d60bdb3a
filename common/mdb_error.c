/* mdb_error: filling and prefixing the shared error struct. Messages are
 * always NUL-terminated and truncated, never overflowed. */
#include "mdb_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mdb_error_set(mdb_error_t *err, int domain, int code, const char *fmt, ...)
{
    if (!err)
        return;
    err->domain = domain;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

void mdb_error_prefix(mdb_error_t *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[MDB_ERROR_MSG_MAX];
    char old[MDB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t pl = strlen(prefix), ol = strlen(old), cap = sizeof err->message - 1, n = 0;
    memcpy(err->message, prefix, pl < cap ? pl : cap);
    n = pl < cap ? pl : cap;
    for (const char *sep = ": "; *sep && n < cap; sep++)
        err->message[n++] = *sep;
    size_t rest = cap - n;
    memcpy(err->message + n, old, ol < rest ? ol : rest);
    n += ol < rest ? ol : rest;
    err->message[n] = '\0';
}

void mdb_error_clear(mdb_error_t *err)
{
    if (!err)
        return;
    err->domain = MDB_ERR_NONE;
    err->code = 0;
    err->message[0] = '\0';
}

const char *mdb_error_domain_name(int domain)
{
    switch (domain) {
    case MDB_ERR_NONE: return "none";
    case MDB_ERR_CONFIG: return "config";
    case MDB_ERR_KAFKA: return "kafka";
    case MDB_ERR_MONGO: return "mongo";
    case MDB_ERR_MSG: return "message";
    case MDB_ERR_DICOM: return "dicom";
    case MDB_ERR_IO: return "io";
    case MDB_ERR_SYSTEM: return "system";
    case MDB_ERR_SECURITY: return "security";
    case MDB_ERR_QUERY: return "query";
    case MDB_ERR_NOTFOUND: return "notfound";
    default: return "unknown";
    }
}
