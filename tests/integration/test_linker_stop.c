/* Integration test of the linker's write pipeline (linker/writer.c: a writer
 * thread writes one batch while the next is consumed) against the live
 * stack: 3,000 crafted instance events in small batches (many writes in
 * flight one after the other), and a SIGTERM while the linker is busy.
 *  A. stop mid-run: the linker exits 0, and every record below the offsets
 *     its group committed has its instance and job_files documents in the
 *     database (nothing committed that was not written);
 *  B. a second linker in the same group finishes: exactly 3,000 instances,
 *     each series counts its 25, the job's counters are exact (files_done,
 *     instances_linked) and it completes;
 *  C. a replay of everything in a fresh group changes no counter. */
#include "linker_itest.h"
#include "mdb_docs.h"
#include "mdb_find.h"
#include "mdb_mongo.h"

#define JOB "job-linker-stop"
#define NSTUDIES 30
#define NSERIES 4
#define NINST 25
#define NEVENTS (NSTUDIES * NSERIES * NINST)

static void uid(char *buf, size_t cap, int st, int se, int in)
{
    if (se < 0)
        snprintf(buf, cap, "1.2.826.0.9.%d", st + 1);
    else if (in < 0)
        snprintf(buf, cap, "1.2.826.0.9.%d.%d", st + 1, se + 1);
    else
        snprintf(buf, cap, "1.2.826.0.9.%d.%d.%d", st + 1, se + 1, in + 1);
}

static char *event_json(int st, int se, int in)
{
    char study[64], series[64], sop[64], path[128];
    uid(study, sizeof study, st, -1, -1);
    uid(series, sizeof series, st, se, -1);
    uid(sop, sizeof sop, st, se, in);
    snprintf(path, sizeof path, "/arch/p%d/st/s%d/%d.dcm", st + 1, se + 1, in + 1);
    json_t *ev = json_pack("{s:i, s:s, s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}}, s:{s:s, s:s, s:i, s:{s:s, s:i}},"
                           " s:{s:s, s:s, s:i, s:{s:s, s:s, s:i}}, s:{s:i, s:i}}",
                           "v", 1, "job_id", JOB, "path", path, "feature_set", "default", "study", "StudyInstanceUID",
                           study, "PatientID", "P-STOP", "promoted", "study_instance_uid", study, "patient_id",
                           "P-STOP", "series", "SeriesInstanceUID", series, "StudyInstanceUID", study, "SeriesNumber",
                           se + 1, "promoted", "series_instance_uid", series, "series_number", se + 1, "instance",
                           "SOPInstanceUID", sop, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber", in + 1,
                           "promoted", "sop_instance_uid", sop, "sop_class_uid", "1.2.840.10008.5.1.4.1.1.2",
                           "instance_number", in + 1, "file", "size", 1000 + in, "mtime", 1700000000);
    CHECK(ev, "event json");
    char *txt = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return txt;
}

static void publish(mdb_config_t *cfg, const char *ti)
{
    mdb_error_t err = {0};
    mdb_kafka_producer_t *p = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    CHECK(p, "%s", err.message);
    for (int in = 0; in < NINST; in++) /* interleaved: every batch touches many series */
        for (int st = 0; st < NSTUDIES; st++)
            for (int se = 0; se < NSERIES; se++) {
                char study[64];
                uid(study, sizeof study, st, -1, -1);
                char *ev = event_json(st, se, in);
                CHECK(mdb_kafka_produce(p, ti, study, strlen(study), ev, strlen(ev), NULL, &err), "%s", err.message);
                free(ev);
            }
    CHECK(mdb_kafka_producer_flush(p, 60000, &err), "%s", err.message);
    CHECK(mdb_kafka_producer_failures(p) == 0, "delivery failures");
    mdb_kafka_producer_destroy(p);
}

static void create_job(const char *db)
{
    litest_create_job(db, JOB, "STOP", NEVENTS);
}

/* How many of ids are _ids of coll (one query). */
static size_t found(const char *db, const char *coll_name, json_t *ids)
{
    size_t n = json_array_size(ids);
    if (n == 0)
        return 0;
    const char **v = malloc(n * sizeof *v);
    CHECK(v, "oom");
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(ids, i));
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(litest_mongo_uri, db, 1, &err);
    CHECK(m, "%s", err.message);
    bson_t filter = BSON_INITIALIZER;
    mdb_docs_append_in(&filter, "_id", v, n);
    bson_t *proj = BCON_NEW("_id", BCON_INT32(1));
    json_t *docs = json_array();
    CHECK(mdb_docs_find(m, coll_name, &filter, proj, NULL, 0, docs, &err), "%s", err.message);
    size_t got = json_array_size(docs);
    json_decref(docs);
    bson_destroy(proj);
    bson_destroy(&filter);
    mdb_mongo_destroy(m);
    free(v);
    return got;
}

static json_t *job_doc(const char *db)
{
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(litest_mongo_uri, db, 1, &err);
    CHECK(m, "%s", err.message);
    json_t *docs = json_array();
    bson_t *filter = BCON_NEW("_id", JOB);
    CHECK(mdb_docs_find(m, "jobs", filter, NULL, NULL, 0, docs, &err), "%s", err.message);
    bson_destroy(filter);
    mdb_mongo_destroy(m);
    json_t *d = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return d;
}

static pid_t start_linker(const char *db, const char *ti, const char *td, const char *group, const char *log)
{
    static const char *const extra[] = {"--linker.batch_size=150", "--linker.batch_ms=20", "--log.level=debug", NULL};
    return litest_start_linker(db, ti, td, group, extra, log);
}

/* The group's committed offsets of ti's partitions (none: 0); the total. */
static int64_t committed_offsets(mdb_config_t *cfg, const char *ti, int parts, const char *group, int64_t *out)
{
    rd_kafka_t *rk = litest_consumer(cfg, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, ti, p);
    CHECK(!rd_kafka_committed(rk, l, 10000), "committed offsets");
    int64_t total = 0;
    for (int p = 0; p < parts; p++) {
        out[p] = l->elems[p].offset < 0 ? 0 : l->elems[p].offset;
        total += out[p];
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return total;
}

/* A: every record of ti below the group's committed offsets has its
 * instance and job_files documents. Returns how many records were committed. */
static int64_t check_committed_written(mdb_config_t *cfg, const char *db, const char *ti, int parts, const char *group)
{
    int64_t committed[16] = {0};
    int64_t total = committed_offsets(cfg, ti, parts, group, committed);
    rd_kafka_t *rk = litest_consumer(cfg, itest_group("reader"));
    rd_kafka_topic_partition_list_t *from = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(from, ti, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    CHECK(!rd_kafka_assign(rk, from), "assign");
    rd_kafka_topic_partition_list_destroy(from);
    json_t *sops = json_array(), *files = json_array();
    int64_t seen = 0, t0 = itest_now_ms();
    while (seen < total) {
        CHECK(itest_now_ms() - t0 < 60000, "read back only %lld of %lld committed records", (long long)seen,
              (long long)total);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err && m->offset < committed[m->partition]) {
            json_t *ev = json_loadb(m->payload, m->len, 0, NULL);
            const char *sop = json_string_value(json_object_get(json_object_get(ev, "instance"), "SOPInstanceUID"));
            const char *path = json_string_value(json_object_get(ev, "path"));
            CHECK(sop && path, "unreadable event at %d@%lld", (int)m->partition, (long long)m->offset);
            char fid[256];
            snprintf(fid, sizeof fid, "%s\n%s", JOB, path);
            json_array_append_new(sops, json_string(sop));
            json_array_append_new(files, json_string(fid));
            json_decref(ev);
            seen++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(rk);
    size_t ni = found(db, "instances", sops), nf = found(db, "job_files", files);
    CHECK(ni == (size_t)total && nf == (size_t)total,
          "%lld records committed, but only %zu of their instances and %zu of their job files are in the database",
          (long long)total, ni, nf);
    json_decref(sops);
    json_decref(files);
    return total;
}

static void wait_job_final(const char *db)
{
    int64_t t0 = itest_now_ms();
    for (;;) {
        json_t *job = job_doc(db);
        const char *state = json_string_value(json_object_get(job, "state"));
        bool fin = state && !strcmp(state, "completed");
        json_decref(job);
        if (fin)
            return;
        CHECK(itest_now_ms() - t0 < 180000, "job did not complete within 180 s");
        usleep(100000);
    }
}

static void check_exact(const char *db)
{
    CHECK(litest_count(db, "instances") == NEVENTS, "%lld instances, expected %d",
          (long long)litest_count(db, "instances"), NEVENTS);
    CHECK(litest_count(db, "job_files") == NEVENTS, "%lld job files", (long long)litest_count(db, "job_files"));
    CHECK(litest_count(db, "series") == NSTUDIES * NSERIES, "%lld series", (long long)litest_count(db, "series"));
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(litest_mongo_uri, db, 1, &err);
    CHECK(m, "%s", err.message);
    json_t *series = json_array();
    bson_t filter = BSON_INITIALIZER;
    CHECK(mdb_docs_find(m, "series", &filter, NULL, NULL, 0, series, &err), "%s", err.message);
    for (size_t i = 0; i < json_array_size(series); i++) {
        json_t *s = json_array_get(series, i);
        CHECK(litest_num(s, "instance_count") == NINST, "series %s counts %lld instances, expected %d",
              json_string_value(json_object_get(s, "_id")), (long long)litest_num(s, "instance_count"), NINST);
    }
    json_decref(series);
    mdb_mongo_destroy(m);
    json_t *job = job_doc(db);
    CHECK(litest_num(job, "files_done") == NEVENTS && litest_num(job, "files_failed") == 0 &&
              litest_num(job, "instances_linked") == NEVENTS,
          "job counters: done %lld, failed %lld, linked %lld (expected %d, 0, %d)",
          (long long)litest_num(job, "files_done"), (long long)litest_num(job, "files_failed"),
          (long long)litest_num(job, "instances_linked"), NEVENTS, NEVENTS);
    json_decref(job);
}

int main(void)
{
    mdb_config_t *cfg = litest_setup("linker_stop");
    const char *db = mdb_config_get(cfg, "mongo.db");
    litest_logs_t logs;
    litest_logs_new(&logs, "t_linker_stop");
    const char *log1 = logs.log[0], *log2 = logs.log[1], *log3 = logs.log[2];
    const int parts = 3;
    const char *ti = itest_topic("instances", parts), *td = itest_topic("dlq", 1);
    create_job(db);
    publish(cfg, ti);

    /* A: SIGTERM once a few batches are written and more are under way */
    const char *g = itest_group("linkers");
    pid_t pid = start_linker(db, ti, td, g, log1);
    int64_t t0 = itest_now_ms();
    while (litest_lines_with(log1, "batch of") < 3) {
        int st;
        CHECK(waitpid(pid, &st, WNOHANG) == 0, "linker exited early (status %d, log %s)", st, log1);
        CHECK(itest_now_ms() - t0 < 120000, "no 3 batches written within 120 s (log %s)", log1);
        usleep(5000);
    }
    litest_stop_linker(pid, log1);
    int64_t committed = check_committed_written(cfg, db, ti, parts, g);
    CHECK(committed > 0, "nothing committed before the stop");
    printf("A: stopped after %d batch(es); %lld of %d records committed, every one of them written\n",
           litest_lines_with(log1, "batch of"), (long long)committed, NEVENTS);

    /* B: the same group finishes the job */
    pid = start_linker(db, ti, td, g, log2);
    wait_job_final(db);
    litest_stop_linker(pid, log2);
    check_exact(db);
    CHECK(check_committed_written(cfg, db, ti, parts, g) == NEVENTS, "not every record committed after the job");
    printf("B: the second linker completed the job: %d instances, counters exact\n", NEVENTS);

    /* C: a replay in a fresh group changes no counter */
    const char *g2 = itest_group("replay");
    pid = start_linker(db, ti, td, g2, log3);
    t0 = itest_now_ms();
    int64_t offs[16];
    while (committed_offsets(cfg, ti, parts, g2, offs) < NEVENTS) {
        int st;
        CHECK(waitpid(pid, &st, WNOHANG) == 0, "replay linker exited early (status %d)", st);
        CHECK(itest_now_ms() - t0 < 180000, "replay not consumed within 180 s (log %s)", log3);
        usleep(300000);
    }
    litest_stop_linker(pid, log3);
    check_exact(db);
    printf("C: replay of all %d records changed no counter\n", NEVENTS);

    litest_logs_remove(&logs);
    printf("PASS test_linker_stop\n");
    return 0;
}
