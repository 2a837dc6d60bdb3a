/* mdb_docs: how instance events become study, series and instance
 * documents. Shared by the linker (one model per batch), `metadb reconcile`
 * (rebuilding documents from the files) and the unit tests (an in-memory
 * store), so all three apply exactly the same rules.
 *
 * MERGE RULES (order-independent, idempotent):
 *  - An instance document's content (parents, promoted fields, metadata,
 *    file, dicom) comes from the event with the smallest path (strcmp);
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
 * Values are JSON (jansson) inside the model; mdb_docs_json_to_bson /
 * mdb_docs_bson_to_json convert exactly (integer <-> int32/int64, real <->
 * double), so a document read back compares equal to the one written. */
#ifndef MDB_DOCS_H
#define MDB_DOCS_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_DOCS_STUDIES "studies"
#define MDB_DOCS_SERIES "series"
#define MDB_DOCS_INSTANCES "instances"
#define MDB_DOCS_CONFLICTS "conflicts"

/* Update statements per update command on FerretDB 1.24 (SQLite): an
 * update statement that matches a document keeps one of the database's 100
 * connections until its command ends, so a command of ~100 statements (or
 * a few concurrent ones, from several linkers and the API) deadlocks the
 * database. 20 leaves room for five concurrent writers. MongoDB takes
 * MDB_DOCS_UPDATE_CHUNK_MONGO. */
#define MDB_DOCS_UPDATE_CHUNK 20
#define MDB_DOCS_UPDATE_CHUNK_MONGO 1000

/* ---- JSON <-> BSON ---- */

/* Append every member of the JSON object obj to b. False on a value BSON
 * cannot hold (never for decoded JSON) or OOM. */
bool mdb_docs_json_to_bson(const json_t *obj, bson_t *b);
/* Append JSON value v under key to b. */
bool mdb_docs_append_json(bson_t *b, const char *key, const json_t *v);
/* New JSON object from a BSON document (new reference, NULL on OOM or on a
 * BSON type without JSON form, which metadb never writes). Dates become ISO
 * strings, ObjectIds hex strings. */
json_t *mdb_docs_bson_to_json(const bson_t *b);

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
    /* Where the event was consumed ("topic:partition") and its offset; NULL
     * / negative when it has none. When every event of a model has an origin,
     * mdb_docs_apply counts incrementally (see "Counting" below). */
    const char *origin;
    int64_t offset;
} mdb_docs_event_t;

mdb_docs_model_t *mdb_docs_model_new(void);

/* Counting. Recounting instances per series and per job reads the whole
 * instances collection on FerretDB (no secondary index is used), so when
 * every event has an origin the model counts incrementally and recounts
 * only what it cannot decide exactly (an instance moving to another series,
 * a series written from another partition, a document written before
 * origins existed). Exactness under redelivery comes from origin tags:
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

/* ---- the store: where documents are read and written ---- */

/* Every callback returns false and fills err on failure. Documents passed
 * in and out are JSON objects with "_id". */
typedef struct {
    void *ud;
    /* Append to out (a JSON array) the studies whose _id is in ids. */
    bool (*load_studies)(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);
    /* Append the series whose _id is in ids OR whose study_id is in study_ids. */
    bool (*load_series)(void *ud, const char *const *ids, size_t n, const char *const *study_ids, size_t nstudies,
                        json_t *out, mdb_error_t *err);
    /* Append the conflicts whose uid is in uids. */
    bool (*load_conflicts)(void *ud, const char *const *uids, size_t n, json_t *out, mdb_error_t *err);
    /* Append the instances whose _id is in ids. */
    bool (*load_instances)(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);
    /* Insert docs (array) into coll; documents whose _id exists already are
     * left alone and their _id strings appended to dups (array). */
    bool (*insert)(void *ud, const char *coll, const json_t *docs, json_t *dups, mdb_error_t *err);
    /* Set counts[series_id] = number of instances with that series_id, for
     * each id (0 included), and job_counts[job_id] = number of instances
     * whose job_ids contains job_id, for each of the njobs job ids (0
     * included; one pass over the instances for both). */
    bool (*count_instances)(void *ud, const char *const *series_ids, size_t n, const char *const *job_ids,
                            size_t njobs, json_t *counts, json_t *job_counts, mdb_error_t *err);
    /* Optional (NULL: count_instances is used): counts[series_id] = number
     * of instances with that series_id, leaving out those whose _ins is
     * {t: tp, o > upto} (inserted by records after the batch: their own
     * batch counts them). */
    bool (*count_series)(void *ud, const char *const *series_ids, size_t n, const char *tp, int64_t upto,
                         json_t *counts, mdb_error_t *err);
    /* Write docs (array of full documents) to coll: for each, create it if
     * absent (created_at = now) or $set every top-level field it has. */
    bool (*upsert)(void *ud, const char *coll, const json_t *docs, const char *now, mdb_error_t *err);
    /* Optional (may be NULL): finish what a writer that died mid-write left
     * behind, before anything is read (see the MongoDB store). */
    bool (*recover)(void *ud, const char *now, mdb_error_t *err);
} mdb_docs_store_t;

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
bool mdb_docs_apply(mdb_docs_model_t *m, const mdb_docs_store_t *st, const char *now, mdb_docs_stats_t *stats,
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

/* ---- the MongoDB store ---- */

#define MDB_DOCS_JOURNAL "instances_journal"

/* A store over m (client popped per call) writing with write concern wc
 * ("1", "majority" or NULL). Free with mdb_docs_mongo_store_destroy.
 *
 * On FerretDB (detected with buildInfo, one round trip here) an update
 * scans the whole collection per document, so existing instances, series
 * and studies that change are replaced in four commands whatever their
 * number: their new versions go to MDB_DOCS_JOURNAL ({_id, coll, at, doc};
 * _id is the instance's _id, or "<coll>\n<_id>"), the old ones are deleted,
 * the new ones inserted, the journal entries deleted. recover() (run by
 * mdb_docs_apply before it reads) re-inserts any journalled version whose
 * document is missing (a writer died between delete and insert) and drops
 * journal entries older than five minutes whose document exists. A reader
 * can miss a document for the few milliseconds between delete and insert.
 * On MongoDB documents are updated in place. NULL on OOM. */
mdb_docs_store_t *mdb_docs_mongo_store_new(mdb_mongo_t *m, const char *wc);
/* Whether the store replaces instances through the journal (FerretDB). */
bool mdb_docs_mongo_store_journaled(const mdb_docs_store_t *st);
/* Statements per update command for this store's database. */
size_t mdb_docs_mongo_store_update_chunk(const mdb_docs_store_t *st);
void mdb_docs_mongo_store_destroy(mdb_docs_store_t *st); /* accepts NULL */

/* Helpers shared by the linker and reconcile (all count their round trips
 * on m). Find documents of coll matching filter into out (array of JSON
 * objects); projection and sort may be NULL; limit 0 = all. */
bool mdb_docs_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *projection,
                   const bson_t *sort, int64_t limit, json_t *out, mdb_error_t *err);
/* Run an aggregation pipeline (BSON array document) on coll into out. */
bool mdb_docs_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, json_t *out, mdb_error_t *err);
/* Append {key: {$in: [ids...]}} to filter. */
void mdb_docs_append_in(bson_t *filter, const char *key, const char *const *ids, size_t n);
/* Run n update statements in commands of at most chunk statements (0 =
 * MDB_DOCS_UPDATE_CHUNK): add_fn is called for op i in [0, n) to add it to
 * a fresh mdb_bulk. */
typedef bool (*mdb_docs_add_op_fn)(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err);
bool mdb_docs_bulk_chunked(mdb_mongo_t *m, const char *coll, const char *wc, size_t chunk, size_t n,
                           mdb_docs_add_op_fn add_fn, void *ud, mdb_error_t *err);
/* Create the indexes of the catalogue collections (studies, series,
 * instances, conflicts, job_files' job_id/status), one createIndexes per
 * index (idempotent). */
bool mdb_docs_ensure_indexes(mdb_mongo_t *m, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
