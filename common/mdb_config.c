/* mdb_config: the one configuration of every metadb program.
 *
 * The schema (name, type, default, help) comes from mdb_config_keys.def via an
 * X-macro, so adding a key is one line there. Each value remembers the source
 * it came from and a lower-precedence source never overrides a higher one
 * (flag > METADB_* environment > file > default), whatever the loading order.
 *
 * Keys under "kafka." that are not schema keys are librdkafka properties passed
 * through unchanged; they are checked against librdkafka's own property table
 * when set, so a typo is reported here, naming the key, not at connect time.
 * A value "@/path" is replaced by the first line of that file (secrets); a
 * value that must literally start with '@' is written "@@...". */
#include "mdb_config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mdb_log.h"

extern char **environ;

typedef enum { T_STR, T_INT, T_BOOL, T_DOUBLE, T_ENUM } key_type_t;

typedef struct {
    const char *name;
    key_type_t type;
    const char *spec; /* default, or for ENUM "default|choice|choice..." */
    const char *help;
} key_def_t;

static const key_def_t schema[] = {
#define MDB_CONFIG_KEY(name, type, def, help) {name, T_##type, def, help},
#include "mdb_config_keys.def"
#undef MDB_CONFIG_KEY
};

#define NKEYS (sizeof schema / sizeof schema[0])

/* METADB_* variables that belong to scripts (deploy, tests), not to the schema. */
static const char *const env_ignore[] = {
    "METADB_CONFIG",     "METADB_HOME",       "METADB_STATE",      "METADB_STATE_DIR",
    "METADB_LOG_DIR",    "METADB_PREFIX",     "METADB_KAFKA_PORT", "METADB_KAFKA_CONTROLLER_PORT",
    "METADB_MONGO_PORT", "METADB_KAFKA_HOME", "METADB_PG_PORT",    "METADB_PG_BINDIR",
    "METADB_JAVA_HOME",  "METADB_PARTITIONS", "METADB_VERSION",    NULL,
};
/* Prefixes of script-owned variables. */
static const char *const env_ignore_prefix[] = {"METADB_TEST_", "METADB_DEPLOY_", "METADB_CI_", NULL};

typedef struct {
    char *value; /* NULL = schema default */
    mdb_config_source_t src;
} slot_t;

typedef struct {
    char *name; /* full "kafka.x" name */
    char *value;
    mdb_config_source_t src;
} pass_t;

struct mdb_config {
    slot_t slots[NKEYS];
    char *enum_defaults[NKEYS]; /* the default part of an ENUM spec */
    pass_t *pass;
    size_t npass, cappass;
};

static int key_index(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(schema[i].name, key))
            return (int)i;
    return -1;
}

static bool is_passthrough(const char *key)
{
    return !strncmp(key, "kafka.", 6) && key[6] != '\0' && key_index(key) < 0;
}

bool mdb_config_is_key(const char *name)
{
    return name && (key_index(name) >= 0 || is_passthrough(name));
}

mdb_config_t *mdb_config_new(void)
{
    mdb_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (schema[i].type != T_ENUM)
            continue;
        const char *bar = strchr(schema[i].spec, '|');
        cfg->enum_defaults[i] = strndup(schema[i].spec, bar ? (size_t)(bar - schema[i].spec) : strlen(schema[i].spec));
        if (!cfg->enum_defaults[i]) {
            mdb_config_destroy(cfg);
            return NULL;
        }
    }
    return cfg;
}

void mdb_config_destroy(mdb_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        free(cfg->slots[i].value);
        free(cfg->enum_defaults[i]);
    }
    for (size_t i = 0; i < cfg->npass; i++) {
        free(cfg->pass[i].name);
        free(cfg->pass[i].value);
    }
    free(cfg->pass);
    free(cfg);
}

static const char *source_name(mdb_config_source_t s)
{
    switch (s) {
    case MDB_CONFIG_SRC_FLAG: return "flag";
    case MDB_CONFIG_SRC_ENV: return "environment";
    case MDB_CONFIG_SRC_FILE: return "config file";
    default: return "default";
    }
}

/* Read the first line of path, trailing whitespace removed. Caller frees. */
static char *read_secret_file(const char *key, const char *path, mdb_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        mdb_error_set(err, MDB_ERR_CONFIG, errno, "config key '%s': cannot read file '%s': %s", key, path,
                      strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    int e = errno;
    bool bad = ferror(f);
    fclose(f);
    if (n < 0) {
        free(line);
        if (bad) {
            mdb_error_set(err, MDB_ERR_CONFIG, e, "config key '%s': cannot read file '%s': %s", key, path, strerror(e));
            return NULL;
        }
        return strdup(""); /* empty file = empty value */
    }
    while (n > 0 && isspace((unsigned char)line[n - 1]))
        line[--n] = '\0';
    return line;
}

static bool parse_int(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return false;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "true", "yes", "on", NULL};
    static const char *const f[] = {"0", "false", "no", "off", NULL};
    for (int i = 0; t[i]; i++)
        if (!strcasecmp(s, t[i])) {
            *out = true;
            return true;
        }
    for (int i = 0; f[i]; i++)
        if (!strcasecmp(s, f[i])) {
            *out = false;
            return true;
        }
    return false;
}

static bool parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    if (!*s)
        return false;
    double v = strtod(s, &end);
    if (errno || end == s)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    *out = v;
    return true;
}

static bool enum_has(const char *spec, const char *value)
{
    const char *p = strchr(spec, '|');
    size_t vl = strlen(value);
    while (p) {
        p++;
        const char *q = strchr(p, '|');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l == vl && !strncmp(p, value, l))
            return true;
        p = q;
    }
    return false;
}

/* A rejected value as shown in an error message: URIs masked (a mongodb://
 * URI given to the wrong key must not print its password) and cut at 60 bytes. */
static const char *shown(const char *value, char *buf, size_t size)
{
    char *masked = mdb_log_mask_uri(value);
    const char *v = masked ? masked : "(value hidden)";
    snprintf(buf, size, "%.60s%s", v, strlen(v) > 60 ? "..." : "");
    free(masked);
    return buf;
}

static bool validate(const key_def_t *d, const char *value, mdb_error_t *err)
{
    char sb[80];
    int64_t i;
    bool b;
    double x;
    size_t nl = strlen(d->name);
    switch (d->type) {
    case T_STR: return true;
    case T_INT:
        if (!parse_int(value, &i)) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': expected an integer, got '%s'", d->name,
                          shown(value, sb, sizeof sb));
            return false;
        }
        if (i < 0) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': must not be negative, got %lld", d->name,
                          (long long)i);
            return false;
        }
        if (nl > 5 && !strcmp(d->name + nl - 5, "_port") && i > 65535) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': port must be 0..65535, got %lld", d->name,
                          (long long)i);
            return false;
        }
        return true;
    case T_BOOL:
        if (!parse_bool(value, &b)) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': expected true or false, got '%s'", d->name,
                          shown(value, sb, sizeof sb));
            return false;
        }
        return true;
    case T_DOUBLE:
        if (!parse_double(value, &x)) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': expected a number, got '%s'", d->name,
                          shown(value, sb, sizeof sb));
            return false;
        }
        return true;
    case T_ENUM:
        if (!enum_has(d->spec, value)) {
            const char *choices = strchr(d->spec, '|');
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': '%s' is not one of %s", d->name,
                          shown(value, sb, sizeof sb), choices ? choices + 1 : "");
            return false;
        }
        return true;
    }
    return true;
}

/* Ask librdkafka whether it knows the property and accepts the value. */
static bool validate_passthrough(const char *key, const char *value, mdb_error_t *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, key + 6, value, errstr, sizeof errstr);
    rd_kafka_conf_destroy(conf);
    if (r == RD_KAFKA_CONF_UNKNOWN) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "unknown configuration key '%s' (not a librdkafka property '%s')", key,
                      key + 6);
        return false;
    }
    if (r != RD_KAFKA_CONF_OK) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': %s", key, errstr);
        return false;
    }
    return true;
}

static bool set_passthrough(mdb_config_t *cfg, const char *key, char *value /* owned */, mdb_config_source_t src,
                            mdb_error_t *err)
{
    for (size_t i = 0; i < cfg->npass; i++) {
        if (strcmp(cfg->pass[i].name, key))
            continue;
        if (src < cfg->pass[i].src) {
            free(value);
            return true;
        }
        free(cfg->pass[i].value);
        cfg->pass[i].value = value;
        cfg->pass[i].src = src;
        return true;
    }
    if (cfg->npass == cfg->cappass) {
        size_t ncap = cfg->cappass ? cfg->cappass * 2 : 8;
        pass_t *n = realloc(cfg->pass, ncap * sizeof *n);
        if (!n)
            goto oom;
        cfg->pass = n;
        cfg->cappass = ncap;
    }
    char *name = strdup(key);
    if (!name)
        goto oom;
    cfg->pass[cfg->npass].name = name;
    cfg->pass[cfg->npass].value = value;
    cfg->pass[cfg->npass].src = src;
    cfg->npass++;
    return true;
oom:
    free(value);
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return false;
}

bool mdb_config_set(mdb_config_t *cfg, const char *key, const char *value, mdb_config_source_t src, mdb_error_t *err)
{
    char *v = NULL;
    if (!cfg || !key || !value) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "config: missing key or value");
        return false;
    }
    int idx = key_index(key);
    bool pass = idx < 0 && is_passthrough(key);
    if (idx < 0 && !pass) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "unknown configuration key '%s'", key);
        return false;
    }
    if (value[0] == '@' && value[1] == '@') {
        v = strdup(value + 1);
    } else if (value[0] == '@') {
        if (!value[1]) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "config key '%s': '@' must be followed by a file path", key);
            return false;
        }
        v = read_secret_file(key, value + 1, err);
        if (!v)
            return false;
    } else {
        v = strdup(value);
    }
    if (!v) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (pass) {
        if (!validate_passthrough(key, v, err)) {
            free(v);
            return false;
        }
        return set_passthrough(cfg, key, v, src, err);
    }
    if (!validate(&schema[idx], v, err)) {
        free(v);
        return false;
    }
    slot_t *s = &cfg->slots[idx];
    if (s->value && src < s->src) {
        free(v);
        return true;
    }
    free(s->value);
    s->value = v;
    s->src = src;
    return true;
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

bool mdb_config_load_file(mdb_config_t *cfg, const char *path, mdb_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        mdb_error_set(err, MDB_ERR_CONFIG, errno, "config file '%s': %s", path, strerror(errno));
        return false;
    }
    bool ok = true;
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (ok && getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            char sb[80];
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "%s:%d: expected 'key = value', got '%s'", path, lineno,
                          shown(s, sb, sizeof sb));
            ok = false;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && ((val[0] == '"' && val[vl - 1] == '"') || (val[0] == '\'' && val[vl - 1] == '\''))) {
            val[vl - 1] = '\0';
            val++;
        }
        if (!*key) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "%s:%d: missing key before '='", path, lineno);
            ok = false;
            break;
        }
        if (!mdb_config_set(cfg, key, val, MDB_CONFIG_SRC_FILE, err)) {
            mdb_error_prefix(err, "%s:%d", path, lineno);
            ok = false;
        }
    }
    if (ok && ferror(f)) {
        mdb_error_set(err, MDB_ERR_CONFIG, errno, "config file '%s': read error", path);
        ok = false;
    }
    free(line);
    fclose(f);
    return ok;
}

static bool env_ignored(const char *name)
{
    for (int i = 0; env_ignore[i]; i++)
        if (!strcmp(env_ignore[i], name))
            return true;
    for (int i = 0; env_ignore_prefix[i]; i++)
        if (!strncmp(env_ignore_prefix[i], name, strlen(env_ignore_prefix[i])))
            return true;
    return false;
}

/* METADB_<NAME> of a schema key: upper case, '.' -> '_'. */
static void env_name_of(const char *key, char *out, size_t size)
{
    size_t o = (size_t)snprintf(out, size, "METADB_");
    for (const char *p = key; *p && o + 1 < size; p++)
        out[o++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[o] = '\0';
}

bool mdb_config_load_env(mdb_config_t *cfg, mdb_error_t *err)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "METADB_", 7))
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[256];
        size_t nl = (size_t)(eq - *e);
        if (nl >= sizeof name) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "environment variable name too long: %.64s...", *e);
            return false;
        }
        memcpy(name, *e, nl);
        name[nl] = '\0';
        if (env_ignored(name))
            continue;
        const char *value = eq + 1;
        const char *key = NULL;
        char envname[256];
        for (size_t i = 0; i < NKEYS && !key; i++) {
            env_name_of(schema[i].name, envname, sizeof envname);
            if (!strcmp(envname, name))
                key = schema[i].name;
        }
        char passkey[256];
        if (!key && !strncmp(name, "METADB_KAFKA_", 13) && name[13]) {
            size_t o = 0;
            for (const char *p = name + 7; *p && o + 1 < sizeof passkey; p++)
                passkey[o++] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
            passkey[o] = '\0';
            key = passkey;
        }
        if (!key) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "environment variable %s: unknown configuration key", name);
            return false;
        }
        if (!mdb_config_set(cfg, key, value, MDB_CONFIG_SRC_ENV, err)) {
            mdb_error_prefix(err, "environment variable %s", name);
            return false;
        }
    }
    return true;
}

/* A dotted flag whose section is one of ours but whose key is not: a typo. */
static bool looks_like_config_key(const char *name, size_t len)
{
    const char *dot = memchr(name, '.', len);
    if (!dot)
        return false;
    size_t sl = (size_t)(dot - name) + 1;
    for (size_t i = 0; i < NKEYS; i++)
        if (!strncmp(schema[i].name, name, sl))
            return true;
    return false;
}

bool mdb_config_load_all(mdb_config_t *cfg, int argc, char **argv, int *first_rest, mdb_error_t *err)
{
    const char *config_path = NULL;
    bool config_explicit = false;
    int rest = argc;
    char keybuf[256];

    /* Pass 1: find where config flags end and any --config. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) {
            rest = (!strcmp(a, "--")) ? i + 1 : i;
            break;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        if (nl == 6 && !strncmp(name, "config", 6)) {
            if (eq) {
                config_path = eq + 1;
            } else if (i + 1 < argc) {
                config_path = argv[++i];
            } else {
                mdb_error_set(err, MDB_ERR_CONFIG, 0, "flag --config needs a file name");
                return false;
            }
            config_explicit = true;
            continue;
        }
        if (nl >= sizeof keybuf) {
            rest = i;
            break;
        }
        memcpy(keybuf, name, nl);
        keybuf[nl] = '\0';
        if (!mdb_config_is_key(keybuf)) {
            if (looks_like_config_key(keybuf, nl)) {
                mdb_error_set(err, MDB_ERR_CONFIG, 0,
                              "unknown configuration key '%s' (flag --%s; its value is not shown)", keybuf, keybuf);
                return false;
            }
            rest = i;
            break;
        }
        if (!eq) {
            if (i + 1 >= argc) {
                mdb_error_set(err, MDB_ERR_CONFIG, 0, "flag --%s needs a value", keybuf);
                return false;
            }
            i++;
        }
    }

    if (!config_path) {
        const char *env = getenv("METADB_CONFIG");
        if (env && *env) {
            config_path = env;
            config_explicit = true;
        } else if (access("metadb.conf", F_OK) == 0) {
            config_path = "metadb.conf";
        }
    }
    (void)config_explicit;
    if (config_path && !mdb_config_load_file(cfg, config_path, err))
        return false;
    if (!mdb_config_load_env(cfg, err))
        return false;

    /* Pass 2: apply the flags. */
    for (int i = 1; i < rest && i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : argv[i + 1];
        if (!eq)
            i++;
        if (nl == 6 && !strncmp(name, "config", 6))
            continue;
        memcpy(keybuf, name, nl);
        keybuf[nl] = '\0';
        if (!mdb_config_set(cfg, keybuf, value, MDB_CONFIG_SRC_FLAG, err)) {
            mdb_error_prefix(err, "flag --%s", keybuf);
            return false;
        }
    }
    if (first_rest)
        *first_rest = rest;
    return true;
}

static int checked_index(const char *key)
{
    int idx = key ? key_index(key) : -1;
    assert(idx >= 0 && "mdb_config: unknown key asked for");
    return idx;
}

const char *mdb_config_get(const mdb_config_t *cfg, const char *key)
{
    int idx = checked_index(key);
    if (idx < 0 || !cfg)
        return "";
    if (cfg->slots[idx].value)
        return cfg->slots[idx].value;
    if (schema[idx].type == T_ENUM)
        return cfg->enum_defaults[idx] ? cfg->enum_defaults[idx] : "";
    return schema[idx].spec;
}

int64_t mdb_config_get_int(const mdb_config_t *cfg, const char *key)
{
    int64_t v = 0;
    const char *s = mdb_config_get(cfg, key);
    if (parse_int(s, &v))
        return v;
    double d = 0;
    if (parse_double(s, &d))
        return (int64_t)d;
    return 0;
}

bool mdb_config_get_bool(const mdb_config_t *cfg, const char *key)
{
    bool b = false;
    parse_bool(mdb_config_get(cfg, key), &b);
    return b;
}

double mdb_config_get_double(const mdb_config_t *cfg, const char *key)
{
    double d = 0;
    parse_double(mdb_config_get(cfg, key), &d);
    return d;
}

mdb_config_source_t mdb_config_source(const mdb_config_t *cfg, const char *key)
{
    int idx = checked_index(key);
    if (idx < 0 || !cfg || !cfg->slots[idx].value)
        return MDB_CONFIG_SRC_DEFAULT;
    return cfg->slots[idx].src;
}

char **mdb_config_get_list(const mdb_config_t *cfg, const char *key, size_t *n_out)
{
    const char *s = mdb_config_get(cfg, key);
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        if (*p == ',')
            cap++;
    char **v = calloc(cap + 1, sizeof *v);
    if (!v)
        return NULL;
    size_t n = 0;
    const char *p = s;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *b = p, *e = p + len;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (e > b) {
            v[n] = strndup(b, (size_t)(e - b));
            if (!v[n]) {
                mdb_config_strv_free(v);
                return NULL;
            }
            n++;
        }
        p = comma ? comma + 1 : p + len;
    }
    if (n_out)
        *n_out = n;
    return v;
}

void mdb_config_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

bool mdb_config_foreach_passthrough(const mdb_config_t *cfg, mdb_config_each_fn fn, void *ud)
{
    if (!cfg)
        return true;
    for (size_t i = 0; i < cfg->npass; i++)
        if (!fn(cfg->pass[i].name + 6, cfg->pass[i].value, ud))
            return false;
    return true;
}

void mdb_config_print_help(const mdb_config_t *cfg, void *file)
{
    FILE *out = file ? (FILE *)file : stderr;
    for (size_t i = 0; i < NKEYS; i++) {
        char envname[256];
        env_name_of(schema[i].name, envname, sizeof envname);
        const char *def = schema[i].type == T_ENUM && cfg ? cfg->enum_defaults[i] : schema[i].spec;
        fprintf(out, "  --%-28s %s", schema[i].name, schema[i].help);
        if (schema[i].type == T_ENUM) {
            const char *choices = strchr(schema[i].spec, '|');
            fprintf(out, " (one of %s)", choices ? choices + 1 : "");
        }
        fprintf(out, " [default: %s; env %s]\n", def && *def ? def : "\"\"", envname);
        if (cfg && cfg->slots[i].value)
            fprintf(out, "  %-30s currently set by %s\n", "", source_name(cfg->slots[i].src));
    }
    fprintf(out, "  --kafka.<property>=VALUE         any librdkafka property, passed through "
                 "(env METADB_KAFKA_<PROPERTY>, '.' as '_')\n");
    fprintf(out, "  a value \"@/path\" is read from that file (first line); \"@@x\" means literal \"@x\"\n");
}
