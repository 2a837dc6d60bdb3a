/* Integration test of metadb-linker against the live stack: crafted
 * instance events and DLQ records are published to this test's own topics,
 * the real linker binary links them into this test's own database, and the
 * documents are checked field by field:
 *  A. documents: studies/series/instances with promoted fields, metadata,
 *     exact instance_count, series[] summaries, collection_ids from the
 *     job's collection, paths of a copied file; a duplicate SOPInstanceUID
 *     under two series is recorded in conflicts; the job's counters are
 *     exact (done, failed from a worker DLQ record and from an invalid event
 *     the linker itself sends to the DLQ; flagged: two events carry an
 *     "integrity" object, copied to their instances) and the job ends
 *     completed_with_errors with both reasons in errors[].
 *  B. redelivery: a second linker in a fresh group replays every record;
 *     the canonical dump is byte-identical and no counter moves.
 *  C. out of order: the same records, reversed, each twice, in batches of
 *     3, into another database: the canonical dump equals A's.
 *  D. round trips: the linker's exit report is printed (round trips per
 *     event). */
#include "linker_itest.h"
#include "mdb_docs.h"
#include "mdb_dump.h"
#include "mdb_find.h"
#include "mdb_mongo.h"

typedef struct {
    const char *path, *study, *series, *sop, *desc, *modality;
    int number, inum;
} spec_t;

/* ST1: S1 (CT, 4 files + x), S2 (CT scout); ST2: S3 (CR, 2 files + x again). */
static const spec_t SPECS[] = {
    {"/arch/p1/st1/s1/1.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.1.1", "AXIAL", "CT", 2, 1},
    {"/arch/p1/st1/s1/2.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.1.2", "AXIAL", "CT", 2, 2},
    {"/arch/p1/st1/s1/3.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.1.3", NULL, "CT", 2, 3},
    {"/arch/p1/st1/s1/4.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.1.4", "AXIAL", "CT", 2, 4},
    {"/arch/p1/st1/s1/x.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.9.9", "AXIAL", "CT", 2, 5},
    {"/arch/p1/st1/s2/1.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.2", "1.2.826.0.1.1.2.1", "SCOUT", "CT", 1, 1},
    {"/arch/p1/st2/s3/1.dcm", "1.2.826.0.1.2", "1.2.826.0.1.2.3", "1.2.826.0.1.2.3.1", "PA", "CR", 1, 1},
    {"/arch/p1/st2/s3/2.dcm", "1.2.826.0.1.2", "1.2.826.0.1.2.3", "1.2.826.0.1.2.3.2", "PA", "CR", 1, 2},
    {"/arch/p1/st2/s3/x.dcm", "1.2.826.0.1.2", "1.2.826.0.1.2.3", "1.2.826.0.1.9.9", "PA", "CR", 1, 3},
    {"/arch/p1/st1/s1/copy-of-2.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.1.2", "AXIAL", "CT", 2, 2},
};
#define NSPECS (sizeof SPECS / sizeof SPECS[0])
#define JOB "job-linker-itest"
#define FILES_TOTAL (NSPECS + 2) /* + the invalid event + the worker failure */

static char *event_json(const spec_t *s)
{
    json_t *study =
        json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}}", "StudyInstanceUID", s->study, "AccessionNumber", "ACC-1",
                  "PatientID", "LIDC-IDRI-0001", "Modality", s->modality, "promoted", "study_instance_uid", s->study,
                  "accession_number", "ACC-1", "patient_id", "LIDC-IDRI-0001");
    json_t *series = json_pack("{s:s, s:s, s:i, s:f, s:[f,f,f], s:{s:s, s:i, s:f}}", "SeriesInstanceUID", s->series,
                               "StudyInstanceUID", s->study, "SeriesNumber", s->number, "SliceThickness", 2.5,
                               "ImagePositionPatient", -150.0, -160.5, (double)-s->inum, "promoted",
                               "series_instance_uid", s->series, "series_number", s->number, "slice_thickness", 2.5);
    if (s->desc) {
        json_object_set_new(series, "SeriesDescription", json_string(s->desc));
        json_object_set_new(json_object_get(series, "promoted"), "series_description", json_string(s->desc));
    }
    json_t *inst = json_pack("{s:s, s:s, s:i, s:{s:s, s:s, s:i}}", "SOPInstanceUID", s->sop, "SOPClassUID",
                             "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber", s->inum, "promoted", "sop_instance_uid",
                             s->sop, "sop_class_uid", "1.2.840.10008.5.1.4.1.1.2", "instance_number", s->inum);
    json_t *ev = json_pack("{s:i, s:s, s:s, s:s, s:o, s:o, s:o, s:{s:i, s:i}, s:{s:s, s:s}}", "v", 1, "job_id", JOB,
                           "path", s->path, "feature_set", "default", "study", study, "series", series, "instance",
                           inst, "file", "size", 1000 + s->inum, "mtime", 1700000000, "dicom", "transfer_syntax",
                           "1.2.840.10008.1.2.1", "specific_character_set", "ISO_IR 100");
    if (strstr(s->path, "/s1/3.dcm") || strstr(s->path, "/s3/2.dcm")) /* damaged: Pixel Data cut short */
        json_object_set_new(ev, "integrity",
                            json_pack("{s:b, s:I, s:I}", "pixel_data_truncated", 1, "pixel_data_bytes_expected",
                                      (json_int_t)524288, "pixel_data_bytes_present", (json_int_t)1000 + s->inum));
    char *txt = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return txt;
}

/* An event the decoder refuses (no SOPInstanceUID), and a worker failure. */
static const char *BAD_EVENT = "{\"v\":1,\"job_id\":\"" JOB "\",\"path\":\"/arch/p1/bad.dcm\",\"study\":"
                               "{\"StudyInstanceUID\":\"1.2.826.0.1.1\"},\"series\":{\"SeriesInstanceUID\":\"9\"},"
                               "\"instance\":{},\"file\":{\"size\":1,\"mtime\":1}}";
static const char *WORKER_DLQ = "{\"v\":1,\"job_id\":\"" JOB "\",\"path\":\"/arch/p1/broken.dcm\",\"stage\":\"worker\","
                                "\"error\":\"not_dicom\",\"message\":\"no DICM preamble\"}";

static void produce(mdb_kafka_producer_t *p, const char *topic, const char *key, const char *val)
{
    mdb_error_t err = {0};
    CHECK(mdb_kafka_produce(p, topic, key, strlen(key), val, strlen(val), NULL, &err), "%s", err.message);
}

/* Publish every record (order: forward, or reversed and each twice). */
static void publish(mdb_config_t *cfg, const char *ti, const char *td, bool reversed)
{
    mdb_error_t err = {0};
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    CHECK(p, "%s", err.message);
    int copies = reversed ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        if (reversed) {
            produce(p, td, JOB, WORKER_DLQ);
            produce(p, ti, "1.2.826.0.1.1", BAD_EVENT);
        }
        for (size_t k = 0; k < NSPECS; k++) {
            const spec_t *s = &SPECS[reversed ? NSPECS - 1 - k : k];
            char *ev = event_json(s);
            produce(p, ti, s->study, ev);
            free(ev);
        }
        if (!reversed) {
            produce(p, ti, "1.2.826.0.1.1", BAD_EVENT);
            produce(p, td, JOB, WORKER_DLQ);
        }
    }
    CHECK(mdb_kafka_producer_flush(p, 30000, &err), "%s", err.message);
    CHECK(mdb_kafka_producer_failures(p) == 0, "delivery failures");
    mdb_kafka_producer_destroy(p);
}

static void create_job(const char *db)
{
    litest_create_job(db, JOB, "LIDC-IDRI", FILES_TOTAL);
}

static json_t *get_doc(const char *db, const char *coll_name, const char *id)
{
    mongoc_client_t *c = litest_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, coll_name);
    bson_t *filter = BCON_NEW("_id", id);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    const bson_t *d;
    json_t *out = NULL;
    if (mongoc_cursor_next(cur, &d))
        out = mdb_docs_bson_to_json(d);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return out;
}

static char *dump(const char *db)
{
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(litest_mongo_uri, db, 2, &err);
    CHECK(m, "%s", err.message);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f, "memstream");
    CHECK(mdb_dump_write(m, f, NULL, &err), "%s", err.message);
    fclose(f);
    mdb_mongo_destroy(m);
    return buf;
}

static pid_t start_linker(const char *db, const char *ti, const char *td, const char *group, int batch, const char *log)
{
    char bs[64];
    snprintf(bs, sizeof bs, "--linker.batch_size=%d", batch);
    const char *extra[] = {bs, "--linker.batch_ms=100", "--log.level=info", NULL};
    return litest_start_linker(db, ti, td, group, extra, log);
}

/* Stopped as litest_stop_linker, its exit report printed (round trips per event). */
static void stop_linker(pid_t pid, const char *log)
{
    litest_stop_linker(pid, log);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "grep -h 'linker done' %s", log);
    CHECK(system(cmd) == 0, "no exit report in %s", log);
}

/* Wait until group has committed every record of topics. */
static void wait_consumed(mdb_config_t *cfg, const char *group, const char *const *topics, int parts, pid_t pid)
{
    rd_kafka_t *rk = litest_consumer(cfg, group);
    int64_t t0 = itest_now_ms();
    for (;;) {
        bool all = true;
        for (int t = 0; t < 2 && all; t++)
            for (int p = 0; p < parts && all; p++) {
                int64_t lo = 0, hi = 0;
                CHECK(!rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, 10000), "watermarks");
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, topics[t], p);
                CHECK(!rd_kafka_committed(rk, l, 10000), "committed");
                int64_t off = l->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(l);
                if (hi > 0 && off < hi)
                    all = false;
            }
        if (all)
            break;
        int st;
        CHECK(waitpid(pid, &st, WNOHANG) == 0, "linker exited early (status %d)", st);
        CHECK(itest_now_ms() - t0 < 180000, "group %s did not consume everything within 180 s", group);
        usleep(200000);
    }
    rd_kafka_destroy(rk);
}

static const char *str(const json_t *doc, const char *key)
{
    const char *s = json_string_value(json_object_get(doc, key));
    return s ? s : "(missing)";
}

static void check_documents(const char *db)
{
    CHECK(litest_count(db, "instances") == 8, "instances: %lld", (long long)litest_count(db, "instances"));
    CHECK(litest_count(db, "series") == 3, "series: %lld", (long long)litest_count(db, "series"));
    CHECK(litest_count(db, "studies") == 2, "studies: %lld", (long long)litest_count(db, "studies"));

    json_t *s1 = get_doc(db, "series", "1.2.826.0.1.1.1");
    CHECK(s1, "series S1 missing");
    CHECK(litest_num(s1, "instance_count") == 5, "S1 instance_count %lld", (long long)litest_num(s1, "instance_count"));
    CHECK(!strcmp(str(s1, "study_id"), "1.2.826.0.1.1"), "S1 study_id %s", str(s1, "study_id"));
    CHECK(!strcmp(str(s1, "series_description"), "AXIAL"), "S1 description %s", str(s1, "series_description"));
    CHECK(!strcmp(str(s1, "modality"), "CT"), "S1 modality %s", str(s1, "modality"));
    CHECK(json_real_value(json_object_get(s1, "slice_thickness")) == 2.5, "S1 slice_thickness");
    CHECK(json_is_object(json_object_get(s1, "metadata")) &&
              json_integer_value(json_object_get(json_object_get(s1, "metadata"), "SeriesNumber")) == 2,
          "S1 metadata.SeriesNumber");
    json_t *cids = json_object_get(s1, "collection_ids");
    CHECK(json_array_size(cids) == 1 && !strcmp(json_string_value(json_array_get(cids, 0)), "LIDC-IDRI"),
          "S1 collection_ids");
    CHECK(json_object_get(s1, "created_at") && json_object_get(s1, "updated_at"), "S1 timestamps");
    json_decref(s1);

    json_t *s3 = get_doc(db, "series", "1.2.826.0.1.2.3");
    CHECK(s3 && litest_num(s3, "instance_count") == 2, "S3 instance_count");
    json_decref(s3);

    json_t *st1 = get_doc(db, "studies", "1.2.826.0.1.1");
    CHECK(st1, "study ST1 missing");
    json_t *sum = json_object_get(st1, "series");
    CHECK(json_array_size(sum) == 2, "ST1 series[] size %zu", json_array_size(sum));
    json_t *first = json_array_get(sum, 0), *second = json_array_get(sum, 1);
    CHECK(!strcmp(str(first, "series_instance_uid"), "1.2.826.0.1.1.2") && litest_num(first, "instance_count") == 1 &&
              !strcmp(str(first, "series_description"), "SCOUT") && !strcmp(str(first, "modality"), "CT") &&
              litest_num(first, "series_number") == 1,
          "ST1 series[0]");
    CHECK(!strcmp(str(second, "series_instance_uid"), "1.2.826.0.1.1.1") && litest_num(second, "instance_count") == 5,
          "ST1 series[1]");
    CHECK(litest_num(st1, "instance_count") == 6 && litest_num(st1, "series_count") == 2, "ST1 totals");
    CHECK(!strcmp(str(st1, "accession_number"), "ACC-1") && !strcmp(str(st1, "patient_id"), "LIDC-IDRI-0001"),
          "ST1 promoted fields");
    json_t *jobs = json_object_get(st1, "job_ids");
    CHECK(json_array_size(jobs) == 1 && !strcmp(json_string_value(json_array_get(jobs, 0)), JOB), "ST1 job_ids");
    CHECK(json_array_size(json_object_get(st1, "modalities")) == 1, "ST1 modalities");
    json_decref(st1);

    json_t *i2 = get_doc(db, "instances", "1.2.826.0.1.1.1.2");
    CHECK(i2, "instance 2 missing");
    json_t *paths = json_object_get(i2, "paths");
    CHECK(json_array_size(paths) == 2 && !strcmp(json_string_value(json_array_get(paths, 0)), "/arch/p1/st1/s1/2.dcm"),
          "instance 2 paths");
    CHECK(!strcmp(str(i2, "series_id"), "1.2.826.0.1.1.1") && !strcmp(str(i2, "study_id"), "1.2.826.0.1.1"),
          "instance 2 parents");
    CHECK(litest_num(i2, "instance_number") == 2 && !strcmp(str(i2, "sop_class_uid"), "1.2.840.10008.5.1.4.1.1.2"),
          "instance 2 promoted");
    CHECK(!strcmp(str(json_object_get(i2, "dicom"), "transfer_syntax"), "1.2.840.10008.1.2.1"), "instance dicom");
    CHECK(!json_object_get(i2, "integrity"), "a whole file's instance has no integrity object");
    json_decref(i2);
    json_t *i3 = get_doc(db, "instances", "1.2.826.0.1.1.1.3");
    json_t *ig = i3 ? json_object_get(i3, "integrity") : NULL;
    CHECK(ig && json_is_true(json_object_get(ig, "pixel_data_truncated")) &&
              litest_num(ig, "pixel_data_bytes_expected") == 524288 &&
              litest_num(ig, "pixel_data_bytes_present") == 1003,
          "a damaged file's instance carries the event's integrity object");
    json_decref(i3);

    json_t *x = get_doc(db, "instances", "1.2.826.0.1.9.9");
    CHECK(x && !strcmp(str(x, "series_id"), "1.2.826.0.1.1.1"), "x belongs to the smallest path's series");
    json_decref(x);
    json_t *c = get_doc(db, "conflicts", "instance_parent:1.2.826.0.1.9.9:series_id");
    CHECK(c, "no conflict recorded for the duplicate SOPInstanceUID");
    json_t *vals = json_object_get(c, "values");
    CHECK(json_array_size(vals) == 2, "conflict values");
    CHECK(!strcmp(str(json_array_get(vals, 0), "value"), "1.2.826.0.1.1.1") &&
              !strcmp(str(json_array_get(vals, 0), "path"), "/arch/p1/st1/s1/x.dcm") &&
              !strcmp(str(json_array_get(vals, 1), "value"), "1.2.826.0.1.2.3") &&
              !strcmp(str(json_array_get(vals, 1), "path"), "/arch/p1/st2/s3/x.dcm"),
          "conflict values/paths");
    json_decref(c);
    CHECK(!get_doc(db, "conflicts", "series_attribute:1.2.826.0.1.1.1:ImagePositionPatient"),
          "per-instance attribute recorded as a conflict");

    json_t *job = get_doc(db, "jobs", JOB);
    CHECK(job, "job missing");
    CHECK(litest_num(job, "files_done") == (json_int_t)NSPECS, "files_done %lld",
          (long long)litest_num(job, "files_done"));
    CHECK(litest_num(job, "files_failed") == 2, "files_failed %lld", (long long)litest_num(job, "files_failed"));
    CHECK(litest_num(job, "files_flagged") == 2, "files_flagged %lld", (long long)litest_num(job, "files_flagged"));
    CHECK(litest_num(job, "instances_linked") == 8, "instances_linked %lld",
          (long long)litest_num(job, "instances_linked"));
    CHECK(!strcmp(str(job, "state"), "completed_with_errors"), "state %s", str(job, "state"));
    CHECK(json_object_get(job, "completed_at"), "completed_at");
    json_t *errs = json_object_get(job, "errors");
    CHECK(json_array_size(errs) == 2, "errors[] %zu", json_array_size(errs));
    bool saw_invalid = false, saw_worker = false;
    for (size_t i = 0; i < json_array_size(errs); i++) {
        json_t *e = json_array_get(errs, i);
        saw_invalid |= !strcmp(str(e, "error"), "invalid_event") && !strcmp(str(e, "stage"), "linker") &&
                       !strcmp(str(e, "path"), "/arch/p1/bad.dcm");
        saw_worker |= !strcmp(str(e, "error"), "not_dicom") && !strcmp(str(e, "stage"), "worker");
    }
    CHECK(saw_invalid && saw_worker, "errors[] lacks a reason");
    json_decref(job);
    CHECK(litest_count(db, "job_files") == (int64_t)FILES_TOTAL, "job_files %lld",
          (long long)litest_count(db, "job_files"));
}

/* Wait (120 s at most) for the job in db to end completed_with_errors. */
static void wait_job_done(const char *db, const char *what)
{
    int64_t t0 = itest_now_ms();
    for (;;) {
        json_t *job = get_doc(db, "jobs", JOB);
        bool fin = job && !strcmp(str(job, "state"), "completed_with_errors");
        json_decref(job);
        if (fin)
            return;
        CHECK(itest_now_ms() - t0 < 120000, "%s did not complete", what);
        usleep(200000);
    }
}

static void drop_db(const char *db)
{
    mongoc_client_t *c = litest_client();
    mongoc_database_t *d = mongoc_client_get_database(c, db);
    bson_error_t be;
    mongoc_database_drop(d, &be);
    mongoc_database_destroy(d);
    mongoc_client_destroy(c);
}

static char db_b[160];

static void cleanup_b(void)
{
    if (db_b[0])
        drop_db(db_b);
}

int main(void)
{
    mdb_config_t *cfg = litest_setup("linker");
    const char *db = mdb_config_get(cfg, "mongo.db");
    litest_logs_t logs;
    litest_logs_new(&logs, "t_linker_logs");
    const char *log1 = logs.log[0], *log2 = logs.log[1], *log3 = logs.log[2];

    /* A: link everything once */
    const char *ti = itest_topic("instances", 3), *td = itest_topic("dlq", 2);
    const char *topics[] = {ti, td};
    create_job(db);
    publish(cfg, ti, td, false);
    const char *g1 = itest_group("linkers");
    pid_t pid = start_linker(db, ti, td, g1, 1000, log1);
    wait_consumed(cfg, g1, topics, 2, pid);
    /* the invalid event's own DLQ record arrives after its batch: wait for the job to finish */
    wait_job_done(db, "job");
    wait_consumed(cfg, g1, topics, 2, pid);
    stop_linker(pid, log1);
    check_documents(db);
    char *dump_a = dump(db);
    printf("A: documents, conflicts and job counters as expected\n");

    /* B: replay everything in a fresh group */
    const char *g2 = itest_group("replay");
    pid = start_linker(db, ti, td, g2, 1000, log2);
    wait_consumed(cfg, g2, topics, 2, pid);
    stop_linker(pid, log2);
    check_documents(db);
    char *dump_b = dump(db);
    CHECK(!strcmp(dump_a, dump_b), "replay changed the canonical dump:\n--- before\n%s\n--- after\n%s", dump_a, dump_b);
    printf("B: replay changed nothing\n");

    /* C: reversed, twice, in batches of 3, into another database */
    snprintf(db_b, sizeof db_b, "%s_b", db);
    atexit(cleanup_b);
    const char *ti2 = itest_topic("instances_b", 3), *td2 = itest_topic("dlq_b", 2);
    const char *topics2[] = {ti2, td2};
    create_job(db_b);
    publish(cfg, ti2, td2, true);
    const char *g3 = itest_group("reverse");
    pid = start_linker(db_b, ti2, td2, g3, 3, log3);
    wait_consumed(cfg, g3, topics2, 2, pid);
    wait_job_done(db_b, "job (reversed)");
    wait_consumed(cfg, g3, topics2, 2, pid);
    stop_linker(pid, log3);
    check_documents(db_b);
    char *dump_c = dump(db_b);
    CHECK(!strcmp(dump_a, dump_c), "out-of-order delivery gives other documents:\n--- in order\n%s\n--- reversed\n%s",
          dump_a, dump_c);
    printf("C: reversed and duplicated delivery gives the same canonical dump\n");
    free(dump_a);
    free(dump_b);
    free(dump_c);
    litest_logs_remove(&logs);
    printf("PASS test_linker\n");
    return 0;
}
