/* fetcher_slots: pacs.max_associations across every fetcher process.
 *
 * Each source has max_associations slots, documents {_id: "<source>#<i>",
 * holder, until (ms since the epoch)} in the collection pacs_slots. Before
 * opening an association a fetcher takes a free slot (one conditional upsert:
 * free = expired or already ours; a slot held by another process makes the
 * upsert collide on _id, which means "taken"), and gives it back after. A
 * heartbeat thread extends the slots this process holds every few seconds,
 * so a long C-MOVE keeps its slot and a fetcher killed with -9 loses it
 * after FETCHER_SLOT_LEASE_MS. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetcher.h"
#include "mdb_log.h"
#include "mdb_ops.h"
#include "mdb_signal.h"
#include "mdb_uuid.h"

#define SLOTS_COLL "pacs_slots"
#define FETCHER_SLOT_LEASE_MS 20000
#define HEARTBEAT_MS 5000
#define MAX_HELD 8

static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static char held[MAX_HELD][MDB_SOURCE_NAME_MAX + 16];
static char holder[128];
static mdb_mongo_t *hb_mongo;
static pthread_t hb_thread;
static volatile int hb_stop;
static bool hb_started;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool extend(mdb_mongo_t *m, const char *id, bool take, bool *got, mdb_error_t *err)
{
    int64_t now = wall_ms();
    bson_t *sel = take ? BCON_NEW("_id", BCON_UTF8(id), "$or", "[", "{", "until", "{", "$lt", BCON_INT64(now), "}", "}",
                                  "{", "holder", BCON_UTF8(holder), "}", "]")
                       : BCON_NEW("_id", BCON_UTF8(id), "holder", BCON_UTF8(holder));
    bson_t *upd =
        BCON_NEW("$set", "{", "holder", BCON_UTF8(holder), "until", BCON_INT64(now + FETCHER_SLOT_LEASE_MS), "}");
    mdb_ops_result_t res;
    mdb_error_t e = {0};
    bool ok = mdb_ops_update_one(m, SLOTS_COLL, sel, upd, take, &res, &e);
    bson_destroy(sel);
    bson_destroy(upd);
    if (!ok && (e.code == 11000 || strstr(e.message, "duplicate key") || strstr(e.message, "E11000"))) {
        *got = false; /* held by another process */
        return true;
    }
    if (!ok) {
        if (err)
            *err = e;
        return false;
    }
    *got = res.matched > 0 || res.upserted > 0;
    return true;
}

static void *heartbeat(void *arg)
{
    (void)arg;
    while (!hb_stop) {
        for (int w = 0; w < HEARTBEAT_MS / 100 && !hb_stop; w++)
            usleep(100 * 1000);
        pthread_mutex_lock(&held_mu);
        char ids[MAX_HELD][sizeof held[0]];
        memcpy(ids, held, sizeof ids);
        pthread_mutex_unlock(&held_mu);
        for (int i = 0; i < MAX_HELD && !hb_stop; i++) {
            bool got = false;
            if (ids[i][0])
                extend(hb_mongo, ids[i], false, &got, NULL);
        }
    }
    return NULL;
}

bool fetcher_slots_init(mdb_mongo_t *m, mdb_error_t *err)
{
    char host[64] = "host", uuid[MDB_UUID_STR_LEN];
    gethostname(host, sizeof host - 1);
    mdb_uuid_new(uuid);
    snprintf(holder, sizeof holder, "%s:%d:%.8s", host, (int)getpid(), uuid);
    hb_mongo = m;
    hb_stop = 0;
    if (pthread_create(&hb_thread, NULL, heartbeat, NULL) != 0) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "slot heartbeat thread: %s", strerror(errno));
        return false;
    }
    hb_started = true;
    return true;
}

void fetcher_slots_shutdown(void)
{
    if (!hb_started)
        return;
    hb_stop = 1;
    pthread_join(hb_thread, NULL);
    hb_started = false;
}

bool fetcher_slot_acquire(fetcher_t *f, const mdb_source_config_t *sc, char *slot, size_t cap, mdb_error_t *err)
{
    bool told = false;
    for (;;) {
        for (int i = 0; i < sc->max_associations; i++) {
            bool got = false;
            snprintf(slot, cap, "%s#%d", sc->name, i);
            if (!extend(f->mongo, slot, true, &got, err))
                return false;
            if (!got)
                continue;
            pthread_mutex_lock(&held_mu);
            for (int k = 0; k < MAX_HELD; k++)
                if (!held[k][0]) {
                    snprintf(held[k], sizeof held[k], "%s", slot);
                    break;
                }
            pthread_mutex_unlock(&held_mu);
            return true;
        }
        if (!told)
            MDB_LOG(MDB_LOG_INFO, "source %s: all %d association slot(s) busy, waiting", sc->name,
                    sc->max_associations);
        told = true;
        for (int w = 0; w < 3; w++) {
            if (mdb_signal_stop_requested()) {
                mdb_error_set(err, MDB_ERR_SYSTEM, 0, "stop requested");
                return false;
            }
            mdb_kafka_producer_poll(f->kp, 0);
            usleep(100 * 1000);
        }
    }
}

void fetcher_slot_release(fetcher_t *f, const char *slot)
{
    pthread_mutex_lock(&held_mu);
    for (int k = 0; k < MAX_HELD; k++)
        if (!strcmp(held[k], slot))
            held[k][0] = '\0';
    pthread_mutex_unlock(&held_mu);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(slot), "holder", BCON_UTF8(holder));
    bson_t *upd = BCON_NEW("$set", "{", "until", BCON_INT64(0), "}");
    mdb_error_t e = {0};
    if (!mdb_ops_update_one(f->mongo, SLOTS_COLL, sel, upd, false, NULL, &e))
        MDB_LOG(MDB_LOG_WARN, "release slot %s: %s (it expires by itself)", slot, e.message);
    bson_destroy(sel);
    bson_destroy(upd);
}
