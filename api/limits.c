/* limits.c: what keeps one client from taking the API down for everybody
 * (api/limits.h). Three counters behind one mutex:
 *   - requests in flight per client address (api.client_concurrency): a
 *     client over its share waits a moment, then gets 429;
 *   - database queries in flight (api.query_concurrency, default
 *     mongo.pool_size - 1): the pool always keeps a connection for /healthz,
 *     so a flood of slow queries cannot make the health check time out;
 *   - wrong tokens per client address in a window (api.auth_failures per
 *     API_AUTH_WINDOW_MS): beyond that every token check answers 429 until
 *     the window ends, so tokens cannot be guessed at line speed.
 * Clients are told apart by their address only (behind a reverse proxy they
 * share one). The table is small and fixed: the server never holds more
 * than its connection limit of clients at once, and an idle entry is reused. */
#include "limits.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIENT_SLOTS 1024

typedef struct {
    char addr[64];     /* "" = free */
    int inflight;      /* requests being answered */
    int failures;      /* wrong tokens in the current window */
    int64_t window_ms; /* start of the failure window (monotonic) */
} client_t;

struct api_limits {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* signalled whenever a slot is released */
    int per_client, db_slots, db_inflight, auth_max;
    client_t clients[CLIENT_SLOTS];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

api_limits_t *api_limits_new(int per_client, int db_slots, int auth_max)
{
    api_limits_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&l->lock, NULL) != 0 || pthread_cond_init(&l->changed, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        free(l);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    l->per_client = per_client;
    l->db_slots = db_slots;
    l->auth_max = auth_max;
    return l;
}

void api_limits_destroy(api_limits_t *l)
{
    if (!l)
        return;
    pthread_cond_destroy(&l->changed);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static bool idle(const client_t *c, int64_t now)
{
    return c->inflight == 0 && (c->failures == 0 || now - c->window_ms >= API_AUTH_WINDOW_MS);
}

/* The entry of addr, created when missing (reusing an idle one); NULL when
 * the table is full of busy clients. Called with the lock held. */
static client_t *client_get(api_limits_t *l, const char *addr, bool create)
{
    int64_t now = mono_ms();
    client_t *spare = NULL;
    for (size_t i = 0; i < CLIENT_SLOTS; i++) {
        client_t *c = &l->clients[i];
        if (c->addr[0] && !strcmp(c->addr, addr))
            return c;
        if (!spare && (!c->addr[0] || idle(c, now)))
            spare = c;
    }
    if (!create || !spare)
        return NULL;
    memset(spare, 0, sizeof *spare);
    snprintf(spare->addr, sizeof spare->addr, "%s", addr);
    return spare;
}

/* Wait on the condition until something is released or deadline (monotonic ms). */
static void wait_until(api_limits_t *l, int64_t deadline)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000), .tv_nsec = (long)(deadline % 1000) * 1000000L};
    pthread_cond_timedwait(&l->changed, &l->lock, &ts);
}

/* Slot takers for take_slot (called with l->lock held): true when a slot
 * was free and is now taken. */
static bool client_slot(api_limits_t *l, void *addr)
{
    client_t *c = client_get(l, addr, true);
    if (!c || c->inflight >= l->per_client)
        return false;
    c->inflight++;
    return true;
}

static bool db_slot(api_limits_t *l, void *unused)
{
    (void)unused;
    if (l->db_inflight >= l->db_slots)
        return false;
    l->db_inflight++;
    return true;
}

/* Waits up to wait_ms for take(l, arg) to succeed, re-trying whenever a slot
 * is released. */
static bool take_slot(api_limits_t *l, bool (*take)(api_limits_t *, void *), void *arg, int wait_ms)
{
    int64_t deadline = mono_ms() + wait_ms;
    bool ok;
    pthread_mutex_lock(&l->lock);
    while (!(ok = take(l, arg)) && mono_ms() < deadline)
        wait_until(l, deadline);
    pthread_mutex_unlock(&l->lock);
    return ok;
}

bool api_limits_client_enter(api_limits_t *l, const char *addr, int wait_ms)
{
    if (!l || l->per_client <= 0)
        return true;
    return take_slot(l, client_slot, (void *)addr, wait_ms);
}

void api_limits_client_leave(api_limits_t *l, const char *addr)
{
    if (!l || l->per_client <= 0)
        return;
    pthread_mutex_lock(&l->lock);
    client_t *c = client_get(l, addr, false);
    if (c && c->inflight > 0)
        c->inflight--;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
}

bool api_limits_db_enter(api_limits_t *l, int wait_ms)
{
    if (!l || l->db_slots <= 0)
        return true;
    return take_slot(l, db_slot, NULL, wait_ms);
}

void api_limits_db_leave(api_limits_t *l)
{
    if (!l || l->db_slots <= 0)
        return;
    pthread_mutex_lock(&l->lock);
    if (l->db_inflight > 0)
        l->db_inflight--;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
}

int api_limits_auth_blocked(api_limits_t *l, const char *addr)
{
    if (!l || l->auth_max <= 0)
        return 0;
    int retry = 0;
    pthread_mutex_lock(&l->lock);
    client_t *c = client_get(l, addr, false);
    int64_t now = mono_ms();
    if (c && c->failures >= l->auth_max && now - c->window_ms < API_AUTH_WINDOW_MS)
        retry = (int)((API_AUTH_WINDOW_MS - (now - c->window_ms) + 999) / 1000);
    pthread_mutex_unlock(&l->lock);
    return retry;
}

void api_limits_auth_failed(api_limits_t *l, const char *addr)
{
    if (!l || l->auth_max <= 0)
        return;
    pthread_mutex_lock(&l->lock);
    client_t *c = client_get(l, addr, true);
    int64_t now = mono_ms();
    if (c) {
        if (c->failures == 0 || now - c->window_ms >= API_AUTH_WINDOW_MS) {
            c->failures = 0;
            c->window_ms = now;
        }
        c->failures++;
    }
    pthread_mutex_unlock(&l->lock);
}
