/* mdb_msg: encoders and validating decoders of the four Kafka messages of
 * DESIGN.md. A decoder checks, in order: size limit, UTF-8, JSON syntax,
 * top-level object, version, then each field's presence and type, and says
 * precisely what is wrong so the message can go to the DLQ with a reason a
 * person can act on. Unknown fields are ignored (forward compatibility). */
#include "mdb_msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOB_ID_MAX 128

/* ---- strv ---- */

bool mdb_strv_push(mdb_strv_t *v, const char *s)
{
    char *copy = strdup(s ? s : "");
    if (!copy)
        return false;
    char **n = realloc(v->v, (v->n + 2) * sizeof *n);
    if (!n) {
        free(copy);
        return false;
    }
    n[v->n++] = copy;
    n[v->n] = NULL;
    v->v = n;
    return true;
}

void mdb_strv_clear(mdb_strv_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

void mdb_msg_now_iso(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n > 0 && n < size)
        snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

/* ---- validation helpers ---- */

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/* Returns the offset of the first byte that breaks UTF-8 (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF) or -1 if valid. */
static long utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return (long)i;
        }
        if (i + need >= len)
            return (long)i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return (long)i;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return (long)i;
        i += need + 1;
    }
    return -1;
}

/* Size, encoding, syntax, object, version. Returns the root (caller decrefs). */
static json_t *parse_envelope(const char *kind, const char *buf, size_t len, size_t max_bytes, mdb_error_t *err)
{
    if (!buf) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: empty (no value)", kind);
        return NULL;
    }
    if (max_bytes > 0 && len > max_bytes) {
        mdb_error_set(err, MDB_ERR_MSG, EMSGSIZE, "%s message: %zu bytes exceeds the limit of %zu bytes", kind, len,
                      max_bytes);
        return NULL;
    }
    if (len == 0) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: empty (no value)", kind);
        return NULL;
    }
    long bad = utf8_invalid_at((const unsigned char *)buf, len);
    if (bad >= 0) {
        mdb_error_set(err, MDB_ERR_MSG, EILSEQ, "%s message: invalid UTF-8 at byte %ld", kind, bad);
        return NULL;
    }
    if (memchr(buf, '\0', len)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: contains a NUL byte at byte %ld", kind,
                      (long)((const char *)memchr(buf, '\0', len) - buf));
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: malformed JSON at line %d column %d: %s", kind, jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: expected a JSON object, got %s", kind, type_name(root));
        json_decref(root);
        return NULL;
    }
    json_t *v = json_object_get(root, "v");
    if (!v) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: missing field 'v'", kind);
    } else if (!json_is_integer(v)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field 'v': expected integer, got %s", kind, type_name(v));
    } else if (json_integer_value(v) != MDB_MSG_VERSION) {
        mdb_error_set(err, MDB_ERR_MSG, EPROTO, "%s message: unsupported version v=%lld (this build reads v=%d)", kind,
                      (long long)json_integer_value(v), MDB_MSG_VERSION);
    } else {
        return root;
    }
    json_decref(root);
    return NULL;
}

enum { OPTIONAL = 0, REQUIRED = 1 };

/* String field. Optional fields may be absent or null (-> NULL). Required
 * fields must be non-empty strings. */
static bool get_str(const char *kind, json_t *obj, const char *name, int required, char **out, mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    *out = NULL;
    if (!j || json_is_null(j)) {
        if (!required)
            return true;
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: missing field '%s'", kind, name);
        return false;
    }
    if (!json_is_string(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': expected string, got %s", kind, name,
                      type_name(j));
        return false;
    }
    if (required && json_string_length(j) == 0) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': must not be empty", kind, name);
        return false;
    }
    if (strlen(json_string_value(j)) != json_string_length(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': contains a NUL character", kind, name);
        return false;
    }
    *out = strdup(json_string_value(j));
    if (!*out) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

/* job ids end up in document keys and log lines: short, no control characters. */
static bool check_job_id(const char *kind, const char *id, mdb_error_t *err)
{
    if (!id)
        return true;
    size_t n = strlen(id);
    if (n == 0 || n > JOB_ID_MAX) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field 'job_id': length must be 1..%d, got %zu", kind,
                      JOB_ID_MAX, n);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f) {
            mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field 'job_id': contains a control character", kind);
            return false;
        }
    return true;
}

static bool get_strv(const char *kind, json_t *obj, const char *name, mdb_strv_t *out, mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    if (!j || json_is_null(j))
        return true;
    if (!json_is_array(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': expected array of strings, got %s", kind, name,
                      type_name(j));
        return false;
    }
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e)
    {
        if (!json_is_string(e)) {
            mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s[%zu]': expected string, got %s", kind, name,
                          i, type_name(e));
            return false;
        }
        if (strlen(json_string_value(e)) != json_string_length(e)) {
            mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s[%zu]': contains a NUL character", kind, name,
                          i);
            return false;
        }
        if (!mdb_strv_push(out, json_string_value(e))) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
    }
    return true;
}

static bool get_bool(const char *kind, json_t *obj, const char *name, bool *out, mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    *out = false;
    if (!j || json_is_null(j))
        return true;
    if (!json_is_boolean(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': expected boolean, got %s", kind, name,
                      type_name(j));
        return false;
    }
    *out = json_is_true(j);
    return true;
}

static bool get_obj(const char *kind, json_t *obj, const char *name, json_t **out, mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    *out = NULL;
    if (!j) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: missing field '%s'", kind, name);
        return false;
    }
    if (!json_is_object(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s': expected object, got %s", kind, name,
                      type_name(j));
        return false;
    }
    *out = json_incref(j);
    return true;
}

static bool get_int(const char *kind, json_t *obj, const char *objname, const char *name, int64_t *out,
                    mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    if (!j) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: missing field '%s.%s'", kind, objname, name);
        return false;
    }
    if (!json_is_integer(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s.%s': expected integer, got %s", kind, objname,
                      name, type_name(j));
        return false;
    }
    *out = json_integer_value(j);
    return true;
}

/* A required non-empty UID string inside a nested object. */
static bool check_uid(const char *kind, json_t *obj, const char *objname, const char *name, mdb_error_t *err)
{
    json_t *j = json_object_get(obj, name);
    if (!j) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: missing field '%s.%s'", kind, objname, name);
        return false;
    }
    if (!json_is_string(j)) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s.%s': expected string, got %s", kind, objname,
                      name, type_name(j));
        return false;
    }
    if (json_string_length(j) == 0) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "%s message: field '%s.%s': must not be empty", kind, objname, name);
        return false;
    }
    return true;
}

/* ---- encoding helpers: NULL strings are omitted ---- */

static bool put_str(json_t *o, const char *name, const char *s)
{
    if (!s)
        return true;
    json_t *j = json_string(s); /* NULL on invalid UTF-8 or OOM */
    return j && json_object_set_new(o, name, j) == 0;
}

/* DLQ records must always be encodable, even when the thing that failed was
 * badly encoded text: invalid UTF-8 bytes become U+FFFD. */
static bool put_str_lossy(json_t *o, const char *name, const char *s)
{
    if (!s)
        return true;
    size_t len = strlen(s);
    if (utf8_invalid_at((const unsigned char *)s, len) < 0)
        return put_str(o, name, s);
    char *fixed = malloc(len * 3 + 1);
    if (!fixed)
        return false;
    size_t o_len = 0, i = 0;
    while (i < len) {
        long bad = utf8_invalid_at((const unsigned char *)s + i, len - i);
        size_t good = bad < 0 ? len - i : (size_t)bad;
        memcpy(fixed + o_len, s + i, good);
        o_len += good;
        i += good;
        if (bad >= 0) {
            memcpy(fixed + o_len, "\xEF\xBF\xBD", 3);
            o_len += 3;
            i++;
        }
    }
    fixed[o_len] = '\0';
    bool ok = put_str(o, name, fixed);
    free(fixed);
    return ok;
}

static bool put_strv(json_t *o, const char *name, const mdb_strv_t *v)
{
    if (!v->n)
        return true;
    json_t *a = json_array();
    if (!a)
        return false;
    for (size_t i = 0; i < v->n; i++) {
        json_t *s = json_string(v->v[i] ? v->v[i] : "");
        if (!s || json_array_append_new(a, s)) {
            json_decref(a);
            return false;
        }
    }
    return json_object_set_new(o, name, a) == 0;
}

static json_t *new_envelope(void)
{
    json_t *o = json_object();
    if (o && json_object_set_new(o, "v", json_integer(MDB_MSG_VERSION))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *dump_and_free(json_t *o, bool ok)
{
    char *s = NULL;
    if (o && ok)
        s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- jobs ---- */

static const char JOB[] = "job";

bool mdb_msg_job_decode(const char *buf, size_t len, size_t max_bytes, mdb_job_msg_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_envelope(JOB, buf, len, max_bytes, err);
    if (!root)
        return false;
    bool ok = get_str(JOB, root, "job_id", OPTIONAL, &out->job_id, err) && check_job_id(JOB, out->job_id, err) &&
              get_str(JOB, root, "researcher_id", OPTIONAL, &out->researcher_id, err) &&
              get_str(JOB, root, "collection", OPTIONAL, &out->collection, err) &&
              get_strv(JOB, root, "accession_numbers", &out->accession_numbers, err) &&
              get_strv(JOB, root, "patient_ids", &out->patient_ids, err) &&
              get_strv(JOB, root, "study_uids", &out->study_uids, err) &&
              get_strv(JOB, root, "series_uids", &out->series_uids, err) &&
              get_bool(JOB, root, "all_cases", &out->all_cases, err) &&
              get_str(JOB, root, "feature_set", OPTIONAL, &out->feature_set, err) &&
              get_str(JOB, root, "submitted_at", OPTIONAL, &out->submitted_at, err) &&
              get_str(JOB, root, "retry_of", OPTIONAL, &out->retry_of, err) &&
              get_strv(JOB, root, "paths", &out->paths, err) &&
              get_str(JOB, root, "source", OPTIONAL, &out->source, err);
    json_decref(root);
    if (!ok)
        mdb_msg_job_clear(out);
    return ok;
}

char *mdb_msg_job_encode(const mdb_job_msg_t *m)
{
    json_t *o = new_envelope();
    bool ok = o && put_str(o, "job_id", m->job_id) && put_str(o, "researcher_id", m->researcher_id) &&
              put_str(o, "collection", m->collection) && put_strv(o, "accession_numbers", &m->accession_numbers) &&
              put_strv(o, "patient_ids", &m->patient_ids) && put_strv(o, "study_uids", &m->study_uids) &&
              put_strv(o, "series_uids", &m->series_uids) &&
              json_object_set_new(o, "all_cases", json_boolean(m->all_cases)) == 0 &&
              put_str(o, "feature_set", m->feature_set) && put_str(o, "submitted_at", m->submitted_at) &&
              put_str(o, "retry_of", m->retry_of) && put_strv(o, "paths", &m->paths) && put_str(o, "source", m->source);
    return dump_and_free(o, ok);
}

void mdb_msg_job_clear(mdb_job_msg_t *m)
{
    if (!m)
        return;
    free(m->job_id);
    free(m->researcher_id);
    free(m->collection);
    mdb_strv_clear(&m->accession_numbers);
    mdb_strv_clear(&m->patient_ids);
    mdb_strv_clear(&m->study_uids);
    mdb_strv_clear(&m->series_uids);
    free(m->feature_set);
    free(m->submitted_at);
    free(m->retry_of);
    free(m->source);
    mdb_strv_clear(&m->paths);
    memset(m, 0, sizeof *m);
}

bool mdb_msg_job_has_selector(const mdb_job_msg_t *m)
{
    return m->accession_numbers.n || m->patient_ids.n || m->study_uids.n || m->series_uids.n || m->all_cases ||
           m->paths.n;
}

/* ---- files ---- */

static const char FILEK[] = "file";

bool mdb_msg_file_decode(const char *buf, size_t len, size_t max_bytes, mdb_file_msg_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_envelope(FILEK, buf, len, max_bytes, err);
    if (!root)
        return false;
    bool ok = get_str(FILEK, root, "job_id", REQUIRED, &out->job_id, err) && check_job_id(FILEK, out->job_id, err) &&
              get_str(FILEK, root, "path", REQUIRED, &out->path, err) &&
              get_str(FILEK, root, "selector", OPTIONAL, &out->selector, err) &&
              get_str(FILEK, root, "feature_set", OPTIONAL, &out->feature_set, err);
    json_decref(root);
    if (!ok)
        mdb_msg_file_clear(out);
    return ok;
}

char *mdb_msg_file_encode(const mdb_file_msg_t *m)
{
    json_t *o = new_envelope();
    bool ok = o && put_str(o, "job_id", m->job_id) && put_str(o, "path", m->path) &&
              put_str(o, "selector", m->selector) && put_str(o, "feature_set", m->feature_set);
    return dump_and_free(o, ok);
}

void mdb_msg_file_clear(mdb_file_msg_t *m)
{
    if (!m)
        return;
    free(m->job_id);
    free(m->path);
    free(m->selector);
    free(m->feature_set);
    memset(m, 0, sizeof *m);
}

/* ---- instances ---- */

static const char INST[] = "instance";

bool mdb_msg_instance_decode(const char *buf, size_t len, size_t max_bytes, mdb_instance_msg_t *out, mdb_error_t *err)
{
    return mdb_msg_instance_decode_root(buf, len, max_bytes, out, NULL, err);
}

bool mdb_msg_instance_decode_root(const char *buf, size_t len, size_t max_bytes, mdb_instance_msg_t *out,
                                  json_t **root_out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (root_out)
        *root_out = NULL;
    json_t *root = parse_envelope(INST, buf, len, max_bytes, err);
    if (!root)
        return false;
    json_t *file = NULL;
    bool ok = get_str(INST, root, "job_id", REQUIRED, &out->job_id, err) && check_job_id(INST, out->job_id, err) &&
              get_str(INST, root, "path", REQUIRED, &out->path, err) &&
              get_obj(INST, root, "study", &out->study, err) &&
              check_uid(INST, out->study, "study", "StudyInstanceUID", err) &&
              get_obj(INST, root, "series", &out->series, err) &&
              check_uid(INST, out->series, "series", "SeriesInstanceUID", err) &&
              get_obj(INST, root, "instance", &out->instance, err) &&
              check_uid(INST, out->instance, "instance", "SOPInstanceUID", err) &&
              get_obj(INST, root, "file", &file, err) && get_int(INST, file, "file", "size", &out->file_size, err) &&
              get_int(INST, file, "file", "mtime", &out->file_mtime, err);
    if (ok && out->file_size < 0) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "instance message: field 'file.size': must not be negative, got %lld",
                      (long long)out->file_size);
        ok = false;
    }
    json_decref(file);
    if (ok && root_out)
        *root_out = root;
    else
        json_decref(root);
    if (!ok)
        mdb_msg_instance_clear(out);
    return ok;
}

static bool put_obj(json_t *o, const char *name, json_t *v)
{
    if (!v)
        v = json_object();
    else
        json_incref(v);
    return v && json_object_set_new(o, name, v) == 0;
}

char *mdb_msg_instance_encode(const mdb_instance_msg_t *m)
{
    json_t *o = new_envelope();
    json_t *file = json_object();
    bool ok = o && file && put_str(o, "job_id", m->job_id) && put_str(o, "path", m->path) &&
              put_obj(o, "study", m->study) && put_obj(o, "series", m->series) && put_obj(o, "instance", m->instance) &&
              json_object_set_new(file, "size", json_integer(m->file_size)) == 0 &&
              json_object_set_new(file, "mtime", json_integer(m->file_mtime)) == 0 &&
              json_object_set(o, "file", file) == 0;
    json_decref(file);
    return dump_and_free(o, ok);
}

void mdb_msg_instance_clear(mdb_instance_msg_t *m)
{
    if (!m)
        return;
    free(m->job_id);
    free(m->path);
    json_decref(m->study);
    json_decref(m->series);
    json_decref(m->instance);
    memset(m, 0, sizeof *m);
}

static const char *uid_of(json_t *obj, const char *name)
{
    json_t *j = obj ? json_object_get(obj, name) : NULL;
    return json_is_string(j) ? json_string_value(j) : NULL;
}

const char *mdb_msg_instance_study_uid(const mdb_instance_msg_t *m)
{
    return uid_of(m->study, "StudyInstanceUID");
}

const char *mdb_msg_instance_series_uid(const mdb_instance_msg_t *m)
{
    return uid_of(m->series, "SeriesInstanceUID");
}

const char *mdb_msg_instance_sop_uid(const mdb_instance_msg_t *m)
{
    return uid_of(m->instance, "SOPInstanceUID");
}

/* ---- dlq ---- */

static const char DLQ[] = "dlq";

static bool check_stage(const char *stage, mdb_error_t *err)
{
    static const char *const stages[] = {"producer", "worker", "linker", "api", NULL};
    for (int i = 0; stages[i]; i++)
        if (!strcmp(stage, stages[i]))
            return true;
    mdb_error_set(err, MDB_ERR_MSG, EINVAL,
                  "dlq message: field 'stage': '%.64s' is not one of producer|worker|linker|api", stage);
    return false;
}

bool mdb_msg_dlq_decode(const char *buf, size_t len, size_t max_bytes, mdb_dlq_msg_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_envelope(DLQ, buf, len, max_bytes, err);
    if (!root)
        return false;
    bool ok = get_str(DLQ, root, "job_id", OPTIONAL, &out->job_id, err) && check_job_id(DLQ, out->job_id, err) &&
              get_str(DLQ, root, "path", OPTIONAL, &out->path, err) &&
              get_str(DLQ, root, "stage", REQUIRED, &out->stage, err) && check_stage(out->stage, err) &&
              get_str(DLQ, root, "error", REQUIRED, &out->error, err) &&
              get_str(DLQ, root, "message", OPTIONAL, &out->message, err);
    json_decref(root);
    if (!ok)
        mdb_msg_dlq_clear(out);
    return ok;
}

char *mdb_msg_dlq_encode(const mdb_dlq_msg_t *m)
{
    json_t *o = new_envelope();
    bool ok = o && put_str_lossy(o, "job_id", m->job_id) && put_str_lossy(o, "path", m->path) &&
              put_str_lossy(o, "stage", m->stage) && put_str_lossy(o, "error", m->error) &&
              put_str_lossy(o, "message", m->message);
    return dump_and_free(o, ok);
}

void mdb_msg_dlq_clear(mdb_dlq_msg_t *m)
{
    if (!m)
        return;
    free(m->job_id);
    free(m->path);
    free(m->stage);
    free(m->error);
    free(m->message);
    memset(m, 0, sizeof *m);
}
