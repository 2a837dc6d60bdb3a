/* mdb_query_fields: the promoted fields of each level, their aliases and
 * types, metadata.<Keyword> paths, and how a child level names its parents'
 * fields ("study.<field>", "series.<field>"). */
#include "mdb_query_private.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const mdb_qfield_t study_fields[] = {
    {"_id", MDB_QFIELD_STRING, "study_instance_uid study_uid uid", "StudyInstanceUID"},
    {"accession_number", MDB_QFIELD_STRING, "accession", "AccessionNumber"},
    {"patient_id", MDB_QFIELD_STRING, "patient", "PatientID"},
    {"study_date", MDB_QFIELD_DATE, "date", "StudyDate (YYYYMMDD)"},
    {"study_description", MDB_QFIELD_STRING, "description", "StudyDescription"},
    {"modality", MDB_QFIELD_STRING, "modalities", "Modality, or any modality of the study's series"},
    {"acquisition_datetime", MDB_QFIELD_STRING, NULL, "AcquisitionDateTime"},
    {"collection_ids", MDB_QFIELD_STRING, "collection", "collection the study belongs to"},
    {"job_ids", MDB_QFIELD_STRING, "job", "job that loaded the study"},
    {"series_count", MDB_QFIELD_NUMBER, NULL, "number of series of the study"},
    {"instance_count", MDB_QFIELD_NUMBER, NULL, "number of instances of the study"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

static const mdb_qfield_t series_fields[] = {
    {"_id", MDB_QFIELD_STRING, "series_instance_uid series_uid uid", "SeriesInstanceUID"},
    {"study_id", MDB_QFIELD_STRING, "study study_uid study_instance_uid", "parent StudyInstanceUID"},
    {"series_number", MDB_QFIELD_NUMBER, NULL, "SeriesNumber"},
    {"series_description", MDB_QFIELD_STRING, "description", "SeriesDescription"},
    {"modality", MDB_QFIELD_STRING, NULL, "Modality"},
    {"body_part_examined", MDB_QFIELD_STRING, "body_part", "BodyPartExamined"},
    {"series_date", MDB_QFIELD_DATE, NULL, "SeriesDate (YYYYMMDD)"},
    {"series_time", MDB_QFIELD_STRING, NULL, "SeriesTime"},
    {"manufacturer", MDB_QFIELD_STRING, NULL, "Manufacturer"},
    {"manufacturer_model_name", MDB_QFIELD_STRING, "model", "ManufacturerModelName"},
    {"protocol_name", MDB_QFIELD_STRING, "protocol", "ProtocolName"},
    {"kvp", MDB_QFIELD_NUMBER, NULL, "KVP"},
    {"slice_thickness", MDB_QFIELD_NUMBER, NULL, "SliceThickness (mm)"},
    {"instance_count", MDB_QFIELD_NUMBER, NULL, "number of instances"},
    {"collection_ids", MDB_QFIELD_STRING, "collection", "collection the series belongs to"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

static const mdb_qfield_t instance_fields[] = {
    {"_id", MDB_QFIELD_STRING, "sop_instance_uid sop_uid uid", "SOPInstanceUID"},
    {"series_id", MDB_QFIELD_STRING, "series_uid series_instance_uid", "parent SeriesInstanceUID"},
    {"study_id", MDB_QFIELD_STRING, "study study_uid study_instance_uid", "StudyInstanceUID"},
    {"sop_class_uid", MDB_QFIELD_STRING, "sop_class", "SOPClassUID"},
    {"instance_number", MDB_QFIELD_NUMBER, NULL, "InstanceNumber"},
    {"acquisition_datetime", MDB_QFIELD_STRING, NULL, "AcquisitionDateTime"},
    {"paths", MDB_QFIELD_STRING, "path", "archive path of the file"},
    {"job_ids", MDB_QFIELD_STRING, "job", "job that loaded the instance"},
    {"integrity", MDB_QFIELD_STRING, NULL,
     "present when the file is damaged (Pixel Data cut short): integrity=exists:true or exists:false"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

const mdb_qfield_t *mdb_query_fields(mdb_query_level_t level, size_t *n)
{
    switch (level) {
    case MDB_QUERY_STUDIES: *n = sizeof study_fields / sizeof study_fields[0]; return study_fields;
    case MDB_QUERY_SERIES: *n = sizeof series_fields / sizeof series_fields[0]; return series_fields;
    case MDB_QUERY_INSTANCES: *n = sizeof instance_fields / sizeof instance_fields[0]; return instance_fields;
    default: *n = 0; return NULL;
    }
}

static bool alias_match(const char *aliases, const char *param)
{
    size_t plen = strlen(param);
    for (const char *p = aliases; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == plen && !strncmp(p, param, len))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* A metadata keyword path: letters, digits, '_' segments separated by '.'
 * (nested sequence items), each segment non-empty, first char a letter. */
static bool valid_keyword_path(const char *s)
{
    if (!*s || strlen(s) > 200)
        return false;
    bool seg_start = true;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (seg_start)
                return false;
            seg_start = true;
            continue;
        }
        if (seg_start ? !isalpha((unsigned char)*p) : !(isalnum((unsigned char)*p) || *p == '_'))
            return false;
        seg_start = false;
    }
    return !seg_start;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Returns the field entry for param on this level or NULL. For
 * metadata.<Keyword> returns a pointer to a static entry and sets *meta. */
const mdb_qfield_t *mdb_query_find_field(mdb_query_level_t level, const char *param, bool *meta)
{
    static const mdb_qfield_t meta_any = {"metadata", MDB_QFIELD_ANY, NULL, NULL};
    static const mdb_qfield_t meta_date = {"metadata", MDB_QFIELD_DATE, NULL, NULL};
    size_t n;
    const mdb_qfield_t *f = mdb_query_fields(level, &n);
    *meta = false;
    if (!strncmp(param, "metadata.", 9)) {
        if (!valid_keyword_path(param + 9))
            return NULL;
        *meta = true;
        return ends_with(param, "Date") ? &meta_date : &meta_any;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, param) && strcmp(param, "_id") != 0)
            return &f[i];
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, param) || alias_match(f[i].aliases, param))
            return &f[i];
    return NULL;
}

/* The parents of a level and how a child names them: a series or an
 * instance carries its study's _id in study_id and shows the study's fields
 * under "study."; an instance carries series_id and shows "series.". */
const char *const mdb_query_parent_names[MDB_QUERY_LEVEL_COUNT] = {"study", "series", NULL};
const char *const mdb_query_parent_keys[MDB_QUERY_LEVEL_COUNT] = {"study_id", "series_id", NULL};

/* When name is "study.<rest>" or "series.<rest>" naming a parent of level,
 * set *parent and return rest; else NULL. */
const char *mdb_query_parent_prefix(mdb_query_level_t level, const char *name, mdb_query_level_t *parent)
{
    if (level >= MDB_QUERY_LEVEL_COUNT) /* raw queries on jobs, collections, conflicts */
        return NULL;
    for (int l = 0; l < (int)level; l++) {
        size_t n = strlen(mdb_query_parent_names[l]);
        if (!strncmp(name, mdb_query_parent_names[l], n) && name[n] == '.' && name[n + 1]) {
            *parent = (mdb_query_level_t)l;
            return name + n + 1;
        }
    }
    return NULL;
}

const char *mdb_query_resolve_field(mdb_query_level_t level, const char *param, mdb_qfield_type_t *type)
{
    bool meta;
    if (!param || level >= MDB_QUERY_LEVEL_COUNT)
        return NULL;
    const mdb_qfield_t *f = mdb_query_find_field(level, param, &meta);
    if (!f)
        return NULL;
    if (type)
        *type = f->type;
    return meta ? param : f->name;
}

/* Field names printed in "unknown field" errors. */
void mdb_query_known_fields(mdb_query_level_t level, char *buf, size_t size)
{
    size_t n, off = 0;
    const mdb_qfield_t *f = mdb_query_fields(level, &n);
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < size; i++) {
        const char *name = f[i].name;
        if (!strcmp(name, "_id")) /* the first alias is the readable name */
            name = level == MDB_QUERY_STUDIES  ? "study_instance_uid"
                   : level == MDB_QUERY_SERIES ? "series_instance_uid"
                                               : "sop_instance_uid";
        else if (!strcmp(name, "collection_ids"))
            name = "collection";
        else if (!strcmp(name, "job_ids"))
            name = "job";
        int w = snprintf(buf + off, size - off, "%s%s", off ? ", " : "", name);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (off < size)
        snprintf(buf + off, size - off, ", metadata.<Keyword>");
}
