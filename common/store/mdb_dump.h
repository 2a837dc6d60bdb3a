/* mdb_dump: the canonical dump of the catalogue, for byte-comparing two
 * databases (a clean run against a run with crashes, before/after a
 * reconcile --repair).
 *
 * Format: JSON Lines. For each section, in this order - studies, series,
 * instances, conflicts, jobs - one header line {"section": NAME, "count": N}
 * followed by N documents, one per line, compact JSON with sorted keys.
 * Documents are sorted by _id (jobs: by their canonical text, since job ids
 * differ between runs). Removed: created_at, updated_at, completed_at,
 * submitted_at, running_at and every job id (job_ids[] of studies and
 * instances; jobs keep only their counters, state, collection and feature
 * set, with errors[] reduced to its length). Arrays of strings that are
 * sets (paths, collection_ids, job_ids, modalities) are sorted. */
#ifndef MDB_DUMP_H
#define MDB_DUMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "mdb_error.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Canonical form of one document of collection coll ("studies", "series",
 * "instances", "conflicts", "jobs"); new reference, NULL on OOM. */
json_t *mdb_dump_canonical(const char *coll, const json_t *doc);

/* Write the whole dump of m's database to out. *ndocs (may be NULL)
 * receives the number of documents written. */
bool mdb_dump_write(mdb_mongo_t *m, FILE *out, size_t *ndocs, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
