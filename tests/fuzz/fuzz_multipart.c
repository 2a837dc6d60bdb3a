/* libFuzzer target for the streaming multipart parser (fetcher/multipart.c).
 * Input: byte 0 = boundary length (1..16, low bits), byte 1 = piece size seed,
 * then the boundary, then the body. The body is parsed twice, once whole and
 * once in pieces of varying sizes; the two parses must agree (same outcome,
 * same message, same parts; same callbacks and content bytes when the body is
 * accepted), a refusal always
 * says why, and the parts counted equal the part_end calls. The whole input is
 * also read as a Content-Type value: an accepted one yields a boundary the
 * parser accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../fetcher/multipart.h"

/* Compiled in so the code under test carries libFuzzer's instrumentation. */
#include "../../fetcher/multipart.c"

static void check(bool cond)
{
    if (!cond)
        abort();
}

typedef struct {
    uint64_t hash; /* FNV-1a over every callback and its bytes */
    size_t begins, ends;
} trace_t;

static void mix(trace_t *t, const void *p, size_t n)
{
    const uint8_t *d = p;
    for (size_t i = 0; i < n; i++)
        t->hash = (t->hash ^ d[i]) * 0x100000001b3ull;
}

static bool on_begin(void *ctx, const mdb_multipart_part_t *part, mdb_error_t *err)
{
    (void)err;
    trace_t *t = ctx;
    mix(t, "<", 1);
    for (size_t i = 0; i < mdb_multipart_part_header_count(part); i++) {
        const char *n, *v;
        mdb_multipart_part_header_at(part, i, &n, &v);
        check(n != NULL && v != NULL && n[0] != '\0');
        check(mdb_multipart_part_header(part, n) != NULL);
        mix(t, n, strlen(n) + 1);
        mix(t, v, strlen(v) + 1);
    }
    check(mdb_multipart_part_index(part) == t->begins);
    t->begins++;
    return true;
}

/* Content is only mixed, not split-sensitive: pieces differ between the parses. */
static bool on_data(void *ctx, const uint8_t *d, size_t n, mdb_error_t *err)
{
    (void)err;
    check(n > 0);
    mix(ctx, d, n);
    return true;
}

static bool on_end(void *ctx, mdb_error_t *err)
{
    (void)err;
    trace_t *t = ctx;
    mix(t, "$", 1);
    t->ends++;
    check(t->ends == t->begins);
    return true;
}

typedef struct {
    trace_t t;
    bool ok;
    size_t parts;
    char msg[MDB_ERROR_MSG_MAX];
} outcome_t;

static void run(const char *boundary, const uint8_t *body, size_t n, uint8_t seed, bool whole, outcome_t *o)
{
    static const mdb_multipart_callbacks_t cb = {on_begin, on_data, on_end};
    mdb_multipart_limits_t lim = {
        .max_header_bytes = 256, .max_headers = 8, .max_part_bytes = 4096, .max_parts = 16, .max_preamble_bytes = 512};
    mdb_error_t err = {0};
    memset(o, 0, sizeof *o);
    o->t.hash = 0xcbf29ce484222325ull;
    mdb_multipart_t *mp = mdb_multipart_new(boundary, &cb, &o->t, &lim, &err);
    check(mp != NULL);
    size_t at = 0, step = 1 + seed % 7;
    bool ok = true;
    while (ok && at < n) {
        size_t len = whole ? n : (step < n - at ? step : n - at);
        ok = mdb_multipart_feed(mp, body + at, len, &err);
        at += len;
        step = 1 + (step * 5 + seed) % 13;
    }
    if (ok)
        ok = mdb_multipart_finish(mp, &err);
    if (!ok)
        check(err.message[0] != '\0');
    o->ok = ok;
    o->parts = mdb_multipart_parts(mp);
    memcpy(o->msg, err.message, sizeof o->msg);
    check(o->parts == o->t.ends);
    mdb_multipart_destroy(mp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    mdb_multipart_ctype_t ct;
    mdb_error_t err = {0};
    if (mdb_multipart_parse_content_type(text, &ct, &err)) {
        mdb_multipart_t *mp = mdb_multipart_new(ct.boundary, NULL, NULL, NULL, &err);
        check(mp != NULL);
        mdb_multipart_destroy(mp);
    } else {
        check(err.message[0] != '\0');
    }
    (void)mdb_multipart_media_type_is(text, "application/dicom");
    free(text);

    if (size < 3)
        return 0;
    size_t blen = 1 + data[0] % 16;
    uint8_t seed = data[1];
    if (size < 2 + blen)
        return 0;
    char boundary[17];
    for (size_t i = 0; i < blen; i++) {
        char c = (char)data[2 + i];
        boundary[i] = c == '\r' || c == '\n' || c == '\0' ? '-' : c;
    }
    boundary[blen] = '\0';
    const uint8_t *body = data + 2 + blen;
    size_t n = size - 2 - blen;

    outcome_t a, b;
    run(boundary, body, n, seed, true, &a);
    run(boundary, body, n, seed, false, &b);
    check(a.ok == b.ok);
    check(a.parts == b.parts);
    check(a.t.begins == b.t.begins);
    if (a.ok) /* a failing parse may have passed on part of a piece the other refused whole */
        check(a.t.hash == b.t.hash);
    check(strcmp(a.msg, b.msg) == 0);
    return 0;
}
