/* mdb_bson_json: exact conversion between the JSON values (jansson) the
 * merge model works on and the BSON documents the database stores: JSON
 * integers become int32 when they fit and int64 otherwise, reals doubles;
 * back, int32/int64 become integers and doubles reals, so a document read
 * back compares equal to the one written. */
#include "mdb_bson_json.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

bool mdb_docs_append_json(bson_t *b, const char *key, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        bson_t child;
        if (!bson_append_document_begin(b, key, -1, &child))
            return false;
        bool ok = mdb_docs_json_to_bson(v, &child);
        return bson_append_document_end(b, &child) && ok;
    }
    case JSON_ARRAY: {
        bson_t child;
        if (!bson_append_array_begin(b, key, -1, &child))
            return false;
        bool ok = true;
        char buf[16];
        for (size_t i = 0; ok && i < json_array_size(v); i++) {
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, buf, sizeof buf);
            ok = mdb_docs_append_json(&child, k, json_array_get(v, i));
        }
        return bson_append_array_end(b, &child) && ok;
    }
    case JSON_STRING: return bson_append_utf8(b, key, -1, json_string_value(v), (int)json_string_length(v));
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i >= INT32_MIN && i <= INT32_MAX)
            return bson_append_int32(b, key, -1, (int32_t)i);
        return bson_append_int64(b, key, -1, (int64_t)i);
    }
    case JSON_REAL: return bson_append_double(b, key, -1, json_real_value(v));
    case JSON_TRUE: return bson_append_bool(b, key, -1, true);
    case JSON_FALSE: return bson_append_bool(b, key, -1, false);
    case JSON_NULL: return bson_append_null(b, key, -1);
    }
    return false;
}

bool mdb_docs_json_to_bson(const json_t *obj, bson_t *b)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return false;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!mdb_docs_append_json(b, k, v))
            return false;
    }
    return true;
}

json_t *mdb_docs_date_json(int64_t ms)
{
    /* seconds and milliseconds rounded down, so 1969-12-31T23:59:59.999Z is -1 */
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    char buf[48];
    if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
        return json_integer(ms);
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return json_string(buf);
}

static json_t *iter_to_json(bson_iter_t *it);

static json_t *bson_level_to_json(bson_iter_t *it, bool array)
{
    json_t *out = array ? json_array() : json_object();
    if (!out)
        return NULL;
    while (bson_iter_next(it)) {
        json_t *v = iter_to_json(it);
        if (!v) {
            json_decref(out);
            return NULL;
        }
        int rc = array ? json_array_append_new(out, v) : json_object_set_new(out, bson_iter_key(it), v);
        if (rc != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *iter_to_json(bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8: {
        uint32_t len = 0;
        const char *s = bson_iter_utf8(it, &len);
        return json_stringn(s, len);
    }
    case BSON_TYPE_INT32: return json_integer(bson_iter_int32(it));
    case BSON_TYPE_INT64: return json_integer((json_int_t)bson_iter_int64(it));
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(it);
        return isfinite(d) ? json_real(d) : json_null();
    }
    case BSON_TYPE_BOOL: return json_boolean(bson_iter_bool(it));
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED: return json_null();
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        bson_iter_t child;
        if (!bson_iter_recurse(it, &child))
            return NULL;
        return bson_level_to_json(&child, bson_iter_type(it) == BSON_TYPE_ARRAY);
    }
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        return json_string(hex);
    }
    case BSON_TYPE_DATE_TIME: return mdb_docs_date_json(bson_iter_date_time(it));
    case BSON_TYPE_DECIMAL128: {
        char buf[BSON_DECIMAL128_STRING];
        bson_decimal128_t d;
        bson_iter_decimal128(it, &d);
        bson_decimal128_to_string(&d, buf);
        return json_string(buf);
    }
    default: return json_null(); /* binary, regex, ...: metadb never writes them */
    }
}

json_t *mdb_docs_bson_to_json(const bson_t *b)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, b))
        return NULL;
    return bson_level_to_json(&it, false);
}
