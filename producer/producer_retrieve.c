/* producer_retrieve: which source a job's selectors come from. "archive"
 * (the default) resolves through the catalogue only; "pacs:NAME" sends every
 * accession / patient / study selector to that PACS (a retrieve task for the
 * fetcher); "auto" resolves through the catalogue and sends the selectors it
 * did not find to the first configured PACS. The producer only needs the
 * names of pacs.sources entries; the fetcher parses them fully. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_jobs.h"
#include "producer.h"

bool producer_pacs_names(const mdb_config_t *cfg, mdb_strv_t *out, mdb_error_t *err)
{
    const char *spec = mdb_config_get(cfg, "pacs.sources");
    char *copy = strdup(spec ? spec : "");
    char *save = NULL;
    bool ok = copy != NULL;
    for (char *tok = ok ? strtok_r(copy, ",", &save) : NULL; ok && tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t n = strcspn(tok, ":");
        if (n == 0 || tok[n] != ':')
            continue; /* malformed: the fetcher reports it */
        tok[n] = '\0';
        ok = mdb_strv_push(out, tok);
    }
    free(copy);
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return ok;
}

bool producer_source_mode(const producer_t *p, const char *source, int *mode, const char **pacs, char *why,
                          size_t why_len)
{
    *pacs = NULL;
    *mode = PRODUCER_SRC_ARCHIVE;
    if (!source || !strcmp(source, "archive"))
        return true;
    if (!strcmp(source, "auto")) {
        if (p->pacs_names.n == 0) {
            snprintf(why, why_len, "source \"auto\" needs a PACS in pacs.sources, and none is configured");
            return false;
        }
        *mode = PRODUCER_SRC_AUTO;
        *pacs = p->pacs_names.v[0];
        return true;
    }
    if (!strncmp(source, "pacs:", 5)) {
        for (size_t i = 0; i < p->pacs_names.n; i++)
            if (!strcmp(p->pacs_names.v[i], source + 5)) {
                *mode = PRODUCER_SRC_PACS;
                *pacs = p->pacs_names.v[i];
                return true;
            }
        snprintf(why, why_len, "source \"%.100s\": no PACS of that name in pacs.sources", source);
        return false;
    }
    snprintf(why, why_len, "source \"%.100s\": expected archive, auto or pacs:NAME", source);
    return false;
}

bool producer_kind_retrievable(int kind)
{
    return kind == MDB_SEL_ACCESSION || kind == MDB_SEL_PATIENT || kind == MDB_SEL_STUDY;
}
