/* mdb_cases_doc: a collection document's `cases` array as mdb_cases (the
 * CLI shows and merges them, the producer turns them into selectors). Kept
 * apart from mdb_cases, whose rules stay free of BSON. */
#ifndef MDB_CASES_DOC_H
#define MDB_CASES_DOC_H

#include <bson/bson.h>
#include <stdbool.h>

#include "mdb_cases.h"

/* Cases of doc's `cases` into out (zeroed first; the caller clears it):
 * entries without a case_id, and non-string accessions, are passed over; a
 * document without the array has none. false only when out of memory. */
bool mdb_cases_from_doc(const bson_t *doc, mdb_cases_t *out);

#endif
