/* source: the registry that opens a source of the configured kind, the list
 * helpers every source fills, error-code names, and the storage test switch. */
#include "source.h"

#include <stdlib.h>
#include <string.h>

struct mdb_source {
    const mdb_source_ops_t *ops;
    void *state;
    mdb_source_config_t cfg;
};

static bool grow(void **items, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, ncap * size);
    if (!p)
        return false;
    *items = p;
    *cap = ncap;
    return true;
}

bool mdb_source_studies_push(mdb_source_studies_t *l, const mdb_source_study_t *s)
{
    if (!grow((void **)&l->items, &l->cap, l->n, sizeof *s))
        return false;
    l->items[l->n++] = *s;
    return true;
}

bool mdb_source_instances_push(mdb_source_instances_t *l, const mdb_source_instance_t *i)
{
    if (!grow((void **)&l->items, &l->cap, l->n, sizeof *i))
        return false;
    l->items[l->n++] = *i;
    return true;
}

void mdb_source_studies_free(mdb_source_studies_t *l)
{
    if (!l)
        return;
    free(l->items);
    memset(l, 0, sizeof *l);
}

void mdb_source_instances_free(mdb_source_instances_t *l)
{
    if (!l)
        return;
    free(l->items);
    memset(l, 0, sizeof *l);
}

static const mdb_source_ops_t *ops_for(int kind)
{
    if (kind == MDB_SOURCE_DIMSE)
        return &mdb_source_dimse_ops;
#ifdef MDB_HAVE_DICOMWEB
    if (kind == MDB_SOURCE_DICOMWEB)
        return &mdb_source_dicomweb_ops;
#endif
    return NULL;
}

mdb_source_t *mdb_source_open(const mdb_source_config_t *cfg, const char *spool_dir, mdb_error_t *err)
{
    const mdb_source_ops_t *ops = ops_for(cfg->kind);
    if (!ops) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_CONFIG, "source %s: kind not built in", cfg->name);
        return NULL;
    }
    mdb_source_t *src = calloc(1, sizeof *src);
    if (!src) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    src->ops = ops;
    src->cfg = *cfg;
    if (!ops->open(&src->cfg, spool_dir, &src->state, err)) {
        free(src);
        return NULL;
    }
    return src;
}

void mdb_source_close(mdb_source_t *src)
{
    if (!src)
        return;
    src->ops->close(src->state);
    free(src);
}

const mdb_source_config_t *mdb_source_config(const mdb_source_t *src)
{
    return &src->cfg;
}

bool mdb_source_echo(mdb_source_t *src, mdb_error_t *err)
{
    return src->ops->echo(src->state, err);
}

bool mdb_source_find_studies(mdb_source_t *src, const mdb_source_selector_t *sel, mdb_source_studies_t *out,
                             mdb_error_t *err)
{
    return src->ops->find_studies(src->state, sel, out, err);
}

bool mdb_source_list_instances(mdb_source_t *src, const char *study_uid, mdb_source_instances_t *out, mdb_error_t *err)
{
    return src->ops->list_instances(src->state, study_uid, out, err);
}

bool mdb_source_retrieve(mdb_source_t *src, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                         mdb_source_counts_t *counts, mdb_error_t *err)
{
    memset(counts, 0, sizeof *counts);
    counts->completed = counts->failed = counts->warning = -1;
    return src->ops->retrieve(src->state, req, sink, sink_ctx, counts, err);
}

bool mdb_source_error_retryable(const mdb_error_t *err)
{
    return err && err->domain == MDB_ERR_IO && (err->code == MDB_SOURCE_E_NETWORK || err->code == MDB_SOURCE_E_REFUSED);
}

const char *mdb_source_errc_name(int code)
{
    switch (code) {
    case MDB_SOURCE_E_NETWORK: return "network";
    case MDB_SOURCE_E_REFUSED: return "refused";
    case MDB_SOURCE_E_PROTOCOL: return "protocol";
    case MDB_SOURCE_E_NOTFOUND: return "not_found";
    case MDB_SOURCE_E_CONFIG: return "config";
    case MDB_SOURCE_E_SINK: return "sink";
    default: return "error";
    }
}

/* FNV-1a: stable across runs and machines, so a test knows which UIDs drop. */
static uint32_t uid_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

bool mdb_source_test_should_drop(const mdb_source_config_t *cfg, const mdb_source_retrieve_t *req, const char *sop_uid)
{
    if (cfg->test_drop_every <= 0 || !sop_uid || !*sop_uid)
        return false;
    bool whole_study = (!req->series_uid || !*req->series_uid) && req->n_sop_uids == 0;
    if (!cfg->test_drop_always && !whole_study)
        return false;
    return uid_hash(sop_uid) % (uint32_t)cfg->test_drop_every == 0;
}
