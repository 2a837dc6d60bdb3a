/* Unit tests of the linker's write pipeline bookkeeping (linker/batch.c,
 * linker/writer.c), without a broker or a database: a write that failed (or
 * whose assignment was lost) puts its records back in front of the records
 * consumed since, in order, with their DLQ counts and the older start time;
 * nothing is stored; the batch arrays are handed over, not copied, so that
 * ASan catches any double ownership. The successful path (offsets stored
 * after the write) runs against the live stack in
 * tests/integration/test_linker_stop.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linker.h"

static void add(linker_batch_t *B, const char *topic, int32_t part, int64_t off)
{
    if (B->nitems == B->capitems) {
        B->capitems = B->capitems ? 2 * B->capitems : 2;
        B->items = realloc(B->items, B->capitems * sizeof *B->items);
        assert_non_null(B->items);
    }
    linker_item_t *it = &B->items[B->nitems++];
    memset(it, 0, sizeof *it);
    it->kind = ITEM_SKIP;
    it->topic = strdup(topic);
    it->partition = part;
    it->offset = off;
}

static void expect(const linker_batch_t *B, const int64_t *offs, size_t n)
{
    assert_int_equal(B->nitems, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(B->items[i].offset, offs[i]);
}

static void test_prepend_orders_and_moves(void **state)
{
    (void)state;
    linker_batch_t older = {0}, newer = {0};
    add(&older, "t", 0, 10);
    add(&older, "t", 1, 20);
    add(&older, "t", 0, 11);
    older.dlq_pending = 1;
    older.started_ms = 100;
    add(&newer, "t", 0, 12);
    add(&newer, "t", 1, 21);
    newer.dlq_pending = 2;
    newer.started_ms = 300;
    assert_true(linker_batch_prepend(&newer, &older));
    const int64_t want[] = {10, 20, 11, 12, 21};
    expect(&newer, want, 5);
    assert_int_equal(newer.dlq_pending, 3);
    assert_int_equal(newer.started_ms, 100);
    assert_int_equal(older.nitems, 0);
    assert_int_equal(older.dlq_pending, 0);
    /* the emptied batch is reusable */
    add(&older, "t", 2, 5);
    assert_int_equal(older.nitems, 1);
    linker_batch_free(&older);
    linker_batch_free(&newer);
}

static void test_prepend_into_empty_and_from_empty(void **state)
{
    (void)state;
    linker_batch_t a = {0}, b = {0};
    add(&a, "t", 0, 1);
    a.started_ms = 50;
    assert_true(linker_batch_prepend(&b, &a)); /* into an empty batch */
    const int64_t one[] = {1};
    expect(&b, one, 1);
    assert_int_equal(b.started_ms, 50);
    assert_true(linker_batch_prepend(&b, &a)); /* nothing to move */
    expect(&b, one, 1);
    linker_batch_free(&a);
    linker_batch_free(&b);
}

/* A finished write that failed: collected without storing, its records in
 * front of what was consumed meanwhile. */
static void test_failed_write_goes_back_in_front(void **state)
{
    (void)state;
    linker_t L;
    memset(&L, 0, sizeof L);
    add(&L.wbatch, "t", 0, 7);
    add(&L.wbatch, "t", 0, 8);
    add(&L.batch, "t", 0, 9);
    L.writing = true; /* as linker_write_start leaves it after an inline write */
    L.joinable = false;
    atomic_store(&L.written, true);
    L.wres.ok = false;
    mdb_error_set(&L.wres.err, MDB_ERR_MONGO, 0, "database down");
    assert_int_equal(linker_batch_count(&L), 3);
    mdb_error_t err = {0};
    assert_int_equal(linker_write_collect(&L, false, false, &err), -1);
    assert_string_equal(err.message, "database down");
    assert_false(L.writing);
    const int64_t want[] = {7, 8, 9};
    expect(&L.batch, want, 3);
    assert_int_equal(L.wbatch.nitems, 0);
    assert_int_equal(linker_batch_count(&L), 3);
    /* nothing runs now: collecting again is a no-op */
    assert_int_equal(linker_write_collect(&L, true, false, &err), 0);
    linker_batch_free(&L.batch);
    linker_batch_free(&L.wbatch);
}

/* The assignment was lost: even a successful write's records go back (they
 * are dropped uncommitted by the caller and consumed again). */
static void test_lost_assignment_stores_nothing(void **state)
{
    (void)state;
    linker_t L;
    memset(&L, 0, sizeof L);
    add(&L.wbatch, "t", 1, 3);
    L.writing = true;
    atomic_store(&L.written, true);
    L.wres.ok = true;
    mdb_error_t err = {0};
    assert_int_equal(linker_write_collect(&L, true, true, &err), -1);
    const int64_t want[] = {3};
    expect(&L.batch, want, 1);
    linker_batch_free(&L.batch);
    linker_batch_free(&L.wbatch);
}

/* A write still running is not collected without blocking. */
static void test_running_write_not_collected(void **state)
{
    (void)state;
    linker_t L;
    memset(&L, 0, sizeof L);
    add(&L.wbatch, "t", 0, 1);
    L.writing = true;
    atomic_store(&L.written, false);
    mdb_error_t err = {0};
    assert_int_equal(linker_write_collect(&L, false, false, &err), 0);
    assert_true(L.writing);
    assert_int_equal(L.wbatch.nitems, 1);
    linker_batch_free(&L.wbatch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepend_orders_and_moves),
        cmocka_unit_test(test_prepend_into_empty_and_from_empty),
        cmocka_unit_test(test_failed_write_goes_back_in_front),
        cmocka_unit_test(test_lost_assignment_stores_nothing),
        cmocka_unit_test(test_running_write_not_collected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
