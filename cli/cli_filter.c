/* cli_filter: reading filter options into query parameters (cli_filter.h). */
#include "cli_filter.h"

#include <stdio.h>
#include <string.h>

const char *cli_opt_value(int argc, char **argv, int *i, char *name, size_t size)
{
    const char *a = argv[*i] + 2;
    const char *eq = strchr(a, '=');
    if (eq) {
        snprintf(name, size, "%.*s", (int)(eq - a), a);
        return eq + 1;
    }
    snprintf(name, size, "%s", a);
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

const char *cli_filter_param(const char *name, const char *v, char *field, size_t size)
{
    if (!strcmp(name, "where")) {
        const char *eq = strchr(v, '=');
        if (!eq || eq == v)
            return NULL;
        snprintf(field, size, "%.*s", (int)(eq - v), v);
        return eq + 1;
    }
    snprintf(field, size, "%s", name);
    if (strncmp(field, "metadata.", 9) != 0 && !strstr(field, ".metadata."))
        for (char *p = field; *p; p++)
            if (*p == '-')
                *p = '_';
    return v;
}
