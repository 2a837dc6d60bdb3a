/* mdb_docs: the merge model that turns instance events into study, series
 * and instance documents (rules in mdb_docs.h). Pure: all I/O goes through
 * an mdb_store_t, so the linker (MongoDB store, mdb_store_mongo.c),
 * reconcile and the unit tests (mdb_store_mem.c) run the same code.
 *
 * The model keeps, per UID, the events that mention it and the document the
 * store holds (if any); mdb_docs_apply loads what exists in a few bulk
 * reads, computes every touched document from scratch out of "existing
 * document + events", and writes only documents that differ. Computing from
 * the existing document plus its _src provenance (which path each value
 * came from) is what makes the result independent of event order and batch
 * boundaries. */
#include "mdb_docs.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_strmap.h"

/* ------------------------------------------------------------------ */
/* values                                                              */

bool mdb_docs_value_empty(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

bool mdb_docs_value_equal(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return a == b;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!mdb_docs_value_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v)
        {
            if (!mdb_docs_value_equal(v, json_object_get(b, k)))
                return false;
        }
        return true;
    }
    default: return true; /* true/false/null: same type */
    }
}

/* Numbers become reals first so that 1 and 1.0 have one text. */
static json_t *normalise(const json_t *v)
{
    if (json_is_integer(v))
        return json_real((double)json_integer_value(v));
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; out && i < json_array_size(v); i++)
            if (json_array_append_new(out, normalise(json_array_get(v, i))) != 0) {
                json_decref(out);
                return NULL;
            }
        return out;
    }
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if (!out || json_object_set_new(out, k, normalise(x)) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    return json_deep_copy(v);
}

char *mdb_docs_value_key(const json_t *v)
{
    if (!v)
        return strdup("<absent>");
    json_t *n = normalise(v);
    if (!n)
        return NULL;
    char *s = json_dumps(n, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    json_decref(n);
    return s;
}

/* Attributes that differ from instance to instance within one series (or,
 * at study level, from series to series): merged by the smallest path but
 * never recorded as conflicts, which would be noise on every series. */
static const char *const varying_keywords[] = {
    "AcquisitionDate",
    "AcquisitionDateTime",
    "AcquisitionNumber",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "Exposure",
    "ExposureTime",
    "ImagePosition",
    "ImagePositionPatient",
    "ImagesInAcquisition",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "InstanceNumber",
    "LargestImagePixelValue",
    "SliceLocation",
    "SmallestImagePixelValue",
    "SOPInstanceUID",
    "WindowCenter",
    "WindowWidth",
    "XRayTubeCurrent",
};

bool mdb_docs_keyword_varies(int level, const char *keyword)
{
    if (!keyword)
        return false;
    if (level == MDB_DOCS_LEVEL_STUDY) {
        /* Series-level attributes that a feature set lists at study level. */
        static const char *const study_only[] = {"Modality",          "SeriesNumber", "SeriesDescription",
                                                 "SeriesInstanceUID", "SeriesDate",   "SeriesTime"};
        for (size_t i = 0; i < sizeof study_only / sizeof study_only[0]; i++)
            if (!strcmp(keyword, study_only[i]))
                return true;
    }
    for (size_t i = 0; i < sizeof varying_keywords / sizeof varying_keywords[0]; i++)
        if (!strcmp(keyword, varying_keywords[i]))
            return true;
    return false;
}

static int cmp_json_strings(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(x), json_string_value(y));
}

void mdb_docs_sort_strings(json_t *arr)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return;
    json_t **v = malloc(n * sizeof *v);
    if (!v)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (json_is_string(x))
            v[k++] = json_incref(x);
    }
    qsort(v, k, sizeof *v, cmp_json_strings);
    json_array_clear(arr);
    const json_t *last = NULL;
    for (size_t i = 0; i < k; i++) {
        if (last && !strcmp(json_string_value(v[i]), json_string_value(last))) {
            json_decref(v[i]);
            continue;
        }
        json_array_append_new(arr, v[i]);
        last = v[i];
    }
    free(v);
}

/* Add string s to array arr (unsorted; callers sort at the end). */
static bool add_string(json_t *arr, const char *s)
{
    return s && json_array_append_new(arr, json_string(s)) == 0;
}

/* Add every string of array src to dst. */
static void add_strings(json_t *dst, const json_t *src)
{
    for (size_t i = 0; i < json_array_size(src); i++)
        if (json_is_string(json_array_get(src, i)))
            json_array_append(dst, json_array_get(src, i));
}

/* ------------------------------------------------------------------ */
/* summaries                                                           */

static const json_t *field_or_meta(const json_t *doc, const char *field, const char *keyword)
{
    const json_t *v = json_object_get(doc, field);
    if (!v || json_is_null(v))
        v = json_object_get(json_object_get(doc, "metadata"), keyword);
    return v;
}

json_t *mdb_docs_series_summary(const json_t *series_doc)
{
    const json_t *id = json_object_get(series_doc, "_id");
    const json_t *num = field_or_meta(series_doc, "series_number", "SeriesNumber");
    const json_t *desc = field_or_meta(series_doc, "series_description", "SeriesDescription");
    const json_t *mod = field_or_meta(series_doc, "modality", "Modality");
    const json_t *cnt = json_object_get(series_doc, "instance_count");
    json_t *s = json_object();
    if (!s)
        return NULL;
    json_object_set_new(s, "series_instance_uid", id ? json_deep_copy(id) : json_null());
    json_object_set_new(s, "series_number", num ? json_deep_copy(num) : json_null());
    json_object_set_new(s, "series_description", desc ? json_deep_copy(desc) : json_null());
    json_object_set_new(s, "modality", mod ? json_deep_copy(mod) : json_null());
    json_object_set_new(s, "instance_count", json_is_integer(cnt) ? json_deep_copy(cnt) : json_integer(0));
    return s;
}

static int cmp_summary(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const json_t *nx = json_object_get(x, "series_number"), *ny = json_object_get(y, "series_number");
    bool hx = json_is_number(nx), hy = json_is_number(ny);
    if (hx != hy)
        return hx ? -1 : 1;
    if (hx) {
        double dx = json_number_value(nx), dy = json_number_value(ny);
        if (dx != dy)
            return dx < dy ? -1 : 1;
    }
    const char *ux = json_string_value(json_object_get(x, "series_instance_uid"));
    const char *uy = json_string_value(json_object_get(y, "series_instance_uid"));
    return strcmp(ux ? ux : "", uy ? uy : "");
}

void mdb_docs_sort_summaries(json_t *summaries)
{
    size_t n = json_array_size(summaries);
    if (n < 2)
        return;
    json_t **v = malloc(n * sizeof *v);
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(summaries, i));
    qsort(v, n, sizeof *v, cmp_summary);
    json_array_clear(summaries);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(summaries, v[i]);
    free(v);
}

bool mdb_docs_study_set_derived(json_t *study_doc, const json_t *series_docs)
{
    json_t *sum = json_array(), *mods = json_array();
    json_int_t total = 0;
    if (!sum || !mods)
        goto fail;
    for (size_t i = 0; i < json_array_size(series_docs); i++) {
        json_t *s = mdb_docs_series_summary(json_array_get(series_docs, i));
        if (!s || json_array_append_new(sum, s) != 0)
            goto fail;
        total += json_integer_value(json_object_get(s, "instance_count"));
        const json_t *mod = json_object_get(s, "modality");
        if (json_is_string(mod) && json_string_length(mod) > 0)
            add_string(mods, json_string_value(mod));
        else if (json_is_array(mod))
            add_strings(mods, mod);
    }
    mdb_docs_sort_summaries(sum);
    mdb_docs_sort_strings(mods);
    json_object_set_new(study_doc, "series_count", json_integer((json_int_t)json_array_size(sum)));
    json_object_set_new(study_doc, "instance_count", json_integer(total));
    json_object_set_new(study_doc, "series", sum);
    json_object_set_new(study_doc, "modalities", mods);
    return true;
fail:
    json_decref(sum);
    json_decref(mods);
    return false;
}

/* ------------------------------------------------------------------ */
/* the model                                                           */

typedef struct {
    char *job_id, *path, *collection, *feature_set;
    char *origin;   /* "topic:partition" (NULL: none) */
    int64_t offset; /* of the record (-1: none) */
    json_t *study, *series, *instance, *file, *dicom, *integrity;
    const char *study_uid, *series_uid, *sop_uid, *series_parent;
    json_t *j_study_uid, *j_series_uid, *j_parent; /* the same as JSON strings */
} event_t;

typedef struct {
    char *uid;
    size_t *obs;
    size_t nobs, capobs;
    json_t *existing; /* the store's document, NULL if none */
    bool loaded;      /* the store was asked */
    bool recount;     /* series: instance_count must be recounted */
    bool uncertain;   /* series: the incremental count cannot decide, recount */
    bool dup;         /* instance: its document existed before this batch's insert */
    bool parent;      /* series: the current parent of one of the batch's instances */
    int64_t delta;    /* series: instances this batch adds (incremental count) */
    json_t *doc;      /* merged document */
} ent_t;

typedef struct {
    ent_t *v;
    size_t n, cap;
    mdb_strmap_t *idx;
} entset_t;

struct mdb_docs_model {
    event_t *ev;
    size_t nev, capev;
    entset_t studies, series, instances;
    json_t *conflicts_old; /* _id -> document in the store */
    json_t *conflicts_new; /* _id -> computed document */
    json_t *job_counts;    /* job_id -> instances linked (after a recounting apply) */
    json_t *link_deltas;   /* job_id -> {tp: n} (after an incremental apply) */
    const json_t *applied; /* "job\ntp" -> offset (borrowed) */
    bool incremental;      /* every event has an origin */
    mdb_docs_stats_t stats;
};

static bool entset_init(entset_t *s)
{
    memset(s, 0, sizeof *s);
    s->idx = mdb_strmap_new();
    return s->idx != NULL;
}

static void entset_clear(entset_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].uid);
        free(s->v[i].obs);
        json_decref(s->v[i].existing);
        json_decref(s->v[i].doc);
    }
    free(s->v);
    mdb_strmap_destroy(s->idx);
    memset(s, 0, sizeof *s);
}

static ent_t *entset_get(entset_t *s, const char *uid)
{
    mdb_strmap_entry_t *e = mdb_strmap_get(s->idx, uid);
    return e ? &s->v[e->value] : NULL;
}

static ent_t *entset_put(entset_t *s, const char *uid)
{
    ent_t *found = entset_get(s, uid);
    if (found)
        return found;
    /* Room first, so a failure leaves the map and the array consistent. */
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 32;
        ent_t *nv = realloc(s->v, ncap * sizeof *nv);
        if (!nv)
            return NULL;
        s->v = nv;
        s->cap = ncap;
    }
    ent_t *x = &s->v[s->n];
    memset(x, 0, sizeof *x);
    x->uid = strdup(uid);
    bool created = false;
    mdb_strmap_entry_t *e = x->uid ? mdb_strmap_put(s->idx, uid, &created) : NULL;
    if (!e) {
        free(x->uid);
        x->uid = NULL;
        return NULL;
    }
    e->value = (int64_t)s->n++;
    return x;
}

static bool ent_add_obs(ent_t *x, size_t ev)
{
    if (x->nobs == x->capobs) {
        size_t ncap = x->capobs ? x->capobs * 2 : 8;
        size_t *n = realloc(x->obs, ncap * sizeof *n);
        if (!n)
            return false;
        x->obs = n;
        x->capobs = ncap;
    }
    x->obs[x->nobs++] = ev;
    return true;
}

mdb_docs_model_t *mdb_docs_model_new(void)
{
    mdb_docs_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (!entset_init(&m->studies) || !entset_init(&m->series) || !entset_init(&m->instances) ||
        !(m->conflicts_old = json_object()) || !(m->conflicts_new = json_object()) ||
        !(m->job_counts = json_object()) || !(m->link_deltas = json_object())) {
        mdb_docs_model_destroy(m);
        return NULL;
    }
    return m;
}

void mdb_docs_model_destroy(mdb_docs_model_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nev; i++) {
        event_t *e = &m->ev[i];
        free(e->job_id);
        free(e->path);
        free(e->collection);
        free(e->feature_set);
        free(e->origin);
        json_decref(e->study);
        json_decref(e->series);
        json_decref(e->instance);
        json_decref(e->file);
        json_decref(e->dicom);
        json_decref(e->integrity);
        json_decref(e->j_study_uid);
        json_decref(e->j_series_uid);
        json_decref(e->j_parent);
    }
    free(m->ev);
    entset_clear(&m->studies);
    entset_clear(&m->series);
    entset_clear(&m->instances);
    json_decref(m->conflicts_old);
    json_decref(m->conflicts_new);
    json_decref(m->job_counts);
    json_decref(m->link_deltas);
    free(m);
}

void mdb_docs_model_set_applied(mdb_docs_model_t *m, const json_t *applied)
{
    m->applied = applied;
}

const json_t *mdb_docs_model_link_deltas(const mdb_docs_model_t *m)
{
    return m->incremental ? m->link_deltas : NULL;
}

const json_t *mdb_docs_model_job_counts(const mdb_docs_model_t *m)
{
    return m->job_counts;
}

size_t mdb_docs_model_event_count(const mdb_docs_model_t *m)
{
    return m->nev;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const char *uid_of(const json_t *level, const char *key)
{
    const char *s = json_string_value(json_object_get(level, key));
    return s && *s ? s : NULL;
}

bool mdb_docs_model_add_event(mdb_docs_model_t *m, const mdb_docs_event_t *in, mdb_error_t *err)
{
    const char *st = uid_of(in->study, "StudyInstanceUID");
    const char *se = uid_of(in->series, "SeriesInstanceUID");
    const char *so = uid_of(in->instance, "SOPInstanceUID");
    if (!st || !se || !so || !in->path || !in->job_id) {
        mdb_error_set(err, MDB_ERR_MSG, EINVAL, "instance event without %s",
                      !st         ? "study.StudyInstanceUID"
                      : !se       ? "series.SeriesInstanceUID"
                      : !so       ? "instance.SOPInstanceUID"
                      : !in->path ? "path"
                                  : "job_id");
        return false;
    }
    if (m->nev == m->capev) {
        size_t ncap = m->capev ? m->capev * 2 : 256;
        event_t *n = realloc(m->ev, ncap * sizeof *n);
        if (!n)
            goto oom;
        m->ev = n;
        m->capev = ncap;
    }
    event_t *e = &m->ev[m->nev];
    memset(e, 0, sizeof *e);
    e->job_id = strdup(in->job_id);
    e->path = strdup(in->path);
    e->collection = in->collection && *in->collection ? strdup(in->collection) : NULL;
    e->feature_set = dup_or_null(in->feature_set);
    e->origin = in->origin && *in->origin && in->offset >= 0 ? strdup(in->origin) : NULL;
    e->offset = e->origin ? in->offset : -1;
    e->study = json_incref((json_t *)in->study);
    e->series = json_incref((json_t *)in->series);
    e->instance = json_incref((json_t *)in->instance);
    e->file = in->file ? json_incref((json_t *)in->file) : NULL;
    e->dicom = in->dicom ? json_incref((json_t *)in->dicom) : NULL;
    e->integrity = json_is_object(in->integrity) ? json_incref((json_t *)in->integrity) : NULL;
    e->study_uid = st;
    e->series_uid = se;
    e->sop_uid = so;
    e->series_parent = uid_of(in->series, "StudyInstanceUID");
    if (!e->series_parent)
        e->series_parent = st;
    e->j_study_uid = json_string(st);
    e->j_series_uid = json_string(se);
    e->j_parent = json_string(e->series_parent);
    size_t idx = m->nev++;
    if (!e->job_id || !e->path || !e->j_study_uid || !e->j_series_uid || !e->j_parent ||
        (in->origin && *in->origin && in->offset >= 0 && !e->origin))
        goto oom;
    ent_t *a = entset_put(&m->studies, st), *b = a ? entset_put(&m->series, se) : NULL,
          *c = b ? entset_put(&m->instances, so) : NULL;
    if (!c || !ent_add_obs(a, idx) || !ent_add_obs(b, idx) || !ent_add_obs(c, idx))
        goto oom;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory adding an instance event");
    return false;
}

/* ------------------------------------------------------------------ */
/* field merge                                                          */

/* Reserved top-level names a promoted field may not take. */
static bool reserved_field(const char *f)
{
    static const char *const names[] = {
        "_id",        "study_id",     "series_id",   "metadata",     "paths",          "job_ids",     "collection_ids",
        "_src",       "_invalid",     "_replaced",   "file",         "dicom",          "feature_set", "created_at",
        "updated_at", "series",       "modalities",  "series_count", "instance_count", "_ins",        "_jl",
        "_lo",        "_prev_series", "_prev_study", "integrity"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(f, names[i]))
            return true;
    return false;
}

/* Is path a better source than best? NULL paths (a value without
 * provenance) lose against any path. */
static bool better(bool empty, const char *path, bool best_empty, const char *best_path, bool have_best)
{
    if (!have_best)
        return true;
    if (empty != best_empty)
        return !empty;
    if (!path)
        return false;
    if (!best_path)
        return true;
    return strcmp(path, best_path) < 0;
}

typedef const json_t *(*getval_fn)(const event_t *e, const char *name);

/* Conflict bookkeeping for one field: distinct non-empty values with the
 * smallest path carrying each. */
typedef struct {
    json_t *vals; /* key -> {value, path} */
} distinct_t;

static void distinct_add(distinct_t *d, const json_t *v, const char *path)
{
    if (mdb_docs_value_empty(v) || !path)
        return;
    char *key = mdb_docs_value_key(v);
    if (!key)
        return;
    json_t *cur = json_object_get(d->vals, key);
    const char *cp = cur ? json_string_value(json_object_get(cur, "path")) : NULL;
    if (!cur || (cp && strcmp(path, cp) < 0))
        json_object_set_new(d->vals, key, json_pack("{s:O, s:s}", "value", v, "path", path));
    free(key);
}

static int cmp_value_entries(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(json_string_value(json_object_get(x, "path")), json_string_value(json_object_get(y, "path")));
    if (c)
        return c;
    char *kx = mdb_docs_value_key(json_object_get(x, "value"));
    char *ky = mdb_docs_value_key(json_object_get(y, "value"));
    c = strcmp(kx ? kx : "", ky ? ky : "");
    free(kx);
    free(ky);
    return c;
}

/* Record (or refresh) the conflict <kind>:<uid>:<field> from the distinct
 * values when there are at least two. */
static bool conflict_store(mdb_docs_model_t *m, const char *kind, const char *uid, const char *field, distinct_t *d)
{
    size_t n = json_object_size(d->vals);
    if (n < 2)
        return true;
    json_t **v = malloc(n * sizeof *v);
    if (!v)
        return false;
    size_t k = 0;
    const char *key;
    json_t *x;
    json_object_foreach(d->vals, key, x) v[k++] = x;
    qsort(v, k, sizeof *v, cmp_value_entries);
    json_t *values = json_array();
    for (size_t i = 0; values && i < k; i++)
        json_array_append(values, v[i]);
    free(v);
    size_t idlen = strlen(kind) + strlen(uid) + strlen(field) + 3;
    char *id = malloc(idlen);
    if (!values || !id) {
        json_decref(values);
        free(id);
        return false;
    }
    snprintf(id, idlen, "%s:%s:%s", kind, uid, field);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:o}", "_id", id, "kind", kind, "uid", uid, "field", field, "values", values);
    bool ok = doc && json_object_set_new(m->conflicts_new, id, doc) == 0;
    free(id);
    return ok;
}

/* Seed d with the values of an existing conflict document. */
static void distinct_seed(mdb_docs_model_t *m, distinct_t *d, const char *kind, const char *uid, const char *field)
{
    size_t idlen = strlen(kind) + strlen(uid) + strlen(field) + 3;
    char *id = malloc(idlen);
    if (!id)
        return;
    snprintf(id, idlen, "%s:%s:%s", kind, uid, field);
    /* A value computed earlier in this apply supersedes the store's. */
    json_t *doc = json_object_get(m->conflicts_new, id);
    if (!doc)
        doc = json_object_get(m->conflicts_old, id);
    free(id);
    json_t *vals = json_object_get(doc, "values");
    for (size_t i = 0; i < json_array_size(vals); i++) {
        json_t *e = json_array_get(vals, i);
        distinct_add(d, json_object_get(e, "value"), json_string_value(json_object_get(e, "path")));
    }
}

static bool conflict_known(mdb_docs_model_t *m, const char *kind, const char *uid, const char *field)
{
    char id[1024];
    int n = snprintf(id, sizeof id, "%s:%s:%s", kind, uid, field);
    if (n < 0 || (size_t)n >= sizeof id)
        return true; /* too long to check cheaply: take the careful path */
    return json_object_get(m->conflicts_new, id) || json_object_get(m->conflicts_old, id);
}

/* Merge one field of an entity: the current value/path (from the stored
 * document) and the value each observing event carries. Writes the winner
 * to *out_v / *out_p (borrowed; *out_v NULL when no source has the field).
 * record: kind for the conflict (NULL = do not record). */
static bool merge_field(mdb_docs_model_t *m, const ent_t *x, const char *name, getval_fn get, const json_t *cur_v,
                        const char *cur_p, const char *kind, const char *field, const json_t **out_v,
                        const char **out_p)
{
    const json_t *best_v = NULL;
    const char *best_p = NULL;
    bool have = false, best_empty = true;
    if (cur_v) {
        best_v = cur_v;
        best_p = cur_p;
        best_empty = mdb_docs_value_empty(cur_v);
        have = true;
    }
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        const json_t *v = get(e, name);
        if (!v)
            continue;
        bool empty = mdb_docs_value_empty(v);
        if (better(empty, e->path, best_empty, best_p, have)) {
            best_v = v;
            best_p = e->path;
            best_empty = empty;
            have = true;
        }
    }
    *out_v = best_v;
    *out_p = best_p;
    if (!kind || !have || best_empty)
        return true;
    /* Only build the distinct set when something disagrees. */
    bool differs = conflict_known(m, kind, x->uid, field);
    if (!differs && cur_v && !mdb_docs_value_empty(cur_v) && !mdb_docs_value_equal(cur_v, best_v))
        differs = true;
    for (size_t i = 0; !differs && i < x->nobs; i++) {
        const json_t *v = get(&m->ev[x->obs[i]], name);
        if (!mdb_docs_value_empty(v) && !mdb_docs_value_equal(v, best_v))
            differs = true;
    }
    if (!differs)
        return true;
    distinct_t d = {json_object()};
    if (!d.vals)
        return false;
    distinct_seed(m, &d, kind, x->uid, field);
    distinct_add(&d, cur_v, cur_p);
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        distinct_add(&d, get(e, name), e->path);
    }
    bool ok = conflict_store(m, kind, x->uid, field, &d);
    json_decref(d.vals);
    return ok;
}

/* Getters: the value an event carries for a field name of a level. */
static const json_t *level_attr(const json_t *level, const char *kw)
{
    if (!strcmp(kw, "promoted") || !strcmp(kw, "_invalid") || !strcmp(kw, "_replaced"))
        return NULL;
    return json_object_get(level, kw);
}

static const json_t *get_study_meta(const event_t *e, const char *kw)
{
    return level_attr(e->study, kw);
}

static const json_t *get_study_prom(const event_t *e, const char *f)
{
    return json_object_get(json_object_get(e->study, "promoted"), f);
}

/* The series level carries its parent link, which is not metadata; a
 * Modality the feature set keeps at study level belongs to the series. */
static const json_t *get_series_meta(const event_t *e, const char *kw)
{
    if (!strcmp(kw, "StudyInstanceUID"))
        return NULL;
    const json_t *v = level_attr(e->series, kw);
    if (!v && !strcmp(kw, "Modality"))
        v = json_object_get(e->study, "Modality");
    return v;
}

static const json_t *get_series_prom(const event_t *e, const char *f)
{
    const json_t *v = json_object_get(json_object_get(e->series, "promoted"), f);
    if (!v && !strcmp(f, "modality")) {
        v = json_object_get(json_object_get(e->study, "promoted"), "modality");
        if (!v)
            v = get_series_meta(e, "Modality");
    }
    return v;
}

/* Collect the names to merge: keys of the stored object plus keys every
 * event carries (plus extra names). */
static void collect_names(json_t *names, const json_t *stored, const mdb_docs_model_t *m, const ent_t *x,
                          const json_t *(*level)(const event_t *), bool promoted)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)stored, k, v) json_object_set_new(names, k, json_true());
    for (size_t i = 0; i < x->nobs; i++) {
        const json_t *obj = level(&m->ev[x->obs[i]]);
        if (promoted)
            obj = json_object_get(obj, "promoted");
        json_object_foreach((json_t *)obj, k, v)
        {
            if (promoted || (strcmp(k, "promoted") && strcmp(k, "_invalid") && strcmp(k, "_replaced")))
                json_object_set_new(names, k, json_true());
        }
    }
}

static const json_t *lvl_study(const event_t *e)
{
    return e->study;
}

static const json_t *lvl_series(const event_t *e)
{
    return e->series;
}

/* Promoted fields of a stored document: the "p:" keys of its _src. */
static json_t *stored_promoted(const json_t *doc)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(doc, "_src"), k, v)
    {
        if (!strncmp(k, "p:", 2) && json_object_get(doc, k + 2))
            json_object_set_new(out, k + 2, json_true());
    }
    return out;
}

/* Union of the _invalid/_replaced lists of the stored document and events. */
static void merge_flag_list(json_t *doc, const mdb_docs_model_t *m, const ent_t *x, const json_t *existing,
                            const json_t *(*level)(const event_t *), const char *key)
{
    json_t *arr = json_array();
    add_strings(arr, json_object_get(existing, key));
    for (size_t i = 0; i < x->nobs; i++)
        add_strings(arr, json_object_get(level(&m->ev[x->obs[i]]), key));
    mdb_docs_sort_strings(arr);
    if (json_array_size(arr) > 0)
        json_object_set_new(doc, key, arr);
    else {
        json_decref(arr);
        json_object_del(doc, key);
    }
}

/* collection_ids / job_ids: sorted union of the stored list and the events'. */
static void merge_id_list(json_t *doc, const mdb_docs_model_t *m, const ent_t *x, const json_t *existing,
                          const char *key, bool jobs)
{
    json_t *arr = json_array();
    add_strings(arr, json_object_get(existing, key));
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        const char *s = jobs ? e->job_id : e->collection;
        if (s)
            add_string(arr, s);
    }
    mdb_docs_sort_strings(arr);
    json_object_set_new(doc, key, arr);
}

/* The series' parent as an event reports it. */
static const json_t *get_parent(const event_t *e, const char *name)
{
    (void)name;
    return e->j_parent;
}

/* Merge a study or series: metadata keywords, promoted fields and (series)
 * the parent; conflicts recorded per metadata keyword and parent. */
static bool merge_entity(mdb_docs_model_t *m, ent_t *x, int level)
{
    bool series = level == MDB_DOCS_LEVEL_SERIES;
    const json_t *existing = x->existing;
    json_t *doc = existing ? json_deep_copy(existing) : json_object();
    json_t *src = json_object(), *meta = json_object(), *names = json_object(), *pnames = NULL;
    const json_t *old_src = json_object_get(existing, "_src");
    const json_t *old_meta = json_object_get(existing, "metadata");
    const json_t *(*lvl)(const event_t *) = series ? lvl_series : lvl_study;
    getval_fn gm = series ? get_series_meta : get_study_meta;
    getval_fn gp = series ? get_series_prom : get_study_prom;
    const char *kind = series ? "series_attribute" : "study_attribute";
    bool ok = false;
    char name[600];
    if (!doc || !src || !meta || !names)
        goto done;
    json_object_set_new(doc, "_id", json_string(x->uid));

    /* metadata */
    collect_names(names, old_meta, m, x, lvl, false);
    if (series && x->nobs > 0)
        json_object_set_new(names, "Modality", json_true()); /* may come from the study level */
    const char *k;
    json_t *unused;
    json_object_foreach(names, k, unused)
    {
        snprintf(name, sizeof name, "m:%s", k);
        const json_t *v;
        const char *p;
        bool record = !mdb_docs_keyword_varies(level, k);
        if (!merge_field(m, x, k, gm, json_object_get(old_meta, k), json_string_value(json_object_get(old_src, name)),
                         record ? kind : NULL, k, &v, &p))
            goto done;
        if (!v)
            continue;
        json_object_set_new(meta, k, json_deep_copy(v));
        if (p)
            json_object_set_new(src, name, json_string(p));
    }
    json_object_set(doc, "metadata", meta);

    /* promoted fields */
    pnames = stored_promoted(existing);
    if (!pnames)
        goto done;
    collect_names(pnames, NULL, m, x, lvl, true);
    if (series && x->nobs > 0)
        json_object_set_new(pnames, "modality", json_true());
    json_object_foreach(pnames, k, unused)
    {
        if (reserved_field(k))
            continue;
        snprintf(name, sizeof name, "p:%s", k);
        const json_t *v;
        const char *p;
        if (!merge_field(m, x, k, gp, json_object_get(existing, k), json_string_value(json_object_get(old_src, name)),
                         NULL, k, &v, &p))
            goto done;
        if (!v)
            continue;
        json_object_set_new(doc, k, json_deep_copy(v));
        if (p)
            json_object_set_new(src, name, json_string(p));
    }

    /* the series' parent */
    if (series) {
        const json_t *v;
        const char *p;
        json_t *cur = json_object_get(existing, "study_id");
        if (!merge_field(m, x, "study_id", get_parent, cur, json_string_value(json_object_get(old_src, "study_id")),
                         "series_parent", "study_id", &v, &p))
            goto done;
        if (v) {
            json_object_set_new(doc, "study_id", json_deep_copy(v));
            if (p)
                json_object_set_new(src, "study_id", json_string(p));
        }
    }
    json_object_set(doc, "_src", src);
    merge_flag_list(doc, m, x, existing, lvl, "_invalid");
    merge_flag_list(doc, m, x, existing, lvl, "_replaced");
    merge_id_list(doc, m, x, existing, "collection_ids", false);
    if (!series)
        merge_id_list(doc, m, x, existing, "job_ids", true);
    json_decref(x->doc);
    x->doc = json_incref(doc);
    ok = true;
done:
    json_decref(doc);
    json_decref(src);
    json_decref(meta);
    json_decref(names);
    json_decref(pnames);
    return ok;
}

/* ------------------------------------------------------------------ */
/* instances                                                           */

/* The instance document an event describes (no paths/job_ids yet). */
static json_t *instance_doc_from_event(const event_t *e)
{
    json_t *doc = json_object(), *meta = json_object();
    if (!doc || !meta) {
        json_decref(doc);
        json_decref(meta);
        return NULL;
    }
    json_object_set_new(doc, "_id", json_string(e->sop_uid));
    json_object_set_new(doc, "series_id", json_string(e->series_uid));
    json_object_set_new(doc, "study_id", json_string(e->study_uid));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(e->instance, "promoted"), k, v)
    {
        if (!reserved_field(k))
            json_object_set(doc, k, v);
    }
    json_object_foreach(e->instance, k, v)
    {
        if (!strcmp(k, "promoted"))
            continue;
        if (!strcmp(k, "_invalid") || !strcmp(k, "_replaced"))
            json_object_set(doc, k, v);
        else
            json_object_set(meta, k, v);
    }
    json_object_set_new(doc, "metadata", meta);
    if (e->file)
        json_object_set(doc, "file", e->file);
    if (e->dicom)
        json_object_set(doc, "dicom", e->dicom);
    if (e->integrity)
        json_object_set(doc, "integrity", e->integrity);
    if (e->feature_set)
        json_object_set_new(doc, "feature_set", json_string(e->feature_set));
    json_object_set_new(doc, "_src", json_string(e->path));
    /* Values are shared with the event (reference counted); the document is
     * only ever edited at its top level (paths, job ids, tags), never inside
     * a value, so no copy is needed. */
    return doc;
}

static const json_t *get_ev_series(const event_t *e, const char *name)
{
    (void)name;
    return e->j_series_uid;
}

static const json_t *get_ev_study(const event_t *e, const char *name)
{
    (void)name;
    return e->j_study_uid;
}

/* ---- origin tags (incremental counting, see mdb_docs.h) ---- */

static json_t *origin_tag(const event_t *e)
{
    return json_pack("{s:s, s:I}", "t", e->origin, "o", (json_int_t)e->offset);
}

static const char *tag_t(const json_t *tag)
{
    return json_string_value(json_object_get(tag, "t"));
}

static bool tag_o(const json_t *tag, int64_t *o)
{
    const json_t *v = json_object_get(tag, "o");
    if (!json_is_integer(v))
        return false;
    *o = (int64_t)json_integer_value(v);
    return true;
}

/* x's observation with the smallest (offset, origin), of job if not NULL. */
static const event_t *first_obs(const mdb_docs_model_t *m, const ent_t *x, const char *job)
{
    const event_t *best = NULL;
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        if (job && strcmp(e->job_id, job))
            continue;
        if (!best || e->offset < best->offset || (e->offset == best->offset && strcmp(e->origin, best->origin) < 0))
            best = e;
    }
    return best;
}

/* Does tag {t, o} name one of x's observations (of job if not NULL)? */
static bool tag_in_batch(const mdb_docs_model_t *m, const ent_t *x, const json_t *tag, const char *job)
{
    const char *t = tag_t(tag);
    int64_t o;
    if (!t || !tag_o(tag, &o))
        return false;
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        if (e->offset == o && !strcmp(e->origin, t) && (!job || !strcmp(e->job_id, job)))
            return true;
    }
    return false;
}

static int64_t applied_of(const mdb_docs_model_t *m, const char *job, const char *tp)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\n%s", job, tp);
    const json_t *v = json_object_get(m->applied, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static bool strings_contain(const json_t *arr, const char *s)
{
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (!strcmp(json_string_value(json_array_get(arr, i)) ? json_string_value(json_array_get(arr, i)) : "", s))
            return true;
    return false;
}

/* _ins and _jl of an instance document: kept from the existing document,
 * set from this batch's first observations for what is new. A document
 * written before origin tags existed gets none (it counts as counted). */
static bool set_instance_tags(mdb_docs_model_t *m, const ent_t *x, json_t *doc)
{
    const json_t *ex = x->existing;
    const json_t *ins = json_object_get(ex, "_ins");
    if (ins)
        json_object_set(doc, "_ins", (json_t *)ins);
    else if (!ex)
        json_object_set_new(doc, "_ins", origin_tag(first_obs(m, x, NULL)));
    const json_t *exjl = json_object_get(ex, "_jl"), *exjobs = json_object_get(ex, "job_ids");
    json_t *jl = json_is_object(exjl) ? json_copy((json_t *)exjl) : json_object();
    if (!jl)
        return false;
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        if (!json_object_get(jl, e->job_id) && !strings_contain(exjobs, e->job_id))
            json_object_set_new(jl, e->job_id, origin_tag(first_obs(m, x, e->job_id)));
    }
    if (json_object_size(jl) > 0 || exjl)
        json_object_set(doc, "_jl", jl);
    else
        json_object_del(doc, "_jl");
    json_decref(jl);
    return true;
}

/* Instances this batch links to each job, by the partition that owns the
 * count (the origin of the record that added the job to the instance). */
static bool add_link_delta(mdb_docs_model_t *m, const char *job, const char *tp)
{
    json_t *per = json_object_get(m->link_deltas, job);
    if (!per) {
        per = json_object();
        if (!per || json_object_set_new(m->link_deltas, job, per) != 0)
            return false;
    }
    json_int_t n = json_integer_value(json_object_get(per, tp));
    return json_object_set_new(per, tp, json_integer(n + 1)) == 0;
}

static bool count_links(mdb_docs_model_t *m, const ent_t *x)
{
    const json_t *ex = x->dup ? x->existing : NULL;
    const json_t *exjobs = json_object_get(ex, "job_ids"), *exjl = json_object_get(ex, "_jl");
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        if (first_obs(m, x, e->job_id) != e)
            continue; /* one decision per job */
        if (!ex || !strings_contain(exjobs, e->job_id)) {
            if (!add_link_delta(m, e->job_id, e->origin))
                return false;
            continue;
        }
        /* The job was there: added by a record of this batch whose batch
         * died before its progress was written? Then it is not counted yet. */
        const json_t *tag = json_object_get(exjl, e->job_id);
        int64_t o;
        if (tag && tag_in_batch(m, x, tag, e->job_id) && tag_o(tag, &o) && o > applied_of(m, e->job_id, tag_t(tag)) &&
            !add_link_delta(m, e->job_id, tag_t(tag)))
            return false;
    }
    return true;
}

static bool merge_instance(mdb_docs_model_t *m, ent_t *x)
{
    const json_t *ex = x->existing;
    const char *ex_src = json_string_value(json_object_get(ex, "_src"));
    const event_t *best = NULL;
    for (size_t i = 0; i < x->nobs; i++) {
        const event_t *e = &m->ev[x->obs[i]];
        if (!best || strcmp(e->path, best->path) < 0)
            best = e;
    }
    json_t *doc;
    if (ex && (!best || (ex_src && strcmp(ex_src, best->path) <= 0)))
        doc = json_copy((json_t *)ex); /* top-level edits only: a shallow copy leaves ex intact */
    else {
        doc = instance_doc_from_event(best);
        if (doc && ex) {
            json_t *c = json_object_get(ex, "created_at");
            if (c)
                json_object_set(doc, "created_at", c);
        }
    }
    if (!doc)
        return false;
    json_t *paths = json_array(), *jobs = json_array();
    add_strings(paths, json_object_get(ex, "paths"));
    add_strings(jobs, json_object_get(ex, "job_ids"));
    for (size_t i = 0; i < x->nobs; i++) {
        add_string(paths, m->ev[x->obs[i]].path);
        add_string(jobs, m->ev[x->obs[i]].job_id);
    }
    mdb_docs_sort_strings(paths);
    mdb_docs_sort_strings(jobs);
    json_object_set_new(doc, "paths", paths);
    json_object_set_new(doc, "job_ids", jobs);
    /* A parent it had: a batch that moves the instance and dies before
     * writing the series would leave the former parent's count stale, so the
     * former parents stay on the document and are recounted whenever it is. */
    static const char *const prev[][2] = {{"series_id", "_prev_series"}, {"study_id", "_prev_study"}};
    for (int i = 0; ex && i < 2; i++) {
        const json_t *was = json_object_get(ex, prev[i][0]), *kept = json_object_get(ex, prev[i][1]);
        if (json_is_string(was) && !json_equal((json_t *)was, json_object_get(doc, prev[i][0])))
            json_object_set(doc, prev[i][1], (json_t *)was);
        else if (kept)
            json_object_set(doc, prev[i][1], (json_t *)kept);
    }
    if (m->incremental && !set_instance_tags(m, x, doc)) {
        json_decref(doc);
        return false;
    }
    json_decref(x->doc);
    x->doc = doc;

    /* Parent conflicts (the winner computed by merge_field is the same
     * smallest-path source, so only the recording matters here). */
    const json_t *v;
    const char *p;
    return merge_field(m, x, "series_id", get_ev_series, json_object_get(ex, "series_id"), ex_src, "instance_parent",
                       "series_id", &v, &p) &&
           merge_field(m, x, "study_id", get_ev_study, json_object_get(ex, "study_id"), ex_src, "instance_parent",
                       "study_id", &v, &p);
}

/* ------------------------------------------------------------------ */
/* apply                                                               */

static bool doc_equal_ignoring_ts(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return false;
    const char *k;
    json_t *v;
    size_t na = 0, nb = 0;
    json_object_foreach((json_t *)a, k, v)
    {
        if (!strcmp(k, "created_at") || !strcmp(k, "updated_at"))
            continue;
        na++;
        if (!mdb_docs_value_equal(v, json_object_get(b, k)))
            return false;
    }
    json_object_foreach((json_t *)b, k, v)
    {
        if (strcmp(k, "created_at") && strcmp(k, "updated_at"))
            nb++;
    }
    return na == nb;
}

/* ids of entities matching pred, as a borrowed array of strings. */
typedef bool (*ent_pred)(const ent_t *x);

static const char **collect_ids(const entset_t *s, ent_pred pred, size_t *n_out)
{
    const char **v = malloc((s->n + 1) * sizeof *v);
    size_t n = 0;
    if (v)
        for (size_t i = 0; i < s->n; i++)
            if (!pred || pred(&s->v[i]))
                v[n++] = s->v[i].uid;
    *n_out = n;
    return v;
}

static bool not_loaded(const ent_t *x)
{
    return !x->loaded;
}

static bool has_obs(const ent_t *x)
{
    return x->nobs > 0;
}

/* Put loaded documents (array) into set s as existing; creates entities
 * for documents not asked for (a study's other series). */
static bool absorb(entset_t *s, json_t *docs)
{
    for (size_t i = 0; i < json_array_size(docs); i++) {
        json_t *d = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (!id)
            continue;
        ent_t *x = entset_put(s, id);
        if (!x)
            return false;
        json_decref(x->existing);
        x->existing = json_incref(d);
        x->loaded = true;
    }
    return true;
}

static void mark_loaded(entset_t *s, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ent_t *x = entset_get(s, ids[i]);
        if (x)
            x->loaded = true;
    }
}

/* Load studies not yet loaded, and for each newly loaded study its series. */
static bool load_studies(mdb_docs_model_t *m, const mdb_store_t *st, mdb_error_t *err)
{
    size_t n = 0;
    const char **ids = collect_ids(&m->studies, not_loaded, &n);
    json_t *out = json_array(), *sout = json_array();
    bool ok = ids && out && sout;
    if (ok && n > 0) {
        ok = st->load_studies(st->ud, ids, n, out, err) && absorb(&m->studies, out);
        mark_loaded(&m->studies, ids, n);
        /* every series of these studies, for the series[] summaries */
        size_t ns = 0;
        const char **sids = ok ? collect_ids(&m->series, not_loaded, &ns) : NULL;
        ok = ok && sids && st->load_series(st->ud, sids, ns, ids, n, sout, err) && absorb(&m->series, sout);
        if (ok)
            mark_loaded(&m->series, sids, ns);
        free(sids);
    }
    free(ids);
    json_decref(out);
    json_decref(sout);
    return ok;
}

static bool load_series_only(mdb_docs_model_t *m, const mdb_store_t *st, mdb_error_t *err)
{
    size_t n = 0;
    const char **ids = collect_ids(&m->series, not_loaded, &n);
    json_t *out = json_array();
    bool ok = ids && out;
    if (ok && n > 0) {
        ok = st->load_series(st->ud, ids, n, NULL, 0, out, err) && absorb(&m->series, out);
        mark_loaded(&m->series, ids, n);
    }
    free(ids);
    json_decref(out);
    return ok;
}

/* Ensure the entity for uid exists in s (a parent an instance or series
 * points or pointed to). */
static bool touch(entset_t *s, const char *uid, bool recount)
{
    if (!uid)
        return true;
    ent_t *x = entset_put(s, uid);
    if (!x)
        return false;
    if (recount)
        x->recount = true;
    return true;
}

/* The top-level fields of existing that doc no longer has (timestamps
 * aside), as an array of names, or null when there are none: the store
 * removes them, so an updated document is exactly the merged one (a copy
 * with a smaller path may lack a field the former source had). */
static json_t *dropped_fields(const json_t *doc, const json_t *existing)
{
    json_t *names = NULL;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)existing, k, v)
    {
        if (!strcmp(k, "created_at") || !strcmp(k, "updated_at") || json_object_get(doc, k))
            continue;
        if (!names)
            names = json_array();
        json_array_append_new(names, json_string(k));
    }
    return names ? names : json_null();
}

/* doc for an in-place update of existing: a copy carrying the updated_at
 * it was computed from, so the store writes it only if nobody changed the
 * document since (MDB_STORE_IF_UPDATED_AT). */
static json_t *if_unchanged(json_t *doc, const json_t *existing)
{
    const char *ts = json_string_value(json_object_get(existing, "updated_at"));
    if (!ts)
        return json_incref(doc);
    json_t *d = json_copy(doc);
    if (d && json_object_set_new(d, MDB_STORE_IF_UPDATED_AT, json_string(ts)) != 0) {
        json_decref(d);
        return NULL;
    }
    return d;
}

/* Write the documents of s that change: new ones with one insert (cheap
 * everywhere; a duplicate - created by another writer meanwhile - fails the
 * call, to be redone from a fresh read), existing ones through the store's
 * upsert, conditional on the updated_at they were read with. */
static bool write_changed(const mdb_store_t *st, const char *coll, entset_t *s, const char *now, size_t *count,
                          mdb_error_t *err)
{
    json_t *docs = json_array(), *unset = json_array(), *fresh = json_array(), *dups = json_array();
    bool ok = docs && unset && fresh && dups;
    for (size_t i = 0; ok && i < s->n; i++) {
        ent_t *x = &s->v[i];
        if (!x->doc || doc_equal_ignoring_ts(x->doc, x->existing))
            continue;
        if (x->existing) {
            ok = json_array_append_new(docs, if_unchanged(x->doc, x->existing)) == 0;
            json_array_append_new(unset, dropped_fields(x->doc, x->existing));
            continue;
        }
        json_t *d = json_copy(x->doc); /* timestamps are top-level */
        ok = d && json_object_set_new(d, "created_at", json_string(now)) == 0 &&
             json_object_set_new(d, "updated_at", json_string(now)) == 0 && json_array_append_new(fresh, d) == 0;
    }
    ok = ok && (json_array_size(fresh) == 0 || st->insert(st->ud, coll, fresh, dups, err));
    if (ok && json_array_size(dups) > 0) {
        /* Created by another writer since this batch read it (e.g. the linker
         * that took over the partitions of one cut off from the network, while
         * this one was away): what this batch computed lacks that writer's
         * part, so writing it would lose it. Fail: the caller redoes the batch
         * from a fresh read, where the document exists and is merged. */
        mdb_error_set(err, MDB_ERR_MONGO, 0,
                      "%zu %s document(s) created by another writer since this batch read them (first %s): "
                      "redoing the batch from a fresh read",
                      json_array_size(dups), coll, json_string_value(json_array_get(dups, 0)));
        ok = false;
    }
    ok = ok && (json_array_size(docs) == 0 || st->upsert(st->ud, coll, docs, unset, now, err));
    if (count)
        *count += json_array_size(docs) + json_array_size(fresh) - json_array_size(dups);
    json_decref(docs);
    json_decref(unset);
    json_decref(fresh);
    json_decref(dups);
    return ok;
}

static bool write_conflicts(mdb_docs_model_t *m, const mdb_store_t *st, const char *now, mdb_error_t *err)
{
    json_t *docs = json_array();
    const char *k;
    json_t *v;
    if (!docs)
        return false;
    json_object_foreach(m->conflicts_new, k, v)
    {
        if (!doc_equal_ignoring_ts(v, json_object_get(m->conflicts_old, k)))
            json_array_append(docs, v);
    }
    bool ok = json_array_size(docs) == 0 || st->upsert(st->ud, MDB_DOCS_CONFLICTS, docs, NULL, now, err);
    m->stats.conflicts_written += json_array_size(docs);
    /* written: later calls of this apply write only what changes after */
    json_object_foreach(m->conflicts_new, k, v)
    {
        if (ok && !doc_equal_ignoring_ts(v, json_object_get(m->conflicts_old, k)))
            json_object_set_new(m->conflicts_old, k, json_deep_copy(v));
    }
    json_decref(docs);
    return ok;
}

/* Step 1: load studies (+ their series), batch series, conflicts. */
static bool apply_load(mdb_docs_model_t *m, const mdb_store_t *st, mdb_error_t *err)
{
    if (!load_studies(m, st, err) || !load_series_only(m, st, err))
        return false;
    size_t n1 = 0, n2 = 0, n3 = 0;
    const char **a = collect_ids(&m->studies, has_obs, &n1);
    const char **b = collect_ids(&m->series, has_obs, &n2);
    const char **c = collect_ids(&m->instances, NULL, &n3);
    const char **all = malloc((n1 + n2 + n3 + 1) * sizeof *all);
    json_t *out = json_array();
    bool ok = a && b && c && all && out;
    if (ok) {
        memcpy(all, a, n1 * sizeof *all);
        memcpy(all + n1, b, n2 * sizeof *all);
        memcpy(all + n1 + n2, c, n3 * sizeof *all);
        ok = st->load_conflicts(st->ud, all, n1 + n2 + n3, out, err);
    }
    for (size_t i = 0; ok && i < json_array_size(out); i++) {
        json_t *d = json_array_get(out, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (id)
            json_object_set(m->conflicts_old, id, d);
    }
    free(a);
    free(b);
    free(c);
    free(all);
    json_decref(out);
    return ok;
}

/* Step 2: insert new instances; merge and update the ones that existed. */
static bool apply_instances(mdb_docs_model_t *m, const mdb_store_t *st, const char *now, mdb_error_t *err)
{
    json_t *docs = json_array(), *dups = json_array(), *loaded = json_array(), *changed = json_array();
    json_t *unset = json_array();
    bool ok = docs && dups && loaded && changed && unset;
    for (size_t i = 0; ok && i < m->instances.n; i++) {
        ent_t *x = &m->instances.v[i];
        ok = merge_instance(m, x);
        if (ok) {
            json_t *d = json_copy(x->doc); /* timestamps are top-level */
            ok = d && json_object_set_new(d, "created_at", json_string(now)) == 0 &&
                 json_object_set_new(d, "updated_at", json_string(now)) == 0 && json_array_append_new(docs, d) == 0;
        }
    }
    /* A disagreement is written before the documents that absorb it: a batch
     * dying in between must not lose it (its redelivery may not see it again). */
    ok = ok && write_conflicts(m, st, now, err) && st->insert(st->ud, MDB_DOCS_INSTANCES, docs, dups, err);
    size_t ndup = json_array_size(dups);
    if (ok && ndup > 0) {
        const char **ids = malloc(ndup * sizeof *ids);
        ok = ids != NULL;
        for (size_t i = 0; ok && i < ndup; i++)
            ids[i] = json_string_value(json_array_get(dups, i));
        ok = ok && st->load_instances(st->ud, ids, ndup, loaded, err);
        free(ids);
        for (size_t i = 0; ok && i < json_array_size(loaded); i++) {
            json_t *d = json_array_get(loaded, i);
            ent_t *x = entset_get(&m->instances, json_string_value(json_object_get(d, "_id")));
            if (!x)
                continue;
            json_decref(x->existing);
            x->existing = json_incref(d);
            x->dup = true;
            ok = merge_instance(m, x);
            if (ok && !doc_equal_ignoring_ts(x->doc, x->existing)) {
                ok = json_array_append_new(changed, if_unchanged(x->doc, x->existing)) == 0;
                json_array_append_new(unset, dropped_fields(x->doc, x->existing));
            }
        }
        ok = ok && write_conflicts(m, st, now, err) &&
             (json_array_size(changed) == 0 || st->upsert(st->ud, MDB_DOCS_INSTANCES, changed, unset, now, err));
    }
    for (size_t i = 0; ok && m->incremental && i < m->instances.n; i++)
        ok = count_links(m, &m->instances.v[i]);
    if (ok) {
        m->stats.instances_new += json_array_size(docs) - ndup;
        m->stats.instances_existing += ndup;
        m->stats.instances_written += json_array_size(changed);
    }
    json_decref(docs);
    json_decref(dups);
    json_decref(loaded);
    json_decref(changed);
    json_decref(unset);
    return ok;
}

/* Step 3: every parent an instance has or had needs a recount/summary. */
static bool apply_touch_parents(mdb_docs_model_t *m)
{
    for (size_t i = 0; i < m->instances.n; i++) {
        const ent_t *x = &m->instances.v[i];
        const char *ps[] = {json_string_value(json_object_get(x->doc, "series_id")),
                            json_string_value(json_object_get(x->existing, "series_id")),
                            json_string_value(json_object_get(x->doc, "_prev_series"))};
        const char *ts[] = {json_string_value(json_object_get(x->doc, "study_id")),
                            json_string_value(json_object_get(x->existing, "study_id")),
                            json_string_value(json_object_get(x->doc, "_prev_study"))};
        for (int j = 0; j < 3; j++)
            if (!touch(&m->series, ps[j], true) || !touch(&m->studies, ts[j], false))
                return false;
        ent_t *cur = ps[0] ? entset_get(&m->series, ps[0]) : NULL;
        if (cur)
            cur->parent = true;
    }
    /* A series may move to another study: its former study's summary changes. */
    size_t n = m->series.n;
    for (size_t i = 0; i < n; i++) {
        if (m->series.v[i].nobs == 0)
            continue;
        m->series.v[i].recount = true;
        if (!touch(&m->studies, json_string_value(json_object_get(m->series.v[i].existing, "study_id")), false))
            return false;
    }
    return true;
}

/* The incremental count of every series to recount: the existing count plus
 * what this batch adds, or x->uncertain when that cannot be decided. */
static void count_series_incrementally(mdb_docs_model_t *m)
{
    for (size_t i = 0; i < m->series.n; i++) {
        ent_t *S = &m->series.v[i];
        S->delta = 0;
        S->uncertain = S->nobs == 0; /* only a former parent: an instance moved */
        const event_t *f = first_obs(m, S, NULL);
        const json_t *lo = json_object_get(S->existing, "_lo");
        if (S->existing && (!lo || !f || strcmp(tag_t(lo) ? tag_t(lo) : "", f->origin)))
            S->uncertain = true; /* written before tags, or from another partition */
        for (size_t k = 0; f && k < S->nobs; k++)
            if (strcmp(m->ev[S->obs[k]].origin, f->origin))
                S->uncertain = true; /* its events come from two partitions */
    }
    for (size_t i = 0; i < m->instances.n; i++) {
        const ent_t *x = &m->instances.v[i];
        const char *ns = json_string_value(json_object_get(x->doc, "series_id"));
        const char *os = x->dup ? json_string_value(json_object_get(x->existing, "series_id")) : NULL;
        ent_t *S = ns ? entset_get(&m->series, ns) : NULL;
        if (!S)
            continue;
        const char *ps = json_string_value(json_object_get(x->doc, "_prev_series"));
        if (ps) { /* it moved once: both parents are recounted */
            ent_t *P = entset_get(&m->series, ps);
            S->uncertain = true;
            if (P)
                P->uncertain = true;
            continue;
        }
        if (os && strcmp(os, ns)) {
            ent_t *O = entset_get(&m->series, os);
            S->uncertain = true;
            if (O)
                O->uncertain = true;
            continue;
        }
        if (!x->dup) {
            S->delta++;
            continue;
        }
        if (!S->existing) {
            S->uncertain = true; /* an instance of a series never written (a batch died): recount */
            continue;
        }
        /* Inserted by a batch of this batch's records that died: counted in
         * S iff S's _lo reached the insert. */
        const json_t *ins = json_object_get(x->existing, "_ins");
        int64_t io, lo_o;
        if (!ins || !tag_in_batch(m, x, ins, NULL) || !tag_o(ins, &io))
            continue; /* inserted by a record counted before (or an untagged one) */
        const json_t *lo = json_object_get(S->existing, "_lo");
        if (tag_o(lo, &lo_o) && lo_o < io)
            S->delta++;
    }
}

/* _lo of a series written by this batch: its partition and the highest
 * offset its count now includes. */
/* The partition a series is counted for in this batch: its events' (a
 * former parent without events: the batch's first event's). */
static const char *series_tp(const mdb_docs_model_t *m, const ent_t *S)
{
    const event_t *f = first_obs(m, S, NULL);
    return f ? f->origin : m->ev[0].origin;
}

static int64_t batch_max_offset(const mdb_docs_model_t *m, const char *tp)
{
    int64_t o = -1;
    for (size_t e = 0; e < m->nev; e++)
        if (!strcmp(m->ev[e].origin, tp) && m->ev[e].offset > o)
            o = m->ev[e].offset;
    return o;
}

/* _lo of a series written by this batch: its partition and the offset up
 * to which its count includes the instances that partition's records
 * inserted (a recount leaves out later ones, so it says the batch's end;
 * an incremental count keeps a higher mark a dead batch's write left). */
static bool set_series_tag(mdb_docs_model_t *m, ent_t *S)
{
    const event_t *f = first_obs(m, S, NULL);
    if (!f && !(S->uncertain && S->recount))
        return true; /* untouched count: keeps its tag */
    const char *tp = series_tp(m, S);
    int64_t o = batch_max_offset(m, tp), lo_o;
    const json_t *lo = json_object_get(S->existing, "_lo");
    if (!S->uncertain && lo && !strcmp(tag_t(lo) ? tag_t(lo) : "", tp) && tag_o(lo, &lo_o) && lo_o > o)
        o = lo_o;
    return json_object_set_new(S->doc, "_lo", json_pack("{s:s, s:I}", "t", tp, "o", (json_int_t)o)) == 0;
}

static bool apply_counts(mdb_docs_model_t *m, const mdb_store_t *st, mdb_error_t *err)
{
    if (m->incremental)
        count_series_incrementally(m);
    size_t n = 0;
    const char **ids = NULL;
    json_t *counts = json_object();
    bool ok = counts != NULL;
    ids = ok ? malloc((m->series.n + 1) * sizeof *ids) : NULL;
    ok = ids != NULL;
    for (size_t i = 0; ok && i < m->series.n; i++)
        if (m->series.v[i].recount && (!m->incremental || m->series.v[i].uncertain))
            ids[n++] = m->series.v[i].uid;
    m->stats.series_recounted += n;
    /* the jobs of the events, for their instances_linked (recounting mode) */
    json_t *seen = ok ? json_object() : NULL;
    const char **jobs = ok ? malloc((m->nev + 1) * sizeof *jobs) : NULL;
    size_t nj = 0;
    ok = ok && seen && jobs;
    for (size_t i = 0; ok && !m->incremental && i < m->nev; i++)
        if (!json_object_get(seen, m->ev[i].job_id)) {
            json_object_set_new(seen, m->ev[i].job_id, json_true());
            jobs[nj++] = m->ev[i].job_id;
        }
    json_object_clear(m->job_counts);
    if (m->incremental) {
        /* per partition: a recount must not include instances that records
         * after this batch inserted (a dead batch's): their batch counts them */
        for (size_t i = 0; ok && i < n; i++) {
            const char *tp = series_tp(m, entset_get(&m->series, ids[i]));
            bool first = true;
            for (size_t k = 0; first && k < i; k++)
                first = strcmp(series_tp(m, entset_get(&m->series, ids[k])), tp) != 0;
            if (!first)
                continue; /* counted with an earlier series of the same partition */
            const char **grp = malloc((n + 1) * sizeof *grp);
            size_t ng = 0;
            int64_t upto = batch_max_offset(m, tp);
            ok = grp != NULL;
            for (size_t k = i; ok && k < n; k++)
                if (!strcmp(series_tp(m, entset_get(&m->series, ids[k])), tp))
                    grp[ng++] = ids[k];
            ok = ok && st->count_series(st->ud, grp, ng, tp, upto, counts, err);
            free(grp);
        }
    } else {
        ok = ok && (n + nj == 0 || st->count_instances(st->ud, ids, n, jobs, nj, counts, m->job_counts, err));
    }
    free(jobs);
    json_decref(seen);
    for (size_t i = 0; ok && i < m->series.n; i++) {
        ent_t *x = &m->series.v[i];
        if (!x->recount)
            continue;
        json_t *c = json_object_get(counts, x->uid);
        json_int_t cnt = c ? json_integer_value(c) : 0;
        if (m->incremental && !x->uncertain)
            cnt = json_integer_value(json_object_get(x->existing, "instance_count")) + x->delta;
        /* kept on the entity until the series merge below */
        json_decref(x->doc);
        x->doc = json_pack("{s:I}", "instance_count", cnt);
        ok = x->doc != NULL;
    }
    free(ids);
    json_decref(counts);
    return ok;
}

/* Step 4: merge series (count from step 3), then studies with summaries. */
static bool apply_series(mdb_docs_model_t *m)
{
    for (size_t i = 0; i < m->series.n; i++) {
        ent_t *x = &m->series.v[i];
        json_t *cnt = x->recount ? json_incref(json_object_get(x->doc, "instance_count")) : NULL;
        if (x->nobs == 0 && !x->recount) {
            json_decref(x->doc);
            x->doc = x->existing ? json_incref(x->existing) : NULL;
            continue;
        }
        if (x->nobs == 0 && !x->existing && !x->parent) {
            /* an instance's former parent that has no document: nothing to write */
            json_decref(cnt);
            json_decref(x->doc);
            x->doc = NULL;
            continue;
        }
        bool ok = merge_entity(m, x, MDB_DOCS_LEVEL_SERIES);
        if (ok && cnt)
            json_object_set(x->doc, "instance_count", cnt);
        else if (ok && !json_object_get(x->doc, "instance_count"))
            json_object_set_new(x->doc, "instance_count", json_integer(0));
        json_decref(cnt);
        ok = ok && (!m->incremental || set_series_tag(m, x));
        if (!ok)
            return false;
    }
    return true;
}

static bool apply_studies(mdb_docs_model_t *m)
{
    /* series documents grouped by their (new) study */
    json_t *by_study = json_object();
    if (!by_study)
        return false;
    for (size_t i = 0; i < m->series.n; i++) {
        const json_t *d = m->series.v[i].doc;
        const char *sid = json_string_value(json_object_get(d, "study_id"));
        if (!sid)
            continue;
        json_t *arr = json_object_get(by_study, sid);
        if (!arr) {
            arr = json_array();
            json_object_set_new(by_study, sid, arr);
        }
        json_array_append(arr, (json_t *)d);
    }
    bool ok = true;
    for (size_t i = 0; ok && i < m->studies.n; i++) {
        ent_t *x = &m->studies.v[i];
        if (x->nobs == 0 && !x->existing)
            continue; /* a former parent without a document */
        ok = merge_entity(m, x, MDB_DOCS_LEVEL_STUDY);
        json_t *arr = json_object_get(by_study, x->uid);
        json_t *empty = arr ? NULL : json_array();
        ok = ok && mdb_docs_study_set_derived(x->doc, arr ? arr : empty);
        json_decref(empty);
    }
    json_decref(by_study);
    return ok;
}

bool mdb_docs_apply(mdb_docs_model_t *m, const mdb_store_t *st, const char *now, mdb_docs_stats_t *stats,
                    mdb_error_t *err)
{
    memset(&m->stats, 0, sizeof m->stats);
    m->stats.events = m->nev;
    m->incremental = m->nev > 0;
    for (size_t i = 0; i < m->nev; i++)
        if (!m->ev[i].origin)
            m->incremental = false;
    json_object_clear(m->link_deltas);
    bool ok = apply_load(m, st, err) && apply_instances(m, st, now, err) && apply_touch_parents(m) &&
              load_studies(m, st, err) && load_series_only(m, st, err) && apply_counts(m, st, err) && apply_series(m) &&
              apply_studies(m) && write_conflicts(m, st, now, err) &&
              write_changed(st, MDB_DOCS_SERIES, &m->series, now, &m->stats.series_written, err) &&
              write_changed(st, MDB_DOCS_STUDIES, &m->studies, now, &m->stats.studies_written, err);
    if (!ok && err && !err->message[0])
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory merging documents");
    if (stats)
        *stats = m->stats;
    return ok;
}
