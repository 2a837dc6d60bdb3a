/* metadb: one command-line front end. Global configuration flags come first
 * (--kafka.brokers=..., --mongo.uri=..., --config FILE), then the sub-command
 * and its own arguments. Each sub-command is a function in cli/cmd_<name>.c;
 * main only loads configuration, sets up logging and libmongoc, and dispatches. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

#include "cli_help.h"
#include "mdb_cli.h"
#include "mdb_log.h"
#include "mdb_signal.h"

/* Weak references let a partial build link; a missing command says so. */
#pragma weak mdb_cmd_submit
#pragma weak mdb_cmd_status
#pragma weak mdb_cmd_retry
#pragma weak mdb_cmd_index
#pragma weak mdb_cmd_researcher
#pragma weak mdb_cmd_collection
#pragma weak mdb_cmd_extract
#pragma weak mdb_cmd_reconcile
#pragma weak mdb_cmd_dump
#pragma weak mdb_cmd_query
#pragma weak mdb_cmd_lag
#pragma weak mdb_cmd_topics
#pragma weak mdb_cmd_pacs
#pragma weak mdb_cmd_export

typedef struct {
    const char *name;
    mdb_cli_fn fn;
    const char *help;
} command_t;

static const command_t commands[] = {
    {"submit", mdb_cmd_submit, "publish a job request (accessions, patients, studies, manifest, all cases)"},
    {"status", mdb_cmd_status, "show a job's state, counts, per-selector resolution and errors"},
    {"retry", mdb_cmd_retry, "re-publish the failed files of a job"},
    {"index", mdb_cmd_index, "crawl archive roots into the catalog (incremental)"},
    {"researcher", mdb_cmd_researcher, "add|list researchers"},
    {"collection", mdb_cmd_collection, "create|add-cases|list collections"},
    {"extract", mdb_cmd_extract, "print the instance event JSON for DICOM files"},
    {"reconcile", mdb_cmd_reconcile, "validate (and --repair) study/series/instance links"},
    {"dump", mdb_cmd_dump, "canonical dump of the catalogue documents (sorted, timestamps removed)"},
    {"query", mdb_cmd_query, "query studies|series|instances|raw|nl"},
    {"export", mdb_cmd_export, "export a cohort (every matching row) as csv|json|ndjson, or its file manifest"},
    {"lag", mdb_cmd_lag, "consumer lag per group, topic and partition"},
    {"topics", mdb_cmd_topics, "create the metadb topics (idempotent)"},
    {"pacs", mdb_cmd_pacs, "list|echo|find: talk to a configured PACS without retrieving (docs/pacs.md)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb [--config FILE] [--key=value ...] COMMAND [ARGS]\n"
                 "       metadb help COMMAND   (or metadb COMMAND --help): the command's own usage\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nconfiguration keys (flag > METADB_* environment > metadb.conf > default):\n");
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    int rest = argc;
    int rc = 2;
    mdb_config_t *cfg = mdb_config_new();

    if (!cfg || !mdb_config_load_all(cfg, argc, argv, &rest, &err)) {
        fprintf(stderr, "metadb: %s\n", err.message);
        goto done;
    }
    char *help[3];
    int nhelp = rest < argc ? cli_help_argv(argc - rest, argv + rest, help) : 0;
    if (rest >= argc || (!nhelp && !strcmp(argv[rest], "help")) || !strcmp(argv[rest], "--help") ||
        !strcmp(argv[rest], "-h")) {
        usage(rest >= argc ? stderr : stdout);
        mdb_config_print_help(cfg, rest >= argc ? stderr : stdout);
        rc = rest >= argc ? 2 : 0;
        goto done;
    }
    if (!mdb_log_init("metadb", mdb_config_get(cfg, "log.level"), mdb_config_get(cfg, "log.format"))) {
        fprintf(stderr, "metadb: bad log.level or log.format\n");
        goto done;
    }
    const command_t *cmd = NULL;
    const char *name = nhelp ? help[0] : argv[rest];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name))
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "metadb: unknown command '%s' (try metadb help)\n", name);
        goto done;
    }
    if (!cmd->fn) {
        fprintf(stderr, "metadb: command '%s' is not part of this build\n", cmd->name);
        rc = 1;
        goto done;
    }
    mongoc_init();
    mdb_log_route_mongoc();
    mdb_signal_install();
    /* `metadb help CMD` and `metadb CMD ... --help` are `CMD [SUB] --help` (cli_help.h) */
    rc = nhelp ? cmd->fn(cfg, nhelp, help) : cmd->fn(cfg, argc - rest, argv + rest);
    mongoc_cleanup();
done:
    mdb_config_destroy(cfg);
    return rc;
}
