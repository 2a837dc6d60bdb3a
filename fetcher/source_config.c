/* source_config: parse pacs.sources entries (see source_config.h). Pure
 * string handling apart from mdb_source_defaults/mdb_source_load, which read
 * the loaded configuration. */
#include "source_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool copy_str(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);
    if (len >= cap)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

static bool valid_ae(const char *ae)
{
    size_t len = strlen(ae);
    if (len == 0 || len > 16)
        return false;
    for (const char *p = ae; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '\\')
            return false;
    return true;
}

bool mdb_source_parse_hours(const char *s, int *from, int *to, mdb_error_t *err)
{
    *from = *to = -1;
    if (!s || !*s)
        return true;
    char a[8] = "", b[8] = "";
    const char *dash = strchr(s, '-');
    if (!dash || dash - s > 5 || strlen(dash + 1) > 5) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "allowed hours \"%s\": expected HH-HH (e.g. 19-07)", s);
        return false;
    }
    memcpy(a, s, (size_t)(dash - s));
    strcpy(b, dash + 1);
    char *colon = strchr(a, ':'); /* "19:00" accepted, minutes must be 00 */
    if (colon && strcmp(colon, ":00") == 0)
        *colon = '\0';
    colon = strchr(b, ':');
    if (colon && strcmp(colon, ":00") == 0)
        *colon = '\0';
    if (!parse_int(a, 0, 24, from) || !parse_int(b, 0, 24, to) || *from == *to) {
        *from = *to = -1;
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "allowed hours \"%s\": expected HH-HH with two different hours 0..24", s);
        return false;
    }
    *from %= 24;
    *to %= 24;
    return true;
}

bool mdb_source_hour_allowed(const mdb_source_config_t *c, int h)
{
    if (c->hours_from < 0)
        return true;
    if (c->hours_from < c->hours_to)
        return h >= c->hours_from && h < c->hours_to;
    return h >= c->hours_from || h < c->hours_to; /* wraps midnight */
}

static bool parse_test_drop(const char *s, mdb_source_config_t *d, mdb_error_t *err)
{
    d->test_drop_every = 0;
    d->test_drop_always = false;
    if (!s || !*s)
        return true;
    const char *colon = strchr(s, ':');
    if (colon && (size_t)(colon - s) == 4 && strncmp(s, "once", 4) == 0)
        d->test_drop_always = false;
    else if (colon && (size_t)(colon - s) == 6 && strncmp(s, "always", 6) == 0)
        d->test_drop_always = true;
    else
        colon = NULL;
    if (!colon || !parse_int(colon + 1, 1, 1000000, &d->test_drop_every)) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "pacs.test_drop \"%s\": expected once:N or always:N", s);
        return false;
    }
    return true;
}

bool mdb_source_defaults(const mdb_config_t *cfg, mdb_source_config_t *d, mdb_error_t *err)
{
    memset(d, 0, sizeof *d);
    const char *ae = mdb_config_get(cfg, "pacs.ae_title");
    if (!valid_ae(ae) || !copy_str(d->calling_ae, sizeof d->calling_ae, ae)) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "pacs.ae_title \"%s\": 1..16 printable characters", ae);
        return false;
    }
    d->scp_port = (int)mdb_config_get_int(cfg, "pacs.scp_port");
    d->max_associations = (int)mdb_config_get_int(cfg, "pacs.max_associations");
    d->pause_ms = (int)mdb_config_get_int(cfg, "pacs.pause_ms");
    d->retries = (int)mdb_config_get_int(cfg, "pacs.retries");
    d->backoff_ms = (int)mdb_config_get_int(cfg, "pacs.backoff_ms");
    d->timeout_s = (int)mdb_config_get_int(cfg, "pacs.timeout_s");
    if (d->max_associations < 1)
        d->max_associations = 1;
    if (d->timeout_s < 1)
        d->timeout_s = 1;
    if (!mdb_source_parse_hours(mdb_config_get(cfg, "pacs.allowed_hours"), &d->hours_from, &d->hours_to, err)) {
        mdb_error_prefix(err, "pacs.allowed_hours");
        return false;
    }
    return parse_test_drop(mdb_config_get(cfg, "pacs.test_drop"), d, err);
}

static bool valid_name(const char *s)
{
    if (!*s || strlen(s) >= MDB_SOURCE_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

static bool apply_option(mdb_source_config_t *c, const char *opt, mdb_error_t *err)
{
    const char *eq = strchr(opt, '=');
    if (!eq) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "option \"%s\": expected name=value", opt);
        return false;
    }
    size_t klen = (size_t)(eq - opt);
    const char *v = eq + 1;
#define KEY(k) (klen == strlen(k) && strncmp(opt, k, klen) == 0)
    bool ok = true;
    if (KEY("ae"))
        ok = valid_ae(v) && copy_str(c->calling_ae, sizeof c->calling_ae, v);
    else if (KEY("scp_port"))
        ok = parse_int(v, 1, 65535, &c->scp_port);
    else if (KEY("max_associations"))
        ok = parse_int(v, 1, 64, &c->max_associations);
    else if (KEY("pause_ms"))
        ok = parse_int(v, 0, 3600000, &c->pause_ms);
    else if (KEY("retries"))
        ok = parse_int(v, 0, 1000, &c->retries);
    else if (KEY("backoff_ms"))
        ok = parse_int(v, 0, 3600000, &c->backoff_ms);
    else if (KEY("timeout_s"))
        ok = parse_int(v, 1, 3600, &c->timeout_s);
    else if (KEY("retrieve"))
        ok = (!strcmp(v, "get") || !strcmp(v, "move")) && ((c->dimse_cget = !strcmp(v, "get")), true);
    else if (KEY("token_file"))
        ok = *v && copy_str(c->token_file, sizeof c->token_file, v);
    else if (KEY("hours"))
        return mdb_source_parse_hours(v, &c->hours_from, &c->hours_to, err);
    else {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "unknown option \"%.*s\"", (int)klen, opt);
        return false;
    }
#undef KEY
    if (!ok)
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "option \"%s\": bad value", opt);
    return ok;
}

/* "%2C" -> ',' in a URL (the list separator). */
static void unescape_commas(char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        if (r[0] == '%' && r[1] == '2' && (r[2] == 'C' || r[2] == 'c')) {
            *w++ = ',';
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

static bool parse_address(mdb_source_config_t *c, char *rest, mdb_error_t *err)
{
    if (c->kind == MDB_SOURCE_DICOMWEB) {
        unescape_commas(rest);
        size_t len = strlen(rest);
        while (len > 0 && rest[len - 1] == '/')
            rest[--len] = '\0';
        if ((strncmp(rest, "http://", 7) != 0 && strncmp(rest, "https://", 8) != 0) ||
            !copy_str(c->url, sizeof c->url, rest)) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "dicomweb address \"%s\": expected an http(s):// URL", rest);
            return false;
        }
        return true;
    }
    /* HOST:PORT:CALLED_AE; HOST may be [v6]. */
    char *ae = strrchr(rest, ':');
    if (!ae) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "dimse address \"%s\": expected HOST:PORT:CALLED_AE", rest);
        return false;
    }
    *ae++ = '\0';
    char *port = strrchr(rest, ':');
    if (!port) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "dimse address \"%s\": expected HOST:PORT:CALLED_AE", rest);
        return false;
    }
    *port++ = '\0';
    char *host = rest;
    size_t hlen = strlen(host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        host++;
    }
    if (!*host || !copy_str(c->host, sizeof c->host, host) || !parse_int(port, 1, 65535, &c->port) || !valid_ae(ae) ||
        !copy_str(c->called_ae, sizeof c->called_ae, ae)) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0,
                      "dimse address \"%s:%s:%s\": expected HOST:PORT(1..65535):AE(1..16 chars)", host, port, ae);
        return false;
    }
    return true;
}

static bool parse_entry(char *entry, const mdb_source_config_t *defaults, mdb_source_config_t *c, mdb_error_t *err)
{
    *c = *defaults;
    char *opts = strchr(entry, ';');
    if (opts)
        *opts++ = '\0';
    char *kind = strchr(entry, ':');
    if (!kind) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "expected NAME:dimse:HOST:PORT:AE or NAME:dicomweb:URL");
        return false;
    }
    *kind++ = '\0';
    char *rest = strchr(kind, ':');
    if (!rest) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "expected NAME:KIND:ADDRESS");
        return false;
    }
    *rest++ = '\0';
    if (!valid_name(entry)) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "source name \"%s\": letters, digits, '_', '-', '.'", entry);
        return false;
    }
    strcpy(c->name, entry);
    if (strcmp(kind, "dimse") == 0)
        c->kind = MDB_SOURCE_DIMSE;
    else if (strcmp(kind, "dicomweb") == 0)
        c->kind = MDB_SOURCE_DICOMWEB;
    else {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "source kind \"%s\": dimse or dicomweb", kind);
        return false;
    }
    if (!parse_address(c, rest, err))
        return false;
    while (opts && *opts) {
        char *next = strchr(opts, ';');
        if (next)
            *next++ = '\0';
        if (*opts && !apply_option(c, opts, err))
            return false;
        opts = next;
    }
    return true;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

bool mdb_source_parse_list(const char *spec, const mdb_source_config_t *defaults, mdb_source_config_t **out, size_t *n,
                           mdb_error_t *err)
{
    *out = NULL;
    *n = 0;
    char *copy = strdup(spec ? spec : "");
    if (!copy) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return false;
    }
    size_t cap = 1;
    for (const char *p = copy; *p; p++)
        cap += *p == ',';
    mdb_source_config_t *list = calloc(cap, sizeof *list);
    bool ok = list != NULL;
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    char *save = NULL;
    for (char *tok = ok ? strtok_r(copy, ",", &save) : NULL; tok && ok; tok = strtok_r(NULL, ",", &save)) {
        char *entry = trim(tok);
        if (!*entry)
            continue;
        char shown[96];
        snprintf(shown, sizeof shown, "%s", entry);
        ok = parse_entry(entry, defaults, &list[*n], err);
        if (ok && mdb_source_find(list, *n, list[*n].name)) {
            mdb_error_set(err, MDB_ERR_CONFIG, 0, "source name \"%s\" given twice", list[*n].name);
            ok = false;
        }
        if (!ok)
            mdb_error_prefix(err, "pacs.sources entry \"%s\"", shown);
        else
            (*n)++;
    }
    free(copy);
    if (!ok) {
        free(list);
        *n = 0;
        return false;
    }
    *out = list;
    return true;
}

bool mdb_source_load(const mdb_config_t *cfg, mdb_source_config_t **out, size_t *n, mdb_error_t *err)
{
    mdb_source_config_t d;
    if (!mdb_source_defaults(cfg, &d, err))
        return false;
    return mdb_source_parse_list(mdb_config_get(cfg, "pacs.sources"), &d, out, n, err);
}

const mdb_source_config_t *mdb_source_find(const mdb_source_config_t *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return &list[i];
    return NULL;
}
