/* api/qido.c: DICOMweb QIDO-RS (PS3.18 §10.6) over the catalogue.
 *
 *   GET /dicomweb/studies
 *   GET /dicomweb/series                        GET /dicomweb/studies/{study}/series
 *   GET /dicomweb/instances                     GET /dicomweb/studies/{study}/instances
 *   GET /dicomweb/studies/{study}/series/{series}/instances
 *
 * answer application/dicom+json: an array of data sets {"GGGGEEEE": {"vr",
 * "Value"}} built from the stored documents. Query parameters:
 *   - attribute matching, by keyword (PatientID=...) or tag (00100020=...):
 *     single value; list of UIDs (comma or backslash separated); wildcards
 *     * and ? (not for UIDs, dates, numbers); date/time ranges (A-B, A-, -B);
 *     an empty value or "*" matches everything (and returns the attribute).
 *     Person names match case-insensitively, other strings exactly.
 *   - includefield=<keyword|tag>[,...] or includefield=all;
 *   - limit, offset; fuzzymatching=false (true is accepted and answered
 *     with the standard warning that only literal matching was done).
 * Anything else (unknown parameter or attribute, sequence or binary
 * attributes, malformed values, duplicate keys) answers 400 with a
 * Warning: 299 header and an {error, detail} body naming the problem; an
 * Accept header that allows no JSON answers 406.
 *
 * Attributes that live at another level than the one queried (PatientID on
 * /series, Modality on /instances, ModalitiesInStudy on /studies) match
 * through the linked documents (mdb_nl joins), and for the "all series" /
 * "all instances" resources the parent study (and series) attributes are
 * returned too, as PS3.18 asks. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "mdb_dicom.h"
#include "mdb_nl.h"
#include "wado.h"

#define L_STUDY MDB_QUERY_STUDIES
#define L_SERIES MDB_QUERY_SERIES
#define L_INST MDB_QUERY_INSTANCES
#define NLEV MDB_QUERY_LEVEL_COUNT

enum { F_DEF_STUDY = 1, F_DEF_SERIES = 2, F_DEF_INST = 4, F_NOMATCH = 8, F_COMPUTED = 16 };

typedef struct {
    const char *keyword;
    uint32_t tag;
    const char *vr;
    int home;                /* level whose documents hold it */
    const char *paths[NLEV]; /* field per queried level; NULL: through the home level's documents */
    unsigned flags;
} qattr_t;

static const qattr_t ATTRS[] = {
    {"SpecificCharacterSet", 0x00080005, "CS", L_STUDY, {NULL}, F_NOMATCH | F_COMPUTED},
    {"SOPClassUID", 0x00080016, "UI", L_INST, {NULL, NULL, "sop_class_uid"}, F_DEF_INST},
    {"SOPInstanceUID", 0x00080018, "UI", L_INST, {NULL, NULL, "_id"}, F_DEF_INST},
    {"StudyDate", 0x00080020, "DA", L_STUDY, {"study_date"}, F_DEF_STUDY},
    {"SeriesDate", 0x00080021, "DA", L_SERIES, {NULL, "series_date"}, 0},
    {"StudyTime", 0x00080030, "TM", L_STUDY, {"metadata.StudyTime"}, F_DEF_STUDY},
    {"AccessionNumber", 0x00080050, "SH", L_STUDY, {"accession_number"}, F_DEF_STUDY},
    {"Modality", 0x00080060, "CS", L_SERIES, {NULL, "modality"}, F_DEF_SERIES},
    {"ModalitiesInStudy", 0x00080061, "CS", L_STUDY, {NULL}, F_DEF_STUDY | F_COMPUTED},
    {"Manufacturer", 0x00080070, "LO", L_SERIES, {NULL, "manufacturer"}, 0},
    {"ReferringPhysicianName", 0x00080090, "PN", L_STUDY, {"metadata.ReferringPhysicianName"}, F_DEF_STUDY},
    {"StudyDescription", 0x00081030, "LO", L_STUDY, {"study_description"}, F_DEF_STUDY},
    {"SeriesDescription", 0x0008103E, "LO", L_SERIES, {NULL, "series_description"}, F_DEF_SERIES},
    {"ManufacturerModelName", 0x00081090, "LO", L_SERIES, {NULL, "manufacturer_model_name"}, 0},
    {"PatientName", 0x00100010, "PN", L_STUDY, {"metadata.PatientName"}, F_DEF_STUDY},
    {"PatientID", 0x00100020, "LO", L_STUDY, {"patient_id"}, F_DEF_STUDY},
    {"PatientBirthDate", 0x00100030, "DA", L_STUDY, {"metadata.PatientBirthDate"}, F_DEF_STUDY},
    {"PatientSex", 0x00100040, "CS", L_STUDY, {"metadata.PatientSex"}, F_DEF_STUDY},
    {"BodyPartExamined", 0x00180015, "CS", L_SERIES, {NULL, "body_part_examined"}, 0},
    {"StudyInstanceUID",
     0x0020000D,
     "UI",
     L_STUDY,
     {"_id", "study_id", "study_id"},
     F_DEF_STUDY | F_DEF_SERIES | F_DEF_INST},
    {"SeriesInstanceUID", 0x0020000E, "UI", L_SERIES, {NULL, "_id", "series_id"}, F_DEF_SERIES | F_DEF_INST},
    {"StudyID", 0x00200010, "SH", L_STUDY, {"metadata.StudyID"}, F_DEF_STUDY},
    {"SeriesNumber", 0x00200011, "IS", L_SERIES, {NULL, "series_number"}, F_DEF_SERIES},
    {"InstanceNumber", 0x00200013, "IS", L_INST, {NULL, NULL, "instance_number"}, F_DEF_INST},
    {"NumberOfStudyRelatedSeries", 0x00201206, "IS", L_STUDY, {NULL}, F_DEF_STUDY | F_NOMATCH | F_COMPUTED},
    {"NumberOfStudyRelatedInstances", 0x00201208, "IS", L_STUDY, {NULL}, F_DEF_STUDY | F_NOMATCH | F_COMPUTED},
    {"NumberOfSeriesRelatedInstances", 0x00201209, "IS", L_SERIES, {NULL, "instance_count"}, F_DEF_SERIES},
    {"NumberOfFrames", 0x00280008, "IS", L_INST, {NULL, NULL, "metadata.NumberOfFrames"}, F_DEF_INST},
    {"Rows", 0x00280010, "US", L_INST, {NULL, NULL, "metadata.Rows"}, F_DEF_INST},
    {"Columns", 0x00280011, "US", L_INST, {NULL, NULL, "metadata.Columns"}, F_DEF_INST},
    {"BitsAllocated", 0x00280100, "US", L_INST, {NULL, NULL, "metadata.BitsAllocated"}, F_DEF_INST},
};
#define NATTRS (sizeof ATTRS / sizeof ATTRS[0])

static const qattr_t *attr_by_tag(uint32_t tag)
{
    for (size_t i = 0; i < NATTRS; i++)
        if (ATTRS[i].tag == tag)
            return &ATTRS[i];
    return NULL;
}

/* An attribute named in a request: from the table, or any dictionary
 * keyword read from the queried level's metadata. */
typedef struct {
    const qattr_t *known; /* NULL for a dictionary-only attribute */
    uint32_t tag;
    char keyword[80];
    char vr[3];
} attr_t;

static bool is_hex8(const char *s)
{
    if (strlen(s) != 8)
        return false;
    for (int i = 0; i < 8; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* Resolve a keyword or tag; false when it names no attribute. */
static bool resolve_attr(const char *name, attr_t *a)
{
    memset(a, 0, sizeof *a);
    const mdb_dicom_dict_entry_t *e = NULL;
    if (is_hex8(name)) {
        a->tag = (uint32_t)strtoul(name, NULL, 16);
        e = mdb_dicom_dict_by_tag(a->tag);
    } else {
        e = mdb_dicom_dict_by_keyword(name);
        if (e)
            a->tag = e->tag;
    }
    a->known = attr_by_tag(a->tag);
    if (a->known) {
        snprintf(a->keyword, sizeof a->keyword, "%s", a->known->keyword);
        snprintf(a->vr, sizeof a->vr, "%s", a->known->vr);
        return true;
    }
    if (!e || !e->keyword || !*e->keyword)
        return false;
    snprintf(a->keyword, sizeof a->keyword, "%s", e->keyword);
    snprintf(a->vr, sizeof a->vr, "%s", e->vr[0] ? e->vr : "UN");
    return true;
}

/* ------------------------------------------------------------- matching */

static bool vr_is(const char *vr, const char *list)
{
    for (const char *p = list; *p; p += 3)
        if (!strncmp(p, vr, 2))
            return true;
    return false;
}

#define VR_NUMBERS "IS DS US UL SS SL FL FD SV UV "
#define VR_BINARY "OB OW OF OD OL OV UN "
#define VR_DATES "DA TM DT "

static bool uid_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 64)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && *s != '.')
            return false;
    return true;
}

static bool date_value_ok(const char *vr, const char *s)
{
    size_t n = strlen(s);
    if (!strcmp(vr, "DA")) {
        if (n != 8)
            return false;
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)s[i]))
                return false;
        return true;
    }
    if (!n || n > 26)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && *s != '.' && *s != ':' && *s != '+' && *s != '&')
            return false;
    return true;
}

static void regex_escape(char *out, size_t cap, const char *s, bool wildcards)
{
    size_t n = 0;
    out[n++] = '^';
    for (; *s && n + 4 < cap; s++) {
        if (wildcards && *s == '*') {
            out[n++] = '.';
            out[n++] = '*';
        } else if (wildcards && *s == '?') {
            out[n++] = '.';
        } else {
            if (strchr(".^$|()[]{}*+?\\/", *s))
                out[n++] = '\\';
            out[n++] = *s;
        }
    }
    out[n++] = '$';
    out[n] = '\0';
}

/* Split value at any of seps into a NULL-terminated array (caller frees
 * the array and the copy in *buf). */
static char **split_values(const char *value, const char *seps, char **buf, size_t *n)
{
    *buf = strdup(value);
    size_t cap = 8;
    char **v = malloc(cap * sizeof *v);
    *n = 0;
    if (!*buf || !v) {
        free(*buf);
        free(v);
        return NULL;
    }
    char *p = *buf;
    for (;;) {
        char *end = strpbrk(p, seps);
        if (end)
            *end = '\0';
        if (*n + 1 >= cap) {
            cap *= 2;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                free(*buf);
                return NULL;
            }
            v = nv;
        }
        v[(*n)++] = p;
        if (!end)
            break;
        p = end + 1;
    }
    v[*n] = NULL;
    return v;
}

/* The condition {path: ...} for one matching key, or NULL (universal
 * match) with *ok true; *ok false and detail filled when the value is bad. */
static json_t *match_condition(const attr_t *a, const char *path, const char *value, char *detail, size_t dcap,
                               bool *ok)
{
    *ok = true;
    if (!*value || !strcmp(value, "*"))
        return NULL;
    const char *vr = a->vr;
    if (!strcmp(vr, "SQ") || vr_is(vr, VR_BINARY)) {
        snprintf(detail, dcap, "matching on %s (VR %s) is not supported", a->keyword, vr);
        *ok = false;
        return NULL;
    }
    if (vr_is(vr, VR_DATES)) {
        const char *dash = strchr(value, '-');
        if (!dash) {
            if (!date_value_ok(vr, value))
                goto bad;
            return json_pack("{s:s}", path, value);
        }
        char lo[32] = "", hi[32] = "";
        size_t ll = (size_t)(dash - value);
        if (ll >= sizeof lo || strlen(dash + 1) >= sizeof hi || strchr(dash + 1, '-'))
            goto bad;
        memcpy(lo, value, ll);
        snprintf(hi, sizeof hi, "%s", dash + 1);
        if ((!*lo && !*hi) || (*lo && !date_value_ok(vr, lo)) || (*hi && !date_value_ok(vr, hi)))
            goto bad;
        json_t *r = json_object();
        if (*lo)
            json_object_set_new(r, "$gte", json_string(lo));
        if (*hi) {
            /* a time/date-time upper bound covers everything that starts with it */
            char hx[40];
            snprintf(hx, sizeof hx, "%s%s", hi, strcmp(vr, "DA") ? "\x7f" : "");
            json_object_set_new(r, "$lte", json_string(hx));
        }
        return json_pack("{s:o}", path, r);
    }
    bool uid = !strcmp(vr, "UI");
    bool number = vr_is(vr, VR_NUMBERS);
    char *buf = NULL;
    size_t n = 0;
    char **vals = split_values(value, uid || !strcmp(vr, "CS") ? ",\\" : (number ? ",\\" : "\\"), &buf, &n);
    if (!vals) {
        snprintf(detail, dcap, "out of memory");
        *ok = false;
        return NULL;
    }
    json_t *exact = json_array(), *patterns = json_array();
    bool pn = !strcmp(vr, "PN");
    for (size_t i = 0; i < n; i++) {
        const char *v = vals[i];
        if (uid) {
            if (!uid_ok(v)) {
                snprintf(detail, dcap, "%s: '%.80s' is not a UID (digits and dots, at most 64)", a->keyword, v);
                goto fail;
            }
            json_array_append_new(exact, json_string(v));
        } else if (number) {
            char *end;
            double d = strtod(v, &end);
            if (!*v || *end) {
                snprintf(detail, dcap, "%s: '%.80s' is not a number", a->keyword, v);
                goto fail;
            }
            json_array_append_new(exact, d == (double)(json_int_t)d ? json_integer((json_int_t)d) : json_real(d));
        } else if (strpbrk(v, "*?") || pn) {
            char rx[1100];
            if (strlen(v) > 256) {
                snprintf(detail, dcap, "%s: value too long", a->keyword);
                goto fail;
            }
            regex_escape(rx, sizeof rx, v, true);
            json_array_append_new(patterns, json_string(rx));
        } else {
            json_array_append_new(exact, json_string(v));
        }
    }
    free(vals);
    free(buf);
    json_t *alts = json_array();
    if (json_array_size(exact) == 1)
        json_array_append_new(alts, json_pack("{s:O}", path, json_array_get(exact, 0)));
    else if (json_array_size(exact) > 1)
        json_array_append_new(alts, json_pack("{s:{s:O}}", path, "$in", exact));
    size_t i;
    json_t *p;
    json_array_foreach(patterns, i, p)
    {
        json_array_append_new(alts, json_pack("{s:{s:O, s:s}}", path, "$regex", p, "$options", pn ? "i" : ""));
    }
    json_decref(exact);
    json_decref(patterns);
    if (json_array_size(alts) == 1) {
        json_t *one = json_incref(json_array_get(alts, 0));
        json_decref(alts);
        return one;
    }
    return json_pack("{s:o}", "$or", alts);
fail:
    free(vals);
    free(buf);
    json_decref(exact);
    json_decref(patterns);
    *ok = false;
    return NULL;
bad:
    snprintf(detail, dcap, "%s: '%.80s' is not a valid %s value or range (e.g. 20000101-20011231)", a->keyword, value,
             vr);
    *ok = false;
    return NULL;
}

/* ------------------------------------------------------------- encoding */

static void encode_value(json_t *ds, uint32_t tag, const char *vr, const json_t *v);

/* A sequence item {Keyword: value} → data set. */
static json_t *encode_item(const json_t *item)
{
    json_t *ds = json_object();
    if (!json_is_object(item))
        return ds;
    /* keys in tag order */
    size_t n = json_object_size(item), k = 0;
    struct {
        uint32_t tag;
        const char *vr;
        const json_t *v;
    } *rows = calloc(n ? n : 1, sizeof *rows);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)item, key, val)
    {
        const mdb_dicom_dict_entry_t *e = mdb_dicom_dict_by_keyword(key);
        if (!rows || !e || !e->vr[0])
            continue;
        rows[k].tag = e->tag;
        rows[k].vr = e->vr;
        rows[k].v = val;
        k++;
    }
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && rows[j - 1].tag > rows[j].tag; j--) {
            __typeof__(rows[0]) t = rows[j];
            rows[j] = rows[j - 1];
            rows[j - 1] = t;
        }
    for (size_t i = 0; i < k; i++)
        encode_value(ds, rows[i].tag, rows[i].vr, rows[i].v);
    free(rows);
    return ds;
}

static json_t *encode_one(const char *vr, const json_t *v)
{
    if (json_is_null(v))
        return json_null();
    if (!strcmp(vr, "PN") && json_is_string(v))
        return json_pack("{s:s}", "Alphabetic", json_string_value(v));
    if (!strcmp(vr, "SQ"))
        return encode_item(v);
    return json_deep_copy(v);
}

static void encode_value(json_t *ds, uint32_t tag, const char *vr, const json_t *v)
{
    char key[9];
    snprintf(key, sizeof key, "%08X", tag);
    if (vr_is(vr, VR_BINARY) && strcmp(vr, "UN"))
        return;
    json_t *attr = json_pack("{s:s}", "vr", vr);
    json_t *values = json_array();
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(values, encode_one(vr, x));
    } else if (v && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v))) {
        json_array_append_new(values, encode_one(vr, v));
    }
    if (json_array_size(values))
        json_object_set_new(attr, "Value", values);
    else
        json_decref(values);
    json_object_set_new(ds, key, attr);
}

/* The value at a document path ("field" or "metadata.Keyword"). */
static const json_t *doc_get(const json_t *doc, const char *path)
{
    if (!doc || !path)
        return NULL;
    if (!strncmp(path, "metadata.", 9))
        return json_object_get(json_object_get(doc, "metadata"), path + 9);
    return json_object_get(doc, path);
}

/* ------------------------------------------------------------- requests */

typedef struct {
    int level;
    const char *study; /* from the path, or NULL */
    const char *series;
    bool all; /* /series or /instances without a parent in the path */
} target_t;

static bool parse_target(const char *rest, target_t *t, char *buf, size_t cap)
{
    memset(t, 0, sizeof *t);
    snprintf(buf, cap, "%s", rest);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '/')
        buf[--n] = '\0';
    char *seg[6];
    int ns = 0;
    for (char *save = NULL, *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (ns == 6)
            return false;
        seg[ns++] = s;
    }
    if (ns == 1 && !strcmp(seg[0], "studies"))
        t->level = L_STUDY;
    else if (ns == 1 && !strcmp(seg[0], "series"))
        t->level = L_SERIES, t->all = true;
    else if (ns == 1 && !strcmp(seg[0], "instances"))
        t->level = L_INST, t->all = true;
    else if (ns == 3 && !strcmp(seg[0], "studies") && !strcmp(seg[2], "series"))
        t->level = L_SERIES, t->study = seg[1];
    else if (ns == 3 && !strcmp(seg[0], "studies") && !strcmp(seg[2], "instances"))
        t->level = L_INST, t->study = seg[1], t->all = true;
    else if (ns == 5 && !strcmp(seg[0], "studies") && !strcmp(seg[2], "series") && !strcmp(seg[4], "instances"))
        t->level = L_INST, t->study = seg[1], t->series = seg[3];
    else
        return false;
    return true;
}

static void qido_error(api_response_t *res, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void qido_error(api_response_t *res, int status, const char *fmt, ...)
{
    char detail[400], warn[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(warn, sizeof warn, "299 metadb: \"%.200s\"", detail);
    api_response_header(res, "Warning", warn);
    api_respond_error(res, status, status == 406 ? "not_acceptable" : "bad_query", "%s", detail);
}

static bool accept_ok(const char *accept)
{
    if (!accept || !*accept)
        return true;
    return strstr(accept, "application/dicom+json") || strstr(accept, "application/json") || strstr(accept, "*/*") ||
           strstr(accept, "application/*");
}

/* Attributes to return. */
typedef struct {
    attr_t *v;
    size_t n, cap;
    bool all;
} returns_t;

static bool returns_add(returns_t *r, const attr_t *a)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].tag == a->tag)
            return true;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        attr_t *nv = realloc(r->v, cap * sizeof *nv);
        if (!nv)
            return false;
        r->v = nv;
        r->cap = cap;
    }
    r->v[r->n++] = *a;
    return true;
}

/* Per level, the AND of the conditions that match there. */
typedef struct {
    json_t *items[NLEV];
} conds_t;

static void conds_add(conds_t *c, int level, json_t *item)
{
    if (!c->items[level])
        c->items[level] = json_array();
    json_array_append_new(c->items[level], item);
}

static json_t *conds_filter(const json_t *items)
{
    if (!json_array_size(items))
        return json_object();
    if (json_array_size(items) == 1)
        return json_incref(json_array_get(items, 0));
    return json_pack("{s:O}", "$and", items);
}

/* Fetch docs of collection whose `field` is in ids; returns an object
 * keyed by that field's value → doc (or array of docs when many). */
static json_t *fetch_by(api_ctx_t *ctx, const char *collection, const char *field, json_t *ids, bool many,
                        const char *projection_field, mdb_error_t *err)
{
    json_t *out = json_object();
    if (!json_array_size(ids))
        return out;
    json_t *flt = json_pack("{s:{s:O}}", field, "$in", ids);
    json_t *proj = projection_field ? json_pack("{s:i}", projection_field, 1) : NULL;
    mdb_query_level_t lv;
    mdb_query_level_parse(collection, &lv);
    mdb_nl_result_t *r = mdb_nl_result_from_filter(lv, flt, NULL, NULL, err);
    json_t *page = NULL;
    if (r) {
        int64_t max = 1000000;
        page = mdb_nl_run_projected(api_ctx_mongo(ctx), r, proj, max, 0, max,
                                    mdb_config_get_int(api_ctx_config(ctx), "api.query_time_ms"), err);
    }
    mdb_nl_result_destroy(r);
    json_decref(flt);
    json_decref(proj);
    if (!page) {
        json_decref(out);
        return NULL;
    }
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(page, "items"), i, d)
    {
        const char *k = json_string_value(json_object_get(d, field));
        if (!k)
            continue;
        if (!many) {
            json_object_set(out, k, d);
            continue;
        }
        json_t *arr = json_object_get(out, k);
        if (!arr) {
            arr = json_array();
            json_object_set_new(out, k, arr);
        }
        json_array_append(arr, d);
    }
    json_decref(page);
    return out;
}

/* Put attribute a of the documents (own, then series, then study) into ds. */
static void put_attr(json_t *ds, const attr_t *a, int level, const json_t *own, const json_t *series,
                     const json_t *study, const json_t *related)
{
    const json_t *docs[NLEV] = {study, series, own};
    if (level == L_SERIES)
        docs[L_INST] = NULL, docs[L_SERIES] = own;
    if (level == L_STUDY)
        docs[L_INST] = NULL, docs[L_SERIES] = NULL, docs[L_STUDY] = own;
    if (a->known && (a->known->flags & F_COMPUTED)) {
        if (a->tag == 0x00080005) {
            json_t *v = json_string("ISO_IR 192");
            encode_value(ds, a->tag, "CS", v);
            json_decref(v);
        } else if (a->tag == 0x00080061 || a->tag == 0x00201206 || a->tag == 0x00201208) {
            const json_t *st = level == L_STUDY ? own : study;
            const json_t *rel = st ? json_object_get(related, json_string_value(json_object_get(st, "_id"))) : NULL;
            json_t *v;
            if (a->tag == 0x00080061) {
                v = json_array();
                size_t i;
                json_t *se;
                json_array_foreach(rel, i, se)
                {
                    const json_t *m = json_object_get(se, "modality");
                    bool dup = false;
                    size_t j;
                    json_t *x;
                    json_array_foreach(v, j, x) dup = dup || json_equal(x, m);
                    if (json_is_string(m) && !dup)
                        json_array_append(v, (json_t *)m);
                }
            } else if (a->tag == 0x00201206) {
                v = json_integer((json_int_t)json_array_size(rel));
            } else {
                json_int_t sum = 0;
                size_t i;
                json_t *se;
                json_array_foreach(rel, i, se) sum += json_integer_value(json_object_get(se, "instance_count"));
                v = json_integer(sum);
            }
            encode_value(ds, a->tag, a->vr, v);
            json_decref(v);
        }
        return;
    }
    if (a->known) {
        /* the field at the documents of each level, own level first */
        for (int l = NLEV - 1; l >= 0; l--) {
            const json_t *d = docs[l];
            if (!d)
                continue;
            const char *path = a->known->paths[l];
            const json_t *v = doc_get(d, path);
            if (!v && path && !strcmp(path, "_id"))
                v = json_object_get(d, "_id");
            if (v) {
                encode_value(ds, a->tag, a->vr, v);
                return;
            }
            /* promoted fields also live in metadata under their keyword */
            char mp[100];
            snprintf(mp, sizeof mp, "metadata.%s", a->keyword);
            if ((v = doc_get(d, mp))) {
                encode_value(ds, a->tag, a->vr, v);
                return;
            }
        }
        /* asked for but absent: present with no value (PS3.18: zero-length) */
        encode_value(ds, a->tag, a->vr, NULL);
        return;
    }
    char mp[100];
    snprintf(mp, sizeof mp, "metadata.%s", a->keyword);
    for (int l = NLEV - 1; l >= 0; l--) {
        const json_t *v = doc_get(docs[l], mp);
        if (v) {
            encode_value(ds, a->tag, a->vr, v);
            return;
        }
    }
    encode_value(ds, a->tag, a->vr, NULL);
}

/* RetrieveURL (0008,1190): the WADO-RS resource of the entry (api/wado.c),
 * as a path on this server. */
static void put_retrieve_url(json_t *ds, int level, const json_t *d)
{
    const char *id = json_string_value(json_object_get(d, "_id"));
    const char *st = level == L_STUDY ? id : json_string_value(json_object_get(d, "study_id"));
    const char *se = level == L_SERIES ? id : json_string_value(json_object_get(d, "series_id"));
    char url[300];
    if (!id || !st || (level != L_STUDY && !se))
        return;
    if (level == L_STUDY)
        snprintf(url, sizeof url, "/dicomweb/studies/%s", st);
    else if (level == L_SERIES)
        snprintf(url, sizeof url, "/dicomweb/studies/%s/series/%s", st, se);
    else
        snprintf(url, sizeof url, "/dicomweb/studies/%s/series/%s/instances/%s", st, se, id);
    json_object_set_new(ds, "00081190", json_pack("{s:s, s:[s]}", "vr", "UR", "Value", url));
}

static int cmp_attr(const void *x, const void *y)
{
    const attr_t *a = x, *b = y;
    return a->tag < b->tag ? -1 : a->tag > b->tag;
}

/* includefield=all: every metadata keyword of the level's document. */
static void add_all_metadata(returns_t *r, const json_t *doc)
{
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get((json_t *)doc, "metadata"), k, v)
    {
        attr_t a;
        if (!is_hex8(k) && resolve_attr(k, &a) && strcmp(a.vr, "UN") && !vr_is(a.vr, VR_BINARY))
            returns_add(r, &a);
    }
}

static void handle(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const target_t *t)
{
    const mdb_config_t *cfg = api_ctx_config(ctx);
    int64_t max_limit = mdb_config_get_int(cfg, "api.max_limit");
    int64_t limit = max_limit, offset = 0;
    bool fuzzy_warning = false, limit_given = false;
    returns_t ret = {0};
    conds_t conds = {{NULL}};
    json_t *own = NULL, *joins = json_array(), *page = NULL, *out = NULL, *studies = NULL, *series = NULL,
           *related = NULL;
    mdb_nl_result_t *r = NULL;
    mdb_error_t err = {0};
    char detail[300];

    /* path constraints */
    if ((t->study && !uid_ok(t->study)) || (t->series && !uid_ok(t->series))) {
        qido_error(res, 400, "the UID in the path is not a valid UID");
        goto done;
    }
    if (t->study)
        conds_add(&conds, t->level, json_pack("{s:s}", t->level == L_STUDY ? "_id" : "study_id", t->study));
    if (t->series)
        conds_add(&conds, t->level, json_pack("{s:s}", "series_id", t->series));

    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key, *v = req->args[i].value;
        json_t *probe = json_pack("{s:s}", k, v); /* jansson refuses invalid UTF-8 */
        if (!probe) {
            qido_error(res, 400, "query parameter %zu is not valid UTF-8", i + 1);
            goto done;
        }
        json_decref(probe);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(req->args[j].key, k) && strcmp(k, "includefield")) {
                qido_error(res, 400, "query parameter '%.64s' is given more than once", k);
                goto done;
            }
        if (!strcmp(k, "limit") || !strcmp(k, "offset")) {
            char *end;
            long long n = strtoll(v, &end, 10);
            if (!*v || *end || n < (k[0] == 'l' ? 1 : 0) || (k[0] == 'l' && n > max_limit) || n > 10000000) {
                qido_error(res, 400, "%s must be an integer in [%d, %lld]", k, k[0] == 'l' ? 1 : 0,
                           k[0] == 'l' ? (long long)max_limit : 10000000LL);
                goto done;
            }
            if (k[0] == 'l')
                limit = n, limit_given = true;
            else
                offset = n;
            continue;
        }
        if (!strcmp(k, "fuzzymatching")) {
            if (strcmp(v, "false") && strcmp(v, "true")) {
                qido_error(res, 400, "fuzzymatching must be true or false");
                goto done;
            }
            fuzzy_warning = !strcmp(v, "true");
            continue;
        }
        if (!strcmp(k, "includefield")) {
            char *buf = NULL;
            size_t n = 0;
            char **names = split_values(v, ",", &buf, &n);
            for (size_t j = 0; names && j < n; j++) {
                attr_t a;
                if (!strcmp(names[j], "all")) {
                    ret.all = true;
                } else if (!resolve_attr(names[j], &a)) {
                    qido_error(res, 400, "includefield: '%.64s' is not a DICOM keyword or tag", names[j]);
                    free(names);
                    free(buf);
                    goto done;
                } else {
                    returns_add(&ret, &a);
                }
            }
            free(names);
            free(buf);
            continue;
        }
        if (!strcmp(k, "_"))
            continue; /* cache buster some clients add */
        attr_t a;
        if (!resolve_attr(k, &a)) {
            qido_error(res, 400,
                       "unknown query parameter '%.64s' (attribute keywords or tags, includefield, limit, offset, "
                       "fuzzymatching)",
                       k);
            goto done;
        }
        returns_add(&ret, &a); /* matching keys are returned */
        if (a.known && (a.known->flags & F_NOMATCH)) {
            qido_error(res, 400, "matching on %s is not supported", a.keyword);
            goto done;
        }
        bool ok;
        if (a.known && a.known->tag == 0x00080061) {
            /* ModalitiesInStudy: studies having a series of that modality */
            if (t->level != L_STUDY) {
                qido_error(res, 400, "ModalitiesInStudy is a study-level matching key");
                goto done;
            }
            attr_t mod;
            resolve_attr("Modality", &mod);
            json_t *c = match_condition(&mod, "modality", v, detail, sizeof detail, &ok);
            if (!ok) {
                qido_error(res, 400, "%s", detail);
                goto done;
            }
            if (c)
                conds_add(&conds, L_SERIES, c);
            continue;
        }
        int at = t->level;
        const char *path;
        char mp[100];
        if (a.known) {
            path = a.known->paths[t->level];
            if (!path) {
                at = a.known->home;
                path = a.known->paths[at];
            }
        } else {
            snprintf(mp, sizeof mp, "metadata.%s", a.keyword);
            path = mp;
        }
        json_t *c = match_condition(&a, path, v, detail, sizeof detail, &ok);
        if (!ok) {
            qido_error(res, 400, "%s", detail);
            goto done;
        }
        if (c)
            conds_add(&conds, at, c);
    }
    (void)limit_given;

    own = conds_filter(conds.items[t->level]);
    for (int l = 0; l < NLEV; l++)
        if (l != t->level && conds.items[l])
            json_array_append_new(joins, json_pack("{s:s, s:o}", "level", mdb_query_level_name((mdb_query_level_t)l),
                                                   "filter", conds_filter(conds.items[l])));
    r = mdb_nl_result_from_filter((mdb_query_level_t)t->level, own, joins, NULL, &err);
    if (!r) {
        api_respond_mdb_error(res, &err);
        goto done;
    }
    page =
        mdb_nl_run(api_ctx_mongo(ctx), r, limit, offset, max_limit, mdb_config_get_int(cfg, "api.query_time_ms"), &err);
    if (!page) {
        api_respond_mdb_error(res, &err);
        goto done;
    }
    json_t *items = json_object_get(page, "items");

    /* the related documents the answer needs */
    json_t *ids = json_array(), *study_ids = json_array(), *series_ids = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(items, i, d)
    {
        json_array_append(ids, json_object_get(d, "_id"));
        if (json_object_get(d, "study_id"))
            json_array_append(study_ids, json_object_get(d, "study_id"));
        if (json_object_get(d, "series_id"))
            json_array_append(series_ids, json_object_get(d, "series_id"));
    }
    bool need_related = t->level == L_STUDY || t->all;
    if (t->level != L_STUDY)
        studies = fetch_by(ctx, "studies", "_id", study_ids, false, NULL, &err);
    if (studies && t->level == L_INST)
        series = fetch_by(ctx, "series", "_id", series_ids, false, NULL, &err);
    if (need_related && (t->level == L_STUDY || studies))
        related = fetch_by(ctx, "series", "study_id", t->level == L_STUDY ? ids : study_ids, true, NULL, &err);
    json_decref(ids);
    json_decref(study_ids);
    json_decref(series_ids);
    if ((t->level != L_STUDY && !studies) || (t->level == L_INST && !series) || (need_related && !related)) {
        api_respond_mdb_error(res, &err);
        goto done;
    }

    /* the default attributes of the level (and of the parents for "all" resources) */
    unsigned def = t->level == L_STUDY ? F_DEF_STUDY : t->level == L_SERIES ? F_DEF_SERIES : F_DEF_INST;
    if (t->all)
        def |= F_DEF_STUDY | (t->level == L_INST ? F_DEF_SERIES : 0);
    for (size_t k = 0; k < NATTRS; k++) {
        if (!(ATTRS[k].flags & def) || ATTRS[k].tag == 0x00080005)
            continue;
        attr_t a;
        resolve_attr(ATTRS[k].keyword, &a);
        returns_add(&ret, &a);
    }
    attr_t cs;
    resolve_attr("SpecificCharacterSet", &cs);
    returns_add(&ret, &cs);

    out = json_array();
    json_array_foreach(items, i, d)
    {
        returns_t mine = ret;
        returns_t extra = {0};
        if (ret.all) {
            for (size_t k = 0; k < ret.n; k++)
                returns_add(&extra, &ret.v[k]);
            add_all_metadata(&extra, d);
            mine = extra;
        }
        attr_t *sorted = malloc((mine.n ? mine.n : 1) * sizeof *sorted);
        if (!sorted) {
            free(extra.v);
            api_respond_error(res, 500, "internal", "out of memory");
            goto done;
        }
        memcpy(sorted, mine.v, mine.n * sizeof *sorted);
        qsort(sorted, mine.n, sizeof *sorted, cmp_attr);
        const json_t *st =
            t->level == L_STUDY ? NULL : json_object_get(studies, json_string_value(json_object_get(d, "study_id")));
        const json_t *se =
            t->level == L_INST ? json_object_get(series, json_string_value(json_object_get(d, "series_id"))) : NULL;
        json_t *ds = json_object();
        for (size_t k = 0; k < mine.n; k++)
            put_attr(ds, &sorted[k], t->level, d, se, st, related);
        put_retrieve_url(ds, t->level, d);
        json_array_append_new(out, ds);
        free(sorted);
        free(extra.v);
    }
    int64_t total = json_integer_value(json_object_get(page, "total"));
    if (fuzzy_warning)
        api_response_header(res, "Warning",
                            "299 metadb: \"The fuzzymatching parameter is not supported. Only literal matching has "
                            "been performed.\"");
    if (total > offset + (int64_t)json_array_size(out)) {
        char warn[200];
        snprintf(warn, sizeof warn, "299 metadb: \"%lld matches; %zu returned from offset %lld (use limit/offset)\"",
                 (long long)total, json_array_size(out), (long long)offset);
        api_response_header(res, "Warning", warn);
    }
    char tc[32];
    snprintf(tc, sizeof tc, "%lld", (long long)total);
    api_response_header(res, "X-Total-Count", tc);
    api_respond_json_ct(res, 200, out, "application/dicom+json");
    out = NULL;
done:
    for (int l = 0; l < NLEV; l++)
        json_decref(conds.items[l]);
    free(ret.v);
    json_decref(own);
    json_decref(joins);
    json_decref(page);
    json_decref(out);
    json_decref(studies);
    json_decref(series);
    json_decref(related);
    mdb_nl_result_destroy(r);
}

bool api_route_qido(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *rest = api_path_after(req, "/dicomweb");
    target_t t;
    char buf[512];
    if (!rest)
        return false;
    if (strlen(rest) >= sizeof buf || !parse_target(rest, &t, buf, sizeof buf))
        return api_route_wado(ctx, req, res, rest); /* retrieval: api/wado.c */
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        api_response_header(res, "Allow", "GET, HEAD");
        api_respond_error(res, 405, "method_not_allowed", "QIDO-RS answers GET only (no STOW-RS here)");
        return true;
    }
    if (!accept_ok(req->accept)) {
        qido_error(res, 406, "only application/dicom+json is offered (Accept: %.100s)", req->accept);
        return true;
    }
    handle(ctx, req, res, &t);
    return true;
}
