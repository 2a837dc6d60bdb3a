/* libFuzzer target for the four message decoders. Every input goes through
 * each decoder; a successful decode is re-encoded and decoded again, and the
 * second decode must succeed too (encode(decode(x)) is always valid). The
 * first byte picks a size limit so the oversize path is exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_msg.h"

/* Compiled into this target so the decoders carry libFuzzer's coverage
 * instrumentation (mdb_common itself is built without it); the linker then
 * takes no mdb_msg.o from the static library. */
#include "../../common/mdb_msg.c"

static void check(bool cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mdb_error_t err;
    size_t max = size > 0 && data[0] == 'L' ? 64 : 1 << 20;
    const char *buf = (const char *)data;

    mdb_job_msg_t job;
    if (mdb_msg_job_decode(buf, size, max, &job, &err)) {
        char *s = mdb_msg_job_encode(&job);
        check(s != NULL);
        mdb_job_msg_t again;
        check(mdb_msg_job_decode(s, strlen(s), 0, &again, &err));
        check((job.job_id == NULL) == (again.job_id == NULL));
        check(job.accession_numbers.n == again.accession_numbers.n);
        mdb_msg_job_clear(&again);
        free(s);
        mdb_msg_job_clear(&job);
    } else {
        check(job.job_id == NULL && job.accession_numbers.v == NULL && err.message[0]);
    }

    mdb_file_msg_t file;
    if (mdb_msg_file_decode(buf, size, max, &file, &err)) {
        char *s = mdb_msg_file_encode(&file);
        check(s != NULL);
        mdb_file_msg_t again;
        check(mdb_msg_file_decode(s, strlen(s), 0, &again, &err));
        check(!strcmp(file.path, again.path));
        mdb_msg_file_clear(&again);
        free(s);
        mdb_msg_file_clear(&file);
    } else {
        check(file.path == NULL && err.message[0]);
    }

    mdb_instance_msg_t inst;
    if (mdb_msg_instance_decode(buf, size, max, &inst, &err)) {
        check(mdb_msg_instance_study_uid(&inst) && mdb_msg_instance_series_uid(&inst) &&
              mdb_msg_instance_sop_uid(&inst));
        char *s = mdb_msg_instance_encode(&inst);
        check(s != NULL);
        mdb_instance_msg_t again;
        check(mdb_msg_instance_decode(s, strlen(s), 0, &again, &err));
        check(!strcmp(mdb_msg_instance_sop_uid(&inst), mdb_msg_instance_sop_uid(&again)));
        mdb_msg_instance_clear(&again);
        free(s);
        mdb_msg_instance_clear(&inst);
    } else {
        check(inst.study == NULL && err.message[0]);
    }

    mdb_dlq_msg_t dlq;
    if (mdb_msg_dlq_decode(buf, size, max, &dlq, &err)) {
        char *s = mdb_msg_dlq_encode(&dlq);
        check(s != NULL);
        mdb_dlq_msg_t again;
        check(mdb_msg_dlq_decode(s, strlen(s), 0, &again, &err));
        mdb_msg_dlq_clear(&again);
        free(s);
        mdb_msg_dlq_clear(&dlq);
    } else {
        check(dlq.stage == NULL && err.message[0]);
    }
    return 0;
}
