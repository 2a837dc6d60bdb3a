/* The sub-commands of `metadb`. Each lives in cli/cmd_<name>.c and receives
 * the loaded configuration and the arguments after the sub-command name
 * (argv[0] is the sub-command). Returns the process exit code:
 * 0 success, 1 failure of the operation, 2 usage error. */
#ifndef MDB_CLI_H
#define MDB_CLI_H

#include "mdb_config.h"

typedef int (*mdb_cli_fn)(mdb_config_t *cfg, int argc, char **argv);

int mdb_cmd_submit(mdb_config_t *cfg, int argc, char **argv);     /* producer issue */
int mdb_cmd_status(mdb_config_t *cfg, int argc, char **argv);     /* producer issue */
int mdb_cmd_retry(mdb_config_t *cfg, int argc, char **argv);      /* producer issue */
int mdb_cmd_index(mdb_config_t *cfg, int argc, char **argv);      /* producer issue */
int mdb_cmd_researcher(mdb_config_t *cfg, int argc, char **argv); /* producer issue */
int mdb_cmd_collection(mdb_config_t *cfg, int argc, char **argv); /* producer issue */
int mdb_cmd_extract(mdb_config_t *cfg, int argc, char **argv);    /* worker issue */
int mdb_cmd_reconcile(mdb_config_t *cfg, int argc, char **argv);  /* linker issue */
int mdb_cmd_dump(mdb_config_t *cfg, int argc, char **argv);       /* linker issue: canonical dump */
int mdb_cmd_query(mdb_config_t *cfg, int argc, char **argv);      /* api issue */
int mdb_cmd_lag(mdb_config_t *cfg, int argc, char **argv);        /* operations issue */
int mdb_cmd_topics(mdb_config_t *cfg, int argc, char **argv);     /* foundation: create topics */
int mdb_cmd_pacs(mdb_config_t *cfg, int argc, char **argv);       /* PACS issue: list|echo|find */
int mdb_cmd_export(mdb_config_t *cfg, int argc, char **argv);     /* cohort export (issue 15) */

#endif
