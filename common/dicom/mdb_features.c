/* mdb_features: feature-set files and the promoted-field map, compiled into
 * one sorted table of "slots" (tag -> levels, output key, promoted fields)
 * so the extractor converts only what a set asks for. See mdb_features.h
 * for the file formats. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mdb_dicom.h"
#include "mdb_features.h"

static const char *const LIST_FILES[MDB_LEVEL_COUNT] = {"StudyFeatures.txt", "SeriesFeatures.txt",
                                                        "InstanceFeatures.txt"};

struct mdb_features {
    char *name;
    mdb_feature_t *lists[MDB_LEVEL_COUNT];
    size_t counts[MDB_LEVEL_COUNT];
    bool star[MDB_LEVEL_COUNT];
    bool creators[MDB_LEVEL_COUNT]; /* "Private Creator": every (gggg,0010-00FF), odd gggg */
    mdb_promoted_t *promoted;
    int32_t *promoted_next;
    size_t npromoted;
    mdb_feature_slot_t *slots;
    size_t nslots;
    int32_t *hash; /* open addressing: slot index + 1, 0 = empty */
    size_t hash_mask;
    char **warnings;
    size_t nwarnings;
    char **strings; /* owned strings (keys, field names) */
    size_t nstrings;
};

const char *mdb_level_name(int level)
{
    switch (level) {
    case MDB_LEVEL_STUDY: return "study";
    case MDB_LEVEL_SERIES: return "series";
    case MDB_LEVEL_INSTANCE: return "instance";
    default: return "?";
    }
}

static char *own(mdb_features_t *fs, const char *s)
{
    char **n = realloc(fs->strings, (fs->nstrings + 1) * sizeof *n);
    if (!n)
        return NULL;
    fs->strings = n;
    char *c = strdup(s);
    if (c)
        fs->strings[fs->nstrings++] = c;
    return c;
}

static bool warn(mdb_features_t *fs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool warn(mdb_features_t *fs, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(fs->warnings, (fs->nwarnings + 1) * sizeof *n);
    if (!n)
        return false;
    fs->warnings = n;
    if (!(fs->warnings[fs->nwarnings] = strdup(buf)))
        return false;
    fs->nwarnings++;
    return true;
}

static bool parse_hex(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (!isxdigit(c))
            return false;
        v = v * 16 + (uint32_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
    }
    *out = v;
    return true;
}

bool mdb_features_resolve(const char *entry, uint32_t *tag)
{
    size_t n = strlen(entry);
    uint32_t g, e;
    if (n == 11 && entry[0] == '(' && entry[5] == ',' && entry[10] == ')' && parse_hex(entry + 1, 4, &g) &&
        parse_hex(entry + 6, 4, &e)) {
        *tag = MDB_TAG(g, e);
        return true;
    }
    if (n == 9 && entry[4] == ',' && parse_hex(entry, 4, &g) && parse_hex(entry + 5, 4, &e)) {
        *tag = MDB_TAG(g, e);
        return true;
    }
    if (n == 8 && parse_hex(entry, 8, tag))
        return true;
    const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_keyword(entry);
    if (de) {
        *tag = de->tag;
        return true;
    }
    return false;
}

static bool is_vr(const char *s)
{
    return strlen(s) == 2 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]);
}

/* Output key of a tag: its dictionary keyword, else "GGGGEEEE". */
static const char *key_of(mdb_features_t *fs, uint32_t tag)
{
    if (!(MDB_TAG_GROUP(tag) & 1)) {
        const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_tag(tag);
        if (de && de->keyword[0] && de->tag == tag)
            return de->keyword;
    }
    char hex[9];
    snprintf(hex, sizeof hex, "%08X", tag);
    return own(fs, hex);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* One line of a list file: entry [VR]. Returns false on OOM only. */
static bool add_list_line(mdb_features_t *fs, int level, const char *file, int lineno, char *line)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *s = trim(line);
    if (!*s)
        return true;
    if (!strcmp(s, "*")) {
        fs->star[level] = true;
        return true;
    }
    if (mdb_features_is_private_creator_entry(s)) {
        fs->creators[level] = true;
        return true;
    }
    uint32_t tag;
    char vr[3] = "";
    bool ok = mdb_features_resolve(s, &tag);
    if (!ok) {
        char *sp = strrchr(s, ' ');
        if (!sp)
            sp = strrchr(s, '\t');
        if (sp && is_vr(trim(sp + 1))) {
            char *v = trim(sp + 1);
            memcpy(vr, v, 3);
            *sp = '\0';
            ok = mdb_features_resolve(trim(s), &tag);
            s = trim(s);
        }
    }
    if (!ok)
        return warn(fs, "%s:%d: '%s' is not a DICOM keyword or tag; ignored", file, lineno, s);
    if (MDB_TAG_GROUP(tag) == 0xFFFE || tag == MDB_TAG(0x7FE0, 0x0010))
        return warn(fs, "%s:%d: '%s' is not an extractable attribute; ignored", file, lineno, s);
    for (size_t i = 0; i < fs->counts[level]; i++)
        if (fs->lists[level][i].tag == tag)
            return true;
    mdb_feature_t *n = realloc(fs->lists[level], (fs->counts[level] + 1) * sizeof *n);
    if (!n)
        return false;
    fs->lists[level] = n;
    mdb_feature_t *f = &n[fs->counts[level]];
    f->tag = tag;
    f->keyword = key_of(fs, tag);
    memcpy(f->vr, vr, 3);
    if (!f->keyword)
        return false;
    fs->counts[level]++;
    return true;
}

static int parse_level(const char *s)
{
    for (int l = 0; l < MDB_LEVEL_COUNT; l++)
        if (!strcmp(s, mdb_level_name(l)))
            return l;
    if (!strcmp(s, "studies"))
        return MDB_LEVEL_STUDY;
    if (!strcmp(s, "instances"))
        return MDB_LEVEL_INSTANCE;
    return -1;
}

static bool field_ok(const char *f)
{
    if (!*f)
        return false;
    for (; *f; f++)
        if (!(islower((unsigned char)*f) || isdigit((unsigned char)*f) || *f == '_'))
            return false;
    return true;
}

/* promoted.conf line: level keyword field. Bad lines are warnings. */
static bool add_promoted_line(mdb_features_t *fs, const char *file, int lineno, char *line)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *s = trim(line);
    if (!*s)
        return true;
    char *tok[3] = {0};
    int nt = 0;
    for (char *save = NULL, *t = strtok_r(s, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (nt == 3) {
            nt = 4;
            break;
        }
        tok[nt++] = t;
    }
    if (nt != 3)
        return warn(fs, "%s:%d: expected '<level> <keyword> <field>'; ignored", file, lineno);
    int level = parse_level(tok[0]);
    uint32_t tag;
    if (level < 0)
        return warn(fs, "%s:%d: unknown level '%s' (study|series|instance); ignored", file, lineno, tok[0]);
    if (!mdb_features_resolve(tok[1], &tag))
        return warn(fs, "%s:%d: '%s' is not a DICOM keyword or tag; ignored", file, lineno, tok[1]);
    if (!field_ok(tok[2]))
        return warn(fs, "%s:%d: field '%s' must be snake_case [a-z0-9_]; ignored", file, lineno, tok[2]);
    for (size_t i = 0; i < fs->npromoted; i++)
        if (fs->promoted[i].level == level && !strcmp(fs->promoted[i].field, tok[2]))
            return warn(fs, "%s:%d: field '%s' already promoted at level %s; ignored", file, lineno, tok[2], tok[0]);
    mdb_promoted_t *n = realloc(fs->promoted, (fs->npromoted + 1) * sizeof *n);
    if (!n)
        return false;
    fs->promoted = n;
    mdb_promoted_t *p = &n[fs->npromoted];
    p->level = level;
    p->tag = tag;
    p->keyword = key_of(fs, tag);
    p->field = own(fs, tok[2]);
    if (!p->keyword || !p->field)
        return false;
    fs->npromoted++;
    return true;
}

typedef bool (*line_fn)(mdb_features_t *fs, int level, const char *file, int lineno, char *line);

static bool promoted_line_adapter(mdb_features_t *fs, int level, const char *file, int lineno, char *line)
{
    (void)level;
    return add_promoted_line(fs, file, lineno, line);
}

static bool each_line(mdb_features_t *fs, int level, const char *label, const char *text, line_fn fn)
{
    int lineno = 0;
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, n);
        if (!line)
            return false;
        lineno++;
        bool ok = fn(fs, level, label, lineno, line);
        free(line);
        if (!ok)
            return false;
        p = nl ? nl + 1 : NULL;
    }
    return true;
}

static size_t tag_hash(uint32_t tag)
{
    uint32_t h = tag * 0x9E3779B1u;
    return (size_t)(h ^ (h >> 15));
}

static int slot_cmp(const void *a, const void *b)
{
    uint32_t x = ((const mdb_feature_slot_t *)a)->tag, y = ((const mdb_feature_slot_t *)b)->tag;
    return x < y ? -1 : x > y;
}

static mdb_feature_slot_t *slot_for(mdb_features_t *fs, uint32_t tag, const char *keyword)
{
    for (size_t i = 0; i < fs->nslots; i++)
        if (fs->slots[i].tag == tag)
            return &fs->slots[i];
    mdb_feature_slot_t *n = realloc(fs->slots, (fs->nslots + 1) * sizeof *n);
    if (!n)
        return NULL;
    fs->slots = n;
    mdb_feature_slot_t *s = &n[fs->nslots++];
    memset(s, 0, sizeof *s);
    s->tag = tag;
    s->keyword = keyword;
    s->promoted = -1;
    return s;
}

static bool build_slots(mdb_features_t *fs)
{
    for (int l = 0; l < MDB_LEVEL_COUNT; l++)
        for (size_t i = 0; i < fs->counts[l]; i++) {
            mdb_feature_t *f = &fs->lists[l][i];
            mdb_feature_slot_t *s = slot_for(fs, f->tag, f->keyword);
            if (!s)
                return false;
            s->levels |= (uint8_t)(1u << l);
            if (f->vr[0])
                memcpy(s->vr, f->vr, 3);
        }
    fs->promoted_next = calloc(fs->npromoted + 1, sizeof *fs->promoted_next);
    if (!fs->promoted_next)
        return false;
    for (size_t i = 0; i < fs->npromoted; i++)
        fs->promoted_next[i] = -1;
    /* promoted fields: chained per tag, in file order */
    for (size_t i = fs->npromoted; i-- > 0;) {
        mdb_feature_slot_t *s = slot_for(fs, fs->promoted[i].tag, fs->promoted[i].keyword);
        if (!s)
            return false;
        fs->promoted_next[i] = s->promoted;
        s->promoted = (int32_t)i;
    }
    if (fs->nslots)
        qsort(fs->slots, fs->nslots, sizeof *fs->slots, slot_cmp);
    size_t size = 64;
    while (size < fs->nslots * 4)
        size *= 2;
    fs->hash = calloc(size, sizeof *fs->hash);
    if (!fs->hash)
        return false;
    fs->hash_mask = size - 1;
    for (size_t i = 0; i < fs->nslots; i++) {
        mdb_feature_slot_t *sl = &fs->slots[i];
        if (!(MDB_TAG_GROUP(sl->tag) & 1))
            sl->dict = mdb_dicom_dict_by_tag(sl->tag);
        size_t h = tag_hash(sl->tag) & fs->hash_mask;
        while (fs->hash[h])
            h = (h + 1) & fs->hash_mask;
        fs->hash[h] = (int32_t)i + 1;
    }
    return true;
}

static mdb_features_t *features_alloc(const char *name)
{
    mdb_features_t *fs = calloc(1, sizeof *fs);
    if (!fs)
        return NULL;
    if (!(fs->name = strdup(name && *name ? name : "default"))) {
        free(fs);
        return NULL;
    }
    return fs;
}

mdb_features_t *mdb_features_from_text(const char *name, const char *study, const char *series, const char *instance,
                                       const char *promoted, mdb_error_t *err)
{
    mdb_features_t *fs = features_alloc(name);
    const char *texts[MDB_LEVEL_COUNT] = {study, series, instance};
    bool ok = fs != NULL;
    for (int l = 0; ok && l < MDB_LEVEL_COUNT; l++)
        ok = each_line(fs, l, LIST_FILES[l], texts[l] ? texts[l] : "", add_list_line);
    if (ok && promoted)
        ok = each_line(fs, 0, "promoted.conf", promoted, promoted_line_adapter);
    if (ok)
        ok = build_slots(fs);
    if (!ok) {
        mdb_features_destroy(fs);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory loading feature set");
        return NULL;
    }
    return fs;
}

/* Whole file into a malloc'd string (refuses files over 4 MiB). */
static char *slurp(const char *path, mdb_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        mdb_error_set(err, MDB_ERR_CONFIG, errno, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(4 * 1024 * 1024 + 1);
    size_t n = buf ? fread(buf, 1, 4 * 1024 * 1024 + 1, f) : 0;
    bool bad = ferror(f) || n > 4 * 1024 * 1024;
    fclose(f);
    if (!buf || bad) {
        free(buf);
        mdb_error_set(err, MDB_ERR_CONFIG, EIO, "cannot read %s (I/O error or larger than 4 MiB)", path);
        return NULL;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        free(buf);
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "%s: contains NUL bytes (not a text file)", path);
        return NULL;
    }
    return buf;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Load one list file; fallback_dir (may be NULL) supplies a missing file. */
static bool load_list(mdb_features_t *fs, int level, const char *dir, const char *fallback_dir, mdb_error_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, LIST_FILES[level]);
    if (!exists(path) && fallback_dir)
        snprintf(path, sizeof path, "%s/%s", fallback_dir, LIST_FILES[level]);
    char *text = slurp(path, err);
    if (!text)
        return false;
    bool ok = each_line(fs, level, path, text, add_list_line);
    free(text);
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory loading %s", path);
    return ok;
}

static mdb_features_t *load_set(const char *dir, const char *fallback_dir, const char *name, const char *promoted_path,
                                mdb_error_t *err)
{
    mdb_features_t *fs = features_alloc(name);
    char ppath[4096];
    if (!fs) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    for (int l = 0; l < MDB_LEVEL_COUNT; l++)
        if (!load_list(fs, l, dir, fallback_dir, err))
            goto fail;
    if (!promoted_path) {
        snprintf(ppath, sizeof ppath, "%s/promoted.conf", dir);
        if (!exists(ppath) && fallback_dir)
            snprintf(ppath, sizeof ppath, "%s/promoted.conf", fallback_dir);
        promoted_path = exists(ppath) ? ppath : NULL;
    }
    if (promoted_path) {
        char *text = slurp(promoted_path, err);
        if (!text)
            goto fail;
        bool ok = each_line(fs, 0, promoted_path, text, promoted_line_adapter);
        free(text);
        if (!ok) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory loading %s", promoted_path);
            goto fail;
        }
    }
    if (!build_slots(fs)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto fail;
    }
    return fs;
fail:
    mdb_features_destroy(fs);
    return NULL;
}

mdb_features_t *mdb_features_load(const char *dir, const char *name, const char *promoted_path, mdb_error_t *err)
{
    return load_set(dir, NULL, name, promoted_path, err);
}

void mdb_features_destroy(mdb_features_t *fs)
{
    if (!fs)
        return;
    for (int l = 0; l < MDB_LEVEL_COUNT; l++)
        free(fs->lists[l]);
    free(fs->promoted);
    free(fs->promoted_next);
    free(fs->slots);
    free(fs->hash);
    for (size_t i = 0; i < fs->nwarnings; i++)
        free(fs->warnings[i]);
    free(fs->warnings);
    for (size_t i = 0; i < fs->nstrings; i++)
        free(fs->strings[i]);
    free(fs->strings);
    free(fs->name);
    free(fs);
}

const char *mdb_features_name(const mdb_features_t *fs)
{
    return fs->name;
}

size_t mdb_features_count(const mdb_features_t *fs, int level)
{
    return level >= 0 && level < MDB_LEVEL_COUNT ? fs->counts[level] : 0;
}

const mdb_feature_t *mdb_features_get(const mdb_features_t *fs, int level, size_t i)
{
    return level >= 0 && level < MDB_LEVEL_COUNT && i < fs->counts[level] ? &fs->lists[level][i] : NULL;
}

bool mdb_features_star(const mdb_features_t *fs, int level)
{
    return level >= 0 && level < MDB_LEVEL_COUNT && fs->star[level];
}

bool mdb_features_private_creators(const mdb_features_t *fs, int level)
{
    return level >= 0 && level < MDB_LEVEL_COUNT && fs->creators[level];
}

/* "Private Creator" as the reference lists spell it (the dictionary's name
 * of (gggg,0010-00FF)), or "PrivateCreator"; spaces and case do not matter. */
bool mdb_features_is_private_creator_entry(const char *entry)
{
    static const char want[] = "privatecreator";
    size_t k = 0;
    for (const char *p = entry; *p; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        if (k >= sizeof want - 1 || tolower((unsigned char)*p) != want[k])
            return false;
        k++;
    }
    return k == sizeof want - 1;
}

size_t mdb_features_promoted_count(const mdb_features_t *fs)
{
    return fs->npromoted;
}

const mdb_promoted_t *mdb_features_promoted(const mdb_features_t *fs, size_t i)
{
    return i < fs->npromoted ? &fs->promoted[i] : NULL;
}

int32_t mdb_features_promoted_next(const mdb_features_t *fs, int32_t i)
{
    return i >= 0 && (size_t)i < fs->npromoted ? fs->promoted_next[i] : -1;
}

const mdb_feature_slot_t *mdb_features_lookup(const mdb_features_t *fs, uint32_t tag)
{
    if (!fs->hash)
        return NULL;
    for (size_t h = tag_hash(tag) & fs->hash_mask; fs->hash[h]; h = (h + 1) & fs->hash_mask)
        if (fs->slots[fs->hash[h] - 1].tag == tag)
            return &fs->slots[fs->hash[h] - 1];
    return NULL;
}

size_t mdb_features_warning_count(const mdb_features_t *fs)
{
    return fs->nwarnings;
}

const char *mdb_features_warning(const mdb_features_t *fs, size_t i)
{
    return i < fs->nwarnings ? fs->warnings[i] : NULL;
}

/* ---- registry ---- */

#define MAX_SETS 64

struct mdb_featuresets {
    pthread_mutex_t lock;
    char *dir;
    char *default_name;
    mdb_features_t *sets[MAX_SETS];
    size_t nsets;
};

static bool name_ok(const char *n)
{
    if (!*n || strlen(n) > 64 || strstr(n, ".."))
        return false;
    for (const char *p = n; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* features.dir as given, or under the source tree when a relative default
 * does not exist in the working directory (binaries run from a build dir). */
static char *resolve_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0 || dir[0] == '/')
        return strdup(dir);
#ifdef MDB_SOURCE_DIR
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", MDB_SOURCE_DIR, dir);
    if (stat(buf, &st) == 0)
        return strdup(buf);
#endif
    return strdup(dir);
}

static mdb_features_t *registry_load(mdb_featuresets_t *r, const char *name, mdb_error_t *err)
{
    char sub[4096];
    bool is_default_dir = !strcmp(name, "default") && !strcmp(r->default_name, "default");
    if (is_default_dir)
        return load_set(r->dir, NULL, name, NULL, err);
    snprintf(sub, sizeof sub, "%s/featuresets/%s", r->dir, name);
    struct stat st;
    if (stat(sub, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (!strcmp(name, "default"))
            return load_set(r->dir, NULL, name, NULL, err);
        mdb_error_set(err, MDB_ERR_CONFIG, ENOENT, "feature set '%s' not found (no folder %s)", name, sub);
        return NULL;
    }
    return load_set(sub, r->dir, name, NULL, err);
}

mdb_featuresets_t *mdb_featuresets_new(const char *dir, const char *default_name, mdb_error_t *err)
{
    mdb_featuresets_t *r = calloc(1, sizeof *r);
    if (!r || !(r->dir = resolve_dir(dir && *dir ? dir : "conf")) ||
        !(r->default_name = strdup(default_name && *default_name ? default_name : "default"))) {
        mdb_featuresets_destroy(r);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    if (!name_ok(r->default_name)) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "features.default: invalid set name '%s'", r->default_name);
        mdb_featuresets_destroy(r);
        return NULL;
    }
    mdb_features_t *fs = registry_load(r, r->default_name, err);
    if (!fs) {
        mdb_featuresets_destroy(r);
        return NULL;
    }
    r->sets[r->nsets++] = fs;
    return r;
}

void mdb_featuresets_destroy(mdb_featuresets_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nsets; i++)
        mdb_features_destroy(r->sets[i]);
    if (r->dir)
        pthread_mutex_destroy(&r->lock);
    free(r->dir);
    free(r->default_name);
    free(r);
}

const mdb_features_t *mdb_featuresets_get(mdb_featuresets_t *r, const char *name, bool *fresh, mdb_error_t *err)
{
    if (fresh)
        *fresh = false;
    if (!name || !*name)
        return r->sets[0];
    if (!name_ok(name)) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "invalid feature set name '%.80s' ([A-Za-z0-9._-], no '..')", name);
        return NULL;
    }
    pthread_mutex_lock(&r->lock);
    const mdb_features_t *found = NULL;
    for (size_t i = 0; i < r->nsets && !found; i++)
        if (!strcmp(r->sets[i]->name, name))
            found = r->sets[i];
    if (!found && r->nsets == MAX_SETS)
        mdb_error_set(err, MDB_ERR_CONFIG, ENOSPC, "too many feature sets in use (%d)", MAX_SETS);
    else if (!found) {
        mdb_features_t *fs = registry_load(r, name, err);
        if (fs) {
            r->sets[r->nsets++] = fs;
            found = fs;
            if (fresh)
                *fresh = true;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return found;
}
