/* wado_isolate.c: pixel decoding in a child process (see wado.h).
 *
 * GDCM is a large C++ library fed with files metadb did not write. Debian
 * builds it with assertions on, and some odd but legal files end in
 * abort() (an RT Dose's Frame Increment Pointer in ImageHelper::
 * GetSpacingValue, for one): in-process, one such file would take the whole
 * API down. So every decode runs in a forked child: it inherits the open
 * file, decodes and encodes, writes the result to a pipe and _exits. The
 * parent reads the pipe with a time limit, reaps the child, and turns a
 * crash (a signal, no answer) or a timeout (SIGKILL) into an ordinary
 * error: the request gets a 422, the server keeps serving. The child
 * touches no socket, database handle or lock of the parent's; glibc
 * resets its malloc locks in a forked child. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mdb_dicom.h"
#include "wado.h"

#define MAX_RESULT (512u * 1024u * 1024u)

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Child: run fn, send "1<len><bytes>" or "0<domain><code><message>". */
static void child(int wfd, wado_job_fn fn, void *arg)
{
    uint8_t *out = NULL;
    size_t len = 0;
    mdb_error_t err = {0};
    wado_quiet_decoder();
    if (fn(arg, &out, &len, &err)) {
        uint64_t l = len;
        write_all(wfd, "1", 1);
        write_all(wfd, &l, sizeof l);
        write_all(wfd, out, len);
    } else {
        int32_t d = (int32_t)err.domain, c = (int32_t)err.code;
        write_all(wfd, "0", 1);
        write_all(wfd, &d, sizeof d);
        write_all(wfd, &c, sizeof c);
        write_all(wfd, err.message, strnlen(err.message, sizeof err.message));
    }
    _exit(0);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read everything the child writes until EOF or the deadline. */
static bool read_result(int rfd, int64_t deadline, uint8_t **buf, size_t *len, bool *timed_out)
{
    size_t cap = 65536;
    *buf = malloc(cap);
    *len = 0;
    *timed_out = false;
    if (!*buf)
        return false;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            *timed_out = true;
            return false;
        }
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return false;
        if (r == 0)
            continue;
        if (*len == cap) {
            if (cap >= MAX_RESULT)
                return false;
            uint8_t *n = realloc(*buf, cap * 2);
            if (!n)
                return false;
            *buf = n;
            cap *= 2;
        }
        ssize_t n = read(rfd, *buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        if (n == 0)
            return true;
        *len += (size_t)n;
    }
}

bool wado_isolated(wado_job_fn fn, void *arg, int timeout_ms, uint8_t **out, size_t *out_len, mdb_error_t *err)
{
    *out = NULL;
    *out_len = 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "pipe: %s", strerror(errno));
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        mdb_error_set(err, MDB_ERR_SYSTEM, e, "fork: %s", strerror(e));
        return false;
    }
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], fn, arg);
    }
    close(fds[1]);
    uint8_t *buf = NULL;
    size_t len = 0;
    bool timed_out = false;
    bool got = read_result(fds[0], now_ms() + timeout_ms, &buf, &len, &timed_out);
    close(fds[0]);
    if (!got)
        kill(pid, SIGKILL);
    int status = 0;
    pid_t w;
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    bool signaled = w == pid && WIFSIGNALED(status);
    if (timed_out) {
        free(buf);
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "decoding took longer than %d s: given up",
                      timeout_ms / 1000);
        return false;
    }
    if (!got || len < 1) {
        free(buf);
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "the image decoder (GDCM) failed on this file%s",
                      signaled ? " (it aborted; the server is unaffected)" : "");
        return false;
    }
    if (buf[0] == '1' && len >= 1 + sizeof(uint64_t)) {
        uint64_t l;
        memcpy(&l, buf + 1, sizeof l);
        if (l == len - 1 - sizeof l) {
            memmove(buf, buf + 1 + sizeof l, (size_t)l);
            *out = buf;
            *out_len = (size_t)l;
            return true;
        }
    } else if (buf[0] == '0' && len >= 9) {
        int32_t d, c;
        memcpy(&d, buf + 1, 4);
        memcpy(&c, buf + 5, 4);
        mdb_error_set(err, d, c, "%.*s", (int)(len - 9), (const char *)buf + 9);
        free(buf);
        return false;
    }
    free(buf);
    mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "the image decoder (GDCM) gave an incomplete answer");
    return false;
}
