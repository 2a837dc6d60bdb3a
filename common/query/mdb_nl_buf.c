/* mdb_nl_buf.c: the natural-language module's growable string
 * (mdb_nl_buf_t, mdb_nl_private.h), shared by the grammar, the German/French
 * rewrite and the LLM backend. Every append is a no-op after an allocation
 * failure; steal hands the text over (NULL after OOM). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

static void buf_addn(mdb_nl_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void mdb_nl_buf_add(mdb_nl_buf_t *b, const char *s)
{
    buf_addn(b, s, strlen(s));
}

void mdb_nl_buf_addf(mdb_nl_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        buf_addn(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_addn(b, big, (size_t)n);
    free(big);
}

char *mdb_nl_buf_steal(mdb_nl_buf_t *b)
{
    char *s = b->oom ? NULL : b->s;
    if (!s && !b->oom)
        s = strdup("");
    if (b->oom)
        free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->oom = false;
    return s;
}

void mdb_nl_buf_free(mdb_nl_buf_t *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}
