/* mdb_nl_dates.c: the date rule. Absolute dates ("March 2001", "between
 * 2000 and 2003", "before 2005-06") and relative ones ("last year", "in the
 * past 6 months", "5 years ago", measured from the reference date) on the
 * study date, the series date or the birth date. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_nl_private.h"

typedef struct {
    int y, m, d; /* m, d = 0: whole year / month */
    size_t len;
} datept_t;

static int month_of(const char *low)
{
    static const char *const names[] = {"january", "february", "march",     "april",   "may",      "june",
                                        "july",    "august",   "september", "october", "november", "december"};
    static const char *const abbr[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
    for (int i = 0; i < 12; i++)
        if (!strcmp(low, names[i]) || !strcmp(low, abbr[i]))
            return i + 1;
    if (!strcmp(low, "sept"))
        return 9;
    return 0;
}

static bool tok_is_year(const nl_tok_t *t)
{
    return t->kind == NL_T_NUM && t->integer && strlen(t->text) == 4 && t->num >= 1900 && t->num <= 2100;
}

/* A point in time at i: "2001", "March 2001", "March 15, 2001", "15 March
 * 2001", "2001-03-15", "2001-03", "20010315". */
static bool date_point(const nl_parser_t *p, size_t i, datept_t *dp)
{
    if (i >= p->n || p->t[i].used)
        return false;
    const nl_tok_t *t = &p->t[i];
    memset(dp, 0, sizeof *dp);
    if (t->kind == NL_T_DATE) {
        dp->y = t->y, dp->m = t->m, dp->d = t->d, dp->len = 1;
        return true;
    }
    if (t->kind == NL_T_NUM && t->integer && strlen(t->text) == 8) {
        int y = atoi(t->text) / 10000, m = atoi(t->text) / 100 % 100, d = atoi(t->text) % 100;
        if (nl_valid_ymd(y, m, d) && d) {
            dp->y = y, dp->m = m, dp->d = d, dp->len = 1;
            return true;
        }
        return false;
    }
    if (tok_is_year(t)) {
        if (nl_unit_follows(p, i + 1))
            return false;
        dp->y = (int)t->num, dp->len = 1;
        return true;
    }
    if (t->kind == NL_T_WORD && month_of(t->low)) {
        int m = month_of(t->low);
        size_t k = i + 1;
        int d = 0;
        if (k < p->n && p->t[k].kind == NL_T_NUM && p->t[k].integer && p->t[k].num >= 1 && p->t[k].num <= 31 &&
            !tok_is_year(&p->t[k])) {
            d = (int)p->t[k].num;
            k++;
            if (k < p->n && p->t[k].kind == NL_T_SEP)
                k++;
        }
        if (k < p->n && tok_is_year(&p->t[k]) && !p->t[k].used) {
            dp->y = (int)p->t[k].num, dp->m = m, dp->d = d, dp->len = k + 1 - i;
            return nl_valid_ymd(dp->y, dp->m, dp->d);
        }
        return false;
    }
    if (t->kind == NL_T_NUM && t->integer && t->num >= 1 && t->num <= 31 && i + 2 < p->n &&
        p->t[i + 1].kind == NL_T_WORD && month_of(p->t[i + 1].low) && tok_is_year(&p->t[i + 2])) {
        dp->y = (int)p->t[i + 2].num, dp->m = month_of(p->t[i + 1].low), dp->d = (int)t->num, dp->len = 3;
        return nl_valid_ymd(dp->y, dp->m, dp->d);
    }
    return false;
}

static void date_start(const datept_t *dp, char out[9])
{
    snprintf(out, 9, "%04d%02d%02d", dp->y, dp->m ? dp->m : 1, dp->d ? dp->d : 1);
}

static void date_end(const datept_t *dp, char out[9])
{
    int m = dp->m ? dp->m : 12;
    int d = dp->d ? dp->d : nl_days_in_month(dp->y, m);
    snprintf(out, 9, "%04d%02d%02d", dp->y, m, d);
}

/* Shift y/m/d back by n units ('y', 'm', 'w', 'd'); clamps the day. */
static void date_back(int *y, int *m, int *d, int n, char unit)
{
    if (unit == 'y') {
        *y -= n;
    } else if (unit == 'm') {
        int total = *y * 12 + (*m - 1) - n;
        *y = total / 12;
        *m = total % 12 + 1;
    } else {
        struct tm tmv = {0};
        tmv.tm_year = *y - 1900;
        tmv.tm_mon = *m - 1;
        tmv.tm_mday = *d - n * (unit == 'w' ? 7 : 1);
        tmv.tm_hour = 12;
        time_t tt = timegm(&tmv);
        struct tm out;
        gmtime_r(&tt, &out);
        *y = out.tm_year + 1900, *m = out.tm_mon + 1, *d = out.tm_mday;
        return;
    }
    int dim = nl_days_in_month(*y, *m);
    if (*d > dim)
        *d = dim;
}

static int number_word(const nl_tok_t *t)
{
    static const char *const words[] = {"zero",  "one",   "two",  "three", "four",   "five",   "six",
                                        "seven", "eight", "nine", "ten",   "eleven", "twelve", NULL};
    if (t->kind == NL_T_NUM && t->integer && t->num >= 0 && t->num <= 1000)
        return (int)t->num;
    if (t->kind != NL_T_WORD)
        return -1;
    for (int i = 0; words[i]; i++)
        if (!strcmp(t->low, words[i]))
            return i;
    if (!strcmp(t->low, "fifteen"))
        return 15;
    if (!strcmp(t->low, "twenty"))
        return 20;
    if (!strcmp(t->low, "thirty"))
        return 30;
    if (!strcmp(t->low, "a") || !strcmp(t->low, "an"))
        return 1;
    return -1;
}

static char time_unit(const nl_tok_t *t)
{
    if (t->kind != NL_T_WORD)
        return 0;
    if (!strcmp(t->low, "year") || !strcmp(t->low, "years") || !strcmp(t->low, "yr") || !strcmp(t->low, "yrs"))
        return 'y';
    if (!strcmp(t->low, "month") || !strcmp(t->low, "months") || !strcmp(t->low, "mo"))
        return 'm';
    if (!strcmp(t->low, "week") || !strcmp(t->low, "weeks"))
        return 'w';
    if (!strcmp(t->low, "day") || !strcmp(t->low, "days"))
        return 'd';
    return 0;
}

typedef struct {
    char lo[9], hi[9];
    bool has_lo, has_hi, lo_incl, hi_incl;
    char *shown; /* optional human form (relative dates) */
} drange_t;

/* The field a date phrase refers to, read from an optional prefix. */
typedef struct {
    const char *path;
    const char *label;
} datefield_t;

static size_t date_field_prefix(const nl_parser_t *p, size_t i, datefield_t *f)
{
    size_t n;
    f->path = "study_date";
    f->label = "study date";
    if ((n = nl_phrase_at(p, i, "series date|series dated|series acquired|series acquired on")) > 0) {
        f->path = "series_date";
        f->label = "series date";
        return n;
    }
    if ((n = nl_phrase_at(p, i, "born|birth date|date of birth|birthdate|dob|birthday|patients born|patient born")) >
        0) {
        f->path = "metadata.PatientBirthDate";
        f->label = "PatientBirthDate";
        return n;
    }
    if ((n = nl_phrase_at(p, i, "study date|studydate|study dated|exam date|examination date|date of study|dated")) > 0)
        return n;
    return 0;
}

/* Relative expressions ending at the reference date. */
static size_t relative_date(nl_parser_t *p, size_t i, drange_t *r)
{
    char ref[9];
    snprintf(ref, sizeof ref, "%04d%02d%02d", p->ref_y, p->ref_m, p->ref_d);
    size_t k = i;
    size_t n;
    bool rolling_the = false;
    if ((n = nl_phrase_at(p, k, "in the|within the|during the|over the|from the|for the|in|within|during|over"))) {
        rolling_the = true;
        k += n;
    }
    /* last/past N units; "last year" = previous calendar year unless "the last year" */
    if ((n = nl_phrase_at(p, k, "last|past|previous|preceding|recent|most recent"))) {
        size_t j = k + n;
        int num = 1;
        if (j < p->n && number_word(&p->t[j]) > 0 && j + 1 < p->n && time_unit(&p->t[j + 1])) {
            num = number_word(&p->t[j]);
            j++;
        }
        if (j >= p->n || !time_unit(&p->t[j]) || p->t[j].used)
            return 0;
        char unit = time_unit(&p->t[j]);
        int y = p->ref_y, m = p->ref_m, d = p->ref_d;
        bool calendar = !rolling_the && num == 1 && j == k + n && (unit == 'y' || unit == 'm');
        if (calendar) {
            /* "last year": the previous calendar year; "last month": previous month */
            datept_t dp = {0};
            if (unit == 'y') {
                dp.y = p->ref_y - 1;
            } else {
                date_back(&y, &m, &d, 1, 'm');
                dp.y = y, dp.m = m;
            }
            date_start(&dp, r->lo);
            date_end(&dp, r->hi);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
            return j + 1 - i;
        }
        date_back(&y, &m, &d, num, unit);
        snprintf(r->lo, sizeof r->lo, "%04d%02d%02d", y, m, d);
        memcpy(r->hi, ref, 9);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return j + 1 - i;
    }
    k = i;
    if ((n = nl_phrase_at(p, k, "this year|current year|this month|current month"))) {
        bool year = p->t[k + 1].low[0] == 'y';
        snprintf(r->lo, sizeof r->lo, "%04d%02d01", p->ref_y, year ? 1 : p->ref_m);
        memcpy(r->hi, ref, 9);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return n;
    }
    /* [more than|less than|over|under|within] N units ago / older than N years */
    int cmp = 0; /* 0 = that period, <0 = before, >0 = since */
    if ((n = nl_phrase_at(p, k, "more than|over|older than|at least|earlier than"))) {
        cmp = -1;
        k += n;
    } else if ((n = nl_phrase_at(p, k, "less than|under|fewer than|within|at most|no more than|newer than"))) {
        cmp = 1;
        k += n;
    }
    if (k + 1 < p->n && number_word(&p->t[k]) >= 0 && time_unit(&p->t[k + 1])) {
        int num = number_word(&p->t[k]);
        char unit = time_unit(&p->t[k + 1]);
        size_t j = k + 2;
        bool ago = nl_tok_is(p, j, "ago") || nl_phrase_at(p, j, "back|before now|before today");
        if (ago)
            j += nl_tok_is(p, j, "ago") ? 1 : nl_phrase_at(p, j, "back|before now|before today");
        bool old = nl_phrase_at(p, i, "older than|newer than|within") > 0;
        if (!ago && !old)
            return 0;
        if (!ago && old && nl_tok_is(p, j, "old"))
            return 0; /* "older than 60 years old" is an age */
        int y = p->ref_y, m = p->ref_m, d = p->ref_d;
        date_back(&y, &m, &d, num, unit);
        char pt[9];
        snprintf(pt, sizeof pt, "%04d%02d%02d", y, m, d);
        if (cmp < 0) {
            memcpy(r->hi, pt, 9);
            r->has_hi = true;
            r->hi_incl = false;
        } else if (cmp > 0) {
            memcpy(r->lo, pt, 9);
            memcpy(r->hi, ref, 9);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        } else {
            /* "5 years ago": that calendar year / month / day */
            datept_t dp = {.y = y, .m = unit == 'y' ? 0 : m, .d = (unit == 'd' || unit == 'w') ? d : 0};
            if (unit == 'w') {
                memcpy(r->lo, pt, 9);
                int y2 = y, m2 = m, d2 = d;
                date_back(&y2, &m2, &d2, -6, 'd');
                snprintf(r->hi, sizeof r->hi, "%04d%02d%02d", y2, m2, d2);
            } else {
                date_start(&dp, r->lo);
                date_end(&dp, r->hi);
            }
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        }
        return j - i;
    }
    return 0;
}

/* Absolute date expressions. */
static size_t absolute_date(const nl_parser_t *p, size_t i, drange_t *r)
{
    datept_t a, b;
    size_t n, k;
    /* between A and B / from A to B */
    if ((n = nl_phrase_at(p, i, "between|from|starting|beginning|starting from|starting in|beginning in|as of"))) {
        bool between = !strcmp(p->t[i].low, "between");
        bool from = !strcmp(p->t[i].low, "from");
        if (!date_point(p, i + n, &a))
            return 0;
        k = i + n + a.len;
        size_t sep = between ? nl_phrase_at(p, k, "and|to|-|through|until|till")
                             : nl_phrase_at(p, k, "to|-|through|thru|until|till|up to|and");
        if (sep && date_point(p, k + sep, &b)) {
            date_start(&a, r->lo);
            date_end(&b, r->hi);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
            return k + sep + b.len - i;
        }
        if (between)
            return 0;
        size_t on = nl_phrase_at(p, k, "on|onwards|onward|forward|forwards|and later|or later|and after|or after");
        if (!from || on) {
            date_start(&a, r->lo);
            r->has_lo = r->lo_incl = true;
            return k + on - i;
        }
        /* "from 2001" alone: during 2001 */
        date_start(&a, r->lo);
        date_end(&a, r->hi);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return k - i;
    }
    if ((n = nl_phrase_at(p, i, "after|later than|newer than|following|post|since"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        if (!strcmp(p->t[i].low, "since")) {
            date_start(&a, r->lo);
            r->lo_incl = true;
        } else {
            date_end(&a, r->lo);
            r->lo_incl = false;
        }
        r->has_lo = true;
        return n + a.len;
    }
    if ((n = nl_phrase_at(p, i, "before|prior to|earlier than|older than|preceding|pre"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        date_start(&a, r->hi);
        r->has_hi = true;
        r->hi_incl = false;
        return n + a.len;
    }
    if ((n = nl_phrase_at(p, i, "until|till|through|thru|up to|up until|no later than|not later than|by|to"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        date_end(&a, r->hi);
        r->has_hi = r->hi_incl = true;
        return n + a.len;
    }
    size_t pre = nl_phrase_at(p, i, "in|on|during|of|in year|in the year|dated|year|from year|around");
    if (!date_point(p, i + pre, &a))
        return 0;
    k = i + pre + a.len;
    size_t sep = nl_phrase_at(p, k, "to|-|through|thru|until|till");
    if (sep && date_point(p, k + sep, &b)) {
        date_start(&a, r->lo);
        date_end(&b, r->hi);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return k + sep + b.len - i;
    }
    size_t later =
        nl_phrase_at(p, k, "or later|and later|onwards|onward|or after|and after|or newer|and newer|and beyond");
    if (later) {
        date_start(&a, r->lo);
        r->has_lo = r->lo_incl = true;
        return k + later - i;
    }
    size_t earlier = nl_phrase_at(p, k, "or earlier|and earlier|or before|and before|or older|and older|and prior");
    if (earlier) {
        date_end(&a, r->hi);
        r->has_hi = r->hi_incl = true;
        return k + earlier - i;
    }
    date_start(&a, r->lo);
    date_end(&a, r->hi);
    r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
    return k - i;
}

size_t nl_rule_date(nl_parser_t *p, size_t i)
{
    datefield_t f;
    size_t pre = date_field_prefix(p, i, &f);
    size_t k = i + pre;
    k += nl_phrase_at(p, k, "is|was|of|:|=|were|in the|in");
    drange_t r;
    memset(&r, 0, sizeof r);
    size_t n = relative_date(p, k, &r);
    if (!n) {
        memset(&r, 0, sizeof r);
        n = absolute_date(p, k, &r);
    }
    if (!n) {
        /* "in"/"of" consumed by the filler may belong to the date itself */
        k = i + pre;
        memset(&r, 0, sizeof r);
        n = relative_date(p, k, &r);
        if (!n) {
            memset(&r, 0, sizeof r);
            n = absolute_date(p, k, &r);
        }
        if (!n)
            return 0;
    }
    size_t total = k + n - i;
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    c->kind = NL_C_RANGE;
    c->is_date = true;
    if (r.has_lo)
        c->lo = json_string(r.lo);
    if (r.has_hi)
        c->hi = json_string(r.hi);
    c->lo_incl = r.lo_incl;
    c->hi_incl = r.hi_incl;
    c->label = strdup(f.label);
    nl_cond_field(p, c, f.path);
    char words[256];
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    nl_cond_commit(p, words);
    return total;
}
