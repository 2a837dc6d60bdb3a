/* mdb_nl_llm.c: the optional LLM backend of natural-language search, and
 * the validation every externally written translation goes through.
 *
 * The backend posts the sentence to an OpenAI-compatible chat-completions
 * endpoint (a local Ollama, llama.cpp server, vLLM, or a hosted service)
 * with a system prompt listing the levels, the fields of each level with
 * their types, a few known values and the allowed operators, and asks for
 * one JSON object {level, filter, joins, explanation}. The answer is
 * trusted for nothing: the level must be one of ours, every field must be in
 * the vocabulary of its level, every operator on the raw-query whitelist
 * (mdb_query), and the filter must convert. Anything else - no answer, an
 * HTTP error, prose instead of JSON, an unknown field, $where - falls back to
 * the offline translator, and the result says why in its message. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_nl_private.h"

#define LLM_MAX_RESPONSE (1024 * 1024)
#define LLM_DEFAULT_TIMEOUT_MS 30000
#define LLM_MAX_PROMPT_VALUES 40

/* ------------------------------------------------------------ validation */

typedef struct {
    const mdb_nl_vocab_t *v;
    mdb_query_level_t level;
    mdb_error_t *err;
    int depth;
} vctx_t;

static bool field_known(const vctx_t *c, const char *field)
{
    if (!strcmp(field, "_id"))
        return true;
    if (mdb_nl_vocab_has_field(c->v, c->level, field, NULL))
        return true;
    /* a nested path inside a known metadata keyword (sequence items) */
    if (!strncmp(field, "metadata.", 9)) {
        const char *dot = strchr(field + 9, '.');
        if (dot) {
            char head[256];
            size_t n = (size_t)(dot - field);
            if (n < sizeof head) {
                memcpy(head, field, n);
                head[n] = '\0';
                return mdb_nl_vocab_has_field(c->v, c->level, head, NULL);
            }
        }
    }
    return false;
}

static bool check_ops(vctx_t *c, const char *field, const json_t *ops);

/* A query document: field → value/operators, or $and/$or/$nor → [docs]. */
static bool check_doc(vctx_t *c, const json_t *doc)
{
    if (!json_is_object(doc)) {
        mdb_error_set(c->err, MDB_ERR_QUERY, 0, "a filter must be a JSON object");
        return false;
    }
    if (++c->depth > 16) {
        mdb_error_set(c->err, MDB_ERR_QUERY, 0, "filter nested too deeply");
        return false;
    }
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)doc, k, val)
    {
        if (k[0] == '$') {
            if (!mdb_query_operator_allowed(k, c->err))
                return false;
            if (strcmp(k, "$and") && strcmp(k, "$or") && strcmp(k, "$nor")) {
                mdb_error_set(c->err, MDB_ERR_QUERY, 0, "operator %s cannot stand at the top of a filter", k);
                return false;
            }
            if (!json_is_array(val) || !json_array_size(val)) {
                mdb_error_set(c->err, MDB_ERR_QUERY, 0, "%s needs a non-empty array of filters", k);
                return false;
            }
            size_t i;
            json_t *sub;
            json_array_foreach(val, i, sub) if (!check_doc(c, sub)) return false;
            continue;
        }
        if (!field_known(c, k)) {
            mdb_error_set(c->err, MDB_ERR_QUERY, 0, "unknown field '%s' for %s", k, mdb_query_level_name(c->level));
            return false;
        }
        if (json_is_object(val) && !check_ops(c, k, val))
            return false;
    }
    c->depth--;
    return true;
}

static bool check_ops(vctx_t *c, const char *field, const json_t *ops)
{
    const char *k;
    json_t *val;
    bool any_op = false, any_plain = false;
    json_object_foreach((json_t *)ops, k, val)
    {
        if (k[0] != '$') {
            any_plain = true;
            continue;
        }
        any_op = true;
        if (!mdb_query_operator_allowed(k, c->err))
            return false;
        if (!strcmp(k, "$and") || !strcmp(k, "$or") || !strcmp(k, "$nor") || !strcmp(k, "$expr")) {
            mdb_error_set(c->err, MDB_ERR_QUERY, 0, "operator %s cannot be applied to field '%s'", k, field);
            return false;
        }
        if ((!strcmp(k, "$not") || !strcmp(k, "$elemMatch")) && json_is_object(val) && !check_ops(c, field, val))
            return false;
        if ((!strcmp(k, "$in") || !strcmp(k, "$nin") || !strcmp(k, "$all")) && !json_is_array(val)) {
            mdb_error_set(c->err, MDB_ERR_QUERY, 0, "%s on '%s' needs an array", k, field);
            return false;
        }
    }
    if (any_op && any_plain) {
        mdb_error_set(c->err, MDB_ERR_QUERY, 0, "field '%s' mixes operators and plain keys", field);
        return false;
    }
    return true;
}

static bool parse_level(const json_t *j, mdb_query_level_t *out)
{
    const char *s = json_string_value(j);
    if (!s)
        return false;
    if (mdb_query_level_parse(s, out))
        return true;
    if (!strcmp(s, "study"))
        *out = MDB_QUERY_STUDIES;
    else if (!strcmp(s, "images") || !strcmp(s, "image"))
        *out = MDB_QUERY_INSTANCES;
    else
        return false;
    return true;
}

mdb_nl_result_t *mdb_nl_result_from_json(const mdb_nl_vocab_t *v, const json_t *tr, mdb_error_t *err)
{
    mdb_query_level_t level;
    if (!json_is_object(tr)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "translation is not a JSON object");
        return NULL;
    }
    if (!parse_level(json_object_get(tr, "level"), &level)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "translation has no valid level (studies, series or instances)");
        return NULL;
    }
    const json_t *filter = json_object_get(tr, "filter");
    if (!filter || json_is_null(filter))
        filter = NULL;
    vctx_t c = {v, level, err, 0};
    if (filter && !check_doc(&c, filter))
        return NULL;
    bson_t b;
    if (filter) {
        if (!mdb_query_filter_from_json(filter, &b, err))
            return NULL;
        bson_destroy(&b);
    }
    const json_t *joins_in = json_object_get(tr, "joins");
    if (joins_in && !json_is_null(joins_in) && !json_is_array(joins_in)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "joins must be an array");
        return NULL;
    }
    json_t *joins = json_array();
    size_t i;
    json_t *j;
    json_array_foreach(joins_in, i, j)
    {
        mdb_query_level_t jl;
        const json_t *jlev = json_object_get(j, "level");
        if (!jlev)
            jlev = json_object_get(j, "collection");
        if (!json_is_object(j) || !parse_level(jlev, &jl) || jl == level) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "join %zu needs a level other than %s", i,
                          mdb_query_level_name(level));
            json_decref(joins);
            return NULL;
        }
        const json_t *jf = json_object_get(j, "filter");
        vctx_t jc = {v, jl, err, 0};
        if (!json_is_object(jf) || !json_object_size(jf) || !check_doc(&jc, jf) ||
            !mdb_query_filter_from_json(jf, &b, err)) {
            if (!json_is_object(jf) || !json_object_size(jf))
                mdb_error_set(err, MDB_ERR_QUERY, 0, "join %zu needs a non-empty filter", i);
            json_decref(joins);
            return NULL;
        }
        bson_destroy(&b);
        const char *lf, *ff;
        mdb_nl_link_fields(level, jl, &lf, &ff);
        json_array_append_new(joins, json_pack("{s:s, s:O, s:s, s:s, s:b}", "collection", mdb_query_level_name(jl),
                                               "filter", jf, "local", lf, "foreign", ff, "negate",
                                               json_is_true(json_object_get(j, "negate"))));
    }
    mdb_nl_result_t *r = mdb_nl_result_new(level);
    if (!r) {
        json_decref(joins);
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    mdb_nl_result_adopt(r, filter ? json_deep_copy(filter) : json_object(), joins);
    const char *ex = json_string_value(json_object_get(tr, "explanation"));
    mdb_nl_result_set_explanation(r, ex ? ex : "");
    return r;
}

mdb_nl_result_t *mdb_nl_result_from_filter(mdb_query_level_t level, const json_t *filter, const json_t *joins,
                                           const char *explanation, mdb_error_t *err)
{
    bson_t b;
    if ((int)level < 0 || level >= MDB_QUERY_LEVEL_COUNT) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "no such level");
        return NULL;
    }
    if (filter && !mdb_query_filter_from_json(filter, &b, err))
        return NULL;
    if (filter)
        bson_destroy(&b);
    json_t *out = json_array();
    size_t i;
    json_t *j;
    json_array_foreach(joins, i, j)
    {
        mdb_query_level_t jl;
        const json_t *jf = json_object_get(j, "filter");
        if (!parse_level(json_object_get(j, "level"), &jl) || jl == level || !json_is_object(jf)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "join %zu needs another level and a filter", i);
            json_decref(out);
            return NULL;
        }
        if (!mdb_query_filter_from_json(jf, &b, err)) {
            json_decref(out);
            return NULL;
        }
        bson_destroy(&b);
        const char *lf, *ff;
        mdb_nl_link_fields(level, jl, &lf, &ff);
        json_array_append_new(out, json_pack("{s:s, s:O, s:s, s:s, s:b}", "collection", mdb_query_level_name(jl),
                                             "filter", jf, "local", lf, "foreign", ff, "negate",
                                             json_is_true(json_object_get(j, "negate"))));
    }
    mdb_nl_result_t *r = mdb_nl_result_new(level);
    if (!r) {
        json_decref(out);
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    mdb_nl_result_adopt(r, filter ? json_deep_copy(filter) : json_object(), out);
    mdb_nl_result_set_explanation(r, explanation);
    return r;
}

/* -------------------------------------------------------------- the prompt */

static void prompt_fields(mdb_nl_buf_t *b, const json_t *voc)
{
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        const char *name = mdb_query_level_name((mdb_query_level_t)l);
        const json_t *fields = json_object_get(voc, name);
        mdb_nl_buf_addf(b, "- %s: ", name);
        const char *k;
        json_t *t;
        bool first = true;
        json_object_foreach((json_t *)fields, k, t)
        {
            mdb_nl_buf_addf(b, "%s%s (%s)", first ? "" : ", ", k, json_string_value(t));
            first = false;
        }
        mdb_nl_buf_add(b, "\n");
    }
    const json_t *vals = json_object_get(voc, "values");
    const char *k;
    json_t *arr;
    json_object_foreach((json_t *)vals, k, arr)
    {
        if (!strcmp(k, "patient_id") || json_array_size(arr) > LLM_MAX_PROMPT_VALUES)
            continue;
        mdb_nl_buf_addf(b, "- values of %s seen in the data: ", k);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) mdb_nl_buf_addf(b, "%s\"%s\"", i ? ", " : "", json_string_value(x));
        mdb_nl_buf_add(b, "\n");
    }
}

static char *build_prompt(const mdb_nl_vocab_t *v, const char *ref)
{
    mdb_nl_buf_t b = {0};
    json_t *voc = mdb_nl_vocab_to_json(v);
    mdb_nl_buf_add(&b, "You translate a researcher's question about a DICOM imaging catalogue (MongoDB) into a query. "
                       "Answer with exactly one JSON object and nothing else:\n"
                       "{\"level\": \"studies\"|\"series\"|\"instances\", \"filter\": {...}, "
                       "\"joins\": [{\"level\": \"studies\"|\"series\"|\"instances\", \"filter\": {...}, "
                       "\"negate\": false}], \"explanation\": \"one sentence\"}\n"
                       "Rules:\n"
                       "- level is what the user wants listed; filter applies to documents of that level and may use "
                       "only that level's fields.\n"
                       "- A condition on a field of another level goes into joins: the listed documents must be linked "
                       "to at least one document of the join level matching its filter (negate: true = to none).\n"
                       "- Dates are strings YYYYMMDD compared with $gte/$lte. Numbers are numbers (slice_thickness in "
                       "mm, kvp in kV). \"thin slice\" means slice_thickness <= 2.5.\n"
                       "- Allowed operators: $and $or $nor $eq $ne $gt $gte $lt $lte $in $nin $exists $regex $options "
                       "$not $all $elemMatch $size. Never use $where, $function, $expr or JavaScript.\n"
                       "- Use stored spellings of values listed below.\n");
    mdb_nl_buf_addf(&b, "Today is %s.\nFields per level (type):\n", ref);
    prompt_fields(&b, voc);
    json_decref(voc);
    return mdb_nl_buf_steal(&b);
}

/* ------------------------------------------------------------ HTTP client */

typedef struct {
    mdb_nl_buf_t body;
    bool too_big;
} resp_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    resp_t *r = ud;
    size_t n = size * nmemb;
    if (r->body.len + n > LLM_MAX_RESPONSE) {
        r->too_big = true;
        return 0;
    }
    char *tmp = malloc(n + 1);
    if (!tmp)
        return 0;
    memcpy(tmp, ptr, n);
    tmp[n] = '\0';
    mdb_nl_buf_add(&r->body, tmp);
    free(tmp);
    return r->body.oom ? 0 : n;
}

static char *endpoint_url(const char *url)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    const char *suffix = "/chat/completions";
    size_t sl = strlen(suffix);
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_addf(&b, "%.*s", (int)n, url);
    if (n < sl || strncmp(url + n - sl, suffix, sl))
        mdb_nl_buf_add(&b, suffix);
    return mdb_nl_buf_steal(&b);
}

/* libcurl's global state, set up once (curl_easy_init would do it lazily,
 * but not safely from several API threads at once). */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* POST the chat request; the assistant's content (malloc'd) or NULL with err. */
static char *llm_chat(const mdb_nl_llm_t *llm, const char *system, const char *sentence, mdb_error_t *err)
{
    char *content = NULL, *url = NULL, *payload = NULL;
    struct curl_slist *hdr = NULL;
    resp_t resp = {0};
    json_t *req = NULL, *reply = NULL;
    pthread_once(&curl_once, curl_setup);
    CURL *h = curl_easy_init();
    if (!h) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "cannot initialise the HTTP client");
        goto done;
    }
    url = endpoint_url(llm->url);
    req = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:i, s:b, s:{s:s}}", "model", llm->model ? llm->model : "",
                    "messages", "role", "system", "content", system, "role", "user", "content", sentence, "temperature",
                    0, "stream", 0, "response_format", "type", "json_object");
    payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    if (!url || !payload) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        goto done;
    }
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: application/json");
    if (llm->api_key && *llm->api_key) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", llm->api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    long timeout = llm->timeout_ms > 0 ? llm->timeout_ms : LLM_DEFAULT_TIMEOUT_MS;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout < 5000 ? timeout : 5000L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        mdb_error_set(err, MDB_ERR_IO, (int)rc, "LLM endpoint %s: %s", url,
                      resp.too_big ? "answer larger than 1 MiB" : curl_easy_strerror(rc));
        goto done;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        mdb_error_set(err, MDB_ERR_IO, (int)status, "LLM endpoint answered HTTP %ld", status);
        goto done;
    }
    json_error_t je;
    reply = resp.body.s ? json_loads(resp.body.s, 0, &je) : NULL;
    const char *text = json_string_value(
        json_object_get(json_object_get(json_array_get(json_object_get(reply, "choices"), 0), "message"), "content"));
    if (!text) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "LLM endpoint answer has no choices[0].message.content");
        goto done;
    }
    content = strdup(text);
    if (!content)
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    json_decref(reply);
    json_decref(req);
    free(payload);
    free(url);
    curl_slist_free_all(hdr);
    mdb_nl_buf_free(&resp.body);
    if (h)
        curl_easy_cleanup(h);
    return content;
}

/* The JSON object inside the model's text (code fences and prose around it
 * are tolerated; the object itself must parse). */
static json_t *extract_object(const char *text, mdb_error_t *err)
{
    const char *open = strchr(text, '{');
    if (!open) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "the model did not answer with a JSON object");
        return NULL;
    }
    const char *close = strrchr(text, '}');
    size_t len = close && close > open ? (size_t)(close - open + 1) : strlen(open);
    json_error_t je;
    json_t *o = json_loadb(open, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        mdb_error_set(err, MDB_ERR_QUERY, 0, "the model's JSON does not parse: %s", je.text);
    return o;
}

mdb_nl_result_t *mdb_nl_translate_llm(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                      const mdb_nl_llm_t *llm, mdb_error_t *err)
{
    mdb_error_t why = {0};
    mdb_nl_result_t *r = NULL;
    char *prompt = NULL, *answer = NULL;
    json_t *obj = NULL;
    /* the offline translation runs first: it validates the sentence and is the
     * fallback; a sentence it cannot read at all still goes to the model */
    mdb_error_t offline_err = {0};
    mdb_nl_result_t *offline = mdb_nl_translate_offline(v, sentence, opt, &offline_err);
    if (!offline && offline_err.code != MDB_NL_ERR_NOT_UNDERSTOOD) {
        if (err)
            *err = offline_err;
        return NULL;
    }
    if (!llm || !llm->url || !*llm->url) {
        mdb_error_set(&why, MDB_ERR_CONFIG, 0, "no LLM endpoint configured");
        goto fallback;
    }
    char ref[16];
    const char *rd = opt && opt->reference_date && *opt->reference_date ? opt->reference_date : NULL;
    if (rd) {
        snprintf(ref, sizeof ref, "%s", rd);
    } else {
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        strftime(ref, sizeof ref, "%Y-%m-%d", &tmv);
    }
    prompt = build_prompt(v, ref);
    if (!prompt) {
        mdb_error_set(&why, MDB_ERR_SYSTEM, 0, "out of memory");
        goto fallback;
    }
    answer = llm_chat(llm, prompt, sentence, &why);
    if (!answer)
        goto fallback;
    obj = extract_object(answer, &why);
    if (!obj)
        goto fallback;
    r = mdb_nl_result_from_json(v, obj, &why);
    if (!r)
        goto fallback;
    mdb_nl_result_set_backend(r, "llm");
    {
        mdb_nl_buf_t b = {0};
        const char *ex = mdb_nl_result_explanation(r);
        mdb_nl_buf_addf(&b, "Translated by the language model %s%s%s", llm->model ? llm->model : "", *ex ? ": " : ".",
                        ex);
        char *text = mdb_nl_buf_steal(&b);
        mdb_nl_result_set_explanation(r, text ? text : ex);
        free(text);
    }
    mdb_nl_result_destroy(offline);
    goto done;
fallback:
    r = offline;
    if (!r) {
        mdb_error_set(err, MDB_ERR_QUERY, MDB_NL_ERR_NOT_UNDERSTOOD, "%.250s (the LLM answer was not usable: %.200s)",
                      offline_err.message, why.message);
        goto done;
    }
    {
        char msg[MDB_ERROR_MSG_MAX + 96];
        snprintf(msg, sizeof msg, "LLM translation not used (%s); the offline translator answered", why.message);
        mdb_nl_result_set_message(r, msg);
    }
done:
    json_decref(obj);
    free(answer);
    free(prompt);
    return r;
}

mdb_nl_result_t *mdb_nl_translate_config(const mdb_config_t *cfg, const mdb_nl_vocab_t *v, const char *sentence,
                                         const mdb_nl_options_t *opt, mdb_error_t *err)
{
    const char *url = mdb_config_get(cfg, "api.nl_llm_url");
    if (!url || !*url)
        return mdb_nl_translate_offline(v, sentence, opt, err);
    mdb_nl_llm_t llm = {url, mdb_config_get(cfg, "api.nl_llm_model"), NULL, 0};
    if (mdb_config_is_key("api.nl_llm_api_key"))
        llm.api_key = mdb_config_get(cfg, "api.nl_llm_api_key");
    if (mdb_config_is_key("api.nl_llm_timeout_ms"))
        llm.timeout_ms = (long)mdb_config_get_int(cfg, "api.nl_llm_timeout_ms");
    return mdb_nl_translate_llm(v, sentence, opt, &llm, err);
}
