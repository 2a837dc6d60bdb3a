/* Help for every sub-command: `metadb help CMD [SUB]` and `metadb CMD [SUB]
 * ... --help` both become the call `CMD [SUB] --help`, which every command
 * answers with its usage on stdout and exit code 0 (before touching Kafka
 * or the database). SUB is kept only for the sub-commands that have their
 * own usage (query nl); otherwise the command's usage covers them all. */
#ifndef CLI_HELP_H
#define CLI_HELP_H

/* argv[0..argc) are the words after the global flags (argv[0] is the
 * command or "help"). When they ask for a command's help, out[] gets the
 * arguments to call the command with (pointers into argv and to the literal
 * "--help") and the count is returned; 0 when they do not (including a bare
 * `metadb help`, which is the global help). Pure. */
int cli_help_argv(int argc, char **argv, char *out[3]);

#endif
