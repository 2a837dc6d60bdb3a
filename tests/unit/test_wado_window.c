/* Unit tests of WADO-RS's pixel arithmetic (api/wado_window.c, compiled in
 * here: metadb-api's modules are not a library): the VOI window functions
 * at their PS3.3 C.11.2.1.2 boundaries, the media type chosen from Accept
 * values a browser, OHIF or curl send, the default window (file's, then the
 * pixel range), MONOCHROME1 inversion, and fitting into a viewport (aspect
 * kept, area average). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../api/wado_window.c"

static void test_linear(void **state)
{
    (void)state;
    /* c=40, w=400: below c-0.5-(w-1)/2 = -160 -> 0; above c-0.5+(w-1)/2 = 239 -> 255 */
    assert_true(wado_window_value(-160, 40, 400, WADO_FN_LINEAR) == 0);
    assert_true(wado_window_value(-1000, 40, 400, WADO_FN_LINEAR) == 0);
    assert_true(wado_window_value(239.5, 40, 400, WADO_FN_LINEAR) == 255);
    assert_float_equal(wado_window_value(39.5, 40, 400, WADO_FN_LINEAR), 127.5, 1e-9);
    double mid = wado_window_value(100, 40, 400, WADO_FN_LINEAR);
    assert_float_equal(mid, ((100 - 39.5) / 399.0 + 0.5) * 255.0, 1e-9);
    /* width 1: a threshold at c - 0.5 */
    assert_true(wado_window_value(9.4, 10, 1, WADO_FN_LINEAR) == 0);
    assert_true(wado_window_value(9.6, 10, 1, WADO_FN_LINEAR) == 255);
}

static void test_linear_exact_sigmoid(void **state)
{
    (void)state;
    assert_true(wado_window_value(-160, 40, 400, WADO_FN_LINEAR_EXACT) == 0);
    assert_true(wado_window_value(240.001, 40, 400, WADO_FN_LINEAR_EXACT) == 255);
    assert_float_equal(wado_window_value(40, 40, 400, WADO_FN_LINEAR_EXACT), 127.5, 1e-9);
    assert_float_equal(wado_window_value(140, 40, 400, WADO_FN_LINEAR_EXACT), 0.75 * 255, 1e-9);
    assert_float_equal(wado_window_value(40, 40, 400, WADO_FN_SIGMOID), 127.5, 1e-9);
    assert_true(wado_window_value(-5000, 40, 400, WADO_FN_SIGMOID) < 0.01);
    assert_true(wado_window_value(5000, 40, 400, WADO_FN_SIGMOID) > 254.99);
    assert_true(wado_window_value(100, 40, 400, WADO_FN_SIGMOID) > wado_window_value(90, 40, 400, WADO_FN_SIGMOID));
}

static void test_media(void **state)
{
    (void)state;
    assert_int_equal(wado_choose_media(NULL), 2);
    assert_int_equal(wado_choose_media(""), 2);
    assert_int_equal(wado_choose_media("*/*"), 2);
    assert_int_equal(wado_choose_media("image/png"), 1);
    assert_int_equal(wado_choose_media("image/jpeg"), 2);
    assert_int_equal(wado_choose_media("image/gif"), 0);
    assert_int_equal(wado_choose_media("application/json"), 0);
    /* Chromium's <img> Accept: image/apng is not image/png; the wildcards give JPEG */
    assert_int_equal(wado_choose_media("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"), 2);
    /* an explicit type beats a wildcard of the same weight, a higher q wins, q=0 excludes */
    assert_int_equal(wado_choose_media("image/*, image/png"), 1);
    assert_int_equal(wado_choose_media("image/png;q=0.5, image/jpeg"), 2);
    assert_int_equal(wado_choose_media("image/jpeg;q=0.2, image/png;q=0.9"), 1);
    assert_int_equal(wado_choose_media("image/png;q=0"), 0);
    assert_int_equal(wado_choose_media(" IMAGE/PNG "), 1);
}

static void test_window_grey(void **state)
{
    (void)state;
    float grey[4] = {-1000, 0, 500, 1000};
    wado_pixels_t px = {.rows = 2, .cols = 2, .samples = 1, .grey = grey};
    wado_render_params_t p = {0};
    /* no window anywhere: the pixel range, -1000 -> 0, 1000 -> 255 */
    uint8_t *o = wado_window_grey(&px, &p);
    assert_non_null(o);
    assert_int_equal(o[0], 0);
    assert_int_equal(o[1], 128); /* 127.5 rounds half to even with lrint: 128 */
    assert_int_equal(o[3], 255);
    free(o);
    /* the file's window */
    px.has_window = true, px.center = 0, px.width = 2, px.function = WADO_FN_LINEAR_EXACT;
    o = wado_window_grey(&px, &p);
    assert_int_equal(o[0], 0);
    assert_int_equal(o[2], 255);
    free(o);
    /* the request's window beats the file's; MONOCHROME1 inverts after it */
    p.window_given = true, p.center = 500, p.width = 1000, p.function = WADO_FN_LINEAR_EXACT;
    px.monochrome1 = true;
    o = wado_window_grey(&px, &p);
    assert_int_equal(o[0], 255);
    assert_int_equal(o[2], 127); /* 255 - lrint(127.5) */
    assert_int_equal(o[3], 0);
    free(o);
    /* a flat frame: no division by zero */
    float flat[4] = {7, 7, 7, 7};
    wado_pixels_t fp = {.rows = 2, .cols = 2, .samples = 1, .grey = flat};
    wado_render_params_t none = {0};
    o = wado_window_grey(&fp, &none);
    assert_non_null(o);
    assert_true(o[0] == o[3]);
    free(o);
}

static void test_viewport(void **state)
{
    (void)state;
    uint8_t src[4 * 2] = {0, 10, 20, 30, 40, 50, 60, 70};
    int w, h;
    /* no viewport, or the same size: src itself */
    assert_ptr_equal(wado_fit_viewport(src, 4, 2, 1, 0, 0, &w, &h), src);
    assert_ptr_equal(wado_fit_viewport(src, 4, 2, 1, 4, 100, &w, &h), src);
    /* 4x2 into 2x2: aspect kept -> 2x1, each pixel the mean of a 2x2 block */
    uint8_t *o = wado_fit_viewport(src, 4, 2, 1, 2, 2, &w, &h);
    assert_int_equal(w, 2);
    assert_int_equal(h, 1);
    assert_int_equal(o[0], 25);
    assert_int_equal(o[1], 45);
    free(o);
    /* enlarging: nearest neighbour, 4x2 -> 8x4 */
    o = wado_fit_viewport(src, 4, 2, 1, 8, 8, &w, &h);
    assert_int_equal(w, 8);
    assert_int_equal(h, 4);
    assert_int_equal(o[0], 0);
    assert_int_equal(o[1], 0);
    assert_int_equal(o[2], 10);
    assert_int_equal(o[8 * 3 + 7], 70);
    free(o);
    /* RGB keeps its channels apart */
    uint8_t rgb[2 * 3] = {255, 0, 0, 0, 0, 255};
    o = wado_fit_viewport(rgb, 2, 1, 3, 1, 1, &w, &h);
    assert_int_equal(w, 1);
    assert_int_equal(o[0], 128);
    assert_int_equal(o[1], 0);
    assert_int_equal(o[2], 128);
    free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),   cmocka_unit_test(test_linear_exact_sigmoid),
        cmocka_unit_test(test_media),    cmocka_unit_test(test_window_grey),
        cmocka_unit_test(test_viewport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
