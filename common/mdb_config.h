/* mdb_config: one configuration with one precedence order everywhere:
 *   command-line flag > environment (METADB_*) > config file (key = value) > default.
 *
 * Known keys live in a schema table in mdb_config.c (name, default, type, help).
 * Unknown keys (in a file, a flag or a METADB_ variable) are an error naming
 * the key, except the pass-through prefix "kafka." (any librdkafka property,
 * e.g. kafka.security.protocol, kafka.sasl.username) which is handed to
 * librdkafka unchanged. Environment names are the key upper-cased with '.'
 * replaced by '_' (mongo.uri -> METADB_MONGO_URI); for pass-through keys the
 * reverse mapping is used (METADB_KAFKA_SASL_PASSWORD -> kafka.sasl.password).
 *
 * Keys of value "@/path/file" are read from that file (first line, trailing
 * whitespace removed): that is how secrets come from files. "@@x" is the
 * literal value "@x".
 *
 * kafka.* pass-through keys are checked against librdkafka's property table
 * when set, so "kafka.sasl.pasword" is an error naming the key. INT keys must
 * be non-negative integers (and *_port keys 0..65535); ENUM values must be one
 * of the listed choices. Every error has domain MDB_ERR_CONFIG and names the
 * key, plus the file:line, METADB_ variable or flag it came from.
 */
#ifndef MDB_CONFIG_H
#define MDB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_config mdb_config_t;

typedef enum {
    MDB_CONFIG_SRC_DEFAULT = 0,
    MDB_CONFIG_SRC_FILE,
    MDB_CONFIG_SRC_ENV,
    MDB_CONFIG_SRC_FLAG
} mdb_config_source_t;

/* A config holding only the schema defaults. Never NULL except on OOM. */
mdb_config_t *mdb_config_new(void);
void mdb_config_destroy(mdb_config_t *cfg); /* accepts NULL */

/* Set key from a given source. A lower-precedence source never overrides a
 * higher one already set. Validates key and type (int/bool/enum). */
bool mdb_config_set(mdb_config_t *cfg, const char *key, const char *value, mdb_config_source_t src, mdb_error_t *err);

/* Parse "key = value" lines (# comments, blank lines). Errors name file:line and key. */
bool mdb_config_load_file(mdb_config_t *cfg, const char *path, mdb_error_t *err);

/* Apply every METADB_* variable of environ (except METADB_CONFIG and the ones in
 * the ignore list of mdb_config.c, e.g. METADB_HOME/METADB_STATE used by scripts). */
bool mdb_config_load_env(mdb_config_t *cfg, mdb_error_t *err);

/* The whole standard sequence for a program:
 *  1. scan argv for --config FILE (else $METADB_CONFIG, else ./metadb.conf if it exists)
 *  2. load defaults < file < env < flags
 * Flags are "--key=value" or "--key value" where key is a schema key or a
 * kafka.* pass-through key. Parsing stops at the first argument that is not a
 * known config flag; *first_rest receives its index (argc if none), so a CLI can
 * parse its own sub-command flags from there. Unknown "--x" flags that are not
 * config keys also stop parsing (they belong to the sub-command), except a
 * dotted flag in one of the schema's sections ("--linker.batch_sise=5"), which
 * is a typo and an error. A lone "--" ends the config flags (first_rest is the
 * index after it). Daemons should reject first_rest < argc themselves. */
bool mdb_config_load_all(mdb_config_t *cfg, int argc, char **argv, int *first_rest, mdb_error_t *err);

/* Is `name` (without leading "--") a config key (schema or kafka.*)? */
bool mdb_config_is_key(const char *name);

/* Accessors. Keys must be schema keys (asking for an unknown key aborts in
 * debug builds and returns "" / 0). Returned strings are owned by cfg. */
const char *mdb_config_get(const mdb_config_t *cfg, const char *key);
int64_t mdb_config_get_int(const mdb_config_t *cfg, const char *key);
bool mdb_config_get_bool(const mdb_config_t *cfg, const char *key);
double mdb_config_get_double(const mdb_config_t *cfg, const char *key);
mdb_config_source_t mdb_config_source(const mdb_config_t *cfg, const char *key);

/* Split a comma-separated value into a NULL-terminated array of trimmed,
 * non-empty strings. Caller frees with mdb_config_strv_free. */
char **mdb_config_get_list(const mdb_config_t *cfg, const char *key, size_t *n_out);
void mdb_config_strv_free(char **v);

/* Call fn for each pass-through "kafka.X" key set (name passed without the
 * "kafka." prefix). Used by mdb_kafka to call rd_kafka_conf_set. Stops and
 * returns false if fn returns false. */
typedef bool (*mdb_config_each_fn)(const char *name, const char *value, void *ud);
bool mdb_config_foreach_passthrough(const mdb_config_t *cfg, mdb_config_each_fn fn, void *ud);

/* Print the schema (key, default, help) for --help output. */
void mdb_config_print_help(const mdb_config_t *cfg, void *file /* FILE* */);

#ifdef __cplusplus
}
#endif
#endif
