/* mdb_query_json: BSON documents as the JSON rows the API answers with.
 * Lenient by design (unlike mdb_bson_json's exact converter for the merge
 * model): binary and code values are left out, types without a JSON form
 * are skipped, invalid UTF-8 becomes U+FFFD, a regex becomes its pattern and
 * a timestamp its seconds, so any stored document prints. */
#include "mdb_query.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_bson_json.h"

static json_t *bson_value_to_json(const bson_iter_t *it);

/* JSON string from stored bytes; invalid UTF-8 (which the linker never
 * writes, but a raw collection might hold) becomes U+FFFD per bad byte so
 * the answer stays valid JSON. */
static json_t *utf8_json_string(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xc2 && c <= 0xdf)
            n = 2;
        else if (c >= 0xe0 && c <= 0xef)
            n = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 4;
        if (c != 0 && (c < 0x80 || (i + n <= len && n > 1 && bson_utf8_validate(s + i, n, false)))) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static json_t *bson_iter_children(const bson_iter_t *it, bool array)
{
    bson_iter_t child;
    json_t *out = array ? json_array() : json_object();
    if (!out || !bson_iter_recurse(it, &child))
        return out;
    while (bson_iter_next(&child)) {
        bson_type_t t = bson_iter_type(&child);
        if (t == BSON_TYPE_BINARY || t == BSON_TYPE_CODE || t == BSON_TYPE_CODEWSCOPE)
            continue; /* binary VRs are left out */
        json_t *v = bson_value_to_json(&child);
        if (!v)
            continue;
        if (array)
            json_array_append_new(out, v);
        else
            json_object_set_new(out, bson_iter_key(&child), v);
    }
    return out;
}

static json_t *bson_value_to_json(const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOCUMENT: return bson_iter_children(it, false);
    case BSON_TYPE_ARRAY: return bson_iter_children(it, true);
    case BSON_TYPE_UTF8: {
        uint32_t len;
        const char *s = bson_iter_utf8(it, &len);
        return utf8_json_string(s, len);
    }
    case BSON_TYPE_INT32: return json_integer(bson_iter_int32(it));
    case BSON_TYPE_INT64: return json_integer(bson_iter_int64(it));
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(it);
        return isfinite(d) ? json_real(d) : json_null();
    }
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t dec;
        char buf[BSON_DECIMAL128_STRING];
        bson_iter_decimal128(it, &dec);
        bson_decimal128_to_string(&dec, buf);
        return json_string(buf);
    }
    case BSON_TYPE_BOOL: return json_boolean(bson_iter_bool(it));
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED: return json_null();
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        return json_string(hex);
    }
    case BSON_TYPE_DATE_TIME: return mdb_docs_date_json(bson_iter_date_time(it));
    case BSON_TYPE_TIMESTAMP: {
        uint32_t ts, inc;
        bson_iter_timestamp(it, &ts, &inc);
        return json_integer(ts);
    }
    case BSON_TYPE_REGEX: {
        const char *opts;
        const char *re = bson_iter_regex(it, &opts);
        return json_string(re);
    }
    default: return NULL;
    }
}

json_t *mdb_query_bson_to_json(const bson_t *doc)
{
    json_t *out = json_object();
    bson_iter_t it;
    if (!out || !bson_iter_init(&it, doc))
        return out;
    while (bson_iter_next(&it)) {
        bson_type_t t = bson_iter_type(&it);
        if (t == BSON_TYPE_BINARY || t == BSON_TYPE_CODE || t == BSON_TYPE_CODEWSCOPE)
            continue;
        json_t *v = bson_value_to_json(&it);
        if (v)
            json_object_set_new(out, bson_iter_key(&it), v);
    }
    return out;
}
