/* source_dicomweb: a PACS over DICOMweb (PS3.18), with libcurl.
 *
 * echo = QIDO-RS GET {url}/studies?limit=1; find_studies = QIDO-RS
 * /studies?AccessionNumber=|PatientID=|StudyInstanceUID=[&StudyDate=from-to];
 * list_instances = QIDO-RS /studies/{uid}/instances, paged with limit/offset
 * until an empty page (a server that caps its pages below our limit is still
 * read to the end); retrieve = WADO-RS of the study, a series or single
 * instances as multipart/related; type="application/dicom" with
 * transfer-syntax=* (the objects as stored, so the landed bytes are the
 * PACS's own; plain application/dicom is asked once if the server refuses
 * that). The answer streams through the multipart parser (multipart.c) into
 * one spool file per part; a complete part is handed to the sink as a file
 * (never a whole study, nor a whole instance, in memory) by a landing thread,
 * so the sink's fsyncs overlap the transfer.
 *
 * RetrieveURL (0008,1190): where QIDO gives one for a study (or an
 * instance), WADO-RS goes there instead of to the base URL; the bearer token
 * is only sent to the base URL's own origin (scheme, host, port), so a
 * RetrieveURL cannot lead it elsewhere (libcurl's bearer auth also drops it
 * on a redirect to another host).
 *
 * Errors (err->domain MDB_ERR_IO, err->code mdb_source_errc_t): connect
 * failures, timeouts, stalls, resets and truncated answers are NETWORK;
 * HTTP 429/503 are REFUSED (both retried by the fetcher); 500/502/504 and 408
 * NETWORK; 404 NOTFOUND; 401/403, an unresolvable host, a bad URL, a TLS
 * certificate that does not verify and an unreadable token file are CONFIG;
 * other statuses and malformed answers PROTOCOL; a sink's MDB_SOURCE_E_SINK
 * stops the retrieval and is returned as is. TLS peers are verified (libcurl's
 * defaults, the system's CA store). */
#include "source.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "mdb_log.h"
#include "mdb_strmap.h"
#include "multipart.h"

#define QIDO_PAGE 1000                      /* items asked per QIDO page */
#define QIDO_MAX_ITEMS 1000000              /* more than this is a server going round in circles */
#define QIDO_MAX_BODY (64u * 1024u * 1024u) /* one QIDO page */
#define WBUF_SIZE (256u * 1024u)            /* spool write size */
#define ERR_BODY_MAX 300                    /* bytes of an error answer quoted in messages */
#define ACCEPT_DICOM_ANY_TS "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*"
#define ACCEPT_DICOM "Accept: multipart/related; type=\"application/dicom\""

/* What QIDO said about a study: where to retrieve it, how many instances it has. */
typedef struct {
    char uid[MDB_UID_MAX];
    char *url;       /* RetrieveURL, NULL = none given */
    int n_instances; /* NumberOfStudyRelatedInstances, -1 = not given */
} study_info_t;

typedef struct {
    mdb_source_config_t cfg;
    char spool[PATH_MAX];
    char *token;      /* bearer token, NULL = none */
    char origin[512]; /* "scheme://host:port" of cfg.url, lower case */
    CURL *h;          /* one handle: its connection stays open between calls */
    bool no_any_ts;   /* the server refused transfer-syntax=*: ask plain application/dicom */
    uint8_t *wbuf;    /* a part's bytes gathered into large spool writes (libcurl hands 16 KiB) */
    size_t wlen;
    study_info_t *studies; /* studies seen by QIDO */
    size_t n_studies, cap_studies;
    mdb_strmap_t *inst_url; /* SOP UID -> index in inst_urls (instance RetrieveURLs) */
    char **inst_urls;
    size_t n_inst_urls, cap_inst_urls;
} dw_t;

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

__attribute__((format(printf, 3, 4))) static bool dw_fail(mdb_error_t *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[MDB_ERROR_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mdb_error_set(err, MDB_ERR_IO, code, "%s", msg);
    return false;
}

/* A UID fit to go into a URL path: 1-64 of [0-9.]. */
static bool uid_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    return strspn(s, "0123456789.") == n;
}

/* "scheme://host:port" (lower case, default port filled in) of url into out;
 * "" when url is not http(s). */
static void url_origin(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = strstr(url, "://");
    if (p == NULL)
        return;
    size_t sl = (size_t)(p - url);
    bool https = sl == 5 && strncasecmp(url, "https", 5) == 0;
    if (!https && !(sl == 4 && strncasecmp(url, "http", 4) == 0))
        return;
    p += 3;
    const char *at = NULL, *end = p + strcspn(p, "/?#");
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at)
        p = at + 1; /* credentials are not part of the origin */
    size_t hl = (size_t)(end - p);
    bool has_port = false;
    for (const char *q = end; q > p && q[-1] != ']'; q--)
        if (q[-1] == ':') {
            has_port = true;
            break;
        }
    snprintf(out, cap, "%s://%.*s%s", https ? "https" : "http", (int)hl, p, has_port ? "" : https ? ":443" : ":80");
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
}

/* Copy of url with "user:password@" masked, for messages. Caller frees. */
static char *masked(const char *url)
{
    char *m = mdb_log_mask_uri(url);
    return m ? m : strdup("(url)");
}

/* Text of an error answer fit for a message: printable ASCII, at most
 * ERR_BODY_MAX bytes. */
static void quote_body(const char *body, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap && i < ERR_BODY_MAX; i++) {
        unsigned char c = (unsigned char)body[i];
        out[n++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
    }
    out[n] = '\0';
}

/* mdb_source_errc_t of an HTTP status other than 2xx. */
static int status_errc(long status)
{
    switch (status) {
    case 404:
    case 410: return MDB_SOURCE_E_NOTFOUND;
    case 401:
    case 403: return MDB_SOURCE_E_CONFIG;
    case 429:
    case 503: return MDB_SOURCE_E_REFUSED;
    case 408:
    case 500:
    case 502:
    case 504: return MDB_SOURCE_E_NETWORK;
    default: return MDB_SOURCE_E_PROTOCOL;
    }
}

/* mdb_source_errc_t of a libcurl failure (not CURLE_WRITE_ERROR, whose cause
 * the write callback knows). */
static int curl_errc(CURLcode rc)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_LOGIN_DENIED: return MDB_SOURCE_E_CONFIG;
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WEIRD_SERVER_REPLY: return MDB_SOURCE_E_PROTOCOL;
    case CURLE_OUT_OF_MEMORY: return MDB_SOURCE_E_SINK;
    default: /* connect, timeouts, resets, partial answers, TLS handshakes */ return MDB_SOURCE_E_NETWORK;
    }
}

/* ------------------------------------------------------------------ */
/* one HTTP exchange                                                   */

/* Completed parts are handed to the sink by a landing thread, so that the
 * landing's fsyncs overlap the network instead of stalling it (the PACS keeps
 * sending while the previous instance is made durable). The queue is bounded:
 * a slow disk slows the transfer down, it does not fill the spool. The sink is
 * called from that one thread only, never after retrieve() returns. */
#define LANDER_QUEUE 32

typedef struct {
    char path[PATH_MAX];
    char sop[MDB_UID_MAX];
} queued_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queued_t q[LANDER_QUEUE];
    size_t head, n;
    bool closing; /* no more items will come */
    bool failed;  /* the sink failed with MDB_SOURCE_E_SINK: stop */
    mdb_error_t err;
    const mdb_source_config_t *cfg;
    const mdb_source_retrieve_t *req;
    mdb_source_sink_fn sink;
    void *sink_ctx;
    int landed, dropped;
    pthread_t thread;
} lander_t;

static void *lander_run(void *arg)
{
    lander_t *ln = arg;
    pthread_mutex_lock(&ln->mu);
    for (;;) {
        while (ln->n == 0 && !ln->closing)
            pthread_cond_wait(&ln->cv, &ln->mu);
        if (ln->n == 0)
            break;
        queued_t it = ln->q[ln->head];
        bool failed = ln->failed;
        pthread_mutex_unlock(&ln->mu);
        bool landed = false, dropped = false;
        mdb_error_t serr = {0};
        if (failed) {
            /* after a fatal sink error the rest is only cleaned up */
        } else if (mdb_source_test_should_drop(ln->cfg, ln->req, it.sop)) {
            dropped = true;
        } else {
            mdb_source_item_t item = {it.path, NULL, 0, it.sop};
            landed = ln->sink(ln->sink_ctx, &item, &serr);
        }
        unlink(it.path); /* the sink renamed it away, or it is not wanted */
        pthread_mutex_lock(&ln->mu);
        ln->head = (ln->head + 1) % LANDER_QUEUE;
        ln->n--;
        ln->landed += landed;
        ln->dropped += dropped;
        if (!landed && !failed && serr.code == MDB_SOURCE_E_SINK && !ln->failed) {
            ln->failed = true;
            ln->err = serr;
        }
        pthread_cond_broadcast(&ln->cv);
    }
    pthread_mutex_unlock(&ln->mu);
    return NULL;
}

static bool lander_start(lander_t *ln, const mdb_source_config_t *cfg, const mdb_source_retrieve_t *req,
                         mdb_source_sink_fn sink, void *sink_ctx, mdb_error_t *err)
{
    memset(ln, 0, sizeof *ln);
    ln->cfg = cfg;
    ln->req = req;
    ln->sink = sink;
    ln->sink_ctx = sink_ctx;
    pthread_mutex_init(&ln->mu, NULL);
    pthread_cond_init(&ln->cv, NULL);
    int rc = pthread_create(&ln->thread, NULL, lander_run, ln);
    if (rc != 0) {
        pthread_cond_destroy(&ln->cv);
        pthread_mutex_destroy(&ln->mu);
        return dw_fail(err, MDB_SOURCE_E_SINK, "cannot start the landing thread: %s", strerror(rc));
    }
    return true;
}

/* Queue a complete spool file (waits while the queue is full). false + err
 * when the landing has failed for good: the file is removed, stop. */
static bool lander_put(lander_t *ln, const char *path, const char *sop, mdb_error_t *err)
{
    pthread_mutex_lock(&ln->mu);
    while (ln->n == LANDER_QUEUE && !ln->failed)
        pthread_cond_wait(&ln->cv, &ln->mu);
    bool ok = !ln->failed;
    if (ok) {
        queued_t *it = &ln->q[(ln->head + ln->n) % LANDER_QUEUE];
        snprintf(it->path, sizeof it->path, "%s", path);
        snprintf(it->sop, sizeof it->sop, "%s", sop);
        ln->n++;
        pthread_cond_broadcast(&ln->cv);
    } else {
        *err = ln->err;
    }
    pthread_mutex_unlock(&ln->mu);
    if (!ok)
        unlink(path);
    return ok;
}

/* The landing's fatal error, if any (err filled). */
static bool lander_failed(lander_t *ln, mdb_error_t *err)
{
    pthread_mutex_lock(&ln->mu);
    bool f = ln->failed;
    if (f && err)
        *err = ln->err;
    pthread_mutex_unlock(&ln->mu);
    return f;
}

/* Land what is queued, stop the thread, add its counts. */
static void lander_finish(lander_t *ln, mdb_source_counts_t *c)
{
    pthread_mutex_lock(&ln->mu);
    ln->closing = true;
    pthread_cond_broadcast(&ln->cv);
    pthread_mutex_unlock(&ln->mu);
    pthread_join(ln->thread, NULL);
    c->landed += ln->landed;
    c->dropped += ln->dropped;
    pthread_cond_destroy(&ln->cv);
    pthread_mutex_destroy(&ln->mu);
}

/* What a transfer does with the answer's body. */
typedef struct {
    dw_t *dw;
    long status;
    char ctype[512]; /* Content-Type of the (last) answer */
    /* kind: JSON body buffered (QIDO) or multipart streamed (WADO) */
    bool stream;
    char *body; /* QIDO body, or the start of an error answer */
    size_t len, cap, max;
    bool too_big;
    /* WADO-RS */
    mdb_source_counts_t *counts;
    lander_t *lander; /* hands complete parts to the sink */
    mdb_multipart_t *mp;
    bool single;    /* the answer is one application/dicom body, not multipart */
    bool part_skip; /* the current part is not application/dicom: dropped */
    int fd;         /* spool file of the current part, -1 if none */
    char path[PATH_MAX];
    uint64_t part_bytes;
    uint8_t head[4096]; /* the part's first bytes: its meta header names the SOP Instance UID */
    size_t head_len;
    int parts_skipped;
    mdb_error_t stop; /* why the write callback aborted (code != 0) */
} xfer_t;

static void xfer_init(xfer_t *x, dw_t *dw)
{
    memset(x, 0, sizeof *x);
    x->dw = dw;
    x->fd = -1;
}

/* Discard the spool file of an unfinished part. */
static void part_discard(xfer_t *x)
{
    x->dw->wlen = 0;
    if (x->fd >= 0) {
        close(x->fd);
        x->fd = -1;
        unlink(x->path);
    }
}

static void xfer_clear(xfer_t *x)
{
    part_discard(x);
    mdb_multipart_destroy(x->mp);
    x->mp = NULL;
    free(x->body);
    x->body = NULL;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        x->ctype[0] = '\0'; /* a new answer (after a redirect or 100-continue) */
        return len;
    }
    if (len > 13 && strncasecmp(line, "Content-Type:", 13) == 0) {
        size_t s = 13, e = len;
        while (s < e && (line[s] == ' ' || line[s] == '\t'))
            s++;
        while (e > s && (line[e - 1] == '\r' || line[e - 1] == '\n' || line[e - 1] == ' '))
            e--;
        snprintf(x->ctype, sizeof x->ctype, "%.*s", (int)(e - s), line + s);
    }
    return len;
}

static bool body_add(xfer_t *x, const char *p, size_t n)
{
    if (n > x->max - x->len) {
        x->too_big = true;
        n = x->max - x->len;
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = (x->len + n + 1) * 2;
        char *b = realloc(x->body, cap);
        if (b == NULL)
            return false;
        x->body = b;
        x->cap = cap;
    }
    memcpy(x->body + x->len, p, n);
    x->len += n;
    x->body[x->len] = '\0';
    return true;
}

/* ---- WADO-RS parts ---- */

/* MediaStorageSOPInstanceUID (0002,0003) from the start of a Part 10 file (the
 * meta group is explicit VR little endian), padding trimmed. false when the
 * bytes are not Part 10 or it is absent or malformed. */
static bool meta_sop_uid(const uint8_t *p, size_t n, char *out, size_t cap)
{
    if (n < 132 || memcmp(p + 128, "DICM", 4) != 0)
        return false;
    size_t pos = 132;
    while (pos + 8 <= n) {
        uint16_t group = (uint16_t)(p[pos] | p[pos + 1] << 8), elem = (uint16_t)(p[pos + 2] | p[pos + 3] << 8);
        if (group != 0x0002)
            return false;
        const uint8_t *vr = p + pos + 4;
        static const char long_vrs[] = "OBODOFOLOVOWSQSVUCURUTUNUV"; /* VRs with a 4-byte length */
        bool long_form = false;
        for (size_t k = 0; k + 1 < sizeof long_vrs && !long_form; k += 2)
            long_form = vr[0] == long_vrs[k] && vr[1] == long_vrs[k + 1];
        size_t len, hdr;
        if (long_form) {
            if (pos + 12 > n)
                return false;
            len = (size_t)p[pos + 8] | (size_t)p[pos + 9] << 8 | (size_t)p[pos + 10] << 16 | (size_t)p[pos + 11] << 24;
            hdr = 12;
        } else {
            len = (size_t)(p[pos + 6] | p[pos + 7] << 8);
            hdr = 8;
        }
        if (len > n - pos - hdr)
            return false;
        if (elem == 0x0003) {
            while (len > 0 && (p[pos + hdr + len - 1] == '\0' || p[pos + hdr + len - 1] == ' '))
                len--;
            if (len == 0 || len >= cap)
                return false;
            memcpy(out, p + pos + hdr, len);
            out[len] = '\0';
            return uid_ok(out);
        }
        pos += hdr + len;
    }
    return false;
}

static bool part_begin(void *ud, const mdb_multipart_part_t *part, mdb_error_t *err)
{
    xfer_t *x = ud;
    const char *ct = part ? mdb_multipart_part_header(part, "Content-Type") : NULL;
    x->part_skip = ct != NULL && !mdb_multipart_media_type_is(ct, "application/dicom");
    x->part_bytes = 0;
    x->head_len = 0;
    if (x->part_skip) {
        x->parts_skipped++;
        return true;
    }
    int pl = snprintf(x->path, sizeof x->path, "%s/.dicomweb-XXXXXX", x->dw->spool);
    x->fd = pl > 0 && (size_t)pl < sizeof x->path ? mkstemp(x->path) : -1;
    if (x->fd < 0)
        return dw_fail(err, MDB_SOURCE_E_SINK, "cannot create a spool file in %s: %s", x->dw->spool, strerror(errno));
    fchmod(x->fd, 0644); /* mkstemp's 0600; landed files are read by the workers like any archive file */
    return true;
}

static bool write_all(xfer_t *x, const uint8_t *d, size_t n, mdb_error_t *err)
{
    while (n > 0) {
        ssize_t w = write(x->fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return dw_fail(err, MDB_SOURCE_E_SINK, "writing spool file %s: %s", x->path,
                           w < 0 ? strerror(errno) : "no progress");
        d += w;
        n -= (size_t)w;
    }
    return true;
}

/* Write out what the buffer holds. */
static bool part_flush(xfer_t *x, mdb_error_t *err)
{
    size_t n = x->dw->wlen;
    x->dw->wlen = 0;
    return write_all(x, x->dw->wbuf, n, err);
}

static bool part_data(void *ud, const uint8_t *d, size_t n, mdb_error_t *err)
{
    xfer_t *x = ud;
    dw_t *dw = x->dw;
    x->part_bytes += n;
    if (x->part_skip)
        return true;
    if (x->head_len < sizeof x->head) {
        size_t k = n < sizeof x->head - x->head_len ? n : sizeof x->head - x->head_len;
        memcpy(x->head + x->head_len, d, k);
        x->head_len += k;
    }
    if (n > WBUF_SIZE - dw->wlen && !part_flush(x, err))
        return false;
    if (n >= WBUF_SIZE)
        return write_all(x, d, n, err);
    memcpy(dw->wbuf + dw->wlen, d, n);
    dw->wlen += n;
    return true;
}

/* A complete part: close its spool file, read its SOP Instance UID and queue
 * it for the landing thread (which applies the test switch and calls the
 * sink). Only a sink error of kind SINK stops the retrieval. */
static bool part_end(void *ud, mdb_error_t *err)
{
    xfer_t *x = ud;
    mdb_source_counts_t *c = x->counts;
    if (x->part_skip)
        return true;
    c->completed = c->completed < 0 ? 1 : c->completed + 1;
    c->bytes += x->part_bytes;
    c->received++;
    if (!part_flush(x, err)) {
        part_discard(x);
        return false;
    }
    if (close(x->fd) != 0) {
        x->fd = -1;
        unlink(x->path);
        return dw_fail(err, MDB_SOURCE_E_SINK, "closing spool file %s: %s", x->path, strerror(errno));
    }
    x->fd = -1;
    /* The hint; the sink reads the object itself and says what is wrong with it. */
    char sop[MDB_UID_MAX];
    if (!meta_sop_uid(x->head, x->head_len, sop, sizeof sop))
        sop[0] = '\0';
    return lander_put(x->lander, x->path, sop, err);
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = size * n;
    if (x->lander && lander_failed(x->lander, &x->stop))
        return 0; /* the landing failed for good (disk full): stop receiving */
    if (x->status == 0)
        curl_easy_getinfo(x->dw->h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status < 200 || x->status > 299 || !x->stream) {
        if (!body_add(x, p, len)) {
            dw_fail(&x->stop, MDB_SOURCE_E_SINK, "out of memory");
            return 0;
        }
        /* an error answer is only quoted: its start is enough */
        if (x->too_big && x->status >= 200 && x->status <= 299) {
            dw_fail(&x->stop, MDB_SOURCE_E_PROTOCOL, "QIDO answer larger than %zu bytes", x->max);
            return 0;
        }
        return len;
    }
    if (x->mp == NULL && !x->single) {
        if (mdb_multipart_media_type_is(x->ctype, "application/dicom")) {
            x->single = true; /* one instance, not wrapped in multipart */
            mdb_error_t e = {0};
            if (!part_begin(x, NULL, &e)) {
                x->stop = e;
                return 0;
            }
        } else {
            mdb_multipart_ctype_t ct;
            mdb_error_t e = {0};
            if (!mdb_multipart_parse_content_type(x->ctype, &ct, &e)) {
                dw_fail(&x->stop, MDB_SOURCE_E_PROTOCOL, "WADO-RS answer: %s", e.message);
                return 0;
            }
            if (ct.type[0] && strcmp(ct.type, "application/dicom") != 0) {
                dw_fail(&x->stop, MDB_SOURCE_E_PROTOCOL, "WADO-RS answer holds %s, not application/dicom", ct.type);
                return 0;
            }
            static const mdb_multipart_callbacks_t cb = {part_begin, part_data, part_end};
            x->mp = mdb_multipart_new(ct.boundary, &cb, x, NULL, &e);
            if (x->mp == NULL) {
                dw_fail(&x->stop, MDB_SOURCE_E_PROTOCOL, "%s", e.message);
                return 0;
            }
        }
    }
    mdb_error_t e = {0};
    bool ok = x->single ? part_data(x, (const uint8_t *)p, len, &e) : mdb_multipart_feed(x->mp, p, len, &e);
    if (!ok) {
        /* the sink's or the spool's own errors keep their code; the parser's are the peer's fault */
        x->stop = e;
        if (e.domain != MDB_ERR_IO)
            x->stop.code = MDB_SOURCE_E_PROTOCOL, x->stop.domain = MDB_ERR_IO;
        return 0;
    }
    return len;
}

/* GET url. accept: the Accept header line; bearer: send the token. On
 * success x->status is the HTTP status (2xx) and x holds what on_data made of
 * the body. Any failure fills err (with the masked URL and the reason). */
static bool http_get(dw_t *dw, const char *url, const char *accept, bool bearer, bool total_timeout, xfer_t *x,
                     mdb_error_t *err)
{
    CURL *h = dw->h;
    struct curl_slist *hdr = curl_slist_append(NULL, accept);
    if (hdr == NULL)
        return dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
    long t = dw->cfg.timeout_s > 0 ? dw->cfg.timeout_s : 30;
    curl_easy_reset(h); /* keeps the connection cache */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, t);
    if (total_timeout)
        curl_easy_setopt(h, CURLOPT_TIMEOUT, t);
    /* a retrieval may take long; a stalled one may not */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, t);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* gzip for QIDO where offered */
    curl_easy_setopt(h, CURLOPT_USERAGENT, "metadb-fetcher");
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024L); /* fewer, larger reads and spool writes */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (bearer && dw->token) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, dw->token);
    }
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
    char *mu = masked(url);
    bool ok = false;
    if (rc == CURLE_WRITE_ERROR && x->stop.code != 0) {
        *err = x->stop;
        mdb_error_prefix(err, "GET %s", mu);
    } else if (rc != CURLE_OK) {
        dw_fail(err, curl_errc(rc), "GET %s: %s", mu, ebuf[0] ? ebuf : curl_easy_strerror(rc));
    } else if (x->status < 200 || x->status > 299) {
        char q[ERR_BODY_MAX + 1];
        quote_body(x->body ? x->body : "", x->len, q, sizeof q);
        dw_fail(err, status_errc(x->status), "GET %s: HTTP %ld%s%s", mu, x->status, q[0] ? ": " : "", q);
    } else {
        ok = true;
    }
    free(mu);
    return ok;
}

/* ------------------------------------------------------------------ */
/* QIDO-RS                                                             */

/* First value of tag in a DICOM JSON object as a string ("" if absent):
 * strings as they are, numbers printed, person names' Alphabetic group. */
static void dj_str(json_t *obj, const char *tag, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *v = json_array_get(json_object_get(json_object_get(obj, tag), "Value"), 0);
    if (json_is_string(v))
        snprintf(out, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, cap, "%.0f", json_real_value(v));
    else if (json_is_object(v) && json_is_string(json_object_get(v, "Alphabetic")))
        snprintf(out, cap, "%s", json_string_value(json_object_get(v, "Alphabetic")));
}

static int dj_int(json_t *obj, const char *tag)
{
    char s[32];
    dj_str(obj, tag, s, sizeof s);
    if (s[0] == '\0')
        return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end == '\0' && v >= 0 && v <= INT_MAX ? (int)v : -1;
}

/* Every item of a QIDO query (url holds its query string, without limit and
 * offset), read page by page until an empty page. key_tag identifies an item
 * (a server that ignores offset repeats its first page). *out: a JSON array
 * the caller decrefs. */
static bool qido_all(dw_t *dw, const char *url, const char *key_tag, json_t **out, mdb_error_t *err)
{
    json_t *all = json_array();
    char first_prev[MDB_UID_MAX] = "";
    size_t offset = 0;
    bool ok = false;
    for (;;) {
        char *page_url = NULL;
        if (asprintf(&page_url, "%s%slimit=%d&offset=%zu", url, strchr(url, '?') ? "&" : "?", QIDO_PAGE, offset) < 0)
            page_url = NULL;
        if (all == NULL || page_url == NULL) {
            free(page_url);
            dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
            goto done;
        }
        xfer_t x;
        xfer_init(&x, dw);
        x.max = QIDO_MAX_BODY;
        bool got = http_get(dw, page_url, "Accept: application/dicom+json", true, true, &x, err);
        json_t *page = NULL;
        if (got && x.status != 204 && x.len > 0) {
            json_error_t je;
            page = json_loadb(x.body, x.len, 0, &je);
            if (!json_is_array(page)) {
                char *mu = masked(page_url);
                dw_fail(err, MDB_SOURCE_E_PROTOCOL, "GET %s: the answer is not a JSON array (%s)", mu,
                        page ? "another JSON value" : je.text);
                free(mu);
                got = false;
            }
        }
        xfer_clear(&x);
        free(page_url);
        if (!got) {
            json_decref(page);
            goto done;
        }
        size_t n = page ? json_array_size(page) : 0;
        if (n == 0) {
            json_decref(page);
            break;
        }
        char first[MDB_UID_MAX];
        dj_str(json_array_get(page, 0), key_tag, first, sizeof first);
        if (offset > 0 && first[0] && strcmp(first, first_prev) == 0) {
            json_decref(page);
            dw_fail(err, MDB_SOURCE_E_PROTOCOL, "QIDO paging: the server repeats its first page (offset ignored)");
            goto done;
        }
        memcpy(first_prev, first, sizeof first);
        json_array_extend(all, page);
        json_decref(page);
        offset += n;
        if (n > QIDO_PAGE)
            break; /* limit ignored: that was everything */
        if (offset > QIDO_MAX_ITEMS) {
            dw_fail(err, MDB_SOURCE_E_PROTOCOL, "QIDO answer of more than %d items", QIDO_MAX_ITEMS);
            goto done;
        }
    }
    ok = true;
done:
    if (ok)
        *out = all;
    else
        json_decref(all);
    return ok;
}

/* Append "&name=value" (value URL-encoded) to *q. */
static bool query_add(CURL *h, char **q, const char *name, const char *value)
{
    char *enc = curl_easy_escape(h, value, 0);
    char *n = NULL;
    if (enc == NULL || asprintf(&n, "%s%s%s=%s", *q, strchr(*q, '?') ? "&" : "?", name, enc) < 0)
        n = NULL;
    curl_free(enc);
    if (n == NULL)
        return false;
    free(*q);
    *q = n;
    return true;
}

static bool has_wildcard(const char *s)
{
    return strpbrk(s, "*?") != NULL;
}

/* Remember what QIDO said about a study (replacing older news). url may be NULL. */
static bool remember_study(dw_t *dw, const char *uid, const char *url, int n_instances)
{
    char *u = url ? strdup(url) : NULL;
    if (url && u == NULL)
        return false;
    for (size_t i = 0; i < dw->n_studies; i++)
        if (strcmp(dw->studies[i].uid, uid) == 0) {
            free(dw->studies[i].url);
            dw->studies[i].url = u;
            dw->studies[i].n_instances = n_instances;
            return true;
        }
    if (dw->n_studies == dw->cap_studies) {
        size_t cap = dw->cap_studies ? dw->cap_studies * 2 : 8;
        study_info_t *v = realloc(dw->studies, cap * sizeof *v);
        if (v == NULL) {
            free(u);
            return false;
        }
        dw->studies = v;
        dw->cap_studies = cap;
    }
    study_info_t *si = &dw->studies[dw->n_studies++];
    snprintf(si->uid, sizeof si->uid, "%s", uid);
    si->url = u;
    si->n_instances = n_instances;
    return true;
}

static const study_info_t *study_get(const dw_t *dw, const char *uid)
{
    for (size_t i = 0; i < dw->n_studies; i++)
        if (strcmp(dw->studies[i].uid, uid) == 0)
            return &dw->studies[i];
    return NULL;
}

/* A RetrieveURL is followed only if it is http(s). */
static bool usable_url(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

static bool dw_find_studies(void *state, const mdb_source_selector_t *sel, mdb_source_studies_t *out, mdb_error_t *err)
{
    dw_t *dw = state;
    const char *name = NULL, *value = NULL, *tag = NULL;
    if (sel->accession && *sel->accession)
        name = "AccessionNumber", value = sel->accession, tag = "00080050";
    else if (sel->study_uid && *sel->study_uid)
        name = "StudyInstanceUID", value = sel->study_uid, tag = "0020000D";
    else if (sel->patient_id && *sel->patient_id)
        name = "PatientID", value = sel->patient_id, tag = "00100020";
    bool dates = (sel->date_from && *sel->date_from) || (sel->date_to && *sel->date_to);
    if (name == NULL && !dates)
        return dw_fail(err, MDB_SOURCE_E_CONFIG, "find: no accession, patient, study or date given");
    char *q = NULL;
    json_t *items = NULL;
    bool ok = false;
    if (asprintf(&q,
                 "%s/studies?includefield=00080050&includefield=00100020&includefield=00080020"
                 "&includefield=00080061&includefield=00081030&includefield=00201206&includefield=00201208"
                 "&includefield=00081190",
                 dw->cfg.url) < 0) {
        q = NULL;
        goto oom;
    }
    /* "*" alone is "any" (a preview by date): no parameter at all */
    if (name && strcmp(value, "*") != 0 && !query_add(dw->h, &q, name, value))
        goto oom;
    if (dates) {
        char range[32];
        const char *f = sel->date_from ? sel->date_from : "", *t = sel->date_to ? sel->date_to : "";
        if (*f && *t && strcmp(f, t) == 0)
            snprintf(range, sizeof range, "%.8s", f);
        else
            snprintf(range, sizeof range, "%.8s-%.8s", f, t);
        if (!query_add(dw->h, &q, "StudyDate", range))
            goto oom;
    }
    if (!qido_all(dw, q, "0020000D", &items, err)) {
        mdb_error_prefix(err, "source %s: QIDO-RS studies", dw->cfg.name);
        goto done;
    }
    bool exact = name && !has_wildcard(value);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        mdb_source_study_t s;
        memset(&s, 0, sizeof s);
        dj_str(it, "0020000D", s.study_uid, sizeof s.study_uid);
        if (!uid_ok(s.study_uid))
            continue; /* not something we could retrieve */
        bool dup = false;
        for (size_t k = 0; k < out->n && !dup; k++)
            dup = strcmp(out->items[k].study_uid, s.study_uid) == 0;
        if (dup)
            continue;
        if (exact) { /* the server may match loosely (case, fuzzy names): keep exact matches */
            char got[MDB_UID_MAX];
            dj_str(it, tag, got, sizeof got);
            if (got[0] && strcmp(got, value) != 0)
                continue;
        }
        dj_str(it, "00080050", s.accession, sizeof s.accession);
        dj_str(it, "00100020", s.patient_id, sizeof s.patient_id);
        dj_str(it, "00080020", s.date, sizeof s.date);
        dj_str(it, "00081030", s.description, sizeof s.description);
        json_t *mods = json_object_get(json_object_get(it, "00080061"), "Value");
        size_t m;
        json_t *mv;
        json_array_foreach(mods, m, mv)
        {
            if (!json_is_string(mv))
                continue;
            size_t l = strlen(s.modalities);
            snprintf(s.modalities + l, sizeof s.modalities - l, "%s%s", l ? "," : "", json_string_value(mv));
        }
        s.n_series = dj_int(it, "00201206");
        s.n_instances = dj_int(it, "00201208");
        char rurl[2048];
        dj_str(it, "00081190", rurl, sizeof rurl);
        if (!remember_study(dw, s.study_uid, rurl[0] && usable_url(rurl) ? rurl : NULL, s.n_instances))
            goto oom;
        if (!mdb_source_studies_push(out, &s))
            goto oom;
    }
    ok = true;
    goto done;
oom:
    dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
done:
    json_decref(items);
    free(q);
    return ok;
}

static bool remember_instance_url(dw_t *dw, const char *sop, const char *url)
{
    if (dw->inst_url == NULL && (dw->inst_url = mdb_strmap_new()) == NULL)
        return false;
    if (dw->n_inst_urls == dw->cap_inst_urls) {
        size_t cap = dw->cap_inst_urls ? dw->cap_inst_urls * 2 : 64;
        char **v = realloc(dw->inst_urls, cap * sizeof *v);
        if (v == NULL)
            return false;
        dw->inst_urls = v;
        dw->cap_inst_urls = cap;
    }
    bool created;
    mdb_strmap_entry_t *e = mdb_strmap_put(dw->inst_url, sop, &created);
    char *u = strdup(url);
    if (e == NULL || u == NULL) {
        free(u);
        return false;
    }
    if (!created) {
        free(dw->inst_urls[e->value]);
        dw->inst_urls[e->value] = u;
        return true;
    }
    e->value = (int64_t)dw->n_inst_urls;
    dw->inst_urls[dw->n_inst_urls++] = u;
    return true;
}

/* What QIDO says about a study, asked once per source: *info is NULL when the
 * server does not know the study (*unknown true) or would not say. false +
 * err only on a retryable failure. */
static bool study_lookup(dw_t *dw, const char *uid, const study_info_t **info, bool *unknown, mdb_error_t *err)
{
    *unknown = false;
    *info = study_get(dw, uid);
    if (*info)
        return true;
    mdb_source_selector_t sel = {.study_uid = uid};
    mdb_source_studies_t found = {0};
    mdb_error_t ferr = {0};
    bool ok = dw_find_studies(dw, &sel, &found, &ferr);
    size_t n = found.n;
    mdb_source_studies_free(&found);
    if (!ok && mdb_source_error_retryable(&ferr)) {
        *err = ferr;
        return false;
    }
    *unknown = ok && n == 0;
    *info = study_get(dw, uid);
    return true;
}

/* Page through a QIDO instance query and append the instances not seen yet. */
static bool collect_instances(dw_t *dw, const char *url, const char *study_uid, mdb_strmap_t *seen,
                              mdb_source_instances_t *out, mdb_error_t *err)
{
    json_t *items = NULL;
    if (!qido_all(dw, url, "00080018", &items, err))
        return false;
    bool ok = true;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        mdb_source_instance_t in;
        memset(&in, 0, sizeof in);
        dj_str(it, "00080018", in.sop_uid, sizeof in.sop_uid);
        dj_str(it, "0020000E", in.series_uid, sizeof in.series_uid);
        if (!uid_ok(in.sop_uid) || !uid_ok(in.series_uid)) {
            ok = dw_fail(err, MDB_SOURCE_E_PROTOCOL,
                         "QIDO-RS instance %zu of %s lacks a valid SOP Instance or "
                         "Series UID",
                         i, study_uid);
            break;
        }
        bool created;
        if (mdb_strmap_put(seen, in.sop_uid, &created) == NULL) {
            ok = dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
            break;
        }
        if (!created)
            continue; /* pages of a capped server may overlap */
        char rurl[2048];
        dj_str(it, "00081190", rurl, sizeof rurl);
        if ((rurl[0] && usable_url(rurl) && !remember_instance_url(dw, in.sop_uid, rurl)) ||
            !mdb_source_instances_push(out, &in)) {
            ok = dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
            break;
        }
    }
    json_decref(items);
    return ok;
}

/* The study's instance list. When it is shorter than the study's
 * NumberOfStudyRelatedInstances (a server capping its QIDO answers), the
 * series are listed one by one; still short, the list is refused: an
 * incomplete list would let a partial retrieval pass for a complete one. */
static bool dw_list_instances(void *state, const char *study_uid, mdb_source_instances_t *out, mdb_error_t *err)
{
    dw_t *dw = state;
    if (!uid_ok(study_uid))
        return dw_fail(err, MDB_SOURCE_E_PROTOCOL, "list: invalid Study Instance UID \"%.80s\"", study_uid);
    const study_info_t *info;
    bool unknown;
    if (!study_lookup(dw, study_uid, &info, &unknown, err)) {
        mdb_error_prefix(err, "source %s: QIDO-RS study %s", dw->cfg.name, study_uid);
        return false;
    }
    int announced = info ? info->n_instances : -1;
    size_t n0 = out->n;
    char *q = NULL;
    json_t *series = NULL;
    mdb_strmap_t *seen = mdb_strmap_new();
    bool ok = false;
    if (seen == NULL || asprintf(&q, "%s/studies/%s/instances?includefield=0020000E&includefield=00081190", dw->cfg.url,
                                 study_uid) < 0) {
        q = NULL;
        dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
        goto done;
    }
    if (!collect_instances(dw, q, study_uid, seen, out, err))
        goto done;
    if (announced >= 0 && out->n - n0 < (size_t)announced) {
        free(q);
        if (asprintf(&q, "%s/studies/%s/series?includefield=00201209", dw->cfg.url, study_uid) < 0) {
            q = NULL;
            dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
            goto done;
        }
        if (!qido_all(dw, q, "0020000E", &series, err))
            goto done;
        size_t i;
        json_t *it;
        json_array_foreach(series, i, it)
        {
            char su[MDB_UID_MAX];
            dj_str(it, "0020000E", su, sizeof su);
            if (!uid_ok(su))
                continue;
            free(q);
            if (asprintf(&q, "%s/studies/%s/series/%s/instances?includefield=0020000E&includefield=00081190",
                         dw->cfg.url, study_uid, su) < 0) {
                q = NULL;
                dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
                goto done;
            }
            if (!collect_instances(dw, q, study_uid, seen, out, err))
                goto done;
        }
        if (out->n - n0 < (size_t)announced) {
            dw_fail(err, MDB_SOURCE_E_PROTOCOL,
                    "QIDO-RS lists %zu of the %d instances the study announces (NumberOfStudyRelatedInstances): "
                    "does the server cap its QIDO answers?",
                    out->n - n0, announced);
            goto done;
        }
    }
    ok = true;
done:
    if (!ok) {
        out->n = n0;
        mdb_error_prefix(err, "source %s: instances of %s", dw->cfg.name, study_uid);
    }
    json_decref(series);
    mdb_strmap_destroy(seen);
    free(q);
    return ok;
}

static bool dw_echo(void *state, mdb_error_t *err)
{
    dw_t *dw = state;
    char *url = NULL;
    if (asprintf(&url, "%s/studies?limit=1", dw->cfg.url) < 0)
        return dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
    xfer_t x;
    xfer_init(&x, dw);
    x.max = QIDO_MAX_BODY;
    bool ok = http_get(dw, url, "Accept: application/dicom+json", true, true, &x, err);
    if (ok && x.status != 204 && x.len > 0) {
        json_error_t je;
        json_t *j = json_loadb(x.body, x.len, 0, &je);
        if (!json_is_array(j))
            ok = dw_fail(err, MDB_SOURCE_E_PROTOCOL, "QIDO-RS answer is not a JSON array: is %s a DICOMweb root?",
                         dw->cfg.url);
        json_decref(j);
    }
    if (!ok)
        mdb_error_prefix(err, "source %s: echo", dw->cfg.name);
    xfer_clear(&x);
    free(url);
    return ok;
}

/* ------------------------------------------------------------------ */
/* WADO-RS                                                             */

/* One WADO-RS GET whose parts go to the sink. A 404 of a single instance is
 * not an error of the retrieval (*missing set). */
static bool wado_get(dw_t *dw, const char *url, xfer_t *proto, bool *missing, mdb_error_t *err)
{
    char origin[512];
    url_origin(url, origin, sizeof origin);
    bool bearer = origin[0] && strcmp(origin, dw->origin) == 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        xfer_t x = *proto;
        x.stream = true;
        x.max = 4096; /* an error answer's start */
        int before = x.counts->received;
        bool ok = http_get(dw, url, dw->no_any_ts ? ACCEPT_DICOM : ACCEPT_DICOM_ANY_TS, bearer, false, &x, err);
        if (ok && (x.mp || x.single)) {
            mdb_error_t e = {0};
            if (x.single) {
                ok = part_end(&x, &e);
            } else if (!mdb_multipart_finish(x.mp, &e)) {
                ok = false;
                /* a body that ends early is the network's doing; anything else the peer's */
                e.domain = MDB_ERR_IO;
                e.code = strstr(e.message, "truncated") ? MDB_SOURCE_E_NETWORK : MDB_SOURCE_E_PROTOCOL;
            }
            if (!ok) {
                char *mu = masked(url);
                *err = e;
                mdb_error_prefix(err, "GET %s", mu);
                free(mu);
            }
        } else if (ok && x.status != 204) {
            ok = dw_fail(err, MDB_SOURCE_E_PROTOCOL, "GET %s: HTTP %ld without a body", url, x.status);
        }
        bool refused_ts = !ok && !dw->no_any_ts && (x.status == 406 || x.status == 400) && x.counts->received == before;
        xfer_clear(&x);
        if (refused_ts) {
            dw->no_any_ts = true; /* ask for the default transfer syntax from now on */
            continue;
        }
        if (!ok && missing && err->code == MDB_SOURCE_E_NOTFOUND) {
            *missing = true;
            return true;
        }
        return ok;
    }
    return false;
}

static bool dw_retrieve(void *state, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                        mdb_source_counts_t *counts, mdb_error_t *err)
{
    dw_t *dw = state;
    bool series = req->series_uid && *req->series_uid;
    if (!uid_ok(req->study_uid) || (series && !uid_ok(req->series_uid)))
        return dw_fail(err, MDB_SOURCE_E_PROTOCOL, "source %s: retrieve: invalid UID", dw->cfg.name);
    if (req->n_sop_uids > 0 && !series)
        return dw_fail(err, MDB_SOURCE_E_PROTOCOL, "source %s: retrieve: instances without their series", dw->cfg.name);
    const study_info_t *info;
    bool unknown;
    if (!study_lookup(dw, req->study_uid, &info, &unknown, err)) {
        mdb_error_prefix(err, "source %s: QIDO-RS study %s", dw->cfg.name, req->study_uid);
        return false;
    }
    if (unknown)
        return dw_fail(err, MDB_SOURCE_E_NOTFOUND, "source %s: study %s not found", dw->cfg.name, req->study_uid);
    char base[4096];
    if (info && info->url)
        snprintf(base, sizeof base, "%s", info->url);
    else
        snprintf(base, sizeof base, "%s/studies/%s", dw->cfg.url, req->study_uid);
    lander_t *ln = malloc(sizeof *ln);
    if (ln == NULL)
        return dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
    if (!lander_start(ln, &dw->cfg, req, sink, sink_ctx, err)) {
        free(ln);
        return false;
    }
    xfer_t proto;
    xfer_init(&proto, dw);
    proto.counts = counts;
    proto.lander = ln;
    char url[8192];
    bool ok = true;
    if (req->n_sop_uids == 0) {
        if (series)
            snprintf(url, sizeof url, "%s/series/%s", base, req->series_uid);
        else
            snprintf(url, sizeof url, "%s", base);
        ok = wado_get(dw, url, &proto, NULL, err);
    } else {
        for (size_t i = 0; i < req->n_sop_uids && ok; i++) {
            const char *sop = req->sop_uids[i];
            if (!uid_ok(sop))
                continue; /* cannot be asked for; the fetcher sees it missing */
            mdb_strmap_entry_t *e = dw->inst_url ? mdb_strmap_get(dw->inst_url, sop) : NULL;
            if (e)
                snprintf(url, sizeof url, "%s", dw->inst_urls[e->value]);
            else
                snprintf(url, sizeof url, "%s/series/%s/instances/%s", base, req->series_uid, sop);
            bool missing = false;
            ok = wado_get(dw, url, &proto, &missing, err);
        }
    }
    lander_finish(ln, counts);
    if (ln->failed) { /* the landing's own failure is the reason, whatever the transfer made of it */
        *err = ln->err;
        ok = false;
    }
    free(ln);
    if (!ok)
        mdb_error_prefix(err, "source %s: WADO-RS", dw->cfg.name);
    return ok;
}

/* ------------------------------------------------------------------ */
/* open / close                                                        */

/* The token file's first line, spaces trimmed; NULL + err if unreadable or empty. */
static char *read_token(const char *path, mdb_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        dw_fail(err, MDB_SOURCE_E_CONFIG, "token file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    char *s = buf;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t l = strcspn(s, "\r\n");
    while (l > 0 && isspace((unsigned char)s[l - 1]))
        l--;
    s[l] = '\0';
    if (more || l == 0) {
        dw_fail(err, MDB_SOURCE_E_CONFIG, "token file %s: %s", path, more ? "larger than 8 KiB" : "empty");
        return NULL;
    }
    for (size_t i = 0; i < l; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) {
            dw_fail(err, MDB_SOURCE_E_CONFIG, "token file %s: the token holds a space or control byte", path);
            return NULL;
        }
    char *t = strdup(s);
    if (t == NULL)
        dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
    return t;
}

static void dw_close(void *state)
{
    dw_t *dw = state;
    if (dw == NULL)
        return;
    if (dw->h)
        curl_easy_cleanup(dw->h);
    free(dw->wbuf);
    if (dw->token) {
        explicit_bzero(dw->token, strlen(dw->token));
        free(dw->token);
    }
    for (size_t i = 0; i < dw->n_studies; i++)
        free(dw->studies[i].url);
    free(dw->studies);
    for (size_t i = 0; i < dw->n_inst_urls; i++)
        free(dw->inst_urls[i]);
    free(dw->inst_urls);
    mdb_strmap_destroy(dw->inst_url);
    free(dw);
}

static bool dw_open(const mdb_source_config_t *cfg, const char *spool_dir, void **state, mdb_error_t *err)
{
    *state = NULL;
    char origin[512];
    url_origin(cfg->url, origin, sizeof origin);
    if (origin[0] == '\0')
        return dw_fail(err, MDB_SOURCE_E_CONFIG, "source %s: URL is not http:// or https://", cfg->name);
    if (spool_dir == NULL || strlen(spool_dir) >= PATH_MAX - 32)
        return dw_fail(err, MDB_SOURCE_E_CONFIG, "source %s: no spool directory", cfg->name);
    pthread_once(&curl_once, curl_setup);
    dw_t *dw = calloc(1, sizeof *dw);
    if (dw == NULL)
        return dw_fail(err, MDB_SOURCE_E_SINK, "out of memory");
    dw->cfg = *cfg;
    size_t ul = strlen(dw->cfg.url);
    while (ul > 0 && dw->cfg.url[ul - 1] == '/')
        dw->cfg.url[--ul] = '\0';
    snprintf(dw->spool, sizeof dw->spool, "%s", spool_dir);
    memcpy(dw->origin, origin, sizeof origin);
    if (cfg->token_file[0] && (dw->token = read_token(cfg->token_file, err)) == NULL) {
        mdb_error_prefix(err, "source %s", cfg->name);
        dw_close(dw);
        return false;
    }
    dw->h = curl_easy_init();
    dw->wbuf = malloc(WBUF_SIZE);
    if (dw->h == NULL || dw->wbuf == NULL) {
        dw_close(dw);
        return dw_fail(err, MDB_SOURCE_E_SINK, "cannot initialise the HTTP client");
    }
    *state = dw;
    return true;
}

const mdb_source_ops_t mdb_source_dicomweb_ops = {
    .kind_name = "dicomweb",
    .open = dw_open,
    .close = dw_close,
    .echo = dw_echo,
    .find_studies = dw_find_studies,
    .list_instances = dw_list_instances,
    .retrieve = dw_retrieve,
};
