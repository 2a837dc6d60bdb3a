/* The --FIELD VALUE filter arguments that `metadb query` and `metadb export`
 * share (export's file is the same cohort as query's answer, so both read
 * their filters alike). */
#ifndef CLI_FILTER_H
#define CLI_FILTER_H

#include <stddef.h>

/* "--name=value" or "--name value" at argv[*i]: name (without the dashes)
 * into name[size]; returns the value, advancing *i past a separate one, or
 * NULL when the value is missing. */
const char *cli_opt_value(int argc, char **argv, int *i, char *name, size_t size);

/* The query parameter of option `name` with value v: for "where", v is
 * FIELD=VALUE; otherwise the field is name with '-' read as '_' (not inside
 * metadata keywords: metadata.X, study.metadata.X). The field goes into
 * field[size]; returns the parameter's value (a pointer into v), or NULL when
 * a --where value has no FIELD= part. */
const char *cli_filter_param(const char *name, const char *v, char *field, size_t size);

#endif
