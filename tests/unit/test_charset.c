/* Unit tests of mdb_charset: every DICOM character set the issue names
 * decodes to the right Unicode text (values from PS3.5 Annex H-K examples
 * and pydicom's charset files), code extensions switch and reset where the
 * standard says, undecodable bytes become U+FFFD (and are reported), and
 * whatever the input, the output is valid UTF-8 without NUL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_charset.h"

static char *dec(mdb_charset_t *cs, const char *scs, const char *in, size_t len, mdb_cs_kind_t kind, bool *replaced)
{
    bool r = false;
    mdb_charset_select(cs, scs, scs ? strlen(scs) : 0, NULL);
    char *s = mdb_charset_decode_dup(cs, in, len, kind, &r);
    assert_non_null(s);
    assert_true(mdb_utf8_valid(s, strlen(s)));
    if (replaced)
        *replaced = r;
    return s;
}

#define EXPECT(scs, bytes, kind, want)                                                                                 \
    do {                                                                                                               \
        bool rep_ = true;                                                                                              \
        char *got_ = dec(cs, (scs), (bytes), sizeof(bytes) - 1, (kind), &rep_);                                        \
        assert_string_equal(got_, (want));                                                                             \
        assert_false(rep_);                                                                                            \
        free(got_);                                                                                                    \
    } while (0)

static void test_single_byte_sets(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    assert_non_null(cs);
    EXPECT("ISO_IR 100", "Buc^J\xe9r\xf4me", MDB_CS_PN, "Buc^Jérôme");
    EXPECT("ISO_IR 101", "Dvo\xf8\xe1k", MDB_CS_TEXT, "Dvořák");
    EXPECT("ISO_IR 109", "\xfe", MDB_CS_TEXT, "ŝ");
    EXPECT("ISO_IR 110", "\xbd", MDB_CS_TEXT, "Ŋ");
    EXPECT("ISO_IR 144", "\xbb\xee\xda\xe1\xd5\xdc\xd1\xe3\xe0\xd3", MDB_CS_PN, "Люксембург");
    EXPECT("ISO_IR 127", "\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1", MDB_CS_PN, "قباني^لنزار");
    EXPECT("ISO_IR 126", "\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2", MDB_CS_PN, "Διονυσιος");
    EXPECT("ISO_IR 138", "\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4", MDB_CS_PN, "שרון^דבורה");
    EXPECT("ISO_IR 148",
           "\xc7"
           "ak\xfdr",
           MDB_CS_TEXT, "Çakır");
    EXPECT("ISO_IR 166", "\xbc\xd9\xe9\xbb\xe8\xc7\xc2", MDB_CS_TEXT, "ผู้ป่วย");
    EXPECT("ISO_IR 13", "\xd4\xcf\xc0\xde^\xc0\xdb\xb3", MDB_CS_PN, "ﾔﾏﾀﾞ^ﾀﾛｳ");
    EXPECT("ISO_IR 192", "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1", MDB_CS_TEXT, "Wang^XiaoDong=王^小東");
    EXPECT("GB18030", "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab", MDB_CS_TEXT, "Wang^XiaoDong=王^小东");
    EXPECT("GBK", "\xcd\xf5^\xd0\xa1\xb6\xab", MDB_CS_PN, "王^小东");
    /* default repertoire, missing and empty (0008,0005): ISO 8859-1 like pydicom */
    EXPECT(NULL, "Caf\xe9", MDB_CS_TEXT, "Café");
    EXPECT("", "Caf\xe9", MDB_CS_TEXT, "Café");
    /* non-text VRs ignore the declared set */
    EXPECT("ISO_IR 144", "\xe9", MDB_CS_DEFAULT, "é");
    mdb_charset_destroy(cs);
}

static void test_iso2022_japanese(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    /* PS3.5 H.3.1: Yamada^Tarou = kanji = hiragana */
    EXPECT("\\ISO 2022 IR 87", "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
           MDB_CS_PN, "Yamada^Tarou=山田^太郎=やまだ^たろう");
    /* H.3.2: half-width katakana (IR 13) as first set, kanji by escape */
    EXPECT("ISO 2022 IR 13\\ISO 2022 IR 87",
           "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
           MDB_CS_PN, "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
    mdb_charset_destroy(cs);
}

static void test_iso2022_korean(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    /* PS3.5 I.2: Hong^Gildong = hanja = hangul */
    EXPECT("\\ISO 2022 IR 149",
           "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf", MDB_CS_PN,
           "Hong^Gildong=洪^吉洞=홍^길동");
    /* text: a delimiter (CR LF) goes back to the first set */
    EXPECT("\\ISO 2022 IR 149", "\x1b$)C\xc8\xab\r\nabc", MDB_CS_TEXT, "홍\r\nabc");
    mdb_charset_destroy(cs);
}

static void test_iso2022_single_byte_switch(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    /* Latin-1 then Greek by escape, and back */
    EXPECT("ISO 2022 IR 100\\ISO 2022 IR 126", "Caf\xe9 \x1b-F\xc4\xe9\xef\x1b-A \xe9", MDB_CS_TEXT, "Café Διο é");
    mdb_charset_destroy(cs);
}

static void test_replacement(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    bool rep = false;
    char *s = dec(cs, "ISO_IR 192", "Bad\xff\xfeName", 9, MDB_CS_PN, &rep);
    assert_true(rep);
    assert_string_equal(s, "Bad\xef\xbf\xbd\xef\xbf\xbdName");
    free(s);
    /* truncated multi-byte sequence at the end */
    s = dec(cs, "ISO_IR 192", "ab\xe7\x8e", 4, MDB_CS_TEXT, &rep);
    assert_string_equal(s, "ab\xef\xbf\xbd");
    free(s);
    /* GB18030 with an invalid byte pair falls back to replacement, still UTF-8 */
    rep = false;
    s = dec(cs, "GB18030", "\x81\x20x", 3, MDB_CS_TEXT, &rep);
    assert_true(rep);
    free(s);
    /* NUL inside a value is not stored */
    rep = false;
    s = dec(cs, "ISO_IR 100", "a\0b", 3, MDB_CS_TEXT, &rep);
    assert_true(rep);
    assert_string_equal(s, "a\xef\xbf\xbd"
                           "b");
    free(s);
    /* an escape sequence of a set that was not declared: first set, no crash */
    s = dec(cs, "ISO_IR 100", "x\x1b$Bzz", 6, MDB_CS_TEXT, &rep);
    assert_true(mdb_utf8_valid(s, strlen(s)));
    free(s);
    mdb_charset_destroy(cs);
}

static void test_terms(void **state)
{
    (void)state;
    mdb_charset_t *cs = mdb_charset_new();
    const char *unknown = NULL;
    mdb_charset_select(cs, "ISO_IR 999", 10, &unknown);
    assert_non_null(unknown);
    assert_string_equal(unknown, "ISO_IR 999");
    bool rep = false;
    char *s = mdb_charset_decode_dup(cs, "Caf\xe9", 4, MDB_CS_TEXT, &rep);
    assert_string_equal(s, "Café");
    free(s);
    /* common misspellings are accepted */
    EXPECT("ISO IR 144", "\xbb\xee", MDB_CS_TEXT, "Лю");
    EXPECT("ISO-IR 100", "\xe9", MDB_CS_TEXT, "é");
    EXPECT("ISO 2022-IR 100", "\xe9", MDB_CS_TEXT, "é");
    /* padding of the (0008,0005) value */
    EXPECT("ISO_IR 192 ", "\xc3\xa9", MDB_CS_TEXT, "é");
    /* iconv names, as used by archive.charset_overrides */
    EXPECT("CP1251", "\xcf\xf0\xe8\xe2\xe5\xf2", MDB_CS_TEXT, "Привет");
    EXPECT("UTF-8", "\xc3\xa9", MDB_CS_TEXT, "é");
    /* stand-alone sets ignore code extensions after them */
    EXPECT("ISO_IR 192\\ISO 2022 IR 87", "\xc3\xa9", MDB_CS_TEXT, "é");
    unknown = "x";
    mdb_charset_select(cs, "ISO_IR 100", 10, &unknown);
    assert_null(unknown);
    assert_string_equal(mdb_charset_current(cs), "ISO_IR 100");
    mdb_charset_destroy(cs);
}

/* Whatever the bytes and the declared set, the output is valid UTF-8. */
static void test_random_bytes_always_utf8(void **state)
{
    (void)state;
    static const char *sets[] = {NULL,
                                 "ISO_IR 100",
                                 "ISO_IR 101",
                                 "ISO_IR 109",
                                 "ISO_IR 110",
                                 "ISO_IR 144",
                                 "ISO_IR 127",
                                 "ISO_IR 126",
                                 "ISO_IR 138",
                                 "ISO_IR 148",
                                 "ISO_IR 13",
                                 "ISO_IR 166",
                                 "ISO_IR 192",
                                 "GB18030",
                                 "GBK",
                                 "\\ISO 2022 IR 87",
                                 "ISO 2022 IR 13\\ISO 2022 IR 87",
                                 "\\ISO 2022 IR 149",
                                 "\\ISO 2022 IR 159",
                                 "\\ISO 2022 IR 58",
                                 "ISO 2022 IR 100\\ISO 2022 IR 126"};
    mdb_charset_t *cs = mdb_charset_new();
    unsigned seed = 12345;
    char buf[200];
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(rand_r(&seed) % sizeof buf);
        for (size_t i = 0; i < n; i++) {
            int r = rand_r(&seed);
            /* bias towards escapes and delimiters to exercise the switching */
            buf[i] = (char)(r % 7 == 0 ? 0x1b : r % 11 == 0 ? '^' : r % 13 == 0 ? '$' : r & 0xff);
        }
        const char *scs = sets[round % (sizeof sets / sizeof sets[0])];
        for (int kind = 0; kind < 3; kind++) {
            bool rep = false;
            mdb_charset_select(cs, scs, scs ? strlen(scs) : 0, NULL);
            char *s = mdb_charset_decode_dup(cs, buf, n, (mdb_cs_kind_t)kind, &rep);
            assert_non_null(s);
            assert_true(mdb_utf8_valid(s, strlen(s)));
            free(s);
        }
    }
    mdb_charset_destroy(cs);
}

static void test_utf8_validator(void **state)
{
    (void)state;
    assert_true(mdb_utf8_valid("abc\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 12));
    assert_false(mdb_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(mdb_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(mdb_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(mdb_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(mdb_utf8_valid("\xff", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_byte_sets),
        cmocka_unit_test(test_iso2022_japanese),
        cmocka_unit_test(test_iso2022_korean),
        cmocka_unit_test(test_iso2022_single_byte_switch),
        cmocka_unit_test(test_replacement),
        cmocka_unit_test(test_terms),
        cmocka_unit_test(test_random_bytes_always_utf8),
        cmocka_unit_test(test_utf8_validator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
