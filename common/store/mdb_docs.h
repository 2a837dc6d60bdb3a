/* mdb_docs: the merge model, how instance events become study, series and
 * instance documents. Pure: it reads and writes only through an mdb_store_t
 * (mdb_store.h), so the linker (one model per batch, MongoDB store),
 * `metadb reconcile` (rebuilding documents from the files) and the unit
 * tests (the in-memory store) apply exactly the same rules.
 *
 * MERGE RULES (order-independent, idempotent):
 *  - An instance document's content (parents, promoted fields, metadata,
 *    file, dicom, integrity) comes from the event with the smallest path (strcmp);
 *    paths[] and job_ids[] are the sorted union of every event's.
 *  - A study/series field (metadata keyword "m:<Keyword>", promoted field
 *    "p:<field>", the series' parent "study_id") takes the value of the
 *    observation with the smallest path among those with a non-empty value
 *    (null and "" count as empty: a value fills what is missing). _src{}
 *    of the document records, per field, the path the value came from.
 *  - When observations disagree (two non-empty values that differ), the
 *    disagreement is recorded in `conflicts`
 *    {_id "<kind>:<uid>:<field>", kind, uid, field, values[{value, path}]},
 *    one entry per distinct value with the smallest path carrying it, sorted
 *    by path. Kinds: study_attribute, series_attribute (metadata keywords;
 *    promoted fields mirror them and are not recorded twice), series_parent
 *    (field study_id), instance_parent (fields series_id, study_id).
 *    Attributes that legitimately vary per instance (ImagePositionPatient,
 *    AcquisitionDateTime, ..., and Modality at study level) are merged the
 *    same way but not recorded.
 *  - Numbers compare by value (1 == 1.0).
 *  - Series: instance_count = number of instance documents whose series_id
 *    is the series (counted by the store). Studies: series[] summary
 *    {series_instance_uid, series_number, series_description, modality,
 *    instance_count} of every series whose study_id is the study, sorted by
 *    series_number (missing last) then UID; modalities (sorted, unique),
 *    series_count, instance_count (sum over series[]).
 *  - collection_ids[] (studies, series) and job_ids[] (studies, instances)
 *    are sorted unions.
 * Every fact above is a function of the set of events seen, so any order,
 * split into batches, or redelivery gives byte-identical documents.
 *
 * Values are JSON (jansson) inside the model; mdb_bson_json.h converts
 * them exactly to and from BSON, so a document read back compares equal to
 * the one written. */
#ifndef MDB_DOCS_H
#define MDB_DOCS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_DOCS_STUDIES "studies"
#define MDB_DOCS_SERIES "series"
#define MDB_DOCS_INSTANCES "instances"
#define MDB_DOCS_CONFLICTS "conflicts"

/* ---- values ---- */

/* True if a and b are equal values (numbers by value, objects by members
 * regardless of order, arrays element-wise). NULLs equal only each other. */
bool mdb_docs_value_equal(const json_t *a, const json_t *b);
/* Canonical text of v (objects with sorted keys, numbers normalised so that
 * equal values have equal text). Caller frees. NULL on OOM. */
char *mdb_docs_value_key(const json_t *v);
/* null, "" or absent (NULL). */
bool mdb_docs_value_empty(const json_t *v);
/* Is this keyword merged without recording conflicts at the given level
 * (MDB_DOCS_LEVEL_STUDY/SERIES)? */
bool mdb_docs_keyword_varies(int level, const char *keyword);

enum { MDB_DOCS_LEVEL_STUDY = 0, MDB_DOCS_LEVEL_SERIES = 1, MDB_DOCS_LEVEL_INSTANCE = 2 };

/* ---- the model of one batch ---- */

typedef struct mdb_docs_model mdb_docs_model_t;

/* One instance event. Objects are borrowed; the model takes its own
 * references. collection is the name of the job's collection (NULL if
 * none). dicom / file / feature_set may be NULL. */
typedef struct {
    const char *job_id;
    const char *path;
    const char *collection;
    const char *feature_set;
    const json_t *study;
    const json_t *series;
    const json_t *instance;
    const json_t *file;
    const json_t *dicom;
    const json_t *integrity; /* the event's "integrity" object (damaged file), NULL if none */
    /* Where the event was consumed ("topic:partition") and its offset; NULL
     * / negative when it has none. When every event of a model has an origin,
     * mdb_docs_apply counts incrementally (see "Counting" below). */
    const char *origin;
    int64_t offset;
} mdb_docs_event_t;

mdb_docs_model_t *mdb_docs_model_new(void);

/* Counting. When every event has an origin the model counts incrementally
 * (O(batch): no read of a series' other instances) and recounts, with the
 * store's indexed count, only what it cannot decide exactly (an instance
 * moving to another series, a series written from another partition, a
 * document written before origins existed). Exactness under redelivery comes from origin tags:
 *
 *   instance._ins      {t, o}: the record whose batch inserted it
 *   instance._jl[job]  {t, o}: the record whose batch added the job
 *   series._lo         {t, o}: the partition whose batches write it and the
 *                      highest offset its instance_count includes
 *
 * A duplicate instance whose _ins is a record of this batch was inserted by
 * a batch that died before committing: it is counted in its series iff the
 * series' _lo.o reached that offset. The same test against the job's
 * applied offset per partition (set with mdb_docs_model_set_applied) decides
 * instances_linked; mdb_docs_model_link_deltas gives the result. */

/* applied: {"<job_id>\n<topic:partition>": offset} (borrowed until apply):
 * the highest offset of that partition whose instances_linked delta the
 * job's progress includes. Absent pairs count as -1. */
void mdb_docs_model_set_applied(mdb_docs_model_t *m, const json_t *applied);
void mdb_docs_model_destroy(mdb_docs_model_t *m); /* accepts NULL */

/* Add one event. False (err set) if it lacks one of the three UIDs or on OOM. */
bool mdb_docs_model_add_event(mdb_docs_model_t *m, const mdb_docs_event_t *ev, mdb_error_t *err);
size_t mdb_docs_model_event_count(const mdb_docs_model_t *m);

/* What one mdb_docs_apply did. */
typedef struct {
    size_t events;
    size_t instances_new;      /* instance documents created */
    size_t instances_existing; /* SOP UIDs that existed already */
    size_t instances_written;  /* existing instance documents changed */
    size_t series_written;
    size_t studies_written;
    size_t conflicts_written;
    size_t series_recounted; /* series whose instance_count was recounted from instances */
} mdb_docs_stats_t;

/* Merge the model's events into the store: load what exists, insert new
 * instances, update existing ones that change, recount the touched series,
 * then write the series, studies and conflicts that change. now is the ISO
 * timestamp used for created_at/updated_at. Idempotent: applying the same
 * events again writes nothing. stats may be NULL. */
bool mdb_docs_apply(mdb_docs_model_t *m, const mdb_store_t *st, const char *now, mdb_docs_stats_t *stats,
                    mdb_error_t *err);

/* After mdb_docs_apply: job_id -> number of instance documents linked to
 * that job (job_ids contains it), for every job of the model's events
 * (borrowed; valid until the model is destroyed). */
const json_t *mdb_docs_model_job_counts(const mdb_docs_model_t *m);

/* After an incremental mdb_docs_apply: {job_id: {"topic:partition": n}},
 * the instances this batch linked to each job, by the partition whose
 * progress they belong to (borrowed; NULL when the model recounted). */
const json_t *mdb_docs_model_link_deltas(const mdb_docs_model_t *m);

/* ---- derived fields (reconcile) ---- */

/* The series[] summary entry of a series document (new reference). */
json_t *mdb_docs_series_summary(const json_t *series_doc);
/* Sort a series[] summary array in place (series_number, missing last, then UID). */
void mdb_docs_sort_summaries(json_t *summaries);
/* Set series, modalities, series_count and instance_count of study_doc from
 * the series documents whose study_id is the study (array, any order). */
bool mdb_docs_study_set_derived(json_t *study_doc, const json_t *series_docs);
/* Sort an array of strings in place and drop duplicates. */
void mdb_docs_sort_strings(json_t *arr);

#ifdef __cplusplus
}
#endif
#endif
