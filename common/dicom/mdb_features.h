/* mdb_features: the attribute lists a worker extracts (feature sets) and the
 * promoted-field map.
 *
 * A feature set is a folder with StudyFeatures.txt, SeriesFeatures.txt and
 * InstanceFeatures.txt, one entry per line, '#' starts a comment:
 *   PatientName              a keyword of the data dictionary (retired ones too)
 *   (0010,0010)  00100010    a tag, also "0010,0010"; private (odd group) tags too
 *   (0009,1001) LO           optional VR for a private tag in implicit-VR files
 *   *                        every public attribute except bulk data (binary VRs)
 *   Private Creator          every private creator element present in the file,
 *                            (gggg,0010)-(gggg,00FF) for odd gggg, top level,
 *                            each keyed "GGGGEEEE" like any private tag, value
 *                            the creator string (e.g. "00090010": "GEMS_IDEN_01");
 *                            also "PrivateCreator" (case and spaces ignored)
 * Entries that resolve to nothing (not a keyword, not a tag) are kept as
 * warnings for the caller to log once; they are never fatal.
 *
 * The default set is the folder features.dir itself (conf/); named sets live
 * in features.dir/featuresets/<name>/. A set may carry its own promoted.conf;
 * otherwise features.dir/promoted.conf applies. promoted.conf lines are
 *   <level> <keyword or tag> <field>      e.g.  study AccessionNumber accession_number
 * level is study|series|instance; field is a snake_case name [a-z0-9_]+.
 * Promoted values are extracted whether or not the keyword is in the lists.
 *
 * A loaded set is immutable and safe to share between threads. */
#ifndef MDB_FEATURES_H
#define MDB_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_dicom.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MDB_LEVEL_STUDY = 0, MDB_LEVEL_SERIES = 1, MDB_LEVEL_INSTANCE = 2, MDB_LEVEL_COUNT = 3 } mdb_level_t;

/* "study", "series", "instance". */
const char *mdb_level_name(int level);

typedef struct mdb_features mdb_features_t;

/* One resolved entry. keyword is the output key: the dictionary keyword, or
 * "GGGGEEEE" (upper-case hex) for private/unknown tags. vr is "" unless the
 * entry gave one. */
typedef struct {
    uint32_t tag;
    const char *keyword;
    char vr[3];
} mdb_feature_t;

/* One promoted field: level, source tag, output field name. */
typedef struct {
    int level;
    uint32_t tag;
    const char *keyword; /* source keyword as resolved (for messages) */
    const char *field;
} mdb_promoted_t;

/* Load the set in dir (the three lists) with promoted map promoted_path
 * (NULL: dir/promoted.conf if it exists, else no promoted fields).
 * name is recorded for events. A missing list file is an error naming it;
 * unresolvable entries are warnings (mdb_features_warning). */
mdb_features_t *mdb_features_load(const char *dir, const char *name, const char *promoted_path, mdb_error_t *err);

/* Build a set from in-memory text (tests, tools): one string per level
 * (lines as in the files), promoted map text may be NULL. */
mdb_features_t *mdb_features_from_text(const char *name, const char *study, const char *series, const char *instance,
                                       const char *promoted, mdb_error_t *err);

void mdb_features_destroy(mdb_features_t *fs); /* accepts NULL */

const char *mdb_features_name(const mdb_features_t *fs);

/* The resolved entries of a level (in file order, duplicates removed). */
size_t mdb_features_count(const mdb_features_t *fs, int level);
const mdb_feature_t *mdb_features_get(const mdb_features_t *fs, int level, size_t i);
/* Does the level list contain '*'? */
bool mdb_features_star(const mdb_features_t *fs, int level);

size_t mdb_features_promoted_count(const mdb_features_t *fs);
const mdb_promoted_t *mdb_features_promoted(const mdb_features_t *fs, size_t i);

/* The hot-path view: everything a set wants from one tag. levels has bit
 * (1 << level) for each level list naming the tag; promoted is the index of
 * its first promoted field (-1 if none; further fields of the same tag
 * follow through promoted_next). Entries are sorted by tag. */
typedef struct {
    uint32_t tag;
    uint8_t levels;
    char vr[3];          /* VR given in the list (private tags), "" otherwise */
    const char *keyword; /* output key */
    int32_t promoted;
    const mdb_dicom_dict_entry_t *dict; /* the tag's dictionary entry, NULL if none */
} mdb_feature_slot_t;

/* Slot of tag, or NULL if the set neither lists nor promotes it. */
const mdb_feature_slot_t *mdb_features_lookup(const mdb_features_t *fs, uint32_t tag);
/* Next promoted field of the same tag after index i, or -1. */
int32_t mdb_features_promoted_next(const mdb_features_t *fs, int32_t i);

/* Does the level list contain "Private Creator" (every private creator
 * element of the file, see the list format above)? */
bool mdb_features_private_creators(const mdb_features_t *fs, int level);
/* Is a list entry the "Private Creator" request ("Private Creator",
 * "PrivateCreator", any case, spaces ignored)? */
bool mdb_features_is_private_creator_entry(const char *entry);

/* Warnings gathered while loading ("StudyFeatures.txt:12: 'Bogus Name'
 * is not a DICOM keyword or tag; ignored"). Owned by fs. */
size_t mdb_features_warning_count(const mdb_features_t *fs);
const char *mdb_features_warning(const mdb_features_t *fs, size_t i);

/* Resolve one entry text ("PatientName", "(0010,0010)", "00100010",
 * "0010,0010"); false if it is none of these. */
bool mdb_features_resolve(const char *entry, uint32_t *tag);

/* ---- the registry of named sets (one per worker process) ---- */
typedef struct mdb_featuresets mdb_featuresets_t;

/* dir = features.dir, default_name = features.default ("default" = dir itself).
 * Loads the default set now (an error if it cannot be loaded). */
mdb_featuresets_t *mdb_featuresets_new(const char *dir, const char *default_name, mdb_error_t *err);
void mdb_featuresets_destroy(mdb_featuresets_t *r); /* accepts NULL */

/* The set called name (NULL or "" = default), loaded on first use and kept.
 * Names are [A-Za-z0-9._-]+ without "..". *fresh (may be NULL) is set true
 * when this call loaded it (so the caller logs its warnings once).
 * Thread-safe. The returned set lives as long as the registry. */
const mdb_features_t *mdb_featuresets_get(mdb_featuresets_t *r, const char *name, bool *fresh, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
