/* mdb_cases_doc.c: see mdb_cases_doc.h. */
#include "mdb_cases_doc.h"

#include <string.h>

static const char *doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    return bson_iter_utf8(&it, NULL);
}

bool mdb_cases_from_doc(const bson_t *doc, mdb_cases_t *out)
{
    bson_iter_t it, arr;
    memset(out, 0, sizeof *out);
    if (!doc || !bson_iter_init_find(&it, doc, "cases") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr))
        return true;
    while (bson_iter_next(&arr)) {
        const uint8_t *data;
        uint32_t len;
        bson_t c;
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
            continue;
        bson_iter_document(&arr, &len, &data);
        if (!bson_init_static(&c, data, len))
            continue;
        mdb_case_t k = {.case_id = (char *)doc_str(&c, "case_id"), .patient_id = (char *)doc_str(&c, "patient_id")};
        if (!k.case_id)
            continue;
        bson_iter_t ai, aa;
        if (bson_iter_init_find(&ai, &c, "accession_numbers") && BSON_ITER_HOLDS_ARRAY(&ai) &&
            bson_iter_recurse(&ai, &aa))
            while (bson_iter_next(&aa))
                if (BSON_ITER_HOLDS_UTF8(&aa) && !mdb_strv_push(&k.accession_numbers, bson_iter_utf8(&aa, NULL))) {
                    mdb_strv_clear(&k.accession_numbers);
                    return false;
                }
        bool ok = mdb_cases_push(out, &k);
        mdb_strv_clear(&k.accession_numbers);
        if (!ok)
            return false;
    }
    return true;
}
