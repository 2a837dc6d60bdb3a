/* mdb_uuid: random (v4) UUIDs from libuuid, as lowercase text. */
#ifndef MDB_UUID_H
#define MDB_UUID_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_UUID_STR_LEN 37 /* 36 chars + NUL */

/* Write a new random UUID into out (>= MDB_UUID_STR_LEN bytes). */
void mdb_uuid_new(char out[MDB_UUID_STR_LEN]);

/* True if s is a syntactically valid UUID (any version, any case). */
bool mdb_uuid_valid(const char *s);

#ifdef __cplusplus
}
#endif
#endif
