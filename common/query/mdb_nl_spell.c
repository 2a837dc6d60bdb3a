/* mdb_nl_spell.c: edit distance and the choice of a correction (see
 * mdb_nl_spell.h). */
#include "mdb_nl_spell.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int min3(int a, int b, int c)
{
    int m = a < b ? a : b;
    return m < c ? m : c;
}

int mdb_nl_spell_distance(const char *a, const char *b, int max)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > MDB_NL_SPELL_MAX_WORD || lb > MDB_NL_SPELL_MAX_WORD)
        return strcasecmp(a, b) ? max + 1 : 0;
    if ((la > lb ? la - lb : lb - la) > (size_t)max)
        return max + 1;
    /* three rows of the dynamic programme: i-2, i-1, i */
    int rows[3][MDB_NL_SPELL_MAX_WORD + 1];
    for (size_t j = 0; j <= lb; j++)
        rows[1][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int *cur = rows[(i + 1) % 3], *prev = rows[i % 3], *pp = rows[(i + 2) % 3];
        /* rows rotate: prev holds row i-1, pp row i-2 */
        cur[0] = (int)i;
        int best = cur[0];
        char ca = (char)tolower((unsigned char)a[i - 1]);
        for (size_t j = 1; j <= lb; j++) {
            char cb = (char)tolower((unsigned char)b[j - 1]);
            int cost = ca != cb;
            int d = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                pp[j - 2] + 1 < d)
                d = pp[j - 2] + 1;
            cur[j] = d;
            if (d < best)
                best = d;
        }
        if (best > max)
            return max + 1;
    }
    int d = rows[(la + 1) % 3][lb];
    return d > max ? max + 1 : d;
}

int mdb_nl_spell_limit(size_t len)
{
    return len < 4 ? 0 : len < 6 ? 1 : 2;
}

/* Typing rarely gets the first letter wrong: a correction keeps it (or
 * swaps the first two letters), so "motion" never becomes "emotion". */
static bool same_start(const char *a, const char *b)
{
    char a0 = (char)tolower((unsigned char)a[0]), b0 = (char)tolower((unsigned char)b[0]);
    if (a0 == b0)
        return true;
    return a0 && b0 && a[1] && b[1] && a0 == tolower((unsigned char)b[1]) && b0 == tolower((unsigned char)a[1]);
}

const char *mdb_nl_spell_best(const char *word, const char *const *dict, size_t n, int *dist)
{
    int limit = mdb_nl_spell_limit(strlen(word));
    const char *best = NULL;
    int bestd = limit + 1;
    bool tie = false;
    if (limit == 0)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        if (!same_start(word, dict[k]))
            continue;
        int d = mdb_nl_spell_distance(word, dict[k], bestd < limit ? bestd : limit);
        if (d == 0)
            return NULL; /* a known word needs no correction */
        if (d > limit || d > bestd)
            continue;
        if (d < bestd) {
            best = dict[k];
            bestd = d;
            tie = false;
        } else if (best && strcasecmp(best, dict[k])) {
            tie = true;
        }
    }
    if (!best || tie)
        return NULL;
    if (dist)
        *dist = bestd;
    return best;
}

/* ---- the word set: an open-addressing hash of indexes into a list ---- */
struct mdb_nl_words {
    char **list;
    size_t n, cap;
    size_t *slots; /* index + 1; 0 = empty */
    size_t nslots;
};

static uint32_t word_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

mdb_nl_words_t *mdb_nl_words_new(void)
{
    mdb_nl_words_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->nslots = 256;
    w->slots = calloc(w->nslots, sizeof *w->slots);
    if (!w->slots) {
        free(w);
        return NULL;
    }
    return w;
}

void mdb_nl_words_destroy(mdb_nl_words_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->list[i]);
    free(w->list);
    free(w->slots);
    free(w);
}

static bool words_rehash(mdb_nl_words_t *w)
{
    size_t ns = w->nslots * 2;
    size_t *slots = calloc(ns, sizeof *slots);
    if (!slots)
        return false;
    for (size_t i = 0; i < w->n; i++) {
        size_t h = word_hash(w->list[i]) & (ns - 1);
        while (slots[h])
            h = (h + 1) & (ns - 1);
        slots[h] = i + 1;
    }
    free(w->slots);
    w->slots = slots;
    w->nslots = ns;
    return true;
}

bool mdb_nl_words_add(mdb_nl_words_t *w, const char *word, size_t len)
{
    if (len == 0 || len > MDB_NL_SPELL_MAX_WORD)
        return true;
    char low[MDB_NL_SPELL_MAX_WORD + 1];
    for (size_t i = 0; i < len; i++)
        low[i] = (char)tolower((unsigned char)word[i]);
    low[len] = '\0';
    size_t h = word_hash(low) & (w->nslots - 1);
    while (w->slots[h]) {
        if (!strcmp(w->list[w->slots[h] - 1], low))
            return true;
        h = (h + 1) & (w->nslots - 1);
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        char **nl = realloc(w->list, cap * sizeof *nl);
        if (!nl)
            return false;
        w->list = nl;
        w->cap = cap;
    }
    w->list[w->n] = strdup(low);
    if (!w->list[w->n])
        return false;
    w->slots[h] = ++w->n;
    if (w->n * 2 > w->nslots)
        return words_rehash(w);
    return true;
}

bool mdb_nl_words_add_phrases(mdb_nl_words_t *w, const char *alts)
{
    const char *s = alts;
    while (*s) {
        while (*s == ' ' || *s == '|')
            s++;
        const char *e = s;
        while (*e && *e != ' ' && *e != '|')
            e++;
        size_t len = (size_t)(e - s);
        if (len && s[len - 1] == '*')
            len--;
        bool alpha = len > 0;
        for (size_t i = 0; i < len; i++)
            alpha = alpha && isalpha((unsigned char)s[i]);
        if (alpha && !mdb_nl_words_add(w, s, len))
            return false;
        s = e;
    }
    return true;
}

const char *const *mdb_nl_words_list(const mdb_nl_words_t *w, size_t *n)
{
    *n = w->n;
    return (const char *const *)w->list;
}
