/* Helpers shared by the job-related sub-commands (submit, retry, status,
 * index, researcher, collection): option parsing, publishing a job request,
 * following a job to its final state, printing job documents, loading a
 * case manifest, and the list/show of researchers and collections. */
#ifndef MDB_CLI_JOBS_H
#define MDB_CLI_JOBS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdio.h>

#include "mdb_cases.h"
#include "mdb_config.h"
#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"

/* Match argv[*i] against "--name VALUE" or "--name=VALUE". Returns 1 and sets
 * *value (advancing *i past a separate value) on a match, 0 if argv[*i] is
 * another argument, -1 (message printed, prefixed with cmd) if the value is
 * missing. */
int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* Database handle from cfg, checked with a ping (message printed on failure). */
mdb_mongo_t *cli_mongo(const char *cmd, const mdb_config_t *cfg);

/* Publish a job request to topic.jobs keyed by m->job_id and wait for its
 * delivery report. */
bool cli_publish_job(const mdb_config_t *cfg, const mdb_job_msg_t *m, mdb_error_t *err);

/* Follow a job until it reaches a final state (or timeout_s > 0 passes),
 * printing a progress line to stderr when it is a terminal. Returns the exit
 * code: 0 completed, 1 failed, 3 completed_with_errors, 4 timeout. */
int cli_wait_job(mdb_mongo_t *m, const char *job_id, double timeout_s, bool quiet);

/* The full id of the job `arg` names (an id or a unique prefix of at least
 * MDB_JOBS_MIN_PREFIX characters), malloc'd; NULL with the reason printed
 * (prefixed with cmd): no such job, or an ambiguous prefix with the
 * candidates listed. */
char *cli_job_id(const char *cmd, mdb_mongo_t *m, const char *arg);

/* Human-readable view of a job document (state, totals, selectors, last errors). */
void cli_print_job(FILE *out, const bson_t *job, size_t max_errors);

/* Print doc as relaxed extended JSON followed by a newline. */
void cli_print_json(FILE *out, const bson_t *doc);

/* Exit code for a final state (see cli_wait_job); -1 if not final. */
int cli_exit_code_for_state(const char *state);

/* Load the case manifest at path into cases (caller clears it with
 * mdb_cases_clear). On failure every problem is printed with the path and
 * the reason with "metadb <cmd>: ", and cases is left empty. */
bool cli_load_manifest(const char *cmd, const char *path, mdb_cases_t *cases);

/* Number of elements of the array doc.key; 0 when it is missing or no array. */
size_t cli_doc_array_len(const bson_t *doc, const char *key);

/* One kind of named document that `metadb <cmd> list` tabulates and
 * `metadb <cmd> show ID` prints in full (researchers, collections). */
typedef struct {
    const char *cmd;                 /* "researcher": the command, and the noun in messages */
    const char *coll;                /* the database collection of the documents */
    void (*header)(void);            /* the list's table header */
    void (*row)(const bson_t *doc);  /* one line of the list */
    void (*show)(const bson_t *doc); /* the whole document, for show */
} cli_listing_t;

/* `metadb <cmd> list [--json]` or `metadb <cmd> show ID [--json]`: argv[0]
 * is "list" or "show". Sorted by _id; --json prints each document as
 * extended JSON. A failed find leaves stdout empty. Returns the exit code
 * (2: bad arguments, 1: database failure or no such ID). */
int cli_list_show(const mdb_config_t *cfg, const cli_listing_t *l, int argc, char **argv);

#endif
