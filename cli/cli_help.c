/* cli_help.c: turning help requests into `CMD [SUB] --help` (see cli_help.h). */
#include "cli_help.h"

#include <stdbool.h>
#include <string.h>

static char HELP[] = "--help";

/* Sub-commands with a usage of their own. */
static bool own_usage(const char *cmd, const char *sub)
{
    static const char *const subs[][2] = {{"query", "nl"}};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(subs[i][0], cmd) && !strcmp(subs[i][1], sub))
            return true;
    return false;
}

static int build(char *cmd, char *sub, char *out[3])
{
    int n = 0;
    out[n++] = cmd;
    if (sub && own_usage(cmd, sub))
        out[n++] = sub;
    out[n++] = HELP;
    return n;
}

int cli_help_argv(int argc, char **argv, char *out[3])
{
    if (argc < 1)
        return 0;
    if (!strcmp(argv[0], "help"))
        return argc >= 2 ? build(argv[1], argc >= 3 ? argv[2] : NULL, out) : 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break; /* what follows is data (file names, words) */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return build(argv[0], argc >= 2 && argv[1][0] != '-' ? argv[1] : NULL, out);
    }
    return 0;
}
