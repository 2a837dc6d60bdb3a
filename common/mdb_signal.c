/* mdb_signal: the daemon's one piece of global mutable state, the stop flag.
 * Handlers only set the flag (async-signal-safe); a second signal means the
 * operator is done waiting, so it exits at once with _exit(130). */
#include "mdb_signal.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig)
{
    (void)sig;
    if (stop_flag)
        _exit(130);
    stop_flag = 1;
}

void mdb_signal_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: library code (libc stdio, drivers) need not cope with EINTR;
     * daemon loops block only with timeouts and check the flag each turn. */
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);
}

bool mdb_signal_stop_requested(void)
{
    return stop_flag != 0;
}

void mdb_signal_request_stop(void)
{
    stop_flag = 1;
}
