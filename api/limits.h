/* limits.h: per-client and database concurrency limits and the per-client
 * failed-token counter of metadb-api (api/limits.c). Thread-safe. */
#ifndef METADB_API_LIMITS_H
#define METADB_API_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

/* The window in which api.auth_failures wrong tokens are tolerated. */
#define API_AUTH_WINDOW_MS 60000

typedef struct api_limits api_limits_t;

/* per_client: requests one address may have in flight (0 = unlimited);
 * db_slots: database queries in flight over all clients (0 = unlimited);
 * auth_max: wrong tokens per address per window (0 = unlimited).
 * NULL on OOM. */
api_limits_t *api_limits_new(int per_client, int db_slots, int auth_max);
void api_limits_destroy(api_limits_t *l); /* accepts NULL */

/* Take one of addr's request slots, waiting up to wait_ms for one. false
 * when none freed up in time (answer 429). Pair a true with _leave. */
bool api_limits_client_enter(api_limits_t *l, const char *addr, int wait_ms);
void api_limits_client_leave(api_limits_t *l, const char *addr);

/* Take a database query slot, waiting up to wait_ms. false (answer 503) when
 * none freed up in time. Pair a true with _leave. */
bool api_limits_db_enter(api_limits_t *l, int wait_ms);
void api_limits_db_leave(api_limits_t *l);

/* Seconds until addr may try a token again (0 = not blocked). */
int api_limits_auth_blocked(api_limits_t *l, const char *addr);
/* Count one wrong token from addr. */
void api_limits_auth_failed(api_limits_t *l, const char *addr);

#endif
