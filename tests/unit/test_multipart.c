/* Unit tests of the streaming multipart parser (fetcher/multipart.c): the
 * Content-Type reader (quoted and unquoted boundaries, the type= parameter,
 * malformed values); a body with a preamble, an epilogue, binary content full
 * of near-delimiters, an empty part, folded and LF-only headers parses to the
 * same parts whatever the split of its bytes (every single split point, every
 * pair of split points, byte by byte); random bodies against the parts they
 * were built from; every kind of malformed input and every limit refused with
 * its reason; every truncation detected; a callback's refusal stops the
 * parse; a 64 MiB part streams through in pieces without being held; content
 * made of delimiter bytes comes through intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../fetcher/multipart.h"
/* Compiled in: the fetcher's modules are not part of mdb_common. */
#include "../../fetcher/multipart.c"

#define assert_contains(hay, needle)                                                                                   \
    do {                                                                                                               \
        if (!strstr((hay), (needle)))                                                                                  \
            fail_msg("expected '%s' in '%s'", (needle), (hay));                                                        \
    } while (0)

/* ------------------------------------------------------------------ */
/* a growing byte string                                               */

typedef struct {
    uint8_t *v;
    size_t n, cap;
} buf_t;

static void buf_add(buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->v = realloc(b->v, b->cap);
        assert_non_null(b->v);
    }
    memcpy(b->v + b->n, p, n);
    b->n += n;
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_free(buf_t *b)
{
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ */
/* a transcript of the callbacks: <index|name=value|...> data... $     */

typedef struct {
    buf_t t;
    size_t begins, ends, data_calls;
    int refuse_at; /* 1 = part_begin, 2 = part_data, 3 = part_end; 0 = never */
} rec_t;

static bool on_begin(void *ctx, const mdb_multipart_part_t *part, mdb_error_t *err)
{
    rec_t *r = ctx;
    char s[64];
    snprintf(s, sizeof s, "<%zu", mdb_multipart_part_index(part));
    buf_str(&r->t, s);
    for (size_t i = 0; i < mdb_multipart_part_header_count(part); i++) {
        const char *n, *v;
        mdb_multipart_part_header_at(part, i, &n, &v);
        buf_str(&r->t, "|");
        buf_str(&r->t, n);
        buf_str(&r->t, "=");
        buf_str(&r->t, v);
    }
    buf_str(&r->t, ">");
    r->begins++;
    if (r->refuse_at == 1) {
        mdb_error_set(err, MDB_ERR_IO, 0, "sink refused part %zu", mdb_multipart_part_index(part));
        return false;
    }
    return true;
}

static bool on_data(void *ctx, const uint8_t *d, size_t n, mdb_error_t *err)
{
    rec_t *r = ctx;
    assert_true(n > 0);
    buf_add(&r->t, d, n);
    r->data_calls++;
    if (r->refuse_at == 2)
        return false; /* no message: the parser supplies one */
    (void)err;
    return true;
}

static bool on_end(void *ctx, mdb_error_t *err)
{
    rec_t *r = ctx;
    buf_str(&r->t, "$");
    r->ends++;
    if (r->refuse_at == 3) {
        mdb_error_set(err, MDB_ERR_IO, 0, "disk full");
        return false;
    }
    return true;
}

static const mdb_multipart_callbacks_t CB = {on_begin, on_data, on_end};

/* Parse body in pieces cut at the given offsets (sorted, ≤ n). Returns the
 * outcome; the transcript and the error are left in r / err. */
static bool parse_split(const char *boundary, const void *body, size_t n, const size_t *cuts, size_t ncuts,
                        const mdb_multipart_limits_t *lim, rec_t *r, mdb_error_t *err)
{
    memset(err, 0, sizeof *err);
    mdb_multipart_t *mp = mdb_multipart_new(boundary, &CB, r, lim, err);
    assert_non_null(mp);
    size_t at = 0;
    bool ok = true;
    for (size_t i = 0; i <= ncuts && ok; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        ok = mdb_multipart_feed(mp, (const uint8_t *)body + at, to - at, err);
        at = to;
    }
    if (ok)
        ok = mdb_multipart_finish(mp, err);
    mdb_multipart_destroy(mp);
    return ok;
}

static bool parse_whole(const char *boundary, const void *body, size_t n, rec_t *r, mdb_error_t *err)
{
    return parse_split(boundary, body, n, NULL, 0, NULL, r, err);
}

/* ------------------------------------------------------------------ */
/* Content-Type                                                        */

static void test_content_type(void **state)
{
    (void)state;
    mdb_multipart_ctype_t ct;
    mdb_error_t err = {0};

    assert_true(mdb_multipart_parse_content_type("multipart/related; type=\"application/dicom\"; boundary=\"a b:c=d\"",
                                                 &ct, &err));
    assert_string_equal(ct.media_type, "multipart/related");
    assert_string_equal(ct.type, "application/dicom");
    assert_string_equal(ct.boundary, "a b:c=d");

    /* Orthanc's form: unquoted values, boundary first */
    assert_true(mdb_multipart_parse_content_type("multipart/related; boundary=0f1e2d3c-4b5a; type=application/dicom",
                                                 &ct, &err));
    assert_string_equal(ct.boundary, "0f1e2d3c-4b5a");
    assert_string_equal(ct.type, "application/dicom");

    /* case, spaces around '=' and ';', an escaped quote, a trailing ';' */
    assert_true(mdb_multipart_parse_content_type("  Multipart/Related ;BOUNDARY = \"x\\\"y\" ; Type=Application/DICOM;",
                                                 &ct, &err));
    assert_string_equal(ct.media_type, "multipart/related");
    assert_string_equal(ct.boundary, "x\"y");
    assert_string_equal(ct.type, "application/dicom");

    /* no type= parameter; other parameters ignored */
    assert_true(mdb_multipart_parse_content_type("multipart/mixed; charset=utf-8; boundary=zz", &ct, &err));
    assert_string_equal(ct.type, "");
    assert_string_equal(ct.boundary, "zz");

    /* 70 characters is the most a boundary may have */
    char v[200];
    snprintf(v, sizeof v, "multipart/related; boundary=%070d", 7);
    assert_true(mdb_multipart_parse_content_type(v, &ct, &err));
    assert_int_equal(strlen(ct.boundary), 70);

    static const struct {
        const char *value, *why;
    } bad[] = {
        {"application/dicom", "not multipart"},
        {"multipart/", "not multipart"},
        {"multipart/related", "no boundary"},
        {"multipart/related; type=application/dicom", "no boundary"},
        {"multipart/related; boundary=\"\"", "boundary of 0"},
        {"multipart/related; boundary=\"abc", "malformed"},
        {"multipart/related; boundary", "malformed parameter"},
        {"multipart/related; =abc", "malformed parameter"},
        {"multipart/related; boundary=", "malformed"},
        {"multipart/related boundary=abc", "expected ';'"},
        {"multipart/related; boundary=\"a\x01z\"", "boundary holds byte 0x01"},
        {"", "not multipart"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        if (mdb_multipart_parse_content_type(bad[i].value, &ct, &err))
            fail_msg("accepted \"%s\"", bad[i].value);
        assert_contains(err.message, bad[i].why);
        assert_string_equal(ct.boundary, "");
    }
    snprintf(v, sizeof v, "multipart/related; boundary=%071d", 7);
    assert_false(mdb_multipart_parse_content_type(v, &ct, &err));
    assert_contains(err.message, "boundary of 71 characters");
    assert_false(mdb_multipart_parse_content_type(NULL, &ct, &err));
}

static void test_media_type_is(void **state)
{
    (void)state;
    assert_true(mdb_multipart_media_type_is("application/dicom", "application/dicom"));
    assert_true(
        mdb_multipart_media_type_is(" Application/DICOM ; transfer-syntax=1.2.840.10008.1.2.1", "application/dicom"));
    assert_true(mdb_multipart_media_type_is("application/dicom;transfer-syntax=*", "application/dicom"));
    assert_false(mdb_multipart_media_type_is("application/dicom+json", "application/dicom"));
    assert_false(mdb_multipart_media_type_is("application/dicomx", "application/dicom"));
    assert_false(mdb_multipart_media_type_is("image/jpeg", "application/dicom"));
    assert_false(mdb_multipart_media_type_is(NULL, "application/dicom"));
}

/* ------------------------------------------------------------------ */
/* a reference body                                                    */

#define BND "MDB-b0und4ry"

/* Content that tests the matcher: partial delimiters, a CR at the end, the
 * boundary without its CRLF, NUL bytes. */
static const char PART0[] = "\r\n--MDB-b0und4r\r\r\n-\r\n--\r\n--MDB-b0und4rX--MDB-b0und4ry\0\xff\r";
static const char PART2[] = "plain\r\n";

static void reference(buf_t *body, buf_t *want)
{
    buf_str(body, "This is the preamble. --MDB-b0und4ry is not a delimiter here\r\n");
    buf_str(body, "--" BND "  \t\r\n"); /* transport padding */
    buf_str(body, "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n");
    buf_str(body, "Content-Location:\r\n   http://x/a\r\n\t b\r\n"); /* folded */
    buf_str(body, "X-Empty:\r\n\r\n");
    buf_add(body, PART0, sizeof PART0 - 1);
    buf_str(body, "\r\n--" BND "\r\n"); /* part 1: no headers, no content */
    buf_str(body, "\r\n");
    buf_str(body, "\r\n--" BND "\n"); /* LF-only header lines */
    buf_str(body, "content-type :  text/plain  \n\n");
    buf_str(body, PART2);
    buf_str(body, "\r\n--" BND "--\r\nthe epilogue\r\n--" BND "\r\nignored\r\n");

    buf_str(want, "<0|Content-Type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
                  "|Content-Location=http://x/a b|X-Empty=>");
    buf_add(want, PART0, sizeof PART0 - 1);
    buf_str(want, "$<1>$<2|content-type=text/plain>"
                  "plain\r\n"
                  "$");
}

static void assert_transcript(const rec_t *r, const buf_t *want, const char *where)
{
    if (r->t.n != want->n || (want->n > 0 && memcmp(r->t.v, want->v, want->n) != 0)) {
        fprintf(stderr, "got:  %.*s\nwant: %.*s\n", (int)r->t.n, (const char *)r->t.v, (int)want->n,
                (const char *)want->v);
        fail_msg("%s: transcript differs (%zu bytes, want %zu)", where, r->t.n, want->n);
    }
}

static void test_reference_body(void **state)
{
    (void)state;
    buf_t body = {0}, want = {0};
    reference(&body, &want);
    rec_t r = {0};
    mdb_error_t err;
    if (!parse_whole(BND, body.v, body.n, &r, &err))
        fail_msg("%s", err.message);
    assert_transcript(&r, &want, "whole");
    assert_int_equal(r.ends, 3);
    buf_free(&r.t);
    buf_free(&body);
    buf_free(&want);
}

static void test_every_split(void **state)
{
    (void)state;
    buf_t body = {0}, want = {0};
    reference(&body, &want);
    mdb_error_t err;
    char where[64];
    for (size_t i = 0; i <= body.n; i++) { /* one cut */
        rec_t r = {0};
        size_t cuts[1] = {i};
        if (!parse_split(BND, body.v, body.n, cuts, 1, NULL, &r, &err))
            fail_msg("cut at %zu: %s", i, err.message);
        snprintf(where, sizeof where, "cut at %zu", i);
        assert_transcript(&r, &want, where);
        buf_free(&r.t);
    }
    for (size_t i = 0; i <= body.n; i++) /* two cuts */
        for (size_t j = i; j <= body.n; j++) {
            rec_t r = {0};
            size_t cuts[2] = {i, j};
            if (!parse_split(BND, body.v, body.n, cuts, 2, NULL, &r, &err))
                fail_msg("cuts at %zu,%zu: %s", i, j, err.message);
            snprintf(where, sizeof where, "cuts at %zu,%zu", i, j);
            assert_transcript(&r, &want, where);
            buf_free(&r.t);
        }
    size_t *all = malloc(body.n * sizeof *all); /* byte by byte */
    for (size_t i = 0; i < body.n; i++)
        all[i] = i + 1;
    rec_t r = {0};
    assert_true(parse_split(BND, body.v, body.n, all, body.n, NULL, &r, &err));
    assert_transcript(&r, &want, "byte by byte");
    buf_free(&r.t);
    free(all);
    buf_free(&body);
    buf_free(&want);
}

/* Every proper prefix of the body up to its close delimiter is truncated;
 * the parts reported complete are exactly those whose delimiter arrived. */
static void test_truncation(void **state)
{
    (void)state;
    buf_t body = {0}, want = {0};
    reference(&body, &want);
    const char *close = memmem(body.v, body.n, "\r\n--" BND "--", strlen(BND) + 6);
    assert_non_null(close);
    size_t close_end = (size_t)(close - (const char *)body.v) + strlen(BND) + 6;
    /* ends of the delimiters "\r\n--" BND: the opening one, then one per part */
    size_t ends_at[8], nd = 0;
    const size_t dl = strlen(BND) + 4;
    for (const char *p = (const char *)body.v; nd < 8;) {
        const char *hit = memmem(p, body.n - (size_t)(p - (const char *)body.v), "\r\n--" BND, dl);
        if (hit == NULL)
            break;
        ends_at[nd++] = (size_t)(hit - (const char *)body.v) + dl;
        p = hit + 1;
    }
    assert_true(nd >= 4);
    mdb_error_t err;
    for (size_t n = 0; n < close_end; n++) {
        rec_t r = {0};
        if (parse_whole(BND, body.v, n, &r, &err))
            fail_msg("prefix of %zu bytes accepted", n);
        assert_contains(err.message, "truncated");
        size_t complete = 0;
        for (size_t k = 1; k < 4; k++)
            complete += ends_at[k] <= n;
        assert_int_equal(r.ends, complete);
        buf_free(&r.t);
    }
    rec_t r = {0};
    assert_true(parse_whole(BND, body.v, close_end, &r, &err)); /* the close delimiter and nothing after */
    assert_transcript(&r, &want, "up to the close delimiter");
    buf_free(&r.t);

    /* the message says where it stopped */
    const char *p0 = memmem(body.v, body.n, "X-Empty:\r\n\r\n", 12);
    r = (rec_t){0};
    assert_false(parse_whole(BND, body.v, (size_t)(p0 - (const char *)body.v) + 12 + 17, &r, &err));
    assert_contains(err.message, "inside part 0 after 16 bytes"); /* the last CR may start a delimiter */
    assert_int_equal(r.ends, 0);
    buf_free(&r.t);
    r = (rec_t){0};
    assert_false(parse_whole(BND, "preamble only", 13, &r, &err));
    assert_contains(err.message, "before its first boundary");
    buf_free(&r.t);
    r = (rec_t){0};
    assert_false(parse_whole(BND, "--" BND "\r\nContent-Type: a", strlen(BND) + 19, &r, &err));
    assert_contains(err.message, "inside the headers of part 0");
    buf_free(&r.t);
    buf_free(&body);
    buf_free(&want);
}

/* Bodies from random parts over an alphabet rich in delimiter bytes, split at
 * random, against the parts they were built from. Boundaries that overlap
 * themselves ("-", "--", "-a-") exercise the matcher's fallbacks. */
static void test_random_bodies(void **state)
{
    (void)state;
    static const char *const bnds[] = {"-", "--", "-a-", "a", "xyz", BND};
    static const char alpha[] = "\r\n-a-\r\n--xyz";
    uint64_t seed = 0x9e3779b97f4a7c15ull;
#define RND() (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17, seed)
    for (int round = 0; round < 3000; round++) {
        const char *b = bnds[RND() % (sizeof bnds / sizeof bnds[0])];
        char pat[80];
        snprintf(pat, sizeof pat, "\r\n--%s", b);
        buf_t body = {0}, want = {0};
        if (RND() % 2)
            buf_str(&body, "pre\r\namble");
        size_t nparts = RND() % 4;
        buf_str(&body, "\r\n--");
        buf_str(&body, b);
        for (size_t k = 0; k < nparts; k++) {
            char content[64];
            size_t len = RND() % sizeof content;
            for (;;) { /* content in which the delimiter does not occur, even across its end */
                for (size_t i = 0; i < len; i++)
                    content[i] = alpha[RND() % (sizeof alpha - 1)];
                buf_t probe = {0};
                buf_add(&probe, content, len);
                buf_str(&probe, pat);
                const char *hit = memmem(probe.v, probe.n, pat, strlen(pat));
                bool clean = hit == (const char *)probe.v + len;
                buf_free(&probe);
                if (clean)
                    break;
            }
            buf_str(&body, "\r\nX-K: ");
            char hv[32];
            snprintf(hv, sizeof hv, "%zu", k);
            buf_str(&body, hv);
            buf_str(&body, "\r\n\r\n");
            buf_add(&body, content, len);
            buf_str(&body, pat);
            snprintf(hv, sizeof hv, "<%zu|X-K=%zu>", k, k);
            buf_str(&want, hv);
            buf_add(&want, content, len);
            buf_str(&want, "$");
        }
        buf_str(&body, "--");
        if (RND() % 2)
            buf_str(&body, "\r\nepi\r\n--logue");
        size_t cuts[3];
        for (int c = 0; c < 3; c++)
            cuts[c] = RND() % (body.n + 1);
        for (int x = 0; x < 3; x++) /* sort */
            for (int y = x + 1; y < 3; y++)
                if (cuts[y] < cuts[x]) {
                    size_t t = cuts[x];
                    cuts[x] = cuts[y];
                    cuts[y] = t;
                }
        rec_t r = {0};
        mdb_error_t err;
        if (!parse_split(b, body.v, body.n, cuts, 3, NULL, &r, &err))
            fail_msg("round %d (boundary \"%s\"): %s", round, b, err.message);
        char where[64];
        snprintf(where, sizeof where, "round %d (boundary \"%s\")", round, b);
        assert_transcript(&r, &want, where);
        assert_int_equal(r.ends, nparts);
        buf_free(&r.t);
        buf_free(&body);
        buf_free(&want);
    }
#undef RND
}

/* ------------------------------------------------------------------ */
/* malformed bodies and limits                                         */

static void expect_refusal(const char *body, const mdb_multipart_limits_t *lim, const char *why)
{
    size_t n = strlen(body);
    for (size_t cut = 0; cut <= n; cut++) { /* the same reason whatever the split */
        rec_t r = {0};
        mdb_error_t err;
        size_t cuts[1] = {cut};
        if (parse_split("B", body, n, cuts, 1, lim, &r, &err))
            fail_msg("accepted \"%s\"", body);
        if (!strstr(err.message, why))
            fail_msg("\"%s\" cut at %zu: expected '%s' in '%s'", body, cut, why, err.message);
        buf_free(&r.t);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    expect_refusal("--Bx\r\n\r\ndata\r\n--B--", NULL, "byte 0x78 after the boundary delimiter");
    expect_refusal("--B\r\n\r\ndata\r\n--B-x", NULL, "byte 0x78 after the boundary delimiter");
    expect_refusal("--B \rx\r\n\r\n\r\n--B--", NULL, "byte 0x78 after the boundary delimiter");
    expect_refusal("--B\r\nno colon here\r\n\r\ndata\r\n--B--", NULL, "header line without ':'");
    expect_refusal("--B\r\n: empty name\r\n\r\ndata\r\n--B--", NULL, "empty name");
    expect_refusal("--B\r\n continued\r\n\r\ndata\r\n--B--", NULL, "starts with a continuation line");
    expect_refusal("--B\r\nA: 1\rB: 2\r\n\r\ndata\r\n--B--", NULL, "control byte in a header line");
    mdb_multipart_limits_t lim = {.max_header_bytes = 32};
    expect_refusal("--B\r\nContent-Type: application/dicom-is-long\r\n\r\nd\r\n--B--", &lim,
                   "part 0: headers longer than 32 bytes");
    lim = (mdb_multipart_limits_t){.max_headers = 2};
    expect_refusal("--B\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nd\r\n--B--", &lim, "more than 2 header lines");
    lim = (mdb_multipart_limits_t){.max_part_bytes = 4};
    expect_refusal("--B\r\n\r\n12345\r\n--B--", &lim, "part 0 larger than 4 bytes");
    lim = (mdb_multipart_limits_t){.max_parts = 2};
    expect_refusal("--B\r\n\r\n1\r\n--B\r\n\r\n2\r\n--B\r\n\r\n3\r\n--B--", &lim, "more than 2 parts");
    lim = (mdb_multipart_limits_t){.max_preamble_bytes = 8};
    expect_refusal("0123456789\r\n--B\r\n\r\n1\r\n--B--", &lim, "within the first 8 bytes");
    expect_refusal("<html>not multipart</html>", NULL, "truncated");

    /* limits that are just met pass */
    rec_t r = {0};
    mdb_error_t err;
    lim = (mdb_multipart_limits_t){.max_part_bytes = 4, .max_parts = 2, .max_preamble_bytes = 2};
    const char *ok = "ab\r\n--B\r\n\r\n1234\r\n--B\r\n\r\n\r\n--B--";
    assert_true(parse_split("B", ok, strlen(ok), NULL, 0, &lim, &r, &err));
    assert_int_equal(r.ends, 2);
    buf_free(&r.t);

    /* a bad boundary */
    assert_null(mdb_multipart_new("", &CB, NULL, NULL, &err));
    assert_contains(err.message, "invalid boundary");
    assert_null(mdb_multipart_new("a\r\nb", &CB, NULL, NULL, &err));
    char long_b[80];
    memset(long_b, 'a', 71);
    long_b[71] = '\0';
    assert_null(mdb_multipart_new(long_b, &CB, NULL, NULL, &err));
}

/* A callback's refusal stops the parse with its message; the parser stays
 * failed and says the same thing on every later call. */
static void test_refusal(void **state)
{
    (void)state;
    const char *body = "--B\r\nA: 1\r\n\r\nsome data\r\n--B\r\n\r\nmore\r\n--B--";
    for (int at = 1; at <= 3; at++) {
        rec_t r = {.refuse_at = at};
        mdb_error_t err = {0};
        mdb_multipart_t *mp = mdb_multipart_new("B", &CB, &r, NULL, &err);
        assert_false(mdb_multipart_feed(mp, body, strlen(body), &err));
        assert_contains(err.message, at == 1 ? "sink refused part 0" : at == 2 ? "receiver stopped" : "disk full");
        char first[MDB_ERROR_MSG_MAX];
        strcpy(first, err.message);
        assert_int_equal(r.begins, 1); /* nothing after the refusal */
        assert_int_equal(r.ends, at == 3 ? 1 : 0);
        memset(&err, 0, sizeof err);
        assert_false(mdb_multipart_feed(mp, "x", 1, &err));
        assert_string_equal(err.message, first);
        assert_false(mdb_multipart_feed(mp, "", 0, &err));
        assert_false(mdb_multipart_finish(mp, &err));
        assert_string_equal(err.message, first);
        assert_int_equal(mdb_multipart_parts(mp), at == 3 ? 1 : 0);
        mdb_multipart_destroy(mp);
        buf_free(&r.t);
    }
    /* NULL callbacks: parts are counted, content dropped */
    mdb_error_t err;
    mdb_multipart_t *mp = mdb_multipart_new("B", NULL, NULL, NULL, &err);
    assert_true(mdb_multipart_feed(mp, body, strlen(body), &err));
    assert_true(mdb_multipart_done(mp));
    assert_true(mdb_multipart_finish(mp, &err));
    assert_int_equal(mdb_multipart_parts(mp), 2);
    mdb_multipart_destroy(mp);
    mdb_multipart_destroy(NULL);
}

/* ------------------------------------------------------------------ */
/* big parts stream                                                    */

typedef struct {
    uint64_t bytes, hash;
    size_t parts, max_piece;
} sum_t;

static uint64_t fnv(uint64_t h, const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 0x100000001b3ull;
    return h;
}

static bool sum_data(void *ctx, const uint8_t *d, size_t n, mdb_error_t *err)
{
    (void)err;
    sum_t *s = ctx;
    s->bytes += n;
    s->hash = fnv(s->hash, d, n);
    if (n > s->max_piece)
        s->max_piece = n;
    return true;
}

static bool sum_end(void *ctx, mdb_error_t *err)
{
    (void)err;
    ((sum_t *)ctx)->parts++;
    return true;
}

/* Two parts of 64 MiB, fed in 64 KiB chunks made on the fly (content with a
 * near-delimiter every 4 KiB): the content arrives while it is being fed (the
 * parser holds back no more than a delimiter's length), intact. */
static void test_big_parts_stream(void **state)
{
    (void)state;
    const size_t part_size = 64u << 20, chunk = 65536;
    sum_t s = {.hash = 0xcbf29ce484222325ull};
    mdb_multipart_callbacks_t cb = {NULL, sum_data, sum_end};
    mdb_error_t err;
    mdb_multipart_t *mp = mdb_multipart_new(BND, &cb, &s, NULL, &err);
    assert_non_null(mp);
    uint8_t *buf = malloc(chunk);
    uint64_t want_hash = 0xcbf29ce484222325ull;
    const char *head = "--" BND "\r\nContent-Type: application/dicom\r\n\r\n";
    for (int part = 0; part < 2; part++) {
        assert_true(mdb_multipart_feed(mp, head, strlen(head), &err));
        uint64_t fed = 0;
        for (size_t off = 0; off < part_size; off += chunk) {
            for (size_t i = 0; i < chunk; i++)
                buf[i] = (uint8_t)((off + i) * 2654435761u >> 13);
            for (size_t i = 0; i + 20 < chunk; i += 4096)
                memcpy(buf + i, "\r\n--MDB-b0und4rz", 16); /* all but the last byte of a delimiter */
            memcpy(buf + chunk - 7, "\r\n--MDB", 7);       /* a partial delimiter across the chunk's end */
            want_hash = fnv(want_hash, buf, chunk);
            assert_true(mdb_multipart_feed(mp, buf, chunk, &err));
            fed += chunk;
            /* streamed: everything but a possible partial delimiter is already out */
            assert_true(s.bytes >= (uint64_t)part * part_size + fed - strlen(BND) - 4);
        }
        const char *tail = part ? "\r\n--" BND "--\r\n" : "\r\n";
        assert_true(mdb_multipart_feed(mp, tail, strlen(tail), &err));
    }
    assert_true(mdb_multipart_finish(mp, &err));
    assert_int_equal(s.parts, 2);
    assert_int_equal(s.bytes, 2 * (uint64_t)part_size);
    assert_true(s.hash == want_hash);
    assert_true(s.max_piece <= chunk);
    mdb_multipart_destroy(mp);
    free(buf);
}

/* Content made of delimiter bytes (all CR; CR LF "--" and most of the
 * boundary, over and over) keeps a partial match alive at every byte: it must
 * still come through intact, in any split. */
static void test_delimiter_flood(void **state)
{
    (void)state;
    static const char *const fills[] = {"\r", "\r\n--MDB-b0und4r", "\r\n-", "-\r\n--MDB-b0und4"};
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        size_t fl = strlen(fills[f]), size = (1u << 20) + 7;
        uint8_t *content = malloc(size);
        for (size_t i = 0; i < size; i++)
            content[i] = (uint8_t)fills[f][i % fl];
        buf_t body = {0};
        buf_str(&body, "--" BND "\r\n\r\n");
        buf_add(&body, content, size);
        buf_str(&body, "\r\n--" BND "\r\n\r\n");
        buf_add(&body, content, size);
        buf_str(&body, "\r\n--" BND "--");
        for (size_t piece = 1; piece <= 65536; piece *= 16) {
            sum_t sm = {.hash = 0xcbf29ce484222325ull};
            mdb_multipart_callbacks_t cb = {NULL, sum_data, sum_end};
            mdb_error_t err;
            mdb_multipart_t *mp = mdb_multipart_new(BND, &cb, &sm, NULL, &err);
            for (size_t at = 0; at < body.n; at += piece)
                if (!mdb_multipart_feed(mp, body.v + at, body.n - at < piece ? body.n - at : piece, &err))
                    fail_msg("fill %zu, pieces of %zu: %s", f, piece, err.message);
            if (!mdb_multipart_finish(mp, &err))
                fail_msg("fill %zu, pieces of %zu: %s", f, piece, err.message);
            uint64_t want = fnv(fnv(0xcbf29ce484222325ull, content, size), content, size);
            assert_int_equal(sm.parts, 2);
            assert_int_equal(sm.bytes, 2 * (uint64_t)size);
            assert_true(sm.hash == want);
            mdb_multipart_destroy(mp);
        }
        buf_free(&body);
        free(content);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_type),     cmocka_unit_test(test_media_type_is),
        cmocka_unit_test(test_reference_body),   cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_truncation),       cmocka_unit_test(test_random_bodies),
        cmocka_unit_test(test_malformed),        cmocka_unit_test(test_refusal),
        cmocka_unit_test(test_big_parts_stream), cmocka_unit_test(test_delimiter_flood),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
