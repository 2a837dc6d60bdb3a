/* mdb_uuid: random UUIDs (job ids) from libuuid in canonical lowercase text,
 * and a syntax check used when a job id arrives from outside. */
#include "mdb_uuid.h"

#include <ctype.h>
#include <string.h>
#include <uuid/uuid.h>

void mdb_uuid_new(char out[MDB_UUID_STR_LEN])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool mdb_uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}
