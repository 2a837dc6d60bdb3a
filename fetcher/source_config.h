/* source_config: the PACS entries of `pacs.sources` and their pacs.* defaults.
 *
 * pacs.sources is a comma-separated list of entries:
 *     NAME:dimse:HOST:PORT:CALLED_AE[;option=value...]
 *     NAME:dicomweb:URL[;option=value...]          (a ',' in a URL is written %2C)
 * options (each overrides the pacs.* key of the same meaning for this entry):
 *     ae=OURAE scp_port=N max_associations=N pause_ms=N hours=HH-HH
 *     retries=N backoff_ms=N timeout_s=N token_file=PATH
 *     retrieve=move|get (DIMSE: C-MOVE to our storage SCP, default, or C-GET)
 * e.g. "orthanc:dimse:10.0.0.5:4242:ORTHANC;max_associations=1;hours=19-07,
 *       web:dicomweb:https://pacs.example/dicom-web;token_file=/etc/metadb/pacs.token". */
#ifndef MDB_SOURCE_CONFIG_H
#define MDB_SOURCE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "mdb_config.h"
#include "mdb_error.h"
#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill *d with the pacs.* defaults of cfg (ae title, scp port, limits, test
 * switch). false + err (MDB_ERR_CONFIG) on a malformed value. */
bool mdb_source_defaults(const mdb_config_t *cfg, mdb_source_config_t *d, mdb_error_t *err);

/* Parse "HH-HH" (allowed hours, local time, may wrap midnight) or "" (always). Pure. */
bool mdb_source_parse_hours(const char *s, int *from, int *to, mdb_error_t *err);

/* Parse a pacs.sources value against defaults. *out is a malloc'ed array of
 * *n entries (caller frees with free()); "" gives n = 0. Names must be unique
 * and [A-Za-z0-9_.-]. false + err naming the entry on any error. Pure. */
bool mdb_source_parse_list(const char *spec, const mdb_source_config_t *defaults, mdb_source_config_t **out, size_t *n,
                           mdb_error_t *err);

/* Both steps from a loaded configuration. */
bool mdb_source_load(const mdb_config_t *cfg, mdb_source_config_t **out, size_t *n, mdb_error_t *err);

/* The entry named name, or NULL. */
const mdb_source_config_t *mdb_source_find(const mdb_source_config_t *list, size_t n, const char *name);

/* Is hour h (0..23) inside the allowed window of c? Pure. */
bool mdb_source_hour_allowed(const mdb_source_config_t *c, int h);

#ifdef __cplusplus
}
#endif
#endif
