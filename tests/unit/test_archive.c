/* Unit tests of mdb_archive, the gate every archive file passes: paths are
 * canonicalised ('..', symlinks) and must lie under a root; a root prefix
 * that is not a directory boundary does not count; symlinks that escape are
 * refused at resolve and at open; missing files and missing roots are
 * errors that say so; character-set overrides pick the longest matching
 * root. Works in a private temporary tree. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_archive.h"

static char g_tmp[256];

static void mk(const char *rel, bool dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_tmp, rel);
    if (dir)
        assert_int_equal(mkdir(p, 0755), 0);
    else {
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs("x", f);
        fclose(f);
    }
}

static const char *at(const char *rel)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", g_tmp, rel);
    return p[i];
}

static int setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/mdb_test_archive_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *r = realpath(d, NULL);
    snprintf(g_tmp, sizeof g_tmp, "%s", r);
    free(r);
    mk("root", true);
    mk("root/a b", true);
    mk("root/a b/1-001.dcm", false);
    mk("root/cyr", true);
    mk("root/cyr/x.dcm", false);
    mk("rootx", true);
    mk("rootx/evil.dcm", false);
    mk("outside.dcm", false);
    assert_int_equal(symlink(at("outside.dcm"), at("root/escape.dcm")), 0);
    assert_int_equal(symlink(at("root/a b/1-001.dcm"), at("root/inside-link.dcm")), 0);
    assert_int_equal(symlink(at("rootx"), at("root/dirlink")), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_resolve(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *roots[] = {at("root/../root/")};
    mdb_archive_t *a = mdb_archive_new(roots, 1, &err);
    assert_non_null(a);
    assert_int_equal(mdb_archive_root_count(a), 1);
    assert_string_equal(mdb_archive_root(a, 0), at("root"));

    const char *root = NULL;
    char *c = mdb_archive_resolve(a, at("root/a b/../a b/1-001.dcm"), &root, &err);
    assert_non_null(c);
    assert_string_equal(c, at("root/a b/1-001.dcm"));
    assert_string_equal(root, at("root"));
    free(c);
    /* a symlink that stays inside resolves to its target */
    c = mdb_archive_resolve(a, at("root/inside-link.dcm"), NULL, &err);
    assert_non_null(c);
    assert_string_equal(c, at("root/a b/1-001.dcm"));
    free(c);

    /* escapes */
    assert_null(mdb_archive_resolve(a, at("root/escape.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    assert_non_null(strstr(err.message, "outside archive roots"));
    assert_null(mdb_archive_resolve(a, at("root/../outside.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    assert_null(mdb_archive_resolve(a, at("root/dirlink/evil.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    /* "/x/root" must not admit "/x/rootx" */
    assert_null(mdb_archive_resolve(a, at("rootx/evil.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    assert_null(mdb_archive_resolve(a, "/etc/hostname", NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    /* missing */
    assert_null(mdb_archive_resolve(a, at("root/nope.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_NOTFOUND);
    assert_null(mdb_archive_resolve(a, "", NULL, &err));
    mdb_archive_destroy(a);

    /* no roots: everything refused; a missing root is an error */
    a = mdb_archive_new(NULL, 0, &err);
    assert_non_null(a);
    assert_null(mdb_archive_resolve(a, at("root/a b/1-001.dcm"), NULL, &err));
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    assert_non_null(strstr(err.message, "no archive roots"));
    mdb_archive_destroy(a);
    const char *bad[] = {at("no-such-root")};
    assert_null(mdb_archive_new(bad, 1, &err));
    assert_non_null(strstr(err.message, "archive root"));
}

static void test_open(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *roots[] = {at("root")};
    mdb_archive_t *a = mdb_archive_new(roots, 1, &err);
    char *canon = NULL;
    const char *root = NULL;
    int fd = mdb_archive_open_ex(a, at("root/inside-link.dcm"), &canon, &root, &err);
    assert_true(fd >= 0);
    char ch;
    assert_int_equal(read(fd, &ch, 1), 1);
    assert_int_equal(ch, 'x');
    close(fd);
    assert_string_equal(canon, at("root/a b/1-001.dcm"));
    free(canon);
    assert_int_equal(mdb_archive_open(a, at("root/escape.dcm"), &err), -1);
    assert_int_equal(err.domain, MDB_ERR_SECURITY);
    assert_int_equal(mdb_archive_open(a, at("root/missing.dcm"), &err), -1);
    assert_int_equal(err.domain, MDB_ERR_NOTFOUND);
    /* opening read-only: writes fail */
    fd = mdb_archive_open(a, at("root/a b/1-001.dcm"), &err);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "y", 1), -1);
    close(fd);
    mdb_archive_destroy(a);
}

static void test_charset_overrides(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *roots[] = {at("root")};
    mdb_archive_t *a = mdb_archive_new(roots, 1, &err);
    assert_true(mdb_archive_add_charset_override(a, at("root"), "ISO_IR 100", &err));
    assert_true(mdb_archive_add_charset_override(a, at("root/cyr/."), "CP1251", &err));
    assert_string_equal(mdb_archive_charset_for(a, at("root/cyr/x.dcm")), "CP1251");
    assert_string_equal(mdb_archive_charset_for(a, at("root/a b/1-001.dcm")), "ISO_IR 100");
    assert_null(mdb_archive_charset_for(a, at("rootx/evil.dcm")));
    assert_false(mdb_archive_add_charset_override(a, at("nowhere"), "GBK", &err));
    assert_false(mdb_archive_add_charset_override(a, at("root"), "", &err));
    mdb_archive_destroy(a);

    /* from configuration */
    mdb_config_t *cfg = mdb_config_new();
    char spec[2048];
    snprintf(spec, sizeof spec, " %s = GBK ; %s=CP1251;", at("root"), at("root/cyr"));
    assert_true(mdb_config_set(cfg, "archive.roots", at("root"), MDB_CONFIG_SRC_FLAG, &err));
    assert_true(mdb_config_set(cfg, "archive.charset_overrides", spec, MDB_CONFIG_SRC_FLAG, &err));
    a = mdb_archive_new_from_config(cfg, &err);
    assert_non_null(a);
    assert_string_equal(mdb_archive_charset_for(a, at("root/cyr/x.dcm")), "CP1251");
    assert_string_equal(mdb_archive_charset_for(a, at("root/a b/1-001.dcm")), "GBK");
    mdb_archive_destroy(a);
    assert_true(mdb_config_set(cfg, "archive.charset_overrides", "no-equals-sign", MDB_CONFIG_SRC_FLAG, &err));
    assert_null(mdb_archive_new_from_config(cfg, &err));
    assert_non_null(strstr(err.message, "ROOT=CHARSET"));
    mdb_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_charset_overrides),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
